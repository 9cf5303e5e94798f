//! Incremental Internet checksum updates (RFC 1624).

/// The IPv4 header checksum after decrementing TTL by one.
///
/// TTL is the high byte of its 16-bit word, so the header sum drops by
/// 0x0100 and the stored checksum (its complement) rises by 0x0100 with an
/// end-around carry (RFC 1624, eqn. 3).
#[inline(always)]
pub fn after_ttl_decrement(check: [u8; 2]) -> [u8; 2] {
    let sum = u32::from(u16::from_be_bytes(check)) + 0x0100;
    let folded = (sum & 0xffff) + (sum >> 16);
    (folded as u16).to_be_bytes()
}

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

/// The IPv4 header checksum after a 32-bit field (an address, network-order
/// octets as the `_be` values hold them) changes from `from` to `to`
/// (RFC 1624, eqn. 3, one 16-bit word at a time). The IPv4 header checksum
/// is never offloaded, so updating it by hand is always right.
#[inline(always)]
pub fn after_u32_change(check: [u8; 2], from_be: u32, to_be: u32) -> [u8; 2] {
    let f = from_be.to_ne_bytes();
    let t = to_be.to_ne_bytes();
    let mut sum = u32::from(!u16::from_be_bytes(check));
    sum += u32::from(!u16::from_be_bytes([f[0], f[1]]));
    sum += u32::from(!u16::from_be_bytes([f[2], f[3]]));
    sum += u32::from(u16::from_be_bytes([t[0], t[1]]));
    sum += u32::from(u16::from_be_bytes([t[2], t[3]]));
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// A checksum after a 16-bit word at an even offset of the covered data
/// changes from `from` to `to` (RFC 1624, eqn. 3).
#[inline(always)]
pub fn after_u16_change(check: [u8; 2], from: [u8; 2], to: [u8; 2]) -> [u8; 2] {
    let mut sum = u32::from(!u16::from_be_bytes(check));
    sum += u32::from(!u16::from_be_bytes(from));
    sum += u32::from(u16::from_be_bytes(to));
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// The checksum of a 20-byte IPv4 header whose checksum field is zero,
/// from its bytes (RFC 1071).
#[inline(always)]
pub fn ipv4_header(header: &[u8; 20]) -> [u8; 2] {
    finish(add_words(header, 0))
}

/// Adds the 16-bit big-endian words of `bytes` (an even length) to `sum`
/// (RFC 1071); fold with [`finish`].
#[inline(always)]
pub fn add_words<const N: usize>(bytes: &[u8; N], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// The checksum field for a running sum from [`add_words`].
#[inline(always)]
pub fn finish(mut sum: u32) -> [u8; 2] {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

//! VXLAN (RFC 7348) constants and the rules the datapath and its tests
//! share: the outer UDP source port of a flow.

/// IANA's VXLAN port, the outer UDP destination port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN header: flags (I bit), 24 reserved bits, VNI, 8 reserved bits.
pub const VXLAN_LEN: usize = 8;
/// The I flag: the VNI is valid (RFC 7348 section 5).
pub const VXLAN_FLAG_VNI: u8 = 0x08;
/// Bytes VXLAN adds in front of an inner IPv4 packet: outer IPv4 (20),
/// UDP (8), VXLAN (8) and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Largest VNI: 24 bits.
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// Outer UDP source ports, like the kernel's vxlan `srcport 49152 65535`.
pub const VXLAN_SPORT_MIN: u16 = 49152;
pub const VXLAN_SPORT_MAX: u16 = 65535;
/// TTL of the outer IPv4 header the bpf encapsulation writes.
pub const OUTER_TTL: u8 = 64;

/// The outer UDP source port of an inner flow: a hash of its 5-tuple
/// (network-order fields as the packet carries them; ports zero for
/// protocols without them) spread over [`VXLAN_SPORT_MIN`]..=
/// [`VXLAN_SPORT_MAX`] the way the kernel's `udp_flow_src_port` does, so
/// underlay ECMP and RSS see per-flow entropy while one flow stays on one
/// path. Deterministic (no boot-time seed) so tests can check exact bytes.
#[inline(always)]
pub const fn flow_src_port(src_be: u32, dst_be: u32, ports_be: u32, proto: u8) -> u16 {
    // murmur3's 32-bit finalizer over a fold of the tuple.
    let mut h = src_be ^ dst_be.rotate_left(16) ^ ports_be.rotate_left(8) ^ (proto as u32);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    let span = (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN) as u64 + 1;
    ((h as u64 * span) >> 32) as u16 + VXLAN_SPORT_MIN
}

/// The 8 bytes of a VXLAN header carrying `vni` with the I flag set.
#[inline(always)]
pub const fn vxlan_header(vni: u32) -> [u8; VXLAN_LEN] {
    let v = (vni & VNI_MAX).to_be_bytes();
    [VXLAN_FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// The VNI of a VXLAN header, `None` if its I flag is clear (the VNI is
/// not valid then: RFC 7348 section 5). The reserved fields are ignored,
/// as the RFC asks of a receiver.
#[inline(always)]
pub const fn vxlan_vni(header: &[u8; VXLAN_LEN]) -> Option<u32> {
    if header[0] & VXLAN_FLAG_VNI == 0 {
        return None;
    }
    Some(u32::from_be_bytes([0, header[4], header[5], header[6]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_reads_back_what_the_header_carries() {
        assert_eq!(vxlan_vni(&vxlan_header(0x00ab_cdef)), Some(0x00ab_cdef));
        assert_eq!(vxlan_vni(&vxlan_header(VNI_MAX + 1)), Some(0));
        let mut reserved_set = vxlan_header(100);
        reserved_set[1] = 0xff;
        reserved_set[7] = 0xff;
        assert_eq!(vxlan_vni(&reserved_set), Some(100));
        let mut no_flag = vxlan_header(100);
        no_flag[0] = 0;
        assert_eq!(vxlan_vni(&no_flag), None);
    }

    #[test]
    fn source_ports_stay_in_range_and_spread() {
        let mut seen = [false; 4];
        for port in 1000u32..2000 {
            let p = flow_src_port(0x0a01_0002, 0x0a01_0103, port << 16 | 80, 6);
            assert!(p >= VXLAN_SPORT_MIN);
            seen[usize::from((p - VXLAN_SPORT_MIN) >> 12)] = true;
        }
        assert_eq!(seen, [true; 4], "ports cover the whole range");
        assert_eq!(
            flow_src_port(1, 2, 3, 17),
            flow_src_port(1, 2, 3, 17),
            "stable per flow"
        );
    }

    #[test]
    fn header() {
        assert_eq!(vxlan_header(0x123456), [8, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
    }
}

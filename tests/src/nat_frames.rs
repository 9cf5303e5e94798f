//! What a NAT must make of a frame, computed independently of the
//! datapath (checksums from scratch): shared by the NAT packet tables.

use std::net::Ipv4Addr;

use crate::frames::{ETH_HLEN, internet_checksum, refresh_ipv4_checksum, refresh_l4_checksum};

pub fn l4_start(frame: &[u8]) -> usize {
    ETH_HLEN + usize::from(frame[ETH_HLEN] & 0x0f) * 4
}

/// Offset of the port (ICMP: echo identifier) a translation rewrites:
/// `source` or destination.
pub fn port_offset(frame: &[u8], source: bool) -> usize {
    let l4 = l4_start(frame);
    match frame[ETH_HLEN + 9] {
        1 => l4 + 4,
        _ if source => l4,
        _ => l4 + 2,
    }
}

pub fn port_at(frame: &[u8], source: bool) -> u16 {
    let off = port_offset(frame, source);
    u16::from_be_bytes([frame[off], frame[off + 1]])
}

/// What a NAT must produce from `frame`: the source (`source`) or
/// destination address and port replaced, TTL - 1, both checksums
/// recomputed from scratch (a UDP checksum of 0 stays 0), and optionally
/// new Ethernet addresses.
pub fn translated(
    frame: &[u8],
    source: bool,
    ip: Ipv4Addr,
    port: u16,
    eth: Option<([u8; 6], [u8; 6])>,
) -> Vec<u8> {
    let mut out = frame.to_vec();
    let addr = if source { ETH_HLEN + 12 } else { ETH_HLEN + 16 };
    out[addr..addr + 4].copy_from_slice(&ip.octets());
    let off = port_offset(frame, source);
    out[off..off + 2].copy_from_slice(&port.to_be_bytes());
    out[ETH_HLEN + 8] -= 1;
    if let Some((dst, src)) = eth {
        out[0..6].copy_from_slice(&dst);
        out[6..12].copy_from_slice(&src);
    }
    refresh_ipv4_checksum(&mut out);
    refresh_l4_checksum(&mut out);
    out
}

/// Where the IPv4 packet an ICMP error in `frame` quotes starts.
pub fn quoted_start(frame: &[u8]) -> usize {
    l4_start(frame) + 8
}

/// What an ICMP error `frame` about a translated connection must become:
/// outer destination `dst` (TTL - 1), the quoted source address `src` and
/// source port (ICMP echo: identifier) `port`, the quoted IPv4 checksum,
/// the outer IPv4 and ICMP checksums recomputed from scratch, new Ethernet
/// addresses.
pub fn icmp_error_translated(
    frame: &[u8],
    dst: Ipv4Addr,
    src: Ipv4Addr,
    port: u16,
    eth: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&dst.octets());
    out[ETH_HLEN + 8] -= 1;
    out[0..6].copy_from_slice(&eth.0);
    out[6..12].copy_from_slice(&eth.1);
    let q = quoted_start(frame);
    let q_len = usize::from(out[q] & 0x0f) * 4;
    out[q + 12..q + 16].copy_from_slice(&src.octets());
    let port_off = if out[q + 9] == 1 {
        q + q_len + 4
    } else {
        q + q_len
    };
    out[port_off..port_off + 2].copy_from_slice(&port.to_be_bytes());
    out[q + 10..q + 12].fill(0);
    let sum = internet_checksum(&out[q..q + q_len]);
    out[q + 10..q + 12].copy_from_slice(&sum.to_be_bytes());
    refresh_ipv4_checksum(&mut out);
    refresh_l4_checksum(&mut out);
    out
}

/// What a hairpinned `frame` must become: source `src`, destination `dst`
/// (addresses and ports), TTL - 1, checksums from scratch, new Ethernet
/// addresses.
pub fn hairpinned(
    frame: &[u8],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    eth: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&src.0.octets());
    out[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&dst.0.octets());
    let (s, d) = (port_offset(frame, true), port_offset(frame, false));
    out[s..s + 2].copy_from_slice(&src.1.to_be_bytes());
    out[d..d + 2].copy_from_slice(&dst.1.to_be_bytes());
    out[ETH_HLEN + 8] -= 1;
    out[0..6].copy_from_slice(&eth.0);
    out[6..12].copy_from_slice(&eth.1);
    refresh_ipv4_checksum(&mut out);
    refresh_l4_checksum(&mut out);
    out
}

/// What an ICMP error `frame` a container sends about a translated
/// connection must become on the uplink: outer source `src` (TTL - 1), the
/// quoted destination address `src` and destination port `port`, the
/// quoted IPv4 checksum, the outer IPv4 and ICMP checksums recomputed.
pub fn icmp_error_translated_out(frame: &[u8], src: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&src.octets());
    out[ETH_HLEN + 8] -= 1;
    let q = quoted_start(frame);
    let q_len = usize::from(out[q] & 0x0f) * 4;
    out[q + 16..q + 20].copy_from_slice(&src.octets());
    out[q + q_len + 2..q + q_len + 4].copy_from_slice(&port.to_be_bytes());
    out[q + 10..q + 12].fill(0);
    let sum = internet_checksum(&out[q..q + q_len]);
    out[q + 10..q + 12].copy_from_slice(&sum.to_be_bytes());
    refresh_ipv4_checksum(&mut out);
    refresh_l4_checksum(&mut out);
    out
}

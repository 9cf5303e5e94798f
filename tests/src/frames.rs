//! Frames for the packet tables, built without any of the datapath's code:
//! etherparse for IPv4/TCP/UDP, byte-by-byte for ARP, and a from-scratch
//! Internet checksum to verify what the program wrote.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

pub const BROADCAST: [u8; 6] = [0xff; 6];
pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An Ethernet/IPv4 ARP frame (`op` 1 = request, 2 = reply), no padding.
pub fn arp(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sender: ([u8; 6], Ipv4Addr),
    target: ([u8; 6], Ipv4Addr),
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // htype: Ethernet
    f.extend_from_slice(&ETH_P_IP.to_be_bytes()); // ptype: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender.0);
    f.extend_from_slice(&sender.1.octets());
    f.extend_from_slice(&target.0);
    f.extend_from_slice(&target.1.octets());
    f
}

/// A broadcast ARP request from (`mac`, `ip`) for `target`.
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(BROADCAST, mac, 1, (mac, ip), ([0; 6], target))
}

/// Ethernet (`eth` = (destination, source), header order) + IPv4 + UDP.
pub fn udp(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 7);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut f, payload)
        .expect("writing to a Vec cannot fail");
    f
}

/// Ethernet + IPv4 + TCP SYN with no payload: 54 bytes.
pub fn tcp_syn(eth: ([u8; 6], [u8; 6]), src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .tcp(40000, 80, 1, 64240)
        .syn();
    let mut f = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut f, &[])
        .expect("writing to a Vec cannot fail");
    f
}

/// Inserts IPv4 options (whole 32-bit words) after the fixed header,
/// fixing IHL, total length and the header checksum.
pub fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let mut f = frame[..ETH_HLEN + 20].to_vec();
    f.extend_from_slice(options);
    f.extend_from_slice(&frame[ETH_HLEN + 20..]);
    let ihl_words = (20 + options.len()) / 4;
    f[ETH_HLEN] = 0x40 | ihl_words as u8;
    let total = u16::from_be_bytes([f[ETH_HLEN + 2], f[ETH_HLEN + 3]]) + options.len() as u16;
    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&total.to_be_bytes());
    refresh_ipv4_checksum(&mut f);
    f
}

/// Rewrites the IPv4 header checksum of `frame` from scratch.
pub fn refresh_ipv4_checksum(frame: &mut [u8]) {
    let hlen = ipv4_header_len(frame);
    frame[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
    let sum = internet_checksum(&frame[ETH_HLEN..ETH_HLEN + hlen]);
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Whether the IPv4 header checksum of `frame` verifies (sums to 0xffff).
pub fn ipv4_checksum_valid(frame: &[u8]) -> bool {
    let hlen = ipv4_header_len(frame);
    internet_checksum(&frame[ETH_HLEN..ETH_HLEN + hlen]) == 0
}

fn ipv4_header_len(frame: &[u8]) -> usize {
    usize::from(frame[ETH_HLEN] & 0x0f) * 4
}

/// RFC 1071 one's-complement checksum of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A MAC rendered the usual way, for assertion messages.
pub fn mac_str(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

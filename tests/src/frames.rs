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

/// TCP flags for [`tcp`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// Ethernet + IPv4 + TCP with the given ports and flags, no payload.
pub fn tcp(
    eth: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: TcpFlags,
    ttl: u8,
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv4(src.0.octets(), dst.0.octets(), ttl)
        .tcp(src.1, dst.1, 1000, 64240);
    if flags.syn {
        builder = builder.syn();
    }
    if flags.ack {
        builder = builder.ack(2000);
    }
    if flags.fin {
        builder = builder.fin();
    }
    if flags.rst {
        builder = builder.rst();
    }
    let mut f = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut f, &[])
        .expect("writing to a Vec cannot fail");
    f
}

/// Ethernet + IPv4 + UDP with the given ports.
pub fn udp_ports(
    eth: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv4(src.0.octets(), dst.0.octets(), ttl)
        .udp(src.1, dst.1);
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut f, payload)
        .expect("writing to a Vec cannot fail");
    f
}

/// Ethernet + IPv4 + ICMP echo request (`request`) or reply.
pub fn icmp_echo(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    request: bool,
    id: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(eth.1, eth.0).ipv4(src.octets(), dst.octets(), ttl);
    let builder = if request {
        ip.icmpv4_echo_request(id, 7)
    } else {
        ip.icmpv4_echo_reply(id, 7)
    };
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut f, payload)
        .expect("writing to a Vec cannot fail");
    f
}

/// Where the L4 header of an Ethernet/IPv4 `frame` starts, and where the
/// IPv4 payload ends.
fn l4_bounds(frame: &[u8]) -> (usize, usize) {
    let start = ETH_HLEN + ipv4_header_len(frame);
    let total = usize::from(u16::from_be_bytes([
        frame[ETH_HLEN + 2],
        frame[ETH_HLEN + 3],
    ]));
    (start, ETH_HLEN + total)
}

/// Offset of the L4 checksum within the L4 header (TCP 16, UDP 6, ICMP 2).
fn l4_checksum_offset(proto: u8) -> usize {
    match proto {
        6 => 16,
        17 => 6,
        1 => 2,
        other => panic!("no L4 checksum for protocol {other}"),
    }
}

/// The L4 checksum of `frame` computed from scratch (RFC 793/768 with the
/// IPv4 pseudo-header for TCP and UDP; ICMP over ICMP only), over the
/// packet with its checksum field taken as zero.
pub fn l4_checksum(frame: &[u8]) -> u16 {
    let proto = frame[ETH_HLEN + 9];
    let (start, end) = l4_bounds(frame);
    let mut bytes = Vec::new();
    if proto != 1 {
        bytes.extend_from_slice(&frame[ETH_HLEN + 12..ETH_HLEN + 20]);
        bytes.extend_from_slice(&[0, proto]);
        bytes.extend_from_slice(&((end - start) as u16).to_be_bytes());
    }
    let mut l4 = frame[start..end].to_vec();
    let off = l4_checksum_offset(proto);
    l4[off..off + 2].fill(0);
    bytes.extend_from_slice(&l4);
    let sum = internet_checksum(&bytes);
    // UDP sends a computed 0 as 0xffff; 0 means "no checksum".
    if proto == 17 && sum == 0 { 0xffff } else { sum }
}

/// The L4 checksum field of `frame`.
pub fn l4_checksum_field(frame: &[u8]) -> u16 {
    let (start, _) = l4_bounds(frame);
    let off = start + l4_checksum_offset(frame[ETH_HLEN + 9]);
    u16::from_be_bytes([frame[off], frame[off + 1]])
}

/// Whether the L4 checksum of `frame` is right (a UDP checksum of 0, "none",
/// counts as right).
pub fn l4_checksum_valid(frame: &[u8]) -> bool {
    let field = l4_checksum_field(frame);
    (frame[ETH_HLEN + 9] == 17 && field == 0) || field == l4_checksum(frame)
}

/// Rewrites the L4 checksum of `frame` from scratch; a UDP checksum of 0
/// stays 0.
pub fn refresh_l4_checksum(frame: &mut [u8]) {
    if frame[ETH_HLEN + 9] == 17 && l4_checksum_field(frame) == 0 {
        return;
    }
    let sum = l4_checksum(frame);
    let (start, _) = l4_bounds(frame);
    let off = start + l4_checksum_offset(frame[ETH_HLEN + 9]);
    frame[off..off + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The ICMP "fragmentation needed" (type 3 code 4, RFC 792/1191) a hop at
/// `gateway` (MAC `gateway_mac`) answers `frame` with: back to the sender's
/// MAC and address, TOS 0xc0 and TTL 64 as Linux sends errors, no DF, id 0,
/// next-hop MTU `mtu`, quoting the offending IP header (options included)
/// and its first 8 data bytes.
pub fn frag_needed(frame: &[u8], gateway: Ipv4Addr, gateway_mac: [u8; 6], mtu: u16) -> Vec<u8> {
    let hlen = ipv4_header_len(frame);
    let quote = &frame[ETH_HLEN..ETH_HLEN + hlen + 8];
    let mut f = Vec::with_capacity(ETH_HLEN + 28 + quote.len());
    f.extend_from_slice(&frame[6..12]); // to the sender
    f.extend_from_slice(&gateway_mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let total = (20 + 8 + quote.len()) as u16;
    f.extend_from_slice(&[0x45, 0xc0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&gateway.octets());
    f.extend_from_slice(&frame[ETH_HLEN + 12..ETH_HLEN + 16]);
    refresh_ipv4_checksum(&mut f);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

/// Clears the IPv4 Don't Fragment bit of `frame` (etherparse sets it).
pub fn without_df(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH_HLEN + 6] &= !0x40;
    refresh_ipv4_checksum(&mut f);
    f
}

/// Ethernet + IPv4 + TCP from port 40000 to 80 with `flags` (SYN, or
/// SYN-ACK with `ack`) and raw TCP `options` (padded by the caller to whole
/// words), no payload; checksums by etherparse.
pub fn tcp_with_options(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ack: bool,
    options: &[u8],
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(40000, 80, 1, 64240)
        .syn();
    if ack {
        builder = builder.ack(7);
    }
    let builder = builder
        .options_raw(options)
        .expect("options are whole words, at most 40 bytes");
    let mut f = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut f, &[])
        .expect("writing to a Vec cannot fail");
    f
}

/// Ethernet + IPv4 + an ICMP error of `ty`/`code` quoting `quoted` (an
/// IPv4 packet's first bytes, as a router or host quotes the offending
/// packet), ICMP checksum computed.
pub fn icmp_error(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    code: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_raw(ty, code, [0; 4]);
    let mut f = Vec::with_capacity(builder.size(quoted.len()));
    builder
        .write(&mut f, quoted)
        .expect("writing to a Vec cannot fail");
    f
}

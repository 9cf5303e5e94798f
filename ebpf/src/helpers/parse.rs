//! Header layouts, named field offsets, and the checks that make a header
//! one the datapath may act on: IPv4 (version, IHL, total length) and
//! whether a UDP packet is VXLAN.
//!
//! Offsets are derived from network-types' `#[repr(C)]` headers with
//! `offset_of!`, never written as bare numbers.

use core::mem::offset_of;

use aya_ebpf::programs::TcContext;
use network_types::{
    arp::ArpHdr, eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr,
};
use weft_common::{maps::IPPROTO_UDP, overlay::VXLAN_PORT};

use super::access::{Packet, load};

pub const ETH_LEN: usize = EthHdr::LEN;
pub const ETH_DST_OFF: usize = offset_of!(EthHdr, dst_addr);
pub const ETH_SRC_OFF: usize = offset_of!(EthHdr, src_addr);
pub const ETH_PROTO_OFF: usize = offset_of!(EthHdr, ether_type);

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;

pub const ARP_OFF: usize = ETH_LEN;
pub const ARP_OPER_OFF: usize = ARP_OFF + offset_of!(ArpHdr, oper);
pub const ARP_SHA_OFF: usize = ARP_OFF + offset_of!(ArpHdr, sha);
pub const ARP_SPA_OFF: usize = ARP_OFF + offset_of!(ArpHdr, spa);
pub const ARP_THA_OFF: usize = ARP_OFF + offset_of!(ArpHdr, tha);
pub const ARP_TPA_OFF: usize = ARP_OFF + offset_of!(ArpHdr, tpa);
pub const ARP_HTYPE_ETHERNET: u16 = 1;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;

pub const IP_OFF: usize = ETH_LEN;
pub const IP_MIN_LEN: usize = Ipv4Hdr::LEN;
pub const IP_TTL_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, ttl);
pub const IP_CSUM_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, check);
pub const IP_SRC_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, src_addr);
pub const IP_DST_OFF: usize = IP_OFF + offset_of!(Ipv4Hdr, dst_addr);
/// `frags` (flags and fragment offset): the fragment offset's 13 bits.
pub const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// `frags`: Don't Fragment.
pub const IP_DF: u16 = 0x4000;

/// L4 field offsets, relative to the start of the L4 header.
pub const TCP_SPORT_OFF: usize = offset_of!(TcpHdr, source);
pub const TCP_DPORT_OFF: usize = offset_of!(TcpHdr, dest);
pub const TCP_CSUM_OFF: usize = offset_of!(TcpHdr, check);
/// The 16-bit word of data offset and flags (CWR..FIN in its second byte);
/// network-types keeps it as one bitfield, so this one is spelled out.
pub const TCP_OFF_FLAGS_OFF: usize = offset_of!(TcpHdr, ack_seq) + 4;
pub const TCP_LEN: usize = TcpHdr::LEN;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const UDP_SPORT_OFF: usize = offset_of!(UdpHdr, src);
pub const UDP_DPORT_OFF: usize = offset_of!(UdpHdr, dst);
pub const UDP_CSUM_OFF: usize = offset_of!(UdpHdr, check);
pub const UDP_LEN: usize = UdpHdr::LEN;
/// The 16-bit word of type and code.
pub const ICMP_TYPE_CODE_OFF: usize = offset_of!(Icmpv4Hdr, type_);
pub const ICMP_CSUM_OFF: usize = offset_of!(Icmpv4Hdr, check);
/// Echo request/reply: the identifier is the first half of `data`.
pub const ICMP_ECHO_ID_OFF: usize = offset_of!(Icmpv4Hdr, data);
pub const ICMP_LEN: usize = Icmpv4Hdr::LEN;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP error types.
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// What an ICMP error quotes of the offending packet's L4 header, after
/// its IPv4 header (RFC 792).
pub const ICMP_QUOTED_L4: usize = 8;

/// Reads a big-endian `u16` from two header bytes.
#[inline(always)]
pub fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// A destination MAC with the group bit set: broadcast or multicast.
#[inline(always)]
pub fn is_group_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// Why an IPv4 header cannot be acted on.
#[derive(Clone, Copy)]
pub enum BadIpv4 {
    /// Not there: the frame ends first.
    Truncated,
    /// Not version 4, an IHL under 5, or options past the frame's end.
    Header,
    /// A total length shorter than the header or longer than the frame.
    Length,
}

/// The length of IPv4 header `ip` in bytes, from its IHL (options
/// included). Only meaningful for a header [`ipv4_header_len`] accepted.
#[inline(always)]
pub fn header_len(ip: &Ipv4Hdr) -> usize {
    usize::from(ip.vihl & 0x0f) * 4
}

/// The header length of `ip` if it is an IPv4 header at all: version 4
/// and at least the 20 fixed bytes.
#[inline(always)]
pub fn ipv4_header_len(ip: &Ipv4Hdr) -> Option<usize> {
    let len = header_len(ip);
    (ip.vihl >> 4 == 4 && len >= IP_MIN_LEN).then_some(len)
}

/// The IPv4 header at `ip_off` and its length, if the packet holds a whole
/// one: header and total length inside the frame (`ctx.len()`, linear or
/// not; only the fixed header is read, from linear data).
#[inline(always)]
pub fn ipv4_at(ctx: &TcContext, ip_off: usize) -> Result<(Ipv4Hdr, usize), BadIpv4> {
    let ip: Ipv4Hdr = load(ctx, ip_off).ok_or(BadIpv4::Truncated)?;
    let frame_len = ctx.len() as usize;
    let header_len = ipv4_header_len(&ip).ok_or(BadIpv4::Header)?;
    if ip_off + header_len > frame_len {
        return Err(BadIpv4::Header);
    }
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if total_len < header_len || ip_off + total_len > frame_len {
        return Err(BadIpv4::Length);
    }
    Ok((ip, header_len))
}

/// Whether IPv4 header `ip` at `IP_OFF`, `header_len` bytes long, starts
/// UDP to the VXLAN port.
#[inline(always)]
pub fn is_vxlan(ctx: &impl Packet, ip: &Ipv4Hdr, header_len: usize) -> bool {
    if ip.proto != IPPROTO_UDP {
        return false;
    }
    // Two-byte loads at a variable offset: LLVM turns a one-byte bound
    // check into `ptr >= end`, which the verifier does not read as a range.
    let dport: Option<[u8; 2]> = load(ctx, IP_OFF + header_len + UDP_DPORT_OFF);
    dport.is_some_and(|p| u16::from_be_bytes(p) == VXLAN_PORT)
}

//! Header layouts and named field offsets.
//!
//! Offsets are derived from network-types' `#[repr(C)]` headers with
//! `offset_of!`, never written as bare numbers.

use core::mem::offset_of;

use network_types::{arp::ArpHdr, eth::EthHdr, ip::Ipv4Hdr};

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

//! IPv4 headers the datapath writes. What a router does to the header of
//! a packet it forwards: TTL less one, and when it translates, one address
//! changed, with the header checksum updated by hand (RFC 1624; the IPv4
//! header checksum is never offloaded, and no helper call is needed; the
//! caller checked TTL > 1). And the header of a packet it originates (an
//! outer VXLAN header, an ICMP error).

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;

use super::{
    access::store,
    csum,
    parse::{IP_CSUM_OFF, IP_MIN_LEN, IP_TTL_OFF},
    verdict::Dropped,
};

/// Forwards the IPv4 header `ip` at `IP_OFF` unchanged but for TTL - 1.
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, ip: &Ipv4Hdr) -> Result<(), Dropped> {
    store(ctx, IP_TTL_OFF, ip.ttl - 1).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, csum::after_ttl_decrement(ip.check)).ok_or(drop_here!(TruncatedIpv4))
}

/// Forwards the IPv4 header `ip` at `IP_OFF` like a router that
/// translates: TTL - 1 and the address at `addr_off` `from` -> `to`, in one
/// checksum update.
#[inline(always)]
pub fn retarget(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    addr_off: usize,
    from: u32,
    to: u32,
) -> Result<(), Dropped> {
    let check = csum::after_u32_change(csum::after_ttl_decrement(ip.check), from, to);
    store(ctx, IP_TTL_OFF, ip.ttl - 1).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, addr_off, to).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, check).ok_or(drop_here!(TruncatedIpv4))
}

/// The fields of an IPv4 header the datapath originates; the rest is
/// fixed: version 4, no options, identification 0.
pub struct Originated {
    pub tos: u8,
    pub total_len: u16,
    /// Flags and fragment offset (`IP_DF` or 0).
    pub frags: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src_be: u32,
    pub dst_be: u32,
}

/// The bytes of header `h`, checksum included.
#[inline(always)]
pub fn originate(h: &Originated) -> [u8; IP_MIN_LEN] {
    let mut header = [0u8; IP_MIN_LEN];
    header[0] = 0x45;
    header[1] = h.tos;
    header[2..4].copy_from_slice(&h.total_len.to_be_bytes());
    header[6..8].copy_from_slice(&h.frags.to_be_bytes());
    header[8] = h.ttl;
    header[9] = h.proto;
    header[12..16].copy_from_slice(&h.src_be.to_ne_bytes());
    header[16..20].copy_from_slice(&h.dst_be.to_ne_bytes());
    let check = csum::ipv4_header(&header);
    header[10..12].copy_from_slice(&check);
    header
}

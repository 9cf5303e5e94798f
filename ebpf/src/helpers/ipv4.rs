//! What a router does to the IPv4 header of a packet it forwards: TTL less
//! one, and when it translates, one address changed, with the header
//! checksum updated by hand (RFC 1624; the IPv4 header checksum is never
//! offloaded, and no helper call is needed). The caller checked TTL > 1.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;

use super::{
    access::store,
    csum,
    parse::{IP_CSUM_OFF, IP_TTL_OFF},
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

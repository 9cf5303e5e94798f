//! Service load balancing as its own program, entered by tail call from
//! `weft_from_container` for packets to the service range (DNAT to a
//! backend) and for every packet a service backend sends (replies
//! translated back to the VIP, then forwarded as `from_container` would).
//! Its own program keeps Maglev and the extra conntrack work off the
//! stack and instruction budget of the forwarding fast path.

use aya_ebpf::{macros::classifier, programs::TcContext};
use network_types::ip::Ipv4Hdr;
use weft_common::{events::PROGRAM_SERVICE, maps::SERVICE_NETWORK_ID};

use crate::helpers::{
    access::load,
    direction::Direction,
    forward,
    maps::network_of_address,
    parse::{ETH_DST_OFF, IP_OFF},
    service, tail,
    verdict::{Verdict, drop_packet},
};

#[classifier]
pub fn weft_service(ctx: TcContext) -> i32 {
    match try_service(&ctx) {
        Ok(action) => action,
        Err(dropped) => drop_packet(&ctx, dropped, PROGRAM_SERVICE, Direction::FromContainer),
    }
}

/// `weft_from_container` validated the frame (IPv4, the sender's own
/// addresses), counted it and handed over the sender.
#[inline(always)]
fn try_service(ctx: &TcContext) -> Verdict {
    let ip: Ipv4Hdr = load(ctx, IP_OFF).ok_or(drop_here!(TruncatedIpv4))?;
    let src = tail::sender(ctx, &ip);
    if network_of_address(u32::from_ne_bytes(ip.dst_addr)) == Some(SERVICE_NETWORK_ID) {
        return service::to_vip(ctx, &src, &ip);
    }
    if !service::from_backend(ctx, &src, &ip)? {
        return forward::unicast(ctx, &src, dst_mac(ctx)?, &ip);
    }
    // Read again: the source changed.
    let ip: Ipv4Hdr = load(ctx, IP_OFF).ok_or(drop_here!(TruncatedIpv4))?;
    forward::unicast(ctx, &src, dst_mac(ctx)?, &ip)
}

#[inline(always)]
fn dst_mac(ctx: &TcContext) -> Result<[u8; 6], crate::helpers::verdict::Dropped> {
    load(ctx, ETH_DST_OFF).ok_or(drop_here!(TruncatedEthernet))
}

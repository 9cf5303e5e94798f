//! ARP responder: every ARP request from a container is answered by the
//! program itself (for the gateway or a peer of the same network) or dropped
//! with a reason; nothing is flooded.

use aya_ebpf::programs::TcContext;
use network_types::arp::ArpHdr;
use weft_common::{maps::EndpointInfo, reason::Forward};

use super::{
    access::{load, store},
    deliver::{pass_to_stack, send_out_of},
    direction::Direction,
    maps::{endpoint_by_ip, network, overlay_route},
    parse::{
        ARP_HTYPE_ETHERNET, ARP_OFF, ARP_OP_REPLY, ARP_OP_REQUEST, ARP_OPER_OFF, ARP_SHA_OFF,
        ARP_SPA_OFF, ARP_THA_OFF, ARP_TPA_OFF, ETH_DST_OFF, ETH_P_IP, ETH_SRC_OFF, be16,
    },
    verdict::{Dropped, Verdict},
};

/// Answers an ARP request from endpoint `src` in place and sends the reply
/// back to it; ARP replies (to the node's own requests) go to the stack.
#[inline(always)]
pub fn handle(ctx: &TcContext, src: &EndpointInfo) -> Verdict {
    let arp: ArpHdr = load(ctx, ARP_OFF).ok_or(drop_here!(TruncatedArp))?;
    if be16(arp.htype) != ARP_HTYPE_ETHERNET
        || be16(arp.ptype) != ETH_P_IP
        || arp.hlen != 6
        || arp.plen != 4
    {
        return Err(drop_here!(UnsupportedArp));
    }
    match be16(arp.oper) {
        ARP_OP_REQUEST => {}
        ARP_OP_REPLY => return pass_to_stack(ctx, Direction::FromContainer),
        _ => return Err(drop_here!(UnsupportedArp)),
    }
    if arp.tpa == arp.spa {
        return Err(drop_here!(ArpAnnouncement));
    }
    let answer = owner_mac(src, u32::from_ne_bytes(arp.tpa))?;

    store(ctx, ETH_DST_OFF, src.mac).ok_or(drop_here!(TruncatedArp))?;
    store(ctx, ETH_SRC_OFF, answer).ok_or(drop_here!(TruncatedArp))?;
    store(ctx, ARP_OPER_OFF, ARP_OP_REPLY.to_be_bytes()).ok_or(drop_here!(TruncatedArp))?;
    store(ctx, ARP_SHA_OFF, answer).ok_or(drop_here!(TruncatedArp))?;
    store(ctx, ARP_SPA_OFF, arp.tpa).ok_or(drop_here!(TruncatedArp))?;
    store(ctx, ARP_THA_OFF, arp.sha).ok_or(drop_here!(TruncatedArp))?;
    store(ctx, ARP_TPA_OFF, arp.spa).ok_or(drop_here!(TruncatedArp))?;

    send_out_of(
        ctx,
        src.ifindex,
        Forward::ArpReplied,
        Direction::FromContainer,
    )
}

/// The MAC that owns `target` in `src`'s network: the gateway or a peer.
#[inline(always)]
fn owner_mac(src: &EndpointInfo, target: u32) -> Result<[u8; 6], Dropped> {
    let net = network(src.network_id).ok_or(drop_here!(UnknownEndpoint))?;
    if target == net.gateway_ip_be {
        return Ok(net.gateway_mac);
    }
    match endpoint_by_ip(target) {
        Some(peer) if peer.network_id == src.network_id => Ok(peer.mac),
        // A peer on another node: answered with the gateway MAC (proxy
        // ARP), so the frame takes the routed path into the overlay and
        // nothing is flooded over the underlay.
        None if overlay_route(target)
            .is_some_and(|r| r.underlay_ip_be != 0 && r.network_id == src.network_id) =>
        {
            Ok(net.gateway_mac)
        }
        _ => Err(drop_here!(ArpUnknownTarget)),
    }
}

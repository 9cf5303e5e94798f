//! IPv4 forwarding between endpoints: bridging within a network by
//! destination MAC, routing between connected networks, and flooding;
//! destinations that are no local endpoint are handed over by tail call
//! (masquerade, the overlay) or left to the node's stack.

use aya_ebpf::{bindings::TC_ACT_STOLEN, programs::TcContext};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{
        EndpointInfo, MAX_FLOOD, NET_FLAG_FLOOD, SERVICE_NETWORK_ID, TAIL_NAT_EGRESS,
        TAIL_OVERLAY_ENCAP, TAIL_SERVICE,
    },
    reason::Forward,
};

use super::{
    deliver::{deliver, deliver_as_gateway, pass_to_stack},
    direction::Direction,
    dns, ipv4,
    maps::{
        endpoint_by_ip, fdb_lookup, flood_list, is_backend, network, network_of_address,
        networks_linked,
    },
    parse::{BadIpv4, IP_OFF, ipv4_at, is_group_mac},
    tail,
    verdict::{Verdict, count_endpoint_rx, count_forward},
};

/// Everything here comes from a container.
const DIRECTION: Direction = Direction::FromContainer;

/// Forwards an IPv4 packet sent by endpoint `src` to `dst_mac`.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, src: &EndpointInfo, dst_mac: [u8; 6]) -> Verdict {
    let (ip, _) = ipv4_at(ctx, IP_OFF).map_err(|bad| match bad {
        BadIpv4::Truncated => drop_here!(TruncatedIpv4),
        BadIpv4::Header => drop_here!(BadIpv4Header),
        BadIpv4::Length => drop_here!(BadIpv4Length),
    })?;
    if u32::from_ne_bytes(ip.src_addr) != src.ip_be {
        return Err(drop_here!(SpoofedSource));
    }

    if is_group_mac(&dst_mac) {
        return flood(ctx, src);
    }
    // A service backend's replies are translated back to the VIP first
    // (the service program then forwards them as below); an array lookup
    // for everyone else.
    if is_backend(src.stats_slot) {
        tail::hand_over(ctx, TAIL_SERVICE, src);
    }
    unicast(ctx, src, dst_mac, &ip)
}

/// Forwards a unicast IPv4 packet (header `ip`, validated) from `src` to
/// `dst_mac`: routed when sent to the gateway, else bridged.
#[inline(always)]
pub fn unicast(ctx: &TcContext, src: &EndpointInfo, dst_mac: [u8; 6], ip: &Ipv4Hdr) -> Verdict {
    if dst_mac == src.gateway_mac {
        route(ctx, src, ip)
    } else {
        bridge(ctx, src, dst_mac)
    }
}

/// Same network: deliver the unchanged frame to the endpoint owning `dst_mac`.
#[inline(always)]
fn bridge(ctx: &TcContext, src: &EndpointInfo, dst_mac: [u8; 6]) -> Verdict {
    let dst = fdb_lookup(src.network_id, dst_mac).ok_or(drop_here!(UnknownDestinationMac))?;
    deliver(
        ctx,
        dst.ifindex,
        dst.stats_slot,
        Forward::Bridged,
        DIRECTION,
    )
}

/// Addressed to the gateway: the node itself, another endpoint (routed), or
/// somewhere outside weft (left to the node's stack).
#[inline(always)]
fn route(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Verdict {
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    let Some(dst) = endpoint_by_ip(dst_ip) else {
        return not_an_endpoint(ctx, src, ip);
    };
    if dst.network_id != src.network_id && !networks_linked(src.network_id, dst.network_id) {
        return Err(drop_here!(NetworkIsolated));
    }
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    ipv4::decrement_ttl(ctx, ip)?;
    deliver_as_gateway(ctx, &dst, Forward::Routed, DIRECTION)
}

/// A routed destination with no endpoint: a gateway (the node), an unused
/// address of some weft network, or not weft's at all (masqueraded out of
/// the uplink by `weft_nat_egress`, or handed to the stack).
#[inline(always)]
fn not_an_endpoint(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Verdict {
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    let Some(dst_net_id) = network_of_address(dst_ip) else {
        // Outside weft: masquerade (its own program); without it the
        // packet is the stack's, untranslated.
        tail::hand_over(ctx, TAIL_NAT_EGRESS, src);
        return pass_to_stack(ctx, DIRECTION);
    };
    if dst_net_id == SERVICE_NETWORK_ID {
        // A service VIP: load balancing (its own program).
        tail::hand_over(ctx, TAIL_SERVICE, src);
        return Err(drop_here!(ServiceUnknownPort));
    }
    let dst_net = network(dst_net_id).ok_or(drop_here!(NoSuchEndpoint))?;
    if dst_ip == dst_net.gateway_ip_be {
        if dns::unserved_query(ctx, ip) {
            return Err(drop_here!(DnsServerDown));
        }
        return pass_to_stack(ctx, DIRECTION);
    }
    if dst_net_id != src.network_id && !networks_linked(src.network_id, dst_net_id) {
        return Err(drop_here!(NetworkIsolated));
    }
    // Maybe on another node: VXLAN encapsulation (its own program); without
    // it nobody has the address.
    tail::hand_over(ctx, TAIL_OVERLAY_ENCAP, src);
    Err(drop_here!(NoSuchEndpoint))
}

/// Broadcast or multicast: copies to the network's other endpoints if the
/// network floods (at most `MAX_FLOOD`), otherwise a counted drop.
#[inline(always)]
fn flood(ctx: &TcContext, src: &EndpointInfo) -> Verdict {
    let net = network(src.network_id).ok_or(drop_here!(UnknownEndpoint))?;
    if net.flags & NET_FLAG_FLOOD == 0 {
        return Err(drop_here!(BroadcastNotFlooded));
    }
    let list = flood_list(src.network_id).ok_or(drop_here!(BroadcastNotFlooded))?;
    let len = ctx.len();
    // The verifier needs a constant trip count: iterate the fixed-size array
    // and stop at `count`.
    for i in 0..MAX_FLOOD {
        if i as u32 >= list.count {
            break;
        }
        let Some(member) = list.members.get(i) else {
            break;
        };
        if member.ifindex != src.ifindex && ctx.clone_redirect(member.ifindex, 0).is_ok() {
            count_endpoint_rx(member.stats_slot, len);
        }
    }
    count_forward(ctx, Forward::Flooded, DIRECTION);
    Ok(TC_ACT_STOLEN)
}

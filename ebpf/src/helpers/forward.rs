//! IPv4 forwarding between endpoints: bridging within a network by
//! destination MAC, routing between connected networks, and flooding.
//!
//! Delivery uses `bpf_redirect_peer`, which moves the packet straight into
//! the destination container's namespace without a trip through the host
//! backlog (kernel 5.10, commit 9aa1206e8f48).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_STOLEN},
    programs::TcContext,
};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{
        EndpointInfo, FdbEntry, MAX_FLOOD, NET_FLAG_FLOOD, TAIL_NAT_EGRESS, TAIL_OVERLAY_ENCAP,
    },
    reason::Forward,
};

use super::{
    access::{load, redirect_peer, store},
    csum,
    maps::{
        endpoint_by_ip, fdb_lookup, flood_list, network, network_of_address, networks_linked,
        tail_call,
    },
    parse::{ETH_DST_OFF, ETH_SRC_OFF, IP_CSUM_OFF, IP_MIN_LEN, IP_OFF, IP_TTL_OFF, is_group_mac},
    verdict::{Verdict, count_endpoint_rx, count_forward},
};

/// Forwards an IPv4 packet sent by endpoint `src` to `dst_mac`.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, src: &EndpointInfo, dst_mac: [u8; 6]) -> Verdict {
    let ip: Ipv4Hdr = load(ctx, IP_OFF).ok_or(drop_here!(TruncatedIpv4))?;
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || header_len < IP_MIN_LEN {
        return Err(drop_here!(BadIpv4Header));
    }
    let frame_len = ctx.len() as usize;
    if IP_OFF + header_len > frame_len {
        return Err(drop_here!(BadIpv4Header));
    }
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if total_len < header_len || IP_OFF + total_len > frame_len {
        return Err(drop_here!(BadIpv4Length));
    }
    if u32::from_ne_bytes(ip.src_addr) != src.ip_be {
        return Err(drop_here!(SpoofedSource));
    }

    if is_group_mac(&dst_mac) {
        return flood(ctx, src);
    }
    if dst_mac == src.gateway_mac {
        route(ctx, src, &ip)
    } else {
        bridge(ctx, src, dst_mac)
    }
}

/// Same network: deliver the unchanged frame to the endpoint owning `dst_mac`.
#[inline(always)]
fn bridge(ctx: &TcContext, src: &EndpointInfo, dst_mac: [u8; 6]) -> Verdict {
    let dst = fdb_lookup(src.network_id, dst_mac).ok_or(drop_here!(UnknownDestinationMac))?;
    deliver(ctx, dst, Forward::Bridged)
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

    store(ctx, ETH_DST_OFF, dst.mac).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, ETH_SRC_OFF, dst.gateway_mac).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_TTL_OFF, ip.ttl - 1).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, csum::after_ttl_decrement(ip.check))
        .ok_or(drop_here!(TruncatedIpv4))?;
    let target = FdbEntry {
        ifindex: dst.ifindex,
        stats_slot: dst.stats_slot,
    };
    deliver(ctx, target, Forward::Routed)
}

/// A routed destination with no endpoint: a gateway (the node), an unused
/// address of some weft network, or not weft's at all (masqueraded out of
/// the uplink by `weft_nat_egress`, or handed to the stack).
#[inline(always)]
fn not_an_endpoint(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Verdict {
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    let Some(dst_net_id) = network_of_address(dst_ip) else {
        // Outside weft: masquerade (its own program, by tail call); if it
        // is not installed, the stack gets the packet as before.
        tail_call(ctx, TAIL_NAT_EGRESS);
        return pass_to_stack(ctx);
    };
    let dst_net = network(dst_net_id).ok_or(drop_here!(NoSuchEndpoint))?;
    if dst_ip == dst_net.gateway_ip_be {
        return pass_to_stack(ctx);
    }
    if dst_net_id != src.network_id && !networks_linked(src.network_id, dst_net_id) {
        return Err(drop_here!(NetworkIsolated));
    }
    // Maybe on another node: VXLAN encapsulation (its own program, by tail
    // call); if it is not installed, nobody has the address.
    tail_call(ctx, TAIL_OVERLAY_ENCAP);
    Err(drop_here!(NoSuchEndpoint))
}

#[inline(always)]
fn pass_to_stack(ctx: &TcContext) -> Verdict {
    count_forward(ctx, Forward::PassedToStack);
    Ok(TC_ACT_OK)
}

#[inline(always)]
fn deliver(ctx: &TcContext, dst: FdbEntry, kind: Forward) -> Verdict {
    let action = redirect_peer(dst.ifindex);
    if action != i64::from(TC_ACT_REDIRECT) {
        return Err(drop_here!(RedirectFailed));
    }
    count_endpoint_rx(dst.stats_slot, ctx.len());
    count_forward(ctx, kind);
    Ok(TC_ACT_REDIRECT)
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
    count_forward(ctx, Forward::Flooded);
    Ok(TC_ACT_STOLEN)
}

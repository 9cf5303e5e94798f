//! TC ingress on the node's uplink NIC: replies to masqueraded connections
//! are translated back and delivered into their containers
//! (`bpf_redirect_peer`); everything else is the node's own traffic and
//! goes to its stack untouched (`TC_ACT_OK`). The uplink is also the
//! overlay's underlay: VXLAN to the node's address is checked and, in bpf
//! mode, decapsulated and delivered here (`decap`).

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use network_types::ip::Ipv4Hdr;
use weft_common::{maps::DIR_FROM_UPLINK, reason::Forward};

use crate::helpers::{
    access::load,
    decap,
    maps::node_config,
    nat,
    parse::{ETH_P_IP, ETH_PROTO_OFF, IP_MIN_LEN, IP_OFF},
    verdict::{Verdict, count_forward_in, drop_packet},
};

#[classifier]
pub fn weft_from_uplink(ctx: TcContext) -> i32 {
    match try_from_uplink(&ctx) {
        Ok(action) => action,
        Err(dropped) => drop_packet(&ctx, dropped, weft_common::events::PROGRAM_FROM_UPLINK),
    }
}

#[inline(always)]
fn try_from_uplink(ctx: &TcContext) -> Verdict {
    let Some(node_ip_be) = node_config().map(|node| node.node_ip_be) else {
        return pass_to_stack(ctx);
    };
    let Some(ip) = ipv4_header(ctx) else {
        return pass_to_stack(ctx);
    };
    if u32::from_ne_bytes(ip.dst_addr) != node_ip_be {
        return pass_to_stack(ctx);
    }
    if decap::is_vxlan(ctx, &ip) {
        return decap::from_underlay(ctx, &ip);
    }
    nat::ingress(ctx, &ip)
}

#[inline(always)]
fn pass_to_stack(ctx: &TcContext) -> Verdict {
    count_forward_in(ctx, Forward::PassedToStack, DIR_FROM_UPLINK);
    Ok(TC_ACT_OK)
}

/// The IPv4 header of a well-formed IPv4 packet; anything else (other
/// ethertypes, malformed headers) is for the stack to judge.
#[inline(always)]
fn ipv4_header(ctx: &TcContext) -> Option<Ipv4Hdr> {
    let proto: [u8; 2] = load(ctx, ETH_PROTO_OFF)?;
    if u16::from_be_bytes(proto) != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Hdr = load(ctx, IP_OFF)?;
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    let frame_len = ctx.len() as usize;
    if ip.vihl >> 4 != 4
        || header_len < IP_MIN_LEN
        || total_len < header_len
        || IP_OFF + total_len > frame_len
    {
        return None;
    }
    Some(ip)
}

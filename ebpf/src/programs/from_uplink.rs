//! TC ingress on the node's uplink NIC: replies to masqueraded connections
//! are translated back and delivered into their containers
//! (`bpf_redirect_peer`); everything else is the node's own traffic and
//! goes to its stack untouched (`TC_ACT_OK`). The uplink is also the
//! overlay's underlay: VXLAN to the node's address is checked and, in bpf
//! mode, decapsulated and delivered here (`decap`).

use aya_ebpf::{macros::classifier, programs::TcContext};
use network_types::ip::Ipv4Hdr;
use weft_common::events::PROGRAM_FROM_UPLINK;

use crate::helpers::{
    access::load,
    decap,
    deliver::pass_to_stack,
    direction::Direction,
    maps::node_config,
    nat,
    parse::{ETH_P_IP, ETH_PROTO_OFF, IP_OFF, ipv4_at, is_vxlan},
    verdict::{Verdict, drop_packet},
};

const DIRECTION: Direction = Direction::FromUplink;

#[classifier]
pub fn weft_from_uplink(ctx: TcContext) -> i32 {
    match try_from_uplink(&ctx) {
        Ok(action) => action,
        Err(dropped) => drop_packet(&ctx, dropped, PROGRAM_FROM_UPLINK, DIRECTION),
    }
}

#[inline(always)]
fn try_from_uplink(ctx: &TcContext) -> Verdict {
    let Some(node_ip_be) = node_config().map(|node| node.node_ip_be) else {
        return pass_to_stack(ctx, DIRECTION);
    };
    let Some((ip, header_len)) = ipv4_header(ctx) else {
        return pass_to_stack(ctx, DIRECTION);
    };
    if u32::from_ne_bytes(ip.dst_addr) != node_ip_be {
        return pass_to_stack(ctx, DIRECTION);
    }
    if is_vxlan(ctx, &ip, header_len) {
        return decap::from_underlay(ctx, &ip);
    }
    nat::ingress(ctx, &ip)
}

/// The IPv4 header of a well-formed IPv4 packet and its length; anything
/// else (other ethertypes, malformed headers) is for the stack to judge.
#[inline(always)]
fn ipv4_header(ctx: &TcContext) -> Option<(Ipv4Hdr, usize)> {
    let proto: [u8; 2] = load(ctx, ETH_PROTO_OFF)?;
    if u16::from_be_bytes(proto) != ETH_P_IP {
        return None;
    }
    ipv4_at(ctx, IP_OFF).ok()
}

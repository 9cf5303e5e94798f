//! Where a packet leaves the program for, each with its forward kind
//! counted under the packet's direction: into a container on this node
//! (`bpf_redirect_peer`), to the node's own stack (`TC_ACT_OK`), out of a
//! device (`bpf_redirect`) or to a next hop the FIB gave
//! (`bpf_redirect_neigh`).
//!
//! `bpf_redirect_peer` moves the packet straight into the destination
//! container's namespace without a trip through the host backlog (kernel
//! 5.10, commit 9aa1206e8f48).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT},
    programs::TcContext,
};
use weft_common::{maps::EndpointInfo, reason::Forward};

use super::{
    access::{FibHop, redirect_egress, redirect_neigh, redirect_peer, store},
    direction::Direction,
    parse::{ETH_DST_OFF, ETH_SRC_OFF},
    verdict::{Verdict, count_endpoint_rx, count_forward},
};

/// Delivers the frame as it is into the container whose host-side veth is
/// `ifindex` (counter slot `stats_slot`).
#[inline(always)]
pub fn deliver(
    ctx: &TcContext,
    ifindex: u32,
    stats_slot: u32,
    kind: Forward,
    direction: Direction,
) -> Verdict {
    if redirect_peer(ifindex) != i64::from(TC_ACT_REDIRECT) {
        return Err(drop_here!(RedirectFailed));
    }
    count_endpoint_rx(stats_slot, ctx.len());
    count_forward(ctx, kind, direction);
    Ok(TC_ACT_REDIRECT)
}

/// Delivers the frame into endpoint `dst` with the Ethernet header its
/// gateway would write (routed, translated or decapsulated packets).
#[inline(always)]
pub fn deliver_as_gateway(
    ctx: &TcContext,
    dst: &EndpointInfo,
    kind: Forward,
    direction: Direction,
) -> Verdict {
    store(ctx, ETH_DST_OFF, dst.mac).ok_or(drop_here!(TruncatedEthernet))?;
    store(ctx, ETH_SRC_OFF, dst.gateway_mac).ok_or(drop_here!(TruncatedEthernet))?;
    deliver(ctx, dst.ifindex, dst.stats_slot, kind, direction)
}

/// Leaves the packet to the node's own stack, untouched.
#[inline(always)]
pub fn pass_to_stack(ctx: &TcContext, direction: Direction) -> Verdict {
    count_forward(ctx, Forward::PassedToStack, direction);
    Ok(TC_ACT_OK)
}

/// Transmits the frame as it is out of device `ifindex` (e.g. back to its
/// sender, or into the vxlan device).
#[inline(always)]
pub fn send_out_of(ctx: &TcContext, ifindex: u32, kind: Forward, direction: Direction) -> Verdict {
    if redirect_egress(ifindex) != i64::from(TC_ACT_REDIRECT) {
        return Err(drop_here!(RedirectFailed));
    }
    count_forward(ctx, kind, direction);
    Ok(TC_ACT_REDIRECT)
}

/// Transmits the packet to the FIB's next hop `hop`; the kernel resolves
/// the neighbour and writes the Ethernet header.
#[inline(always)]
pub fn send_to_hop(ctx: &TcContext, hop: &FibHop, kind: Forward, direction: Direction) -> Verdict {
    if redirect_neigh(hop) != i64::from(TC_ACT_REDIRECT) {
        return Err(drop_here!(RedirectFailed));
    }
    count_forward(ctx, kind, direction);
    Ok(TC_ACT_REDIRECT)
}

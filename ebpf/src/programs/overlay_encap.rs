//! VXLAN encapsulation as its own program, entered by tail call from
//! `weft_from_container` for destinations in a weft network that have no
//! endpoint on this node: the overlay's stack and registers stay off the
//! bridging/routing fast path, as masquerade's do.

use aya_ebpf::{macros::classifier, programs::TcContext};
use network_types::ip::Ipv4Hdr;
use weft_common::events::PROGRAM_OVERLAY_ENCAP;

use crate::helpers::{
    access::load,
    direction::Direction,
    encap, nat,
    parse::IP_OFF,
    tail,
    verdict::{Verdict, drop_packet},
};

#[classifier]
pub fn weft_overlay_encap(ctx: TcContext) -> i32 {
    match try_overlay_encap(&ctx) {
        Ok(action) => action,
        Err(dropped) => drop_packet(
            &ctx,
            dropped,
            PROGRAM_OVERLAY_ENCAP,
            Direction::FromContainer,
        ),
    }
}

/// `weft_from_container` validated the frame, counted it, checked that
/// the sender's network may reach the destination's and handed over the
/// sender (`tail::sender`). A reply to a published port's client on
/// another node is translated first (`nat::reverse_dnat_to_overlay`).
#[inline(always)]
fn try_overlay_encap(ctx: &TcContext) -> Verdict {
    let mut ip: Ipv4Hdr = load(ctx, IP_OFF).ok_or(drop_here!(TruncatedIpv4))?;
    let src = tail::sender(ctx, &ip);
    if nat::reverse_dnat_to_overlay(ctx, &src, &ip)? {
        ip = load(ctx, IP_OFF).ok_or(drop_here!(TruncatedIpv4))?;
    }
    encap::encapsulate(ctx, &src, &ip)
}

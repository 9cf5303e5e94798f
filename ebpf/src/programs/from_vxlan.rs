//! TC ingress on the collect-metadata vxlan device (tunnel mode): the
//! kernel decapsulated the frame and attached the outer headers as tunnel
//! metadata; the VNI picks the network, and the frame is delivered into its
//! container only if that container is in the VNI's network.

use aya_ebpf::{macros::classifier, programs::TcContext};
use weft_common::events::PROGRAM_FROM_VXLAN;

use crate::helpers::{
    access::{load, tunnel_vni},
    decap,
    direction::Direction,
    maps::{network_of_vni, overlay_config},
    parse::{ETH_P_IP, ETH_PROTO_OFF, IP_OFF},
    verdict::{Verdict, drop_packet},
};

#[classifier]
pub fn weft_from_vxlan(ctx: TcContext) -> i32 {
    match try_from_vxlan(&ctx) {
        Ok(action) => action,
        // Decapsulated traffic came over the underlay.
        Err(dropped) => drop_packet(&ctx, dropped, PROGRAM_FROM_VXLAN, Direction::FromUplink),
    }
}

#[inline(always)]
fn try_from_vxlan(ctx: &TcContext) -> Verdict {
    let vni = tunnel_vni(ctx).ok_or(drop_here!(VxlanUnknownVni))?;
    let network_id = network_of_vni(vni).ok_or(drop_here!(VxlanUnknownVni))?;
    let proto: [u8; 2] = load(ctx, ETH_PROTO_OFF).ok_or(drop_here!(VxlanTruncated))?;
    if u16::from_be_bytes(proto) != ETH_P_IP {
        return Err(drop_here!(VxlanBadInner));
    }
    let target = decap::inner_target(ctx, IP_OFF, network_id)?;
    let mtu = overlay_config().map_or(0, |o| o.mtu);
    decap::into_container(ctx, &target, mtu)
}

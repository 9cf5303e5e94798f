//! XDP on the underlay NIC: the two refusals that need no skb, made before
//! the kernel builds one: VXLAN to another address than this node's
//! underlay address, and VXLAN with a VNI no network of this node has. Both
//! are counted in the shared drop counters (direction `from_uplink`, as the
//! TC programs on the underlay count); drop events and everything else
//! (malformed outer headers, delivery) are left to `weft_from_uplink`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    overlay::{VXLAN_LEN, vxlan_vni},
    reason::Drop,
};

use crate::helpers::{
    access::load,
    direction::Direction,
    maps::{network_of_vni, overlay_config},
    parse::{ETH_P_IP, ETH_PROTO_OFF, IP_OFF, UDP_LEN, ipv4_header_len, is_vxlan},
    verdict::count_drop_xdp,
};

#[xdp]
pub fn weft_xdp_underlay(ctx: XdpContext) -> u32 {
    match early_drop(&ctx) {
        Some(reason) => {
            count_drop_xdp(
                reason,
                (ctx.data_end() - ctx.data()) as u32,
                Direction::FromUplink,
            );
            XDP_DROP
        }
        None => XDP_PASS,
    }
}

/// Why the frame must go now, if it must.
#[inline(always)]
fn early_drop(ctx: &XdpContext) -> Option<Drop> {
    let overlay = overlay_config()?;
    let proto: [u8; 2] = load(ctx, ETH_PROTO_OFF)?;
    if u16::from_be_bytes(proto) != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Hdr = load(ctx, IP_OFF)?;
    // Only the header is checked: a packet with a bad total length is
    // weft_from_uplink's to judge (and the node's stack's).
    let header_len = ipv4_header_len(&ip)?;
    if !is_vxlan(ctx, &ip, header_len) {
        return None;
    }
    if u32::from_ne_bytes(ip.dst_addr) != overlay.underlay_ip_be {
        return Some(Drop::VxlanNotForNode);
    }
    let vxlan: [u8; VXLAN_LEN] = load(ctx, IP_OFF + header_len + UDP_LEN)?;
    // Malformed (no I flag): weft_from_uplink drops it with its reason and
    // event.
    let vni = vxlan_vni(&vxlan)?;
    match network_of_vni(vni) {
        Some(_) => None,
        None => Some(Drop::VxlanUnknownVni),
    }
}

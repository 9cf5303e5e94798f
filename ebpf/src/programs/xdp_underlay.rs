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
    maps::IPPROTO_UDP,
    overlay::{VXLAN_FLAG_VNI, VXLAN_LEN, VXLAN_PORT},
    reason::Drop,
};

use crate::helpers::{
    access::xdp_load,
    maps::{network_of_vni, overlay_config},
    parse::{ETH_P_IP, ETH_PROTO_OFF, IP_MIN_LEN, IP_OFF, UDP_LEN},
    verdict::count_drop_xdp,
};

#[xdp]
pub fn weft_xdp_underlay(ctx: XdpContext) -> u32 {
    match early_drop(&ctx) {
        Some(reason) => {
            count_drop_xdp(reason, (ctx.data_end() - ctx.data()) as u32);
            XDP_DROP
        }
        None => XDP_PASS,
    }
}

/// Why the frame must go now, if it must.
#[inline(always)]
fn early_drop(ctx: &XdpContext) -> Option<Drop> {
    let overlay = overlay_config()?;
    let proto: [u8; 2] = xdp_load(ctx, ETH_PROTO_OFF)?;
    if u16::from_be_bytes(proto) != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Hdr = xdp_load(ctx, IP_OFF)?;
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || header_len < IP_MIN_LEN || ip.proto != IPPROTO_UDP {
        return None;
    }
    let udp_off = IP_OFF + header_len;
    let dport: [u8; 2] = xdp_load(ctx, udp_off + 2)?;
    if u16::from_be_bytes(dport) != VXLAN_PORT {
        return None;
    }
    if u32::from_ne_bytes(ip.dst_addr) != overlay.underlay_ip_be {
        return Some(Drop::VxlanNotForNode);
    }
    let vxlan: [u8; VXLAN_LEN] = xdp_load(ctx, udp_off + UDP_LEN)?;
    if vxlan[0] & VXLAN_FLAG_VNI == 0 {
        // Malformed: weft_from_uplink drops it with its reason and event.
        return None;
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    match network_of_vni(vni) {
        Some(_) => None,
        None => Some(Drop::VxlanUnknownVni),
    }
}

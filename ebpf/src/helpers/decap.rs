//! VXLAN arriving at this node: outer headers checked (VNI known, UDP
//! length, I flag), then either left to the kernel's vxlan device (tunnel
//! mode) or stripped here with `bpf_skb_adjust_room` (bpf mode); the inner
//! IPv4 packet is delivered into its container with `bpf_redirect_peer`,
//! only if that container is in the VNI's network.

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_DECAP_L3_IPV4, TC_ACT_OK, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    programs::TcContext,
};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{ENCAP_BPF, EndpointInfo},
    overlay::{VXLAN_LEN, vxlan_vni},
    reason::Forward,
};

use super::{
    access::{load, pull},
    deliver::deliver_as_gateway,
    direction::Direction,
    maps::{endpoint_by_ip, network_of_vni, overlay_config},
    mtu,
    parse::{
        BadIpv4, ETH_LEN, ETH_P_IP, ETH_PROTO_OFF, IP_MIN_LEN, IP_OFF, UDP_LEN, header_len, ipv4_at,
    },
    service_reply,
    verdict::{Dropped, Verdict, count_forward},
};

/// Decapsulated traffic comes from the underlay.
const DIRECTION: Direction = Direction::FromUplink;

/// VXLAN to this node's underlay address, on the underlay's TC ingress.
/// `ip` is the validated outer IPv4 header.
#[inline(always)]
pub fn from_underlay(ctx: &TcContext, ip: &Ipv4Hdr) -> Verdict {
    let Some(overlay) = overlay_config() else {
        // No overlay here: some other VXLAN user of the node's.
        return Ok(TC_ACT_OK);
    };
    let header_len = header_len(ip);
    // Exactly what is read here: outer Ethernet, IPv4, UDP, VXLAN, inner
    // Ethernet and the inner IPv4 fixed header.
    pull(
        ctx,
        ETH_LEN + header_len + UDP_LEN + VXLAN_LEN + ETH_LEN + IP_MIN_LEN,
    );
    let ip_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if ip_len < header_len + UDP_LEN + VXLAN_LEN + ETH_LEN {
        return Err(drop_here!(VxlanTruncated));
    }
    let udp_off = IP_OFF + header_len;
    let udp_len: [u8; 2] = load(ctx, udp_off + 4).ok_or(drop_here!(VxlanTruncated))?;
    if usize::from(u16::from_be_bytes(udp_len)) != ip_len - header_len {
        return Err(drop_here!(VxlanBadUdpLength));
    }
    let vxlan_off = udp_off + UDP_LEN;
    let vxlan: [u8; VXLAN_LEN] = load(ctx, vxlan_off).ok_or(drop_here!(VxlanTruncated))?;
    let vni = vxlan_vni(&vxlan).ok_or(drop_here!(VxlanBadFlags))?;
    let network_id = network_of_vni(vni).ok_or(drop_here!(VxlanUnknownVni))?;
    let inner_eth_off = vxlan_off + VXLAN_LEN;
    let inner_proto: [u8; 2] =
        load(ctx, inner_eth_off + ETH_PROTO_OFF).ok_or(drop_here!(VxlanTruncated))?;
    if u16::from_be_bytes(inner_proto) != ETH_P_IP {
        return Err(drop_here!(VxlanBadInner));
    }
    if overlay.mode != ENCAP_BPF {
        // Tunnel mode: the vxlan device decapsulates; weft_from_vxlan
        // delivers.
        count_forward(ctx, Forward::VxlanToKernel, DIRECTION);
        return Ok(TC_ACT_OK);
    }
    // Everything that can refuse the packet is checked before the outer
    // headers go: a dropped packet leaves as it came.
    let target = inner_target(ctx, inner_eth_off + ETH_LEN, network_id)?;
    // Keep the outer Ethernet header, drop everything up to the inner IPv4
    // header.
    let strip = (header_len + UDP_LEN + VXLAN_LEN + ETH_LEN) as i32;
    ctx.adjust_room(
        -strip,
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
    )
    .map_err(|_| drop_here!(EncapFailed))?;
    into_container(ctx, &target, overlay.mtu)
}

/// The endpoint of network `network_id` that the inner IPv4 packet at
/// `ip_off` is for.
#[inline(always)]
pub fn inner_target(
    ctx: &TcContext,
    ip_off: usize,
    network_id: u32,
) -> Result<EndpointInfo, Dropped> {
    let (ip, _) = ipv4_at(ctx, ip_off).map_err(|bad| match bad {
        BadIpv4::Truncated => drop_here!(VxlanTruncated),
        _ => drop_here!(VxlanBadInner),
    })?;
    let dst = endpoint_by_ip(u32::from_ne_bytes(ip.dst_addr)).ok_or(drop_here!(NoSuchEndpoint))?;
    if dst.network_id != network_id {
        return Err(drop_here!(VxlanWrongNetwork));
    }
    Ok(dst)
}

/// Delivers a decapsulated frame (Ethernet + IPv4 at offset 0) into the
/// container `dst` ([`inner_target`]), with its network's MACs; a TCP
/// SYN's MSS is clamped to this node's overlay MTU `mtu` (0: unknown) on
/// the way, for senders that did not clamp (e.g. a kernel VXLAN node),
/// and a remote service backend's reply gets the VIP back
/// (`service_reply`).
#[inline(always)]
pub fn into_container(ctx: &TcContext, dst: &EndpointInfo, mtu: u32) -> Verdict {
    service_reply::to_client(ctx)?;
    if mtu != 0
        && let Some(ip) = load::<Ipv4Hdr>(ctx, IP_OFF)
    {
        mtu::clamp_mss(ctx, IP_OFF, &ip, mtu::max_mss(mtu));
    }
    deliver_as_gateway(ctx, dst, Forward::DecapDelivered, DIRECTION)
}

//! VXLAN arriving at this node: outer headers checked (VNI known, UDP
//! length, I flag), then either left to the kernel's vxlan device (tunnel
//! mode) or stripped here with `bpf_skb_adjust_room` (bpf mode); the inner
//! IPv4 packet is delivered into its container with `bpf_redirect_peer`,
//! only if that container is in the VNI's network.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, TC_ACT_OK, TC_ACT_REDIRECT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    programs::TcContext,
};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{DIR_FROM_UPLINK, ENCAP_BPF, EndpointInfo, IPPROTO_UDP},
    overlay::{VXLAN_FLAG_VNI, VXLAN_LEN, VXLAN_PORT},
    reason::Forward,
};

use super::{
    access::{load, redirect_peer, store},
    maps::{endpoint_by_ip, network_of_vni, overlay_config},
    mtu,
    parse::{
        ETH_DST_OFF, ETH_LEN, ETH_P_IP, ETH_PROTO_OFF, ETH_SRC_OFF, IP_MIN_LEN, IP_OFF, UDP_LEN,
    },
    verdict::{Dropped, Verdict, count_endpoint_rx, count_forward_in},
};

/// Whether `ip` (a valid IPv4 header at `IP_OFF`) carries UDP to the VXLAN
/// port.
#[inline(always)]
pub fn is_vxlan(ctx: &TcContext, ip: &Ipv4Hdr) -> bool {
    if ip.proto != IPPROTO_UDP {
        return false;
    }
    let udp_off = IP_OFF + usize::from(ip.vihl & 0x0f) * 4;
    // Two-byte loads: see nat.rs on variable offsets.
    let dport: Option<[u8; 2]> = load(ctx, udp_off + 2);
    dport.is_some_and(|p| u16::from_be_bytes(p) == VXLAN_PORT)
}

/// VXLAN to this node's underlay address, on the underlay's TC ingress.
/// `ip` is the validated outer IPv4 header.
#[inline(always)]
pub fn from_underlay(ctx: &TcContext, ip: &Ipv4Hdr) -> Verdict {
    let Some(overlay) = overlay_config() else {
        // No overlay here: some other VXLAN user of the node's.
        return Ok(TC_ACT_OK);
    };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    make_headers_linear(ctx, header_len);
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
    if vxlan[0] & VXLAN_FLAG_VNI == 0 {
        return Err(drop_here!(VxlanBadFlags));
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
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
        count_forward_in(ctx, Forward::VxlanToKernel, DIR_FROM_UPLINK);
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
    deliver(ctx, &target, overlay.mtu)
}

/// The endpoint of network `network_id` that the inner IPv4 packet at
/// `ip_off` is for.
#[inline(always)]
pub fn inner_target(
    ctx: &TcContext,
    ip_off: usize,
    network_id: u32,
) -> Result<EndpointInfo, Dropped> {
    let ip: Ipv4Hdr = load(ctx, ip_off).ok_or(drop_here!(VxlanTruncated))?;
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if ip.vihl >> 4 != 4
        || header_len < IP_MIN_LEN
        || total_len < header_len
        || ip_off + total_len > ctx.len() as usize
    {
        return Err(drop_here!(VxlanBadInner));
    }
    let dst = endpoint_by_ip(u32::from_ne_bytes(ip.dst_addr)).ok_or(drop_here!(NoSuchEndpoint))?;
    if dst.network_id != network_id {
        return Err(drop_here!(VxlanWrongNetwork));
    }
    Ok(dst)
}

/// Delivers a decapsulated frame (Ethernet + IPv4 at offset 0) into the
/// container `dst` ([`inner_target`]), with its network's MACs; a TCP
/// SYN's MSS is clamped to this node's overlay MTU `mtu` (0: unknown) on
/// the way, for senders that did not clamp (e.g. a kernel VXLAN node).
#[inline(always)]
pub fn deliver(ctx: &TcContext, dst: &EndpointInfo, mtu: u32) -> Verdict {
    if mtu != 0
        && let Some(ip) = load::<Ipv4Hdr>(ctx, IP_OFF)
    {
        mtu::clamp_mss(ctx, IP_OFF, &ip, mtu::max_mss(mtu));
    }
    store(ctx, ETH_DST_OFF, dst.mac).ok_or(drop_here!(VxlanTruncated))?;
    store(ctx, ETH_SRC_OFF, dst.gateway_mac).ok_or(drop_here!(VxlanTruncated))?;
    if redirect_peer(dst.ifindex) != i64::from(TC_ACT_REDIRECT) {
        return Err(drop_here!(RedirectFailed));
    }
    count_endpoint_rx(dst.stats_slot, ctx.len());
    count_forward_in(ctx, Forward::DecapDelivered, DIR_FROM_UPLINK);
    Ok(TC_ACT_REDIRECT)
}

/// Outer and inner headers may sit in paged data: pull exactly what is
/// read here (outer Ethernet, IPv4 with `outer_ip_len` bytes, UDP, VXLAN,
/// inner Ethernet and the inner IPv4 fixed header) into the linear area,
/// no more (a pull makes the skb writable, which may copy its head). A
/// failed pull leaves the packet as it was; the loads then see it as
/// truncated.
#[inline(always)]
fn make_headers_linear(ctx: &TcContext, outer_ip_len: usize) {
    let need = (ETH_LEN + outer_ip_len + UDP_LEN + VXLAN_LEN + ETH_LEN + IP_MIN_LEN) as u32;
    let want = if ctx.len() < need { ctx.len() } else { need };
    if ctx.data_end() - ctx.data() < want as usize {
        let _ = ctx.pull_data(want);
    }
}

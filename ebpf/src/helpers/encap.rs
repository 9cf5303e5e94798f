//! VXLAN encapsulation toward the node that owns the destination's pod
//! CIDR, in one of two ways (`OverlayConfig::mode`):
//!
//! - tunnel: `bpf_skb_set_tunnel_key` and a redirect to the
//!   collect-metadata vxlan device, which adds the outer headers (and gets
//!   the kernel's UDP tunnel offloads);
//! - bpf: `bpf_skb_adjust_room` with the encapsulation flags (so a GSO skb
//!   is segmented as `SKB_GSO_UDP_TUNNEL`), outer IPv4/UDP/VXLAN written
//!   here, next hop from `bpf_fib_lookup`, sent with `bpf_redirect_neigh`.
//!
//! The inner frame carries the remote VTEP MAC as destination and this
//! node's VTEP MAC as source, as a Flannel-style kernel vxlan peer expects.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    programs::TcContext,
};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{
        ENCAP_BPF, ENCAP_TUNNEL, EndpointInfo, IPPROTO_TCP, IPPROTO_UDP, OverlayConfig,
        OverlayRoute,
    },
    overlay::{OUTER_TTL, VXLAN_OVERHEAD, VXLAN_PORT, flow_src_port, vxlan_header},
    reason::Forward,
};

use super::{
    access::{fib_lookup, ifindex, load, set_tunnel_key, store},
    deliver::{send_out_of, send_to_hop},
    direction::Direction,
    ipv4::{self, Originated},
    maps::{overlay_config, overlay_route},
    mtu,
    parse::{
        ETH_DST_OFF, ETH_LEN, ETH_P_IP, ETH_SRC_OFF, IP_DF, IP_FRAG_OFFSET_MASK, IP_MIN_LEN,
        IP_OFF, header_len,
    },
    verdict::Verdict,
};

/// Outer header offsets in a frame encapsulated by the bpf mode.
const OUTER_IP_OFF: usize = ETH_LEN;
const OUTER_UDP_OFF: usize = OUTER_IP_OFF + IP_MIN_LEN;
const VXLAN_OFF: usize = OUTER_UDP_OFF + 8;
const INNER_ETH_OFF: usize = VXLAN_OFF + 8;

/// Encapsulates the IPv4 packet `ip` that endpoint `src` sent to an
/// address of a weft network no local endpoint has.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Verdict {
    let Some(overlay) = overlay_config() else {
        return Err(drop_here!(NoSuchEndpoint));
    };
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    let route = overlay_route(dst_ip).ok_or(drop_here!(OverlayNoRoute))?;
    if route.underlay_ip_be == 0 {
        // This node's own pod CIDR: nobody else has the address either.
        return Err(drop_here!(NoSuchEndpoint));
    }
    // Checked before the TTL changes: an error quotes the packet as sent.
    if let Some(action) = mtu::enforce(ctx, src, ip, overlay.mtu)? {
        return Ok(action);
    }
    if route.network_id != src.network_id {
        // Routed between networks (the link was checked by the caller).
        if ip.ttl <= 1 {
            return Err(drop_here!(TtlExceeded));
        }
        ipv4::decrement_ttl(ctx, ip)?;
    }
    if overlay.mtu != 0 {
        mtu::clamp_mss(ctx, IP_OFF, ip, mtu::max_mss(overlay.mtu));
    }
    match overlay.mode {
        ENCAP_TUNNEL => tunnel(ctx, &overlay, &route),
        ENCAP_BPF => {
            let sport = source_port(ctx, ip);
            in_bpf(ctx, &overlay, &route, sport)
        }
        _ => Err(drop_here!(NoSuchEndpoint)),
    }
}

/// Writes the inner Ethernet addresses at `off`: remote VTEP <- this VTEP.
#[inline(always)]
fn inner_macs(
    ctx: &TcContext,
    off: usize,
    overlay: &OverlayConfig,
    route: &OverlayRoute,
) -> Verdict {
    store(ctx, off + ETH_DST_OFF, route.vtep_mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, off + ETH_SRC_OFF, overlay.vtep_mac).ok_or(drop_here!(EncapFailed))?;
    Ok(0)
}

/// Tunnel mode: metadata for the vxlan device, which encapsulates.
#[inline(always)]
fn tunnel(ctx: &TcContext, overlay: &OverlayConfig, route: &OverlayRoute) -> Verdict {
    inner_macs(ctx, 0, overlay, route)?;
    if set_tunnel_key(
        ctx,
        overlay.underlay_ip_be,
        route.underlay_ip_be,
        route.vni,
        OUTER_TTL,
    ) != 0
    {
        return Err(drop_here!(EncapFailed));
    }
    send_out_of(
        ctx,
        overlay.vxlan_ifindex,
        Forward::EncapTunnel,
        Direction::FromContainer,
    )
}

/// The outer UDP source port: a hash of the inner 5-tuple (ports only for
/// TCP/UDP first fragments that carry them).
#[inline(always)]
fn source_port(ctx: &TcContext, ip: &Ipv4Hdr) -> u16 {
    let has_ports = (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP)
        && u16::from_be_bytes(ip.frags) & IP_FRAG_OFFSET_MASK == 0;
    let l4_off = IP_OFF + header_len(ip);
    let ports: [u8; 4] = if has_ports {
        load(ctx, l4_off).unwrap_or([0; 4])
    } else {
        [0; 4]
    };
    flow_src_port(
        u32::from_ne_bytes(ip.src_addr),
        u32::from_ne_bytes(ip.dst_addr),
        u32::from_ne_bytes(ports),
        ip.proto,
    )
}

/// Bpf mode: outer Ethernet/IPv4/UDP/VXLAN written here, sent to the
/// underlay next hop.
#[inline(always)]
fn in_bpf(ctx: &TcContext, overlay: &OverlayConfig, route: &OverlayRoute, sport: u16) -> Verdict {
    let hop = fib_lookup(
        ctx,
        ifindex(ctx),
        overlay.underlay_ip_be,
        route.underlay_ip_be,
    )
    .ok_or(drop_here!(UnderlayUnreachable))?;
    // The inner IPv4 packet's length; the outer IPv4 packet adds the inner
    // Ethernet header, VXLAN, UDP and itself: VXLAN_OVERHEAD.
    let inner_len = ctx.len() - ETH_LEN as u32;
    // A GSO super-packet may exceed 64 KiB; segmentation rewrites the outer
    // lengths of every segment.
    let ip_total = (inner_len + VXLAN_OVERHEAD).min(0xffff) as u16;
    let flags = u64::from(
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
    ) | encap_l2_len(ETH_LEN as u64);
    ctx.adjust_room(VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| drop_here!(EncapFailed))?;

    // After adjust_room the old pointers are gone: everything below goes
    // through `store`, which re-reads data/data_end.
    let header = ipv4::originate(&Originated {
        tos: 0,
        total_len: ip_total,
        // Don't Fragment only: the overlay never fragments (`mtu` keeps
        // what it carries within the inner MTU).
        frags: IP_DF,
        ttl: OUTER_TTL,
        proto: IPPROTO_UDP,
        src_be: overlay.underlay_ip_be,
        dst_be: route.underlay_ip_be,
    });

    let udp_len = ip_total - IP_MIN_LEN as u16;
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    // udp[6..8]: checksum zero, as the kernel's vxlan default `udpcsum off`.

    // Outer Ethernet: addresses are written by bpf_redirect_neigh.
    store(ctx, ETH_DST_OFF, [0u8; 6]).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_SRC_OFF, [0u8; 6]).ok_or(drop_here!(EncapFailed))?;
    store(ctx, OUTER_IP_OFF, header).ok_or(drop_here!(EncapFailed))?;
    store(ctx, OUTER_UDP_OFF, udp).ok_or(drop_here!(EncapFailed))?;
    store(ctx, VXLAN_OFF, vxlan_header(route.vni)).ok_or(drop_here!(EncapFailed))?;
    inner_macs(ctx, INNER_ETH_OFF, overlay, route)?;
    store(ctx, INNER_ETH_OFF + 12, ETH_P_IP.to_be_bytes()).ok_or(drop_here!(EncapFailed))?;

    send_to_hop(ctx, &hop, Forward::EncapBpf, Direction::FromContainer)
}

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner L2 header's length, which
/// bindgen cannot express (a function-like macro in the UAPI header).
#[inline(always)]
const fn encap_l2_len(len: u64) -> u64 {
    (len & 0xff) << 56
}

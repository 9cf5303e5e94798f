//! Service load balancing, east-west: a container's packet to a VIP and
//! port picks a backend with Maglev (or the client's affinity), is
//! DNATed to it and pinned in conntrack, so the connection stays on its
//! backend whatever the table does later; the backend's replies get the
//! VIP and service port back as their source. A client that is its own
//! backend (hairpin) sees the VIP as its peer in both directions.
//!
//! A new table is written beside the old one and the service entry
//! switched to it in one map update (`WEFT_MAGLEV`), so a packet reads
//! either table whole. Only new connections read the table: established
//! ones, including those to a backend that left or is terminating, keep
//! their conntrack entry until they close.
//!
//! The flow hash leaves the destination address out (it is the VIP) and,
//! with client-IP affinity, the source port too; its seed is fixed, so
//! every node picks the same backend for the same flow.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::{
    events::PROGRAM_SERVICE,
    maps::{
        CT_DIR_ORIGINAL, CT_FLAG_HAIRPIN, CT_FLAG_SERVICE, CtEntry, CtKey, EndpointInfo,
        IPPROTO_ICMP, IPPROTO_TCP, TAIL_OVERLAY_ENCAP,
    },
    reason::Forward,
};

use super::{
    access::{now_ns, store},
    conntrack, csum,
    deliver::deliver_as_gateway,
    direction::Direction::FromContainer,
    events,
    maglev::{count, pick},
    maps::{endpoint_by_ip, service},
    nat::{L4, is_later_fragment, parse_l4, pull_l4, rewrite_l4, rewrite_port},
    parse::{IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, IP_TTL_OFF, TCP_RST},
    tail, tcp_reset,
    unreachable::{self, CODE_PORT_UNREACHABLE},
    verdict::{Dropped, Verdict, drop_packet},
};

/// A container's packet to an address of the service range.
#[inline(always)]
pub fn to_vip(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Verdict {
    if is_later_fragment(ip) {
        return Err(drop_here!(Ipv4Fragment));
    }
    let l4_off = pull_l4(ctx, ip);
    let Some(l4) = parse_l4(ctx, ip, l4_off, FromContainer)? else {
        return Err(drop_here!(ServiceUnknownPort));
    };
    if ip.proto == IPPROTO_ICMP {
        // Services balance TCP and UDP ports; a ping to a VIP has no port.
        return Err(drop_here!(ServiceUnknownPort));
    }
    let vip = u32::from_ne_bytes(ip.dst_addr);
    let key = CtKey::new(ip.proto, src.ip_be, vip, l4.sport, l4.dport);
    let now = now_ns();
    // The service a new connection picked its backend of (0: established).
    let mut picked = 0;
    let entry = match conntrack::hit(&key, l4.tcp_flags, now, ctx.len()) {
        Some(entry) if entry.flags & CT_FLAG_SERVICE != 0 => entry,
        _ => {
            let svc = service(vip, l4.dport, ip.proto).ok_or(drop_here!(ServiceUnknownPort))?;
            let Some(pick) = pick(&svc, &key, now) else {
                count(svc.svc_id, 0);
                return reject(ctx, src, ip, l4_off, &l4, vip);
            };
            count(svc.svc_id, pick.ip_be);
            picked = svc.svc_id;
            conntrack::create_service(&key, src, &pick, l4.tcp_flags, now, ctx.len())?
        }
    };
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    translate(ctx, src, ip, &l4, vip, &entry, picked)
}

/// Rewrites a packet to the VIP on connection `entry`: the destination to
/// the backend (hairpin: the source to the VIP too), TTL - 1; delivers it
/// here or hands it to the overlay. A new connection of service `picked`
/// (0: none) is traced, rewritten, as the backend it was given.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    l4: &L4,
    vip: u32,
    entry: &CtEntry,
    picked: u32,
) -> Verdict {
    let hairpin = entry.flags & CT_FLAG_HAIRPIN != 0;
    let new_src = if hairpin { vip } else { src.ip_be };
    let check = csum::after_u32_change(
        csum::after_u32_change(csum::after_ttl_decrement(ip.check), src.ip_be, new_src),
        vip,
        entry.xlate_ip_be,
    );
    store(ctx, IP_TTL_OFF, ip.ttl - 1).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_SRC_OFF, new_src).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_DST_OFF, entry.xlate_ip_be).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, check).ok_or(drop_here!(TruncatedIpv4))?;
    // Pseudo header: (new_src - src) + (backend - vip). A hairpin's
    // addresses are {client, VIP} before and after, so only the ports
    // change its sum.
    if hairpin {
        rewrite_port(ctx, l4, l4.sport, entry.peer_port_be)?;
    } else {
        rewrite_l4(ctx, l4, ip.proto, vip, entry.xlate_ip_be)?;
    }
    let dport = L4 {
        port_off: l4.other_port_off,
        ..*l4
    };
    rewrite_port(ctx, &dport, l4.dport, entry.xlate_port_be)?;
    if picked != 0 {
        events::maybe_trace_pick(ctx, picked);
    }
    match endpoint_by_ip(entry.xlate_ip_be) {
        Some(dst) => deliver_as_gateway(ctx, &dst, Forward::ServiceDnat, FromContainer),
        None => {
            // A backend on another node: the overlay carries it there.
            tail::hand_over(ctx, TAIL_OVERLAY_ENCAP, src);
            Err(drop_here!(NoSuchEndpoint))
        }
    }
}

/// A packet a service backend sends: on a service connection its source
/// becomes the VIP and service port again (the caller then forwards it as
/// usual, to the client). Returns whether it was translated.
#[inline(always)]
pub fn from_backend(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Result<bool, Dropped> {
    if is_later_fragment(ip) || ip.proto == IPPROTO_ICMP {
        return Ok(false);
    }
    let l4_off = pull_l4(ctx, ip);
    let Some(l4) = parse_l4(ctx, ip, l4_off, FromContainer)? else {
        return Ok(false);
    };
    let key = CtKey::new(
        ip.proto,
        src.ip_be,
        u32::from_ne_bytes(ip.dst_addr),
        l4.sport,
        l4.dport,
    );
    let Some(entry) = conntrack::hit(&key, l4.tcp_flags, now_ns(), ctx.len()).filter(|e| {
        e.flags & (CT_FLAG_SERVICE | CT_FLAG_HAIRPIN) == CT_FLAG_SERVICE
            && e.direction == CT_DIR_ORIGINAL
    }) else {
        return Ok(false);
    };
    let check = csum::after_u32_change(ip.check, src.ip_be, entry.xlate_ip_be);
    store(ctx, IP_SRC_OFF, entry.xlate_ip_be).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, check).ok_or(drop_here!(TruncatedIpv4))?;
    rewrite_l4(ctx, &l4, ip.proto, src.ip_be, entry.xlate_ip_be)?;
    rewrite_port(ctx, &l4, l4.sport, entry.xlate_port_be)?;
    Ok(true)
}

/// A service without backends: the packet is counted as
/// `service_no_backend` (with its drop event) and answered from the VIP,
/// so the client fails at once: TCP with a reset (`ECONNREFUSED` at
/// `connect`, as from a closed port), UDP with an ICMP port unreachable
/// (`ECONNREFUSED` on a connected socket). A reset is only dropped.
#[inline(always)]
fn reject(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    l4_off: usize,
    l4: &L4,
    vip: u32,
) -> Verdict {
    if ip.proto == IPPROTO_TCP && l4.tcp_flags & TCP_RST != 0 {
        return Err(drop_here!(ServiceNoBackend));
    }
    let _ = drop_packet(
        ctx,
        drop_here!(ServiceNoBackend),
        PROGRAM_SERVICE,
        FromContainer,
    );
    if ip.proto == IPPROTO_TCP {
        return tcp_reset::send_back(ctx, src, ip, l4_off, vip, Forward::ServiceRejected);
    }
    unreachable::send_back(
        ctx,
        src,
        ip,
        CODE_PORT_UNREACHABLE,
        0,
        vip,
        Forward::ServiceRejected,
    )
}

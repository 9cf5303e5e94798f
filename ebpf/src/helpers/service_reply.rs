//! Replies of a service backend on another node. The client's node
//! picked the backend, DNATed the connection (`service::to_vip`) and holds
//! its conntrack pair; the backend's node has no entry for it and sends
//! the reply as it is, over the overlay. So the reply gets the VIP and
//! service port back here, on the client's node, after decapsulation and
//! before delivery into the client: the translation `service::from_backend`
//! makes for a backend on this node, on the same backend-side entry.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::maps::{
    CT_DIR_ORIGINAL, CT_FLAG_HAIRPIN, CT_FLAG_SERVICE, CtKey, IPPROTO_ICMP,
    NODE_FLAG_OVERLAY_SERVICES,
};

use super::{
    access::{load, now_ns, store},
    conntrack, csum,
    direction::Direction::FromContainer,
    maps::node_config,
    nat::{is_later_fragment, parse_l4, pull_l4, rewrite_l4, rewrite_port},
    parse::{IP_CSUM_OFF, IP_OFF, IP_SRC_OFF},
    verdict::Dropped,
};

/// Translates a decapsulated packet (IPv4 at `IP_OFF`) that is a remote
/// backend's reply on a service connection of this node's: its source
/// becomes the VIP and service port. Anything else is left as it is.
/// Only a node with a remote backend pays for the lookup.
#[inline(always)]
pub fn to_client(ctx: &TcContext) -> Result<(), Dropped> {
    if node_config().is_none_or(|n| n.flags & NODE_FLAG_OVERLAY_SERVICES == 0) {
        return Ok(());
    }
    let Some(ip) = load::<Ipv4Hdr>(ctx, IP_OFF) else {
        return Ok(());
    };
    if is_later_fragment(&ip) || ip.proto == IPPROTO_ICMP {
        return Ok(());
    }
    let l4_off = pull_l4(ctx, &ip);
    // Parsed as the backend's own packet: the source port is rewritten.
    let Some(l4) = parse_l4(ctx, &ip, l4_off, FromContainer)? else {
        return Ok(());
    };
    let backend = u32::from_ne_bytes(ip.src_addr);
    let key = CtKey::new(
        ip.proto,
        backend,
        u32::from_ne_bytes(ip.dst_addr),
        l4.sport,
        l4.dport,
    );
    let Some(entry) = conntrack::hit(&key, l4.tcp_flags, now_ns(), ctx.len()).filter(|e| {
        e.flags & (CT_FLAG_SERVICE | CT_FLAG_HAIRPIN) == CT_FLAG_SERVICE
            && e.direction == CT_DIR_ORIGINAL
    }) else {
        return Ok(());
    };
    let check = csum::after_u32_change(ip.check, backend, entry.xlate_ip_be);
    store(ctx, IP_SRC_OFF, entry.xlate_ip_be).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, check).ok_or(drop_here!(TruncatedIpv4))?;
    rewrite_l4(ctx, &l4, ip.proto, backend, entry.xlate_ip_be)?;
    rewrite_port(ctx, &l4, l4.sport, entry.xlate_port_be)
}

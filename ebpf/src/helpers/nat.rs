//! Masquerade (SNAT) of container traffic leaving weft through the node's
//! uplink, and the reverse translation of its replies; published ports
//! (DNAT) from the uplink and from containers (hairpin), and their
//! replies. A DNAT connection is tracked like a masqueraded one seen from
//! the other side: its container-side entry is an "original" entry.
//!
//! Only TCP, UDP and ICMP echo are translated; other traffic goes to the
//! node's stack untranslated, for the node to route or answer. The IPv4
//! header checksum is updated by hand (`ipv4`); L4 checksums with
//! `bpf_l4_csum_replace`, which also handles `CHECKSUM_PARTIAL`
//! (offloaded) and `CHECKSUM_COMPLETE` skbs; a UDP checksum of 0 ("none")
//! stays 0 (`BPF_F_MARK_MANGLED_0`).
//!
//! IPv4 fragments: a first fragment carries the ports and is translated; a
//! later fragment carries none, so it cannot be matched to a connection and
//! is dropped (`ipv4_fragment`) on the way out. On the uplink it is left to
//! the stack, since it may be the node's own traffic.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{
        CT_DIR_ORIGINAL, CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_FLAG_SERVICE, CtKey, EndpointInfo,
        IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, NET_FLAG_MASQUERADE, NODE_FLAG_PUBLISHES,
        NodeConfig, PublishTarget,
    },
    reason::Forward,
};

use super::{
    access::{FibHop, fib_lookup, ifindex, load, now_ns, pull, store},
    conntrack, csum,
    deliver::{deliver_as_gateway, pass_to_stack, send_to_hop},
    direction::Direction::{self, FromContainer, FromUplink},
    icmp_error, ipv4, maglev,
    maps::{endpoint_by_ip, network, node_config, published, service},
    parse::{
        ICMP_CSUM_OFF, ICMP_ECHO_ID_OFF, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_LEN,
        ICMP_TYPE_CODE_OFF, IP_CSUM_OFF, IP_DST_OFF, IP_FRAG_OFFSET_MASK, IP_OFF, IP_SRC_OFF,
        IP_TTL_OFF, TCP_CSUM_OFF, TCP_DPORT_OFF, TCP_LEN, TCP_OFF_FLAGS_OFF, TCP_SPORT_OFF,
        UDP_CSUM_OFF, UDP_DPORT_OFF, UDP_LEN, UDP_SPORT_OFF, header_len,
    },
    verdict::{Dropped, Verdict},
};

/// The longest L4 header part NAT reads or writes (TCP's fixed header).
const L4_MAX: usize = TCP_LEN;

/// The translatable part of an L4 header.
#[derive(Clone, Copy)]
pub struct L4 {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// Absolute offset of the port (ICMP: identifier) this direction
    /// rewrites.
    pub port_off: usize,
    /// Absolute offset of the other port (hairpin rewrites both).
    pub other_port_off: usize,
    /// Absolute offset of the checksum.
    pub csum_off: usize,
    /// Flags for `bpf_l4_csum_replace` besides the field size.
    pub csum_flags: u64,
    pub tcp_flags: u8,
}

/// The ports of a TCP, UDP or ICMP echo packet (a request from a
/// container, a reply from the uplink) whose L4 header starts at `l4_off`;
/// `None` for anything else; a cut-short header is a drop.
#[inline(always)]
pub fn parse_l4(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    l4_off: usize,
    direction: Direction,
) -> Result<Option<L4>, Dropped> {
    let ip_end = IP_OFF + usize::from(u16::from_be_bytes(ip.tot_len));
    let (need, sport_off, dport_off, csum_off, csum_flags) = match ip.proto {
        IPPROTO_TCP => (
            TCP_LEN,
            TCP_SPORT_OFF,
            TCP_DPORT_OFF,
            TCP_CSUM_OFF,
            u64::from(BPF_F_PSEUDO_HDR),
        ),
        IPPROTO_UDP => (
            UDP_LEN,
            UDP_SPORT_OFF,
            UDP_DPORT_OFF,
            UDP_CSUM_OFF,
            u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0),
        ),
        IPPROTO_ICMP => (
            ICMP_LEN,
            ICMP_ECHO_ID_OFF,
            ICMP_ECHO_ID_OFF,
            ICMP_CSUM_OFF,
            0,
        ),
        _ => return Ok(None),
    };
    if l4_off + need > ip_end {
        return Err(drop_here!(TruncatedL4));
    }
    // Two-byte loads only: at a variable offset LLVM turns a one-byte bound
    // check into `ptr >= end`, which the verifier does not read as a range.
    let mut tcp_flags = 0;
    if ip.proto == IPPROTO_ICMP {
        let [ty, _code]: [u8; 2] =
            load(ctx, l4_off + ICMP_TYPE_CODE_OFF).ok_or(drop_here!(TruncatedL4))?;
        let want = if direction == FromContainer {
            ICMP_ECHO_REQUEST
        } else {
            ICMP_ECHO_REPLY
        };
        if ty != want {
            return Ok(None);
        }
    } else if ip.proto == IPPROTO_TCP {
        let [_data_off, flags]: [u8; 2] =
            load(ctx, l4_off + TCP_OFF_FLAGS_OFF).ok_or(drop_here!(TruncatedL4))?;
        tcp_flags = flags;
    }
    let sport: [u8; 2] = load(ctx, l4_off + sport_off).ok_or(drop_here!(TruncatedL4))?;
    let dport: [u8; 2] = load(ctx, l4_off + dport_off).ok_or(drop_here!(TruncatedL4))?;
    // Checked so the rewrite below cannot fail half-way.
    load::<[u8; 2]>(ctx, l4_off + csum_off).ok_or(drop_here!(TruncatedL4))?;
    let (port_off, other_port_off) = if direction == FromContainer {
        (sport_off, dport_off)
    } else {
        (dport_off, sport_off)
    };
    Ok(Some(L4 {
        sport,
        dport,
        port_off: l4_off + port_off,
        other_port_off: l4_off + other_port_off,
        csum_off: l4_off + csum_off,
        csum_flags,
        tcp_flags,
    }))
}

/// Whether `ip` is a fragment other than the first (no L4 header).
#[inline(always)]
pub fn is_later_fragment(ip: &Ipv4Hdr) -> bool {
    u16::from_be_bytes(ip.frags) & IP_FRAG_OFFSET_MASK != 0
}

/// Offset of the L4 header behind an already validated IPv4 header, made
/// linear up to the part NAT reads and writes.
#[inline(always)]
pub fn pull_l4(ctx: &TcContext, ip: &Ipv4Hdr) -> usize {
    let l4_off = IP_OFF + header_len(ip);
    pull(ctx, l4_off + L4_MAX);
    l4_off
}

/// Container traffic to an address outside every weft network: masquerade
/// it out of the uplink when `src`'s network asks for it and the node is
/// configured and routes it there; otherwise hand it to the stack as is.
#[inline(always)]
pub fn egress(ctx: &TcContext, src: &EndpointInfo, ip: &Ipv4Hdr) -> Verdict {
    let Some(node) = node_config() else {
        return pass_to_stack(ctx, FromContainer);
    };
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    // To the node's own address: maybe a published port (hairpin), which
    // does not depend on the network's masquerade setting.
    let hairpin = dst_ip == node.node_ip_be;
    if is_later_fragment(ip) {
        if hairpin || masquerades(src) {
            return Err(drop_here!(Ipv4Fragment));
        }
        return pass_to_stack(ctx, FromContainer);
    }
    let l4_off = pull_l4(ctx, ip);
    let Some(l4) = parse_l4(ctx, ip, l4_off, FromContainer)? else {
        return icmp_error::from_container(ctx, src, ip, l4_off, &node);
    };
    if hairpin {
        return hairpin_out(ctx, src, ip, &l4, &node);
    }
    let orig = CtKey::new(ip.proto, src.ip_be, dst_ip, l4.sport, l4.dport);
    let now = now_ns();
    let live = conntrack::established(&orig, src, &node, l4.tcp_flags, now, ctx.len());
    // Only a new connection asks its network: an established one exists
    // because the network masquerades (or the container's port is
    // published, which needs no masquerade), and the hash lookup costs
    // ~35 ns.
    if live.is_none() && !masquerades(src) {
        return pass_to_stack(ctx, FromContainer);
    }
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    let kind = match &live {
        Some(entry) if entry.flags & CT_FLAG_DNAT != 0 => Forward::ReverseDnat,
        _ => Forward::Snat,
    };
    let peer_port = live.as_ref().and_then(|entry| entry.dnat_peer_port());
    let (nat_port, hop) = match &live {
        Some(entry)
            if entry.next_hop_be != [0; 4] && entry.packets_orig % FIB_RECHECK_EVERY != 0 =>
        {
            let hop = FibHop {
                ifindex: node.uplink_ifindex,
                next_hop_be: u32::from_ne_bytes(entry.next_hop_be),
            };
            (entry.xlate_port_be, hop)
        }
        _ => {
            // Local, unreachable or another interface's destinations are
            // the stack's business: it delivers, answers or routes them
            // untranslated.
            let Some(hop) = fib_lookup(ctx, ifindex(ctx), node.node_ip_be, dst_ip)
                .filter(|hop| hop.ifindex == node.uplink_ifindex)
            else {
                return pass_to_stack(ctx, FromContainer);
            };
            let nat_port = match &live {
                Some(entry) => entry.xlate_port_be,
                None => conntrack::create(&orig, src, &node, l4.tcp_flags, now, ctx.len())?,
            };
            conntrack::remember_next_hop(&orig, hop.next_hop_be);
            (nat_port, hop)
        }
    };

    source_to_node(ctx, ip, &l4, src, node.node_ip_be, nat_port, peer_port)?;
    send_to_hop(ctx, &hop, kind, FromContainer)
}

/// A container's reply on a connection to a published port whose client
/// is a pod address on another node (a client that reached the node's
/// address without masquerade, e.g. from a kernel-VXLAN node or a
/// `--no-masquerade` network): the source becomes the node's address and
/// published port, as on the uplink, before the packet is encapsulated
/// toward the client's node. Returns whether it translated; anything but
/// such a reply is left as it is.
#[inline(always)]
pub fn reverse_dnat_to_overlay(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
) -> Result<bool, Dropped> {
    // Only a node that publishes ports pays for the lookup below.
    let Some(node) = node_config().filter(|n| n.flags & NODE_FLAG_PUBLISHES != 0) else {
        return Ok(false);
    };
    if ip.proto == IPPROTO_ICMP || is_later_fragment(ip) {
        return Ok(false);
    }
    let l4_off = pull_l4(ctx, ip);
    let Some(l4) = parse_l4(ctx, ip, l4_off, FromContainer)? else {
        return Ok(false);
    };
    let orig = CtKey::new(
        ip.proto,
        src.ip_be,
        u32::from_ne_bytes(ip.dst_addr),
        l4.sport,
        l4.dport,
    );
    let Some(entry) = conntrack::established(&orig, src, &node, l4.tcp_flags, now_ns(), ctx.len())
        .filter(|entry| entry.flags & (CT_FLAG_DNAT | CT_FLAG_SERVICE) == CT_FLAG_DNAT)
    else {
        return Ok(false);
    };
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    source_to_node(
        ctx,
        ip,
        &l4,
        src,
        node.node_ip_be,
        entry.xlate_port_be,
        entry.dnat_peer_port(),
    )?;
    Ok(true)
}

/// A container's packet leaving as the node's: source address
/// `src.ip_be` -> `node_ip_be` (TTL - 1, checksums) and source port (ICMP:
/// identifier) -> `port`; the destination port -> the client's own for a
/// published port's connection that gave the container another (`peer`,
/// see `rewrite_peer_port`). The caller checked TTL > 1.
#[inline(always)]
fn source_to_node(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    l4: &L4,
    src: &EndpointInfo,
    node_ip_be: u32,
    port: [u8; 2],
    peer: Option<[u8; 2]>,
) -> Result<(), Dropped> {
    rewrite_peer_port(ctx, l4, l4.dport, peer)?;
    ipv4::retarget(ctx, ip, IP_SRC_OFF, src.ip_be, node_ip_be)?;
    rewrite_l4(ctx, l4, ip.proto, src.ip_be, node_ip_be)?;
    rewrite_port(ctx, l4, l4.sport, port)
}

/// A published port's connection whose client the container sees with
/// another port than its own (`CtEntry::dnat_peer_port`, `peer`): the
/// packet's other port (the one this way does not translate), `from`,
/// becomes the client's port on the other side.
#[inline(always)]
fn rewrite_peer_port(
    ctx: &TcContext,
    l4: &L4,
    from: [u8; 2],
    peer: Option<[u8; 2]>,
) -> Result<(), Dropped> {
    match peer {
        Some(port) => rewrite_port_at(ctx, l4, l4.other_port_off, from, port),
        None => Ok(()),
    }
}

/// Whether `src`'s network masquerades traffic leaving weft.
#[inline(always)]
fn masquerades(src: &EndpointInfo) -> bool {
    matches!(network(src.network_id), Some(net) if net.flags & NET_FLAG_MASQUERADE != 0)
}

/// How often an established flow re-checks its cached next hop with a real
/// FIB lookup, in packets: route changes take effect within this many.
const FIB_RECHECK_EVERY: u64 = 64;

/// An IPv4 packet on the uplink addressed to the node (header validated):
/// a reply to a masqueraded connection is translated back and delivered
/// into its container; anything else is the node's own.
#[inline(always)]
pub fn ingress(ctx: &TcContext, ip: &Ipv4Hdr) -> Verdict {
    if is_later_fragment(ip) {
        return pass_to_stack(ctx, FromUplink);
    }
    let l4_off = pull_l4(ctx, ip);
    let Some(l4) = parse_l4(ctx, ip, l4_off, FromUplink)? else {
        return icmp_error::from_uplink(ctx, ip, l4_off);
    };
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    let k = CtKey::new(
        ip.proto,
        u32::from_ne_bytes(ip.src_addr),
        dst_ip,
        l4.sport,
        l4.dport,
    );
    let now = now_ns();
    let entry = match conntrack::hit(&k, l4.tcp_flags, now, ctx.len()) {
        Some(entry) => entry,
        None => {
            if ip.proto == IPPROTO_ICMP {
                return pass_to_stack(ctx, FromUplink);
            }
            // Published ports are looked up only for new connections.
            let Some(target) = published(ip.proto, l4.dport)
                .map_or_else(|| published_service(&k, now), |t| Ok(Some(t)))?
            else {
                return pass_to_stack(ctx, FromUplink);
            };
            let dst = endpoint_by_ip(target.ip_be).ok_or(drop_here!(PublishedEndpointMissing))?;
            let Some(node) = node_config() else {
                return pass_to_stack(ctx, FromUplink);
            };
            conntrack::create_dnat(&k, &target, &dst, &node, l4.tcp_flags, now, ctx.len())?
        }
    };
    // The endpoint must still be the one the connection was made from.
    let Some(dst) = endpoint_by_ip(entry.xlate_ip_be).filter(|ep| ep.ifindex == entry.ifindex)
    else {
        return pass_to_stack(ctx, FromUplink);
    };
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    ipv4::retarget(ctx, ip, IP_DST_OFF, dst_ip, entry.xlate_ip_be)?;
    rewrite_l4(ctx, &l4, ip.proto, dst_ip, entry.xlate_ip_be)?;
    rewrite_port(ctx, &l4, l4.dport, entry.xlate_port_be)?;
    rewrite_peer_port(ctx, &l4, l4.sport, entry.dnat_peer_port())?;
    let kind = if entry.flags & CT_FLAG_DNAT != 0 {
        Forward::Dnat
    } else {
        Forward::ReverseSnat
    };
    deliver_as_gateway(ctx, &dst, kind, FromUplink)
}

/// The backend of a new connection `k` (outside -> node address:port) to a
/// port published to a service (`weft publish SERVICE PORT`): its entry
/// in `WEFT_SERVICES` is keyed by the node's address and the host port,
/// which no VIP can be, and its Maglev table holds only this node's
/// backends. Like Kubernetes' `externalTrafficPolicy: Local`, the client's
/// address is kept and the reply leaves from here, with no second hop and
/// no SNAT (a remote backend would answer the client from its own node).
/// `None`: nothing is published there; a service without local backends
/// is a `service_no_backend` drop.
#[inline(always)]
fn published_service(k: &CtKey, now: u64) -> Result<Option<PublishTarget>, Dropped> {
    let Some(svc) = service(k.dst_ip_be, k.dst_port_be, k.proto) else {
        return Ok(None);
    };
    let Some(pick) = maglev::pick(&svc, k, now) else {
        maglev::count(svc.svc_id, 0);
        return Err(drop_here!(ServiceNoBackend));
    };
    maglev::count(svc.svc_id, pick.ip_be);
    Ok(Some(PublishTarget {
        ip_be: pick.ip_be,
        port_be: pick.port_be,
        _pad: [0; 2],
    }))
}

/// A container's packet to the node's own address (header validated,
/// ports parsed): to a published port it is hairpinned into the
/// publishing container with both addresses translated (source: the
/// node's, so the reply comes back here too); anything else is for the
/// node's stack.
#[inline(always)]
fn hairpin_out(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    l4: &L4,
    node: &NodeConfig,
) -> Verdict {
    if ip.proto == IPPROTO_ICMP {
        return pass_to_stack(ctx, FromContainer);
    }
    let orig = CtKey::new(ip.proto, src.ip_be, node.node_ip_be, l4.sport, l4.dport);
    let now = now_ns();
    let entry = match conntrack::hit(&orig, l4.tcp_flags, now, ctx.len()) {
        Some(entry) if entry.flags & CT_FLAG_HAIRPIN != 0 => entry,
        Some(_) => return pass_to_stack(ctx, FromContainer),
        None => {
            let Some(target) = published(ip.proto, l4.dport) else {
                return pass_to_stack(ctx, FromContainer);
            };
            conntrack::create_hairpin(&orig, src, &target, node, l4.tcp_flags, now, ctx.len())?
        }
    };
    let dst = endpoint_by_ip(entry.xlate_ip_be)
        .filter(|ep| ep.ifindex == entry.ifindex)
        .ok_or(drop_here!(PublishedEndpointMissing))?;
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    let check = csum::after_u32_change(
        csum::after_u32_change(
            csum::after_ttl_decrement(ip.check),
            src.ip_be,
            node.node_ip_be,
        ),
        node.node_ip_be,
        entry.xlate_ip_be,
    );
    store(ctx, IP_TTL_OFF, ip.ttl - 1).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_SRC_OFF, node.node_ip_be).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_DST_OFF, entry.xlate_ip_be).ok_or(drop_here!(TruncatedIpv4))?;
    store(ctx, IP_CSUM_OFF, check).ok_or(drop_here!(TruncatedIpv4))?;
    // Source and destination both become other addresses: the pseudo
    // header changes by (node - src) + (dst' - node) = dst' - src.
    rewrite_l4(ctx, l4, ip.proto, src.ip_be, entry.xlate_ip_be)?;
    rewrite_port(ctx, l4, l4.sport, entry.peer_port_be)?;
    let dport = L4 {
        port_off: l4.other_port_off,
        ..*l4
    };
    rewrite_port(ctx, &dport, l4.dport, entry.xlate_port_be)?;
    let kind = if entry.direction == CT_DIR_ORIGINAL {
        Forward::Dnat
    } else {
        Forward::ReverseDnat
    };
    deliver_as_gateway(ctx, &dst, kind, FromContainer)
}

/// The TCP/UDP checksum's pseudo-header part after an address change
/// (`bpf_l4_csum_replace`: it knows about offloaded and zero UDP
/// checksums). ICMP's checksum covers only ICMP: nothing to do.
#[inline(always)]
pub fn rewrite_l4(ctx: &TcContext, l4: &L4, proto: u8, from: u32, to: u32) -> Result<(), Dropped> {
    if proto == IPPROTO_ICMP {
        return Ok(());
    }
    ctx.l4_csum_replace(
        l4.csum_off,
        u64::from(from),
        u64::from(to),
        l4.csum_flags | 4,
    )
    .map_err(|_| drop_here!(TruncatedL4))
}

/// Replaces the port (ICMP: echo identifier) and updates the L4 checksum.
#[inline(always)]
pub fn rewrite_port(ctx: &TcContext, l4: &L4, from: [u8; 2], to: [u8; 2]) -> Result<(), Dropped> {
    rewrite_port_at(ctx, l4, l4.port_off, from, to)
}

/// [`rewrite_port`] of the port at `port_off`.
#[inline(always)]
pub fn rewrite_port_at(
    ctx: &TcContext,
    l4: &L4,
    port_off: usize,
    from: [u8; 2],
    to: [u8; 2],
) -> Result<(), Dropped> {
    if from == to {
        return Ok(());
    }
    store(ctx, port_off, to).ok_or(drop_here!(TruncatedL4))?;
    let flags = (l4.csum_flags & !u64::from(BPF_F_PSEUDO_HDR)) | 2;
    ctx.l4_csum_replace(
        l4.csum_off,
        u64::from(u16::from_ne_bytes(from)),
        u64::from(u16::from_ne_bytes(to)),
        flags,
    )
    .map_err(|_| drop_here!(TruncatedL4))
}

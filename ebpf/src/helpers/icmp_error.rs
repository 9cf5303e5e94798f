//! ICMP errors (destination unreachable, time exceeded, parameter
//! problem) about a translated connection, a masqueraded one or one to a
//! published port, in both directions:
//!
//! - arriving on the uplink: the error quotes a packet that left with the
//!   node's address and port. The outer destination, the quoted source
//!   address and port (ICMP echo: identifier) become the container's, and
//!   the error is delivered into it, so its stack matches the error to its
//!   own socket (e.g. `ECONNREFUSED` on a connected UDP socket);
//! - sent by a container: the error quotes a packet the container got
//!   (e.g. to a published port nobody listens on). The outer source, the
//!   quoted destination address and port become the node's address and the
//!   published (or NAT) port, and the error leaves through the uplink.
//!
//! The quoted IPv4 checksum and the ICMP checksum are updated with the
//! quote. The quoted L4 checksum is left alone: ICMP quotes only 8 bytes
//! of L4 header and receivers do not check it. All offsets in the ICMP
//! message are even (its header is 8 bytes, IPv4 headers are whole 32-bit
//! words), so 16-bit-word incremental updates of the ICMP checksum are
//! exact.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{
        CT_DIR_ORIGINAL, CtKey, EndpointInfo, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, NodeConfig,
    },
    reason::Forward,
};

use super::{
    access::{fib_lookup, ifindex, load, now_ns, pull, store},
    conntrack, csum,
    deliver::{deliver_as_gateway, pass_to_stack, send_to_hop},
    direction::Direction::{FromContainer, FromUplink},
    ipv4,
    maps::{endpoint_by_ip, node_config},
    parse::{
        ICMP_CSUM_OFF, ICMP_DEST_UNREACH, ICMP_ECHO_ID_OFF, ICMP_ECHO_REQUEST, ICMP_LEN,
        ICMP_PARAMETER_PROBLEM, ICMP_QUOTED_L4, ICMP_TIME_EXCEEDED, ICMP_TYPE_CODE_OFF, IP_DST_OFF,
        IP_OFF, IP_SRC_OFF, ipv4_header_len,
    },
    verdict::{Dropped, Verdict},
};

/// What an error must quote of the offending packet's L4 header.
const QUOTED_L4: usize = ICMP_QUOTED_L4;
/// The quoted IPv4 header's fields, relative to its start.
const Q_CSUM_OFF: usize = core::mem::offset_of!(Ipv4Hdr, check);
const Q_SRC_OFF: usize = core::mem::offset_of!(Ipv4Hdr, src_addr);
const Q_DST_OFF: usize = core::mem::offset_of!(Ipv4Hdr, dst_addr);
/// Quoted TCP/UDP ports, relative to the quoted L4 header.
const Q_SPORT_OFF: usize = 0;
const Q_DPORT_OFF: usize = 2;

/// The part of a quoted packet a translation rewrites.
struct Quote {
    /// Absolute offset of the quoted IPv4 header.
    off: usize,
    check: [u8; 2],
    /// Absolute offsets of the address and port to rewrite.
    addr_off: usize,
    port_off: usize,
    addr: u32,
    port: [u8; 2],
    /// The conntrack key of the packets answering the quoted one.
    key: CtKey,
}

/// The quote of an ICMP error at `l4_off` whose address at `addr_field`
/// (`Q_SRC_OFF` or `Q_DST_OFF`) is `addr`; `None` if the message is no
/// error, or quotes something else; a malformed quote is a drop.
#[inline(always)]
fn parse_quote(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    l4_off: usize,
    addr_field: usize,
    addr: u32,
) -> Result<Option<Quote>, Dropped> {
    if ip.proto != IPPROTO_ICMP {
        return Ok(None);
    }
    let Some([ty, _code]) = load::<[u8; 2]>(ctx, l4_off + ICMP_TYPE_CODE_OFF) else {
        return Ok(None);
    };
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED && ty != ICMP_PARAMETER_PROBLEM {
        return Ok(None);
    }
    let ip_end = IP_OFF + usize::from(u16::from_be_bytes(ip.tot_len));
    let off = l4_off + ICMP_LEN;
    pull(ctx, off + 60 + QUOTED_L4);
    let q: Ipv4Hdr = load(ctx, off).ok_or(drop_here!(BadIcmpEmbedded))?;
    let q_len = ipv4_header_len(&q).ok_or(drop_here!(BadIcmpEmbedded))?;
    let q_l4 = off + q_len;
    if q_l4 + QUOTED_L4 > ip_end {
        return Err(drop_here!(BadIcmpEmbedded));
    }
    let q_src = u32::from_ne_bytes(q.src_addr);
    let q_dst = u32::from_ne_bytes(q.dst_addr);
    let source = addr_field == Q_SRC_OFF;
    if (if source { q_src } else { q_dst }) != addr {
        return Ok(None);
    }
    // The port is kept from these loads: re-reading it at another offset
    // lets LLVM drop a bounds check the verifier needs.
    let (port_off, port, key) = match q.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let [sport, dport]: [[u8; 2]; 2] =
                load(ctx, q_l4).ok_or(drop_here!(BadIcmpEmbedded))?;
            let (port_off, port) = if source {
                (Q_SPORT_OFF, sport)
            } else {
                (Q_DPORT_OFF, dport)
            };
            (
                q_l4 + port_off,
                port,
                CtKey::new(q.proto, q_dst, q_src, dport, sport),
            )
        }
        // Echo requests the node sent for a container (the identifier is
        // the translated "port").
        IPPROTO_ICMP if source => {
            let [q_ty, _]: [u8; 2] =
                load(ctx, q_l4 + ICMP_TYPE_CODE_OFF).ok_or(drop_here!(BadIcmpEmbedded))?;
            if q_ty != ICMP_ECHO_REQUEST {
                return Ok(None);
            }
            let id: [u8; 2] =
                load(ctx, q_l4 + ICMP_ECHO_ID_OFF).ok_or(drop_here!(BadIcmpEmbedded))?;
            (
                q_l4 + ICMP_ECHO_ID_OFF,
                id,
                CtKey::new(IPPROTO_ICMP, q_dst, q_src, id, [0; 2]),
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(Quote {
        off,
        check: q.check,
        addr_off: off + addr_field,
        port_off,
        addr,
        port,
        key,
    }))
}

/// Rewrites the quote's address and port to `addr`/`port`, with the
/// quoted IPv4 checksum and the ICMP checksum at `l4_off`.
#[inline(always)]
fn rewrite_quote(
    ctx: &TcContext,
    l4_off: usize,
    q: &Quote,
    addr: u32,
    port: [u8; 2],
) -> Result<(), Dropped> {
    let icmp_check: [u8; 2] =
        load(ctx, l4_off + ICMP_CSUM_OFF).ok_or(drop_here!(BadIcmpEmbedded))?;
    let q_check = csum::after_u32_change(q.check, q.addr, addr);
    let mut check = csum::after_u32_change(icmp_check, q.addr, addr);
    check = csum::after_u16_change(check, q.check, q_check);
    check = csum::after_u16_change(check, q.port, port);
    store(ctx, q.addr_off, addr).ok_or(drop_here!(BadIcmpEmbedded))?;
    store(ctx, q.off + Q_CSUM_OFF, q_check).ok_or(drop_here!(BadIcmpEmbedded))?;
    store(ctx, q.port_off, port).ok_or(drop_here!(BadIcmpEmbedded))?;
    store(ctx, l4_off + ICMP_CSUM_OFF, check).ok_or(drop_here!(BadIcmpEmbedded))
}

/// An ICMP message on the uplink to the node (outer header validated; it
/// is not an echo reply, which `nat` handles): an error about a translated
/// connection is translated and delivered; anything else goes to the stack.
#[inline(always)]
pub fn from_uplink(ctx: &TcContext, ip: &Ipv4Hdr, l4_off: usize) -> Verdict {
    let Some(node) = node_config() else {
        return pass_to_stack(ctx, FromUplink);
    };
    let Some(quote) = parse_quote(ctx, ip, l4_off, Q_SRC_OFF, node.node_ip_be)? else {
        return pass_to_stack(ctx, FromUplink);
    };
    let Some(entry) = conntrack::peek(&quote.key, now_ns()) else {
        return pass_to_stack(ctx, FromUplink);
    };
    let Some(dst) = endpoint_by_ip(entry.xlate_ip_be).filter(|ep| ep.ifindex == entry.ifindex)
    else {
        return pass_to_stack(ctx, FromUplink);
    };
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    rewrite_quote(ctx, l4_off, &quote, entry.xlate_ip_be, entry.xlate_port_be)?;
    ipv4::retarget(ctx, ip, IP_DST_OFF, node.node_ip_be, entry.xlate_ip_be)?;
    deliver_as_gateway(ctx, &dst, Forward::IcmpErrorTranslated, FromUplink)
}

/// An ICMP message container `src` sends outside weft that is not an echo
/// request: an error about one of its translated connections leaves
/// through the uplink as the node's; anything else goes to the stack.
#[inline(always)]
pub fn from_container(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    l4_off: usize,
    node: &NodeConfig,
) -> Verdict {
    let Some(quote) = parse_quote(ctx, ip, l4_off, Q_DST_OFF, src.ip_be)? else {
        return pass_to_stack(ctx, FromContainer);
    };
    let Some(entry) = conntrack::peek(&quote.key, now_ns()).filter(|e| {
        e.direction == CT_DIR_ORIGINAL
            && e.ifindex == src.ifindex
            && e.xlate_ip_be == node.node_ip_be
    }) else {
        return pass_to_stack(ctx, FromContainer);
    };
    let dst_ip = u32::from_ne_bytes(ip.dst_addr);
    let Some(hop) = fib_lookup(ctx, ifindex(ctx), node.node_ip_be, dst_ip)
        .filter(|hop| hop.ifindex == node.uplink_ifindex)
    else {
        return pass_to_stack(ctx, FromContainer);
    };
    if ip.ttl <= 1 {
        return Err(drop_here!(TtlExceeded));
    }
    rewrite_quote(ctx, l4_off, &quote, node.node_ip_be, entry.xlate_port_be)?;
    ipv4::retarget(ctx, ip, IP_SRC_OFF, src.ip_be, node.node_ip_be)?;
    send_to_hop(ctx, &hop, Forward::IcmpErrorTranslated, FromContainer)
}

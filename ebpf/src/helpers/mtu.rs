//! The overlay's MTU, kept in BPF so that neither fragmentation nor PMTU
//! discovery is ever needed across the overlay:
//!
//! - a packet bigger than the overlay's inner MTU (`OverlayConfig::mtu`:
//!   the underlay's less VXLAN's 50 bytes) is never encapsulated: VTEPs
//!   must not fragment (RFC 7348 section 4.3). With Don't Fragment set its
//!   sender gets an ICMP fragmentation-needed carrying that MTU, built here
//!   from the packet itself and sent straight back as a router would
//!   (RFC 1191, RFC 792); without DF it is a named drop. A GSO super-packet
//!   is judged by the segments it will be cut into.
//! - TCP SYN and SYN-ACK entering or leaving the overlay get their MSS
//!   option clamped to the overlay MTU less 40 bytes (what iptables'
//!   `TCPMSS --clamp-mss-to-pmtu` does), so TCP never sends a segment the
//!   overlay cannot carry, whatever MTU the endpoints were given.
//!
//! Header bytes are read and written with `bpf_skb_load_bytes` /
//! `bpf_skb_store_bytes`: TCP options sit at offsets the verifier cannot
//! bound for direct packet access.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{EndpointInfo, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    reason::Forward,
};

use super::{
    access::{EXCERPT_MAX, change_tail, gso_size, load_excerpt, store, store_excerpt},
    csum,
    deliver::send_out_of,
    direction::Direction,
    ipv4::{self, Originated},
    maps::network,
    parse::{
        ETH_DST_OFF, ETH_LEN, ETH_SRC_OFF, ICMP_DEST_UNREACH, ICMP_LEN, ICMP_QUOTED_L4, IP_DF,
        IP_FRAG_OFFSET_MASK, IP_MIN_LEN, IP_OFF, TCP_CSUM_OFF, TCP_LEN, TCP_OFF_FLAGS_OFF, TCP_SYN,
        UDP_LEN, header_len,
    },
    verdict::Dropped,
};

/// IPv4 and TCP fixed headers: what an MSS does not count.
const TCP_IP_HEADERS: u32 = 40;
/// ICMP destination unreachable: fragmentation needed and DF set.
const ICMP_FRAG_NEEDED: u8 = 4;
/// Type of service of the ICMP errors Linux sends: precedence
/// "internetwork control" (RFC 1812 section 4.3.2.5).
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
/// TTL of the errors weft sends.
const ICMP_TTL: u8 = 64;
/// TCP option kinds (RFC 9293 section 3.2).
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: u8 = 4;
/// TCP options span at most 40 bytes; each takes at least one.
const MAX_TCP_OPTIONS: usize = 40;

/// The largest MSS that keeps a segment within `mtu`.
#[inline(always)]
pub fn max_mss(mtu: u32) -> u16 {
    let mss = mtu.saturating_sub(TCP_IP_HEADERS);
    if mss > 0xffff { 0xffff } else { mss as u16 }
}

/// Whether the IPv4 packet `ip` at `IP_OFF` fits an overlay of inner MTU
/// `mtu`: `Ok(None)` if it does, `Ok(Some(action))` if a fragmentation-
/// needed went back to `src` instead, `Err` if it must be dropped. `mtu`
/// 0 means unknown: everything fits.
#[inline(always)]
pub fn enforce(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    mtu: u32,
) -> Result<Option<i32>, Dropped> {
    if mtu == 0 || packet_len(ctx, ip) <= mtu {
        return Ok(None);
    }
    if u16::from_be_bytes(ip.frags) & IP_DF == 0 {
        return Err(drop_here!(OverlayMtuExceeded));
    }
    frag_needed(ctx, src, ip, mtu).map(Some)
}

/// The length of the IPv4 packets `ip` will leave as: its own, or for a
/// GSO super-packet each segment's (headers plus `gso_size`).
#[inline(always)]
fn packet_len(ctx: &TcContext, ip: &Ipv4Hdr) -> u32 {
    let total = u32::from(u16::from_be_bytes(ip.tot_len));
    let gso = gso_size(ctx);
    if gso == 0 {
        return total;
    }
    let ip_len = header_len(ip) as u32;
    let l4_off = IP_OFF + ip_len as usize;
    let l4_len = match ip.proto {
        IPPROTO_TCP => match ctx.load::<[u8; 1]>(l4_off + TCP_OFF_FLAGS_OFF) {
            Ok([data_off]) => u32::from(data_off >> 4) * 4,
            Err(_) => return total,
        },
        IPPROTO_UDP => UDP_LEN as u32,
        _ => return total,
    };
    let segment = ip_len + l4_len + gso;
    if segment < total { segment } else { total }
}

/// Turns the packet into an ICMP fragmentation-needed about it, from the
/// gateway of `src`'s network to `src`, and sends it back: Ethernet,
/// a new IPv4 header, ICMP type 3 code 4 with `mtu` as next-hop MTU, and
/// the offending IPv4 header (IHL honoured) with 8 bytes of its L4 header.
#[inline(always)]
fn frag_needed(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    mtu: u32,
) -> Result<i32, Dropped> {
    let net = network(src.network_id).ok_or(drop_here!(UnknownEndpoint))?;
    let quote_len = header_len(ip) + ICMP_QUOTED_L4;
    let mut quote = [0u8; EXCERPT_MAX];
    load_excerpt(ctx, IP_OFF, &mut quote, quote_len).ok_or(drop_here!(TruncatedL4))?;

    let mtu16 = if mtu > 0xffff { 0xffff } else { mtu as u16 };
    let mut icmp = [0u8; ICMP_LEN];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_FRAG_NEEDED;
    icmp[6..8].copy_from_slice(&mtu16.to_be_bytes());
    // The quote's zero padding past `quote_len` adds nothing to the sum.
    let check = csum::finish(csum::add_words(&quote, csum::add_words(&icmp, 0)));
    icmp[2..4].copy_from_slice(&check);

    let total = (IP_MIN_LEN + ICMP_LEN + quote_len) as u16;
    let header = ipv4::originate(&Originated {
        tos: TOS_INTERNETWORK_CONTROL,
        total_len: total,
        frags: 0,
        ttl: ICMP_TTL,
        proto: IPPROTO_ICMP,
        src_be: net.gateway_ip_be,
        dst_be: u32::from_ne_bytes(ip.src_addr),
    });

    // From here the packet is rewritten: nothing below may fail halfway
    // but by a helper error, which drops it.
    change_tail(ctx, (ETH_LEN + usize::from(total)) as u32).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_DST_OFF, src.mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_SRC_OFF, src.gateway_mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, IP_OFF, header).ok_or(drop_here!(EncapFailed))?;
    store(ctx, IP_OFF + IP_MIN_LEN, icmp).ok_or(drop_here!(EncapFailed))?;
    store_excerpt(ctx, IP_OFF + IP_MIN_LEN + ICMP_LEN, &quote, quote_len)
        .ok_or(drop_here!(EncapFailed))?;
    send_out_of(
        ctx,
        src.ifindex,
        Forward::FragNeededSent,
        Direction::FromContainer,
    )
}

/// Clamps the MSS option of a TCP SYN (or SYN-ACK) in the IPv4 packet `ip`
/// at `ip_off` to `max`, updating the TCP checksum. Anything else, and a
/// SYN without the option or with a smaller one, is left alone.
#[inline(always)]
pub fn clamp_mss(ctx: &TcContext, ip_off: usize, ip: &Ipv4Hdr, max: u16) {
    if ip.proto != IPPROTO_TCP || u16::from_be_bytes(ip.frags) & IP_FRAG_OFFSET_MASK != 0 {
        return;
    }
    let l4_off = ip_off + header_len(ip);
    let Ok([data_off, flags]) = ctx.load::<[u8; 2]>(l4_off + TCP_OFF_FLAGS_OFF) else {
        return;
    };
    if flags & TCP_SYN == 0 {
        return;
    }
    let options_end = l4_off + usize::from(data_off >> 4) * 4;
    let mut off = l4_off + TCP_LEN;
    // The verifier needs a bounded loop: at most one step per option byte.
    for _ in 0..MAX_TCP_OPTIONS {
        if off >= options_end {
            return;
        }
        let Ok([kind, len]) = ctx.load::<[u8; 2]>(off) else {
            return;
        };
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => off += 1,
            TCPOPT_MSS if len == TCPOLEN_MSS => {
                rewrite_mss(ctx, l4_off, off + 2, max);
                return;
            }
            _ if len < 2 => return,
            _ => off += usize::from(len),
        }
    }
}

/// Lowers the MSS value at `value_off` to `max` if it is larger.
#[inline(always)]
fn rewrite_mss(ctx: &TcContext, l4_off: usize, value_off: usize, max: u16) {
    let Ok(old) = ctx.load::<[u8; 2]>(value_off) else {
        return;
    };
    if u16::from_be_bytes(old) <= max {
        return;
    }
    let new = max.to_be_bytes();
    if ctx.store(value_off, &new, 0).is_err() {
        return;
    }
    // The checksum sums 16-bit words from the TCP header's start: a value
    // at an odd offset straddles two words and counts byte-swapped.
    let (from, to) = if (value_off - l4_off).is_multiple_of(2) {
        (old, new)
    } else {
        ([old[1], old[0]], [new[1], new[0]])
    };
    // Only the MSS changed, not the pseudo-header: flags = field size 2.
    let updated = ctx.l4_csum_replace(
        l4_off + TCP_CSUM_OFF,
        u64::from(u16::from_ne_bytes(from)),
        u64::from(u16::from_ne_bytes(to)),
        2,
    );
    if updated.is_err() {
        // Leave the segment as it came rather than with a wrong checksum.
        let _ = ctx.store(value_off, &old, 0);
    }
}

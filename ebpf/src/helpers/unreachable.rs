//! ICMP destination-unreachable errors the datapath sends back to a
//! container about a packet it sent, built in place from the packet (as a
//! router does, RFC 792 / RFC 1812): Ethernet from the gateway, a new
//! IPv4 header, the ICMP header, and the offending IPv4 header (IHL
//! honoured) with 8 bytes of its L4 header. The overlay's
//! fragmentation-needed and a service's port unreachable are both this.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{EndpointInfo, IPPROTO_ICMP},
    reason::Forward,
};

use super::{
    access::{EXCERPT_MAX, change_tail, load_excerpt, store, store_excerpt},
    csum,
    deliver::send_out_of,
    direction::Direction,
    ipv4::{self, Originated},
    parse::{
        ETH_DST_OFF, ETH_LEN, ETH_SRC_OFF, ICMP_DEST_UNREACH, ICMP_LEN, ICMP_QUOTED_L4, IP_MIN_LEN,
        IP_OFF, header_len,
    },
    verdict::{Dropped, Verdict},
};

/// Destination unreachable: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Type of service of the ICMP errors Linux sends: precedence
/// "internetwork control" (RFC 1812 section 4.3.2.5).
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
/// TTL of the errors weft sends.
const ICMP_TTL: u8 = 64;

/// Turns the packet `ip` (at `IP_OFF`) that container `src` sent into an
/// ICMP destination unreachable with `code` (and `mtu` as the next-hop
/// MTU, 0 unless fragmentation is needed) from `from_be` to `src`, and
/// sends it back, counted as `kind`.
#[inline(always)]
pub fn send_back(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    code: u8,
    mtu: u16,
    from_be: u32,
    kind: Forward,
) -> Verdict {
    let quote_len = header_len(ip) + ICMP_QUOTED_L4;
    let mut quote = [0u8; EXCERPT_MAX];
    load_excerpt(ctx, IP_OFF, &mut quote, quote_len).ok_or(drop_here!(TruncatedL4))?;

    let mut icmp = [0u8; ICMP_LEN];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = code;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
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
        src_be: from_be,
        dst_be: u32::from_ne_bytes(ip.src_addr),
    });
    write(ctx, src, total, &header, &icmp, &quote, quote_len)?;
    send_out_of(ctx, src.ifindex, kind, Direction::FromContainer)
}

/// Rewrites the packet into the error. From here nothing may fail halfway
/// but by a helper error, which drops it.
#[inline(always)]
fn write(
    ctx: &TcContext,
    src: &EndpointInfo,
    total: u16,
    header: &[u8; IP_MIN_LEN],
    icmp: &[u8; ICMP_LEN],
    quote: &[u8; EXCERPT_MAX],
    quote_len: usize,
) -> Result<(), Dropped> {
    change_tail(ctx, (ETH_LEN + usize::from(total)) as u32).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_DST_OFF, src.mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_SRC_OFF, src.gateway_mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, IP_OFF, *header).ok_or(drop_here!(EncapFailed))?;
    store(ctx, IP_OFF + IP_MIN_LEN, *icmp).ok_or(drop_here!(EncapFailed))?;
    store_excerpt(ctx, IP_OFF + IP_MIN_LEN + ICMP_LEN, quote, quote_len)
        .ok_or(drop_here!(EncapFailed))
}

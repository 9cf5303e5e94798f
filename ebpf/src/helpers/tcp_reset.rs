//! TCP resets the datapath sends back to a container about a segment it
//! sent to a port nobody serves (a service without a backend), built in
//! place from the segment as a closed port answers it (RFC 9293 3.10.7.1):
//! a segment without ACK gets `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`,
//! one with ACK gets `<SEQ=SEG.ACK><CTL=RST>`. A reset is never answered
//! (the caller drops it). Headers are written whole, checksums computed
//! from scratch; the frame is cut to the 54 bytes of a bare reset.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::{
    maps::{EndpointInfo, IPPROTO_TCP},
    reason::Forward,
};

use super::{
    access::{change_tail, load, store},
    csum,
    deliver::send_out_of,
    direction::Direction,
    ipv4::{self, Originated},
    parse::{
        ETH_DST_OFF, ETH_LEN, ETH_SRC_OFF, IP_DF, IP_MIN_LEN, IP_OFF, TCP_ACK, TCP_FIN, TCP_LEN,
        TCP_RST, TCP_SYN, header_len,
    },
    verdict::{Dropped, Verdict},
};

/// TTL of the resets weft sends (Linux's default).
const RST_TTL: u8 = 64;
/// Data offset of a TCP header without options (5 words), in its byte.
const DOFF_NO_OPTIONS: u8 = 5 << 4;

/// Turns the TCP segment `ip` (at `IP_OFF`, its TCP header at `l4_off`)
/// that container `src` sent into the reset from `from_be` that answers
/// it, and sends it back, counted as `kind`.
#[inline(always)]
pub fn send_back(
    ctx: &TcContext,
    src: &EndpointInfo,
    ip: &Ipv4Hdr,
    l4_off: usize,
    from_be: u32,
    kind: Forward,
) -> Verdict {
    let seg: [u8; TCP_LEN] = load(ctx, l4_off).ok_or(drop_here!(TruncatedL4))?;
    let flags = seg[13];
    let data_len = usize::from(u16::from_be_bytes(ip.tot_len))
        .saturating_sub(header_len(ip))
        .saturating_sub(usize::from(seg[12] >> 4) * 4) as u32;
    let seg_len = data_len + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);

    let mut rst = [0u8; TCP_LEN];
    rst[0..2].copy_from_slice(&seg[2..4]);
    rst[2..4].copy_from_slice(&seg[0..2]);
    if flags & TCP_ACK != 0 {
        rst[4..8].copy_from_slice(&seg[8..12]);
        rst[13] = TCP_RST;
    } else {
        let ack = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]).wrapping_add(seg_len);
        rst[8..12].copy_from_slice(&ack.to_be_bytes());
        rst[13] = TCP_RST | TCP_ACK;
    }
    rst[12] = DOFF_NO_OPTIONS;
    let client_be = u32::from_ne_bytes(ip.src_addr);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&from_be.to_ne_bytes());
    pseudo[4..8].copy_from_slice(&client_be.to_ne_bytes());
    pseudo[9] = IPPROTO_TCP;
    pseudo[10..12].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
    let check = csum::finish(csum::add_words(&rst, csum::add_words(&pseudo, 0)));
    rst[16..18].copy_from_slice(&check);

    let total = (IP_MIN_LEN + TCP_LEN) as u16;
    let header = ipv4::originate(&Originated {
        tos: 0,
        total_len: total,
        frags: IP_DF,
        ttl: RST_TTL,
        proto: IPPROTO_TCP,
        src_be: from_be,
        dst_be: client_be,
    });
    write(ctx, src, total, &header, &rst)?;
    send_out_of(ctx, src.ifindex, kind, Direction::FromContainer)
}

/// Rewrites the packet into the reset. From here nothing may fail halfway
/// but by a helper error, which drops it.
#[inline(always)]
fn write(
    ctx: &TcContext,
    src: &EndpointInfo,
    total: u16,
    header: &[u8; IP_MIN_LEN],
    rst: &[u8; TCP_LEN],
) -> Result<(), Dropped> {
    change_tail(ctx, (ETH_LEN + usize::from(total)) as u32).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_DST_OFF, src.mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, ETH_SRC_OFF, src.gateway_mac).ok_or(drop_here!(EncapFailed))?;
    store(ctx, IP_OFF, *header).ok_or(drop_here!(EncapFailed))?;
    store(ctx, IP_OFF + IP_MIN_LEN, *rst).ok_or(drop_here!(EncapFailed))
}

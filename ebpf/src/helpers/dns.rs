//! Queries to a gateway's DNS server while it is away. The agent serves
//! DNS on every gateway address; while it restarts nothing is bound there
//! and the node's stack would answer a query with an ICMP port
//! unreachable, on which standard resolvers (glibc, dig) spend all their
//! tries at once and fail. Dropped instead (counted as
//! `dns_server_down`), a query times out and is retried, and the retry
//! reaches the restarted agent.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::maps::IPPROTO_UDP;

use super::{
    access::{load, udp_socket_for},
    parse::{IP_OFF, UDP_DPORT_OFF, UDP_SPORT_OFF, header_len},
};

/// The DNS port, network order.
const DNS_PORT_BE: [u8; 2] = 53u16.to_be_bytes();

/// Whether `ip` (to a gateway address) is a UDP DNS query no socket of
/// the node would receive.
#[inline(always)]
pub fn unserved_query(ctx: &TcContext, ip: &Ipv4Hdr) -> bool {
    if ip.proto != IPPROTO_UDP {
        return false;
    }
    let l4_off = IP_OFF + header_len(ip);
    let Some(dport) = load::<[u8; 2]>(ctx, l4_off + UDP_DPORT_OFF) else {
        return false;
    };
    if dport != DNS_PORT_BE {
        return false;
    }
    let Some(sport) = load::<[u8; 2]>(ctx, l4_off + UDP_SPORT_OFF) else {
        return false;
    };
    let src = u32::from_ne_bytes(ip.src_addr);
    let dst = u32::from_ne_bytes(ip.dst_addr);
    !udp_socket_for(ctx, src, dst, sport, dport)
}

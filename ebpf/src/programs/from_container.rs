//! TC ingress on the host side of a container's veth: everything a container
//! sends starts here.

use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::helpers::{
    access::{ifindex, load, pull},
    arp,
    direction::Direction,
    forward,
    maps::endpoint_by_ifindex,
    parse::{ETH_DST_OFF, ETH_LEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_PROTO_OFF, ETH_SRC_OFF},
    verdict::{Verdict, count_endpoint_tx, drop_packet},
};

/// Headers the program reads or writes directly: Ethernet plus an ARP body,
/// which also covers Ethernet, a 20-byte IPv4 header and the first 8
/// bytes of its L4 header (the ports the overlay's flow hash reads). No
/// more: a container's TCP segments carry their headers (66 bytes with
/// timestamps) in the linear area and their data in pages, and pulling
/// further makes the skb writable, which copies the head of every
/// segment, since TCP keeps a clone of each for retransmission. NAT pulls
/// the L4 header it rewrites itself; the MSS clamp and the
/// fragmentation-needed quote read through `bpf_skb_load_bytes`.
const PULL_LEN: usize = ETH_LEN + ARP_LEN;
/// An Ethernet/IPv4 ARP body.
const ARP_LEN: usize = 28;

#[classifier]
pub fn weft_from_container(ctx: TcContext) -> i32 {
    match try_from_container(&ctx) {
        Ok(action) => action,
        Err(dropped) => drop_packet(
            &ctx,
            dropped,
            weft_common::events::PROGRAM_FROM_CONTAINER,
            Direction::FromContainer,
        ),
    }
}

#[inline(always)]
fn try_from_container(ctx: &TcContext) -> Verdict {
    pull(ctx, PULL_LEN);
    let src = endpoint_by_ifindex(ifindex(ctx)).ok_or(drop_here!(UnknownEndpoint))?;
    count_endpoint_tx(src.stats_slot, ctx.len());

    let dst_mac: [u8; 6] = load(ctx, ETH_DST_OFF).ok_or(drop_here!(TruncatedEthernet))?;
    let src_mac: [u8; 6] = load(ctx, ETH_SRC_OFF).ok_or(drop_here!(TruncatedEthernet))?;
    let proto: [u8; 2] = load(ctx, ETH_PROTO_OFF).ok_or(drop_here!(TruncatedEthernet))?;
    if src_mac != src.mac {
        return Err(drop_here!(SpoofedSource));
    }
    match u16::from_be_bytes(proto) {
        ETH_P_ARP => arp::handle(ctx, &src),
        ETH_P_IP => forward::ipv4(ctx, &src, dst_mac),
        ETH_P_IPV6 => Err(drop_here!(Ipv6Unsupported)),
        _ => Err(drop_here!(UnsupportedEthertype)),
    }
}

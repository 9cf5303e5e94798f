//! Tail calls from `weft_from_container` to the programs that take over a
//! packet it has judged (`weft_nat_egress`, `weft_overlay_encap`), and what
//! it hands them in the skb's control block, as Cilium's
//! `ctx_store_meta`/`ctx_load_meta` do: the sender's endpoint entry, so
//! the called program does not look the endpoint up again.
//!
//! The control block holds five words, and the entry needs seven; the two
//! it leaves out the called program reads where the caller checked them:
//! the ifindex is the skb's own and the IPv4 source address the packet's
//! (the caller dropped a packet whose source was not the sender's).
//! The block is scratch space that every layer using `skb->cb` writes
//! before it reads, so what is left in it after the called program is
//! nobody's input.

use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;
use weft_common::maps::EndpointInfo;

use super::{
    access::{cb, ifindex, set_cb},
    maps::TAILS,
};

/// Hands `src` (the sender, whose IPv4 source address the packet carries)
/// to tail-call program `index` and jumps to it. Returns only if the slot
/// is empty (the program was not installed), and then the caller carries
/// on. That failure is logged (aya-log, read by the agent): it is never
/// the fast path, and it means the node lost part of its datapath.
#[inline(always)]
pub fn hand_over(ctx: &TcContext, index: u32, src: &EndpointInfo) {
    let (mac, gw) = (src.mac, src.gateway_mac);
    set_cb(
        ctx,
        [
            src.network_id,
            src.stats_slot,
            u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
            u32::from_ne_bytes([mac[4], mac[5], gw[0], gw[1]]),
            u32::from_ne_bytes([gw[2], gw[3], gw[4], gw[5]]),
        ],
    );
    // SAFETY: `ctx` is this program's context and TAILS a program array;
    // on success control never comes back, on failure nothing changed.
    unsafe { TAILS.tail_call(ctx, index) };
    // Reached only when the tail call failed.
    aya_log_ebpf::warn!(
        ctx,
        "tail call to WEFT_TAILS[{}] failed (slot empty): packet handed to the stack untranslated",
        index
    );
}

/// The sender [`hand_over`] handed to this program, for the packet whose
/// IPv4 header is `ip`.
#[inline(always)]
pub fn sender(ctx: &TcContext, ip: &Ipv4Hdr) -> EndpointInfo {
    let [network_id, stats_slot, a, b, c] = cb(ctx);
    let (a, b, c) = (a.to_ne_bytes(), b.to_ne_bytes(), c.to_ne_bytes());
    EndpointInfo {
        ifindex: ifindex(ctx),
        network_id,
        ip_be: u32::from_ne_bytes(ip.src_addr),
        stats_slot,
        mac: [a[0], a[1], a[2], a[3], b[0], b[1]],
        gateway_mac: [b[2], b[3], c[0], c[1], c[2], c[3]],
    }
}

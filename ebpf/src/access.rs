//! The only place that touches raw packet and context memory.
//!
//! Every packet access is checked against `data_end` here, so the rest of the
//! datapath is safe code working with `Option`s.

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};

/// Reads a `T` at `offset` bytes into the packet, if the packet is that long.
#[inline(always)]
pub fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: [start + offset, start + offset + size_of::<T>()) lies within
    // [data, data_end), checked above; read_unaligned tolerates any alignment.
    Some(unsafe { ((start + offset) as *const T).read_unaligned() })
}

/// Writes `value` at `offset` bytes into the packet; `None` if it does not fit.
#[inline(always)]
pub fn store<T: Copy>(ctx: &TcContext, offset: usize, value: T) -> Option<()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range is within [data, data_end) (checked above), and TC
    // programs may write directly to packet data.
    unsafe { ((start + offset) as *mut T).write_unaligned(value) };
    Some(())
}

/// The ifindex of the device the packet is on (the host-side veth at ingress).
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; reading
    // `ifindex` is a plain context load the verifier rewrites.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Delivers the packet straight into the namespace of `ifindex`'s veth peer,
/// skipping the host-side backlog (`bpf_redirect_peer`, TC ingress only).
#[inline(always)]
pub fn redirect_peer(ifindex: u32) -> i64 {
    // SAFETY: a helper call with plain integer arguments.
    unsafe { bpf_redirect_peer(ifindex, 0) }
}

/// Transmits the packet out of `ifindex` (egress), e.g. back to its sender.
#[inline(always)]
pub fn redirect_egress(ifindex: u32) -> i64 {
    // SAFETY: a helper call with plain integer arguments.
    unsafe { bpf_redirect(ifindex, 0) }
}

//! Verdicts and their accounting: every packet is either forwarded with a
//! named kind or dropped with a named reason, and both are counted per CPU.

use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use weft_common::reason::{Drop, Forward};

use crate::{
    events::{Site, emit_drop},
    maps::{DROPS, EP_STATS, FORWARDS},
};

/// A TC action code (`TC_ACT_*`), or the reason the packet must be dropped.
pub type Verdict = Result<i32, Drop>;

/// Counts the drop, emits its event and returns the action that drops the
/// packet.
#[inline(always)]
pub fn drop_packet(ctx: &TcContext, reason: Drop) -> i32 {
    bump(&DROPS, reason.code(), ctx.len());
    emit_drop(
        ctx,
        reason.code(),
        Site {
            file: 0,
            line: 0,
            program: 0,
        },
    );
    TC_ACT_SHOT
}

/// Counts a forwarding verdict of `kind`.
#[inline(always)]
pub fn count_forward(ctx: &TcContext, kind: Forward) {
    bump(&FORWARDS, kind.code(), ctx.len());
}

#[inline(always)]
fn bump(map: &aya_ebpf::maps::PerCpuArray<weft_common::maps::Counter>, index: u32, len: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid
        // for the program run; BPF programs do not migrate between CPUs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(len);
        }
    }
}

/// Counts a packet the endpoint with counter slot `slot` sent.
#[inline(always)]
pub fn count_endpoint_tx(slot: u32, len: u32) {
    if let Some(stats) = EP_STATS.get_ptr_mut(slot) {
        // SAFETY: as in `bump`: this CPU's slot of a per-CPU array.
        unsafe {
            (*stats).tx_packets += 1;
            (*stats).tx_bytes += u64::from(len);
        }
    }
}

/// Counts a packet weft delivered into the endpoint with counter slot `slot`.
#[inline(always)]
pub fn count_endpoint_rx(slot: u32, len: u32) {
    if let Some(stats) = EP_STATS.get_ptr_mut(slot) {
        // SAFETY: as in `bump`.
        unsafe {
            (*stats).rx_packets += 1;
            (*stats).rx_bytes += u64::from(len);
        }
    }
}

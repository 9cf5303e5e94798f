//! Verdicts and their accounting: every packet is either forwarded with a
//! named kind or dropped with a named reason, and both are counted per CPU.

use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use weft_common::{
    maps::counter_slot,
    reason::{Drop, Forward},
};

use super::{
    direction::Direction,
    events::{Site, emit_drop, maybe_trace},
    maps::{DROPS, EP_STATS, FORWARDS},
};

/// Why a packet must be dropped and where that was decided (build one with
/// `drop_here!`), packed in one `u32` (reason | file << 8 | line << 16) so
/// a `Verdict` stays 8 bytes and returns in a register, not through the
/// stack, on every packet.
#[derive(Clone, Copy)]
pub struct Dropped(u32);

impl Dropped {
    #[inline(always)]
    pub const fn new(reason: Drop, file: u8, line: u16) -> Self {
        Self((reason as u32 & 0xff) | (file as u32) << 8 | (line as u32) << 16)
    }

    #[inline(always)]
    fn code(self) -> u32 {
        self.0 & 0xff
    }

    #[inline(always)]
    fn file(self) -> u8 {
        (self.0 >> 8) as u8
    }

    #[inline(always)]
    fn line(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

const _: () = assert!((weft_common::maps::MAX_REASONS as usize) <= 256);

/// A TC action code (`TC_ACT_*`), or the drop decision.
pub type Verdict = Result<i32, Dropped>;

/// Counts the drop under `direction` (the direction of `program`, the
/// `weft_common::events::PROGRAM_*` that decided it), emits its event and
/// returns the action that drops the packet.
#[inline(always)]
pub fn drop_packet(ctx: &TcContext, dropped: Dropped, program: u8, direction: Direction) -> i32 {
    let code = dropped.code();
    bump(&DROPS, counter_slot(direction.counters(), code), ctx.len());
    emit_drop(
        ctx,
        code,
        Site {
            file: dropped.file(),
            line: dropped.line(),
            program,
        },
    );
    TC_ACT_SHOT
}

/// Counts a drop decided in XDP (no event: XDP has no skb to snapshot the
/// way `emit_drop` does).
#[inline(always)]
pub fn count_drop_xdp(reason: Drop, len: u32, direction: Direction) {
    bump(
        &DROPS,
        counter_slot(direction.counters(), reason.code()),
        len,
    );
}

/// Counts a forwarding verdict of `kind` under `direction` (a constant at
/// every call site, so the index folds at compile time).
#[inline(always)]
pub fn count_forward(ctx: &TcContext, kind: Forward, direction: Direction) {
    bump(
        &FORWARDS,
        counter_slot(direction.counters(), kind.code()),
        ctx.len(),
    );
    maybe_trace(ctx, kind.code());
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

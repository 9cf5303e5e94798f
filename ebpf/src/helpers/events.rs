//! Drop events for `weft monitor`, through a ring buffer. Emitted only on
//! the drop path, so forwarding never pays for them; when nobody reads the
//! ring and it is full, events are lost (counters still count every drop).

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, RingBuf},
    programs::TcContext,
};
use weft_common::events::{
    EVENT_DROP, EVENT_SERVICE_PICK, EVENT_SNAP_LEN, EVENT_TRACE, EVENTS_RING_BYTES,
    PROGRAM_SERVICE, PacketEvent, TraceConfig,
};

use super::access;

#[map(name = "WEFT_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);

#[map(name = "WEFT_TRACE")]
pub static TRACE: Array<TraceConfig> = Array::pinned(1, 0);

/// Emits a trace event for a forwarded packet if a monitor asked for it.
/// With tracing off this is one inlined array load and a compare.
#[inline(always)]
pub fn maybe_trace(ctx: &TcContext, code: u32) {
    maybe_emit(ctx, EVENT_TRACE, code, 0);
}

/// Emits a service-pick event (service `svc_id`, the packet as DNATed to
/// its backend) if a monitor asked for traces.
#[inline(always)]
pub fn maybe_trace_pick(ctx: &TcContext, svc_id: u32) {
    maybe_emit(ctx, EVENT_SERVICE_PICK, svc_id, PROGRAM_SERVICE);
}

#[inline(always)]
fn maybe_emit(ctx: &TcContext, kind: u8, code: u32, program: u8) {
    let Some(cfg) = TRACE.get(0) else {
        return;
    };
    if cfg.until_ns == 0 {
        return;
    }
    let ifindex = access::ifindex(ctx);
    if cfg.ifindex != 0 && cfg.ifindex != ifindex {
        return;
    }
    // SAFETY: helper calls without arguments.
    let (now, dice) = unsafe { (bpf_ktime_get_ns(), bpf_get_prandom_u32()) };
    if now > cfg.until_ns || (cfg.sample_every > 1 && dice % cfg.sample_every != 0) {
        return;
    }
    emit(
        ctx,
        kind,
        code,
        Site {
            file: 0,
            line: 0,
            program,
        },
    );
}

/// Where in this crate a drop was decided.
#[derive(Clone, Copy)]
pub struct Site {
    pub file: u8,
    pub line: u16,
    pub program: u8,
}

/// Emits a drop event for the packet in `ctx`.
#[inline(always)]
pub fn emit_drop(ctx: &TcContext, code: u32, site: Site) {
    emit(ctx, EVENT_DROP, code, site);
}

#[inline(always)]
fn emit(ctx: &TcContext, kind: u8, code: u32, site: Site) {
    let Some(mut entry) = EVENTS.reserve::<PacketEvent>(0) else {
        return;
    };
    let event = entry.as_mut_ptr();
    let len = ctx.len();
    // SAFETY: `event` points to a reserved ring-buffer slot of exactly
    // `size_of::<PacketEvent>()` bytes that only this program writes until
    // `submit`; every field is written before submission.
    unsafe {
        core::ptr::write_bytes(event, 0, 1);
        (*event).ktime_ns = bpf_ktime_get_ns();
        (*event).code = code;
        (*event).ifindex = access::ifindex(ctx);
        (*event).len = len;
        (*event).kind = kind;
        (*event).file = site.file;
        (*event).line = site.line;
        (*event).program = site.program;
        (*event).captured = access::copy_head(ctx, &mut (*event).data) as u16;
    }
    entry.submit(0);
}

const _: () = assert!(EVENT_SNAP_LEN == 128);

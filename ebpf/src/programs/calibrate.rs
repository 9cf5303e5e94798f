//! A program that does nothing, never attached: `prog_cost` runs it through
//! BPF_PROG_TEST_RUN to measure the test harness's own per-run overhead, so
//! per-path costs can be reported with that overhead subtracted.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

#[classifier]
pub fn weft_calibrate(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

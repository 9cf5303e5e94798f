//! weft's eBPF datapath: entry programs in `programs` (one module per
//! attach point), helpers by concern in `helpers` (see their module docs
//! for the layering).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// A drop decided here: the reason plus this source file and line, which
/// `weft monitor` shows. The file id is computed at compile time, and a
/// file missing from `weft_common::events::SOURCE_FILES` does not build.
#[cfg(target_arch = "bpf")]
macro_rules! drop_here {
    ($reason:ident) => {
        $crate::helpers::verdict::Dropped::new(
            weft_common::reason::Drop::$reason,
            const {
                let id = weft_common::events::source_file_id(file!());
                assert!(
                    id != 0,
                    "list this file in weft_common::events::SOURCE_FILES"
                );
                id
            },
            line!() as u16,
        )
    };
}

#[cfg(target_arch = "bpf")]
mod helpers;
#[cfg(target_arch = "bpf")]
mod programs;

/// The eBPF panic handler must never be reachable: code uses `?` and `.get()`,
/// and the verifier rejects a program whose panic path it can reach.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Host builds (e.g. `cargo clippy --workspace`) get an empty binary; the real
/// object is only built for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

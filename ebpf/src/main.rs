//! weft's eBPF datapath.
//!
//! One module per attach point (`from_container`, `from_uplink`), helpers
//! by concern: `access` (the only bounds-checked packet and context
//! accessors and raw helper calls), `parse` (header offsets), `arp`,
//! `forward` (bridging, routing, flooding), `nat` (masquerade and
//! published ports), `icmp_error` (errors about translated connections),
//! `encap` and `decap` (VXLAN overlay; entries `overlay_encap`, `from_vxlan`,
//! and the XDP early drop `xdp_underlay`), `mtu` (the overlay's MTU:
//! fragmentation-needed answers and TCP MSS clamping),
//! `conntrack`, `csum`, `maps` and `verdict` (counters and drop accounting). `calibrate` is a
//! no-op used only to measure test-run overhead.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// A drop decided here: the reason plus this source file and line, which
/// `weft monitor` shows. The file id is computed at compile time.
#[cfg(target_arch = "bpf")]
macro_rules! drop_here {
    ($reason:ident) => {
        $crate::verdict::Dropped::new(
            weft_common::reason::Drop::$reason,
            const { weft_common::events::source_file_id(file!()) },
            line!() as u16,
        )
    };
}

#[cfg(target_arch = "bpf")]
#[path = "helpers/access.rs"]
mod access;
#[cfg(target_arch = "bpf")]
#[path = "helpers/arp.rs"]
mod arp;
#[cfg(target_arch = "bpf")]
#[path = "programs/calibrate.rs"]
mod calibrate;
#[cfg(target_arch = "bpf")]
#[path = "helpers/conntrack.rs"]
mod conntrack;
#[cfg(target_arch = "bpf")]
#[path = "helpers/csum.rs"]
mod csum;
#[cfg(target_arch = "bpf")]
#[path = "helpers/decap.rs"]
mod decap;
#[cfg(target_arch = "bpf")]
#[path = "helpers/encap.rs"]
mod encap;
#[cfg(target_arch = "bpf")]
#[path = "helpers/events.rs"]
mod events;
#[cfg(target_arch = "bpf")]
#[path = "helpers/forward.rs"]
mod forward;
#[cfg(target_arch = "bpf")]
#[path = "programs/from_container.rs"]
mod from_container;
#[cfg(target_arch = "bpf")]
#[path = "programs/from_uplink.rs"]
mod from_uplink;
#[cfg(target_arch = "bpf")]
#[path = "programs/from_vxlan.rs"]
mod from_vxlan;
#[cfg(target_arch = "bpf")]
#[path = "helpers/icmp_error.rs"]
mod icmp_error;
#[cfg(target_arch = "bpf")]
#[path = "helpers/maps.rs"]
mod maps;
#[cfg(target_arch = "bpf")]
#[path = "helpers/mtu.rs"]
mod mtu;
#[cfg(target_arch = "bpf")]
#[path = "helpers/nat.rs"]
mod nat;
#[cfg(target_arch = "bpf")]
#[path = "programs/nat_egress.rs"]
mod nat_egress;
#[cfg(target_arch = "bpf")]
#[path = "programs/overlay_encap.rs"]
mod overlay_encap;
#[cfg(target_arch = "bpf")]
#[path = "helpers/parse.rs"]
mod parse;
#[cfg(target_arch = "bpf")]
#[path = "helpers/verdict.rs"]
mod verdict;
#[cfg(target_arch = "bpf")]
#[path = "programs/xdp_underlay.rs"]
mod xdp_underlay;

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

//! The map ABI shared by weft's eBPF programs and its userspace.
//!
//! Every key and value is `#[repr(C)]` with explicit padding and no
//! `bool`/`enum`/`Option`, so the kernel and userspace agree byte for byte.
//! Fields holding network-order values end in `_be`. Sizes are asserted at
//! compile time: a layout change must be a deliberate ABI change.
#![no_std]

pub mod events;
pub mod maps;
pub mod overlay;
pub mod reason;

/// Bumped whenever a map's key or value layout changes (in size or in
/// meaning: bump that map's version in `maps::LAYOUT_VERSIONS` too), or
/// maps are added.
/// v3: `WEFT_NODE`, `WEFT_CT`, `NET_FLAG_MASQUERADE`.
/// v4: `WEFT_DROPS`/`WEFT_FORWARDS` counted per direction (twice the slots).
/// v5: `WEFT_PUBLISH`; `CtEntry` grows `flags`, `peer_port_be`, `created_ns`.
/// v6: `WEFT_OVERLAY`, `WEFT_ROUTES`, `WEFT_VNIS` (VXLAN overlay).
/// v7: per-map layout versions (`maps::LAYOUT_VERSIONS`), recorded in
/// `WEFT_META` in what was the padding of its record (same size; a v6
/// record reads as "no version": version 1).
/// v8: `WEFT_CT`/`WEFT_CT_CLOSING` layout version 2: a published port's
/// entries carry the client's port on the other side in `peer_port_be`.
pub const ABI_VERSION: u32 = 8;

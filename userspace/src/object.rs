//! The eBPF object this build of weft carries.

/// The ELF built from `ebpf/` by `build.rs`, aligned as `aya::Ebpf::load` needs.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft-ebpf"))
}

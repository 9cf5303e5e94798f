//! The eBPF object this build of weft carries.

/// The ELF built from `ebpf/` by `build.rs`, aligned as `aya::Ebpf::load` needs.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft-ebpf"))
}

/// FNV-1a (64 bit) of [`ebpf_object`]: which build of the programs this
/// weft loads. Recorded per pinned program in `WEFT_META`, so a weft whose
/// object differs reloads the programs while one with the same object
/// adopts them (see `migrate::stale_programs`). Not a defence against
/// anyone: it only tells builds apart.
pub fn object_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        ebpf_object()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    })
}

//! Builds the eBPF object with the nightly toolchain (aya-build) so the
//! `weft` binary embeds the exact programs it was compiled with.

fn main() -> anyhow::Result<()> {
    // aya-build watches the eBPF crate; the shared ABI lives in `common`.
    println!("cargo:rerun-if-changed=../common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "weft-ebpf",
            root_dir: "../ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

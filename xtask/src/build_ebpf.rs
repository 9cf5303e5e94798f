//! `cargo xtask build-ebpf`: build the eBPF object and the `weft` binary.
//!
//! `userspace/build.rs` compiles `ebpf/` for bpfel-unknown-none with the
//! nightly toolchain (aya-build) and `weft` embeds the result, so building
//! `weft` builds the object. Cargo's JSON messages tell us where both landed,
//! whatever the target dir is.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_harness::proc;

/// What a `cargo build -p weft` produced.
pub struct Built {
    /// The `weft` CLI.
    pub weft: PathBuf,
    /// The eBPF ELF object it embeds.
    pub ebpf_object: PathBuf,
}

/// How to build the userspace side.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Fast to build: tests and the demo.
    Debug,
    /// As deployed: the bench, whose agent runs beside the measurements.
    Release,
}

/// Build (debug), then print where the object and the binary are.
pub fn run() -> Result<Built> {
    run_with(Profile::Debug)
}

/// Build with `profile`, then print where the object and the binary are.
pub fn run_with(profile: Profile) -> Result<Built> {
    let built = build(profile)?;
    let size = std::fs::metadata(&built.ebpf_object)
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "eBPF object: {} ({size} bytes)",
        built.ebpf_object.display()
    );
    println!("weft binary: {}", built.weft.display());
    Ok(built)
}

/// `cargo build -p weft` in `profile` (the eBPF side is always built in
/// release by aya-build).
pub fn build(profile: Profile) -> Result<Built> {
    let mut args = vec![
        "build",
        "--package",
        "weft",
        "--message-format=json-render-diagnostics",
    ];
    if profile == Profile::Release {
        args.push("--release");
    }
    let mut cmd = proc::cmd("cargo", &args);
    println!("$ {}", proc::show(&cmd));
    let out = proc::output_stdout(&mut cmd, Duration::from_secs(40 * 60))?;
    if !out.status.success() {
        bail!("`cargo build -p weft` failed ({})", out.status);
    }
    let messages: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let weft_artifact = messages
        .iter()
        .find(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "weft"
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .context("cargo reported no `weft` binary")?;
    let weft: String = weft_artifact["executable"]
        .as_str()
        .context("the `weft` artifact has no executable path")?
        .into();
    let out_dir = messages
        .iter()
        .find(|m| {
            m["reason"] == "build-script-executed" && m["package_id"] == weft_artifact["package_id"]
        })
        .and_then(|m| m["out_dir"].as_str())
        .context("cargo reported no build-script run for `weft`")?;
    // Guard against a stale or foreign binary at the CLI's path.
    let help = proc::output(&mut proc::cmd(&weft, &["--help"]), Duration::from_secs(30))?;
    if !String::from_utf8_lossy(&help.stdout).contains("Usage: weft") {
        bail!("{weft} is not the weft CLI; run `cargo build -p weft` and retry");
    }
    let ebpf_object = PathBuf::from(out_dir).join("weft-ebpf");
    if !ebpf_object.exists() {
        bail!(
            "the eBPF object is missing at {} (was AYA_BUILD_SKIP set?)",
            ebpf_object.display()
        );
    }
    Ok(Built {
        weft: weft.into(),
        ebpf_object,
    })
}

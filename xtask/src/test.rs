//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run`).
//!
//! setup, `cargo build --workspace --all-targets`, `cargo test --workspace`
//! (root: the tests load BPF programs and build namespaces), then
//! `cargo +nightly fmt --all -- --check` (rustfmt.toml uses unstable
//! options), `cargo clippy --workspace --all-targets -- -D warnings`, and
//! clippy of the eBPF crate for `bpfel-unknown-none`.
//! A failing test run doesn't hide fmt/clippy results: every check after the
//! build runs, and the command fails if any did.

use std::time::Duration;

use anyhow::{Result, bail};
use weft_harness::proc;

use crate::setup;

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test --workspace`, after `--`
    /// (e.g. `cargo xtask test -- --no-fail-fast -- --nocapture`).
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

// Generous bounds; the whole command must stay well inside CI's 90 minutes.
const BUILD: Duration = Duration::from_secs(40 * 60);
const TESTS: Duration = Duration::from_secs(30 * 60);
const LINT: Duration = Duration::from_secs(15 * 60);

pub fn run(args: &Args) -> Result<()> {
    if !proc::is_root() {
        bail!(
            "the test suite needs root (it loads BPF programs and creates network \
             namespaces); run it as root, e.g. `sudo -E cargo xtask test`"
        );
    }
    setup::run()?;

    proc::run(
        &mut proc::cmd("cargo", &["build", "--workspace", "--all-targets"]),
        BUILD,
    )?;

    let mut test = proc::cmd("cargo", &["test", "--workspace"]);
    test.args(&args.cargo_test_args);
    let steps: [(&str, std::process::Command, Duration); 4] = [
        ("cargo test", test, TESTS),
        (
            "rustfmt",
            proc::cmd("cargo", &["+nightly", "fmt", "--all", "--", "--check"]),
            LINT,
        ),
        (
            "clippy",
            proc::cmd(
                "cargo",
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            ),
            LINT,
        ),
        (
            // The workspace pass only sees the eBPF crate's host stub; lint
            // the datapath for the target it really builds for.
            "clippy (eBPF target)",
            proc::cmd(
                "cargo",
                &[
                    "+nightly",
                    "clippy",
                    "--manifest-path",
                    "ebpf/Cargo.toml",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--bin",
                    "weft-ebpf",
                    "--",
                    "-D",
                    "warnings",
                ],
            ),
            LINT,
        ),
    ];
    let mut failed = Vec::new();
    for (name, mut cmd, timeout) in steps {
        if let Err(err) = proc::run(&mut cmd, timeout) {
            eprintln!("xtask test: {name} FAILED: {err:#}");
            failed.push(name);
            proc::check_interrupted()?;
        }
    }
    if !failed.is_empty() {
        bail!("xtask test: failed: {}", failed.join(", "));
    }
    println!("xtask test: build, tests, rustfmt and clippy all passed");
    Ok(())
}

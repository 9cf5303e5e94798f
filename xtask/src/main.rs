//! `cargo xtask`: weft's single front door (a cargo alias in `.cargo/config.toml`).
//!
//! One module per command. Everything here shells out (cargo, rustup, apt-get,
//! ip, iperf3, sockperf, the `weft` binary), the namespaces, topologies and
//! traffic through `weft-harness` (shared with the tests), so that xtask
//! itself builds with the stable toolchain alone, before `setup` has
//! installed what the eBPF build needs.

mod agent_bench;
mod bench;
mod bench_cluster;
mod bench_overlay;
mod build_ebpf;
mod cni_bench;
mod demo;
mod dns_load;
mod loadgen;
mod nat_bench;
mod services_bench;
mod setup;
mod test;

use std::{env, path::PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use weft_harness::proc;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "weft's build, test, demo and bench tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (rust-src, bpf-linker, Debian tools)
    /// and mount bpffs; skips whatever is already there.
    Setup,
    /// Build the eBPF object (through `cargo build -p weft`) and print its path.
    BuildEbpf,
    /// Setup, build everything, run the whole test suite (root), then the
    /// rustfmt and clippy checks.
    Test(test::Args),
    /// Setup, build, then show weft moving real traffic between four
    /// containers on two networks; cleans up after itself.
    Demo,
    /// Setup, build, then measure weft against a direct veth pair and a Linux
    /// bridge (throughput, latency, per-program cost).
    Bench(bench::Args),
    /// TCP load generator the bench runs inside its namespaces.
    #[command(hide = true)]
    Loadgen(loadgen::Args),
}

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    add_cargo_bin_to_path();
    proc::install_signal_handlers();
    match cli.command {
        Command::Setup => setup::run(),
        Command::BuildEbpf => build_ebpf::run().map(drop),
        Command::Test(args) => test::run(&args),
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(&args),
        Command::Loadgen(args) => loadgen::run(&args),
    }
}

/// `cargo install` puts bpf-linker in `$CARGO_HOME/bin`; make sure every
/// child (and aya-build's nightly cargo) finds it even if the user's shell
/// PATH doesn't list that directory.
fn add_cargo_bin_to_path() {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(bin) = cargo_home.map(|h| h.join("bin")) else {
        return;
    };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called at the top of `main`, before any thread is spawned,
        // so nothing else can be reading the environment concurrently.
        unsafe { env::set_var("PATH", joined) };
    }
}

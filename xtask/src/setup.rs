//! `cargo xtask setup`: make a fresh machine able to build and test weft.
//!
//! Idempotent: every step checks first and skips what is already there, so
//! `demo`, `test` and `bench` run it too at little cost. The recipe is the
//! one in the project's toolchain notes: rust-src for `-Z build-std=core`,
//! bpf-linker built against the nightly's own libLLVM (no prebuilt binaries
//! can be downloaded here, and Debian 12 has no LLVM 22), the Debian tools
//! tests and benches call (etcd and protoc for cluster mode among them), and
//! bpffs mounted at /sys/fs/bpf.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use weft_harness::proc;

/// Debian packages the tests, demo and bench call.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "iperf3",
    "sockperf",
    "tcpdump",
    "iptables",
    // nft, for the services bench's kube-proxy nftables-mode baseline.
    "nftables",
    "ethtool",
    "bpftool",
    "python3",
    // promtool, which lints the agent's /metrics in the tests (the server
    // itself is never started).
    "prometheus",
    // dig, for the DNS tests.
    "bind9-dnsutils",
    // dnsmasq's binary only (the `dnsmasq` package would start a system
    // resolver): the DNS bench's baseline and the tests' upstream.
    "dnsmasq-base",
    // Cluster mode's tests and bench start their own etcd (3.4) in test
    // namespaces; etcdctl writes to it as other nodes would.
    "etcd-server",
    "etcd-client",
    // The etcd-client crate's build compiles etcd's .proto files.
    "protobuf-compiler",
    "libprotobuf-dev",
    // The CNI clients the CNI tests drive (podman 4.3 with its CNI
    // backend, containerd 1.6's `ctr`), the runtime they share, the
    // reference plugins (chained after weft; the bench's bridge +
    // host-local) and the static busybox containers run as their root
    // filesystem, so no image is pulled.
    "podman",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
];

const BPFFS: &str = "/sys/fs/bpf";
const QUICK: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(30 * 60);

/// Run the setup, printing one line per step.
pub fn run() -> Result<()> {
    println!("xtask setup: checking what this machine lacks");
    let mut done = Vec::new();
    rust_components(&mut done)?;
    bpf_linker(&mut done)?;
    debian_packages(&mut done)?;
    bpffs(&mut done)?;
    if done.is_empty() {
        println!("xtask setup: nothing to do, everything was already in place");
    } else {
        println!("xtask setup: done; {}", done.join("; "));
    }
    Ok(())
}

fn need_root(what: &str) -> Result<()> {
    if !proc::is_root() {
        bail!("{what} needs root; run `sudo -E cargo xtask setup` (or as root)");
    }
    Ok(())
}

/// rust-src and rustfmt for nightly (build-std, the fmt check: rustfmt.toml
/// uses unstable options), clippy for the default toolchain.
fn rust_components(done: &mut Vec<String>) -> Result<()> {
    for (toolchain, component) in [
        (Some("nightly"), "rust-src"),
        (Some("nightly"), "rustfmt"),
        (None, "clippy"),
    ] {
        let which = toolchain.unwrap_or("default toolchain");
        let with_toolchain = |mut args: Vec<&'static str>| {
            if let Some(t) = toolchain {
                args.extend(["--toolchain", t]);
            }
            proc::cmd("rustup", &args)
        };
        let installed = proc::stdout(
            &mut with_toolchain(vec!["component", "list", "--installed"]),
            QUICK,
        )
        .with_context(|| format!("listing rustup components of the {which}"))?;
        if installed.lines().any(|l| l.starts_with(component)) {
            println!("  ok       {component} ({which})");
            continue;
        }
        println!("  install  {component} ({which})");
        proc::run(
            &mut with_toolchain(vec!["component", "add", component]),
            LONG,
        )?;
        done.push(format!("added {component} to {which}"));
    }
    Ok(())
}

/// The nightly's sysroot and LLVM major version (`rustc +nightly -vV`).
fn nightly_llvm() -> Result<(String, u32)> {
    let vv = proc::stdout(&mut proc::cmd("rustc", &["+nightly", "-vV"]), QUICK)?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("no `LLVM version: N.x` line in `rustc +nightly -vV`")?;
    let sysroot = proc::stdout(
        &mut proc::cmd("rustc", &["+nightly", "--print", "sysroot"]),
        QUICK,
    )?;
    Ok((sysroot.trim().to_owned(), major))
}

/// bpf-linker from crates.io, linked against the nightly's own libLLVM.
fn bpf_linker(done: &mut Vec<String>) -> Result<()> {
    let (sysroot, major) = nightly_llvm()?;
    let works = proc::succeeds(&mut proc::cmd("bpf-linker", &["--version"]), QUICK);
    // If it is dynamically linked to an LLVM, that must be this nightly's
    // (an older nightly left installed would have another LLVM).
    let linked_elsewhere = works && {
        let path = proc::stdout(
            &mut proc::cmd("sh", &["-c", "command -v bpf-linker"]),
            QUICK,
        )
        .unwrap_or_default();
        let ldd = proc::stdout(&mut proc::cmd("ldd", &[path.trim()]), QUICK).unwrap_or_default();
        ldd.lines()
            .filter(|l| l.contains("libLLVM"))
            .any(|l| !l.contains(&sysroot))
    };
    if works && !linked_elsewhere {
        println!("  ok       bpf-linker (nightly LLVM {major})");
        return Ok(());
    }
    let libllvm = std::fs::read_dir(Path::new(&sysroot).join("lib"))
        .with_context(|| format!("reading {sysroot}/lib"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        })
        .min()
        .with_context(|| format!("no libLLVM-*.so in {sysroot}/lib: is the nightly complete?"))?;
    println!(
        "  install  bpf-linker (feature llvm-{major}, against {})",
        libllvm.display()
    );
    let mut cmd = proc::cmd(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{major},no-llvm-linking"),
        ],
    );
    cmd.env(
        "RUSTFLAGS",
        format!(
            "-C link-arg=-Wl,-rpath,{sysroot}/lib -C link-arg={}",
            libllvm.display()
        ),
    );
    proc::run(&mut cmd, LONG)?;
    if !proc::succeeds(&mut proc::cmd("bpf-linker", &["--version"]), QUICK) {
        bail!("bpf-linker was installed but `bpf-linker --version` still fails");
    }
    done.push(format!("built bpf-linker for LLVM {major}"));
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    proc::output(
        &mut proc::cmd("dpkg-query", &["-W", "-f=${Status}", package]),
        QUICK,
    )
    .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with(" installed"))
}

/// One `apt-get update`, then install only the missing packages.
fn debian_packages(done: &mut Vec<String>) -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("  ok       Debian packages ({})", DEBIAN_PACKAGES.join(" "));
        return Ok(());
    }
    println!("  install  Debian packages: {}", missing.join(" "));
    need_root("installing Debian packages")?;
    let apt = |args: &[&str]| -> Command {
        let mut c = proc::cmd("apt-get", args);
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    proc::run(&mut apt(&["update", "-q"]), LONG)?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    proc::run(&mut apt(&args), LONG)?;
    done.push(format!("installed {}", missing.join(" ")));
    Ok(())
}

/// Mount bpffs at /sys/fs/bpf if it isn't (it isn't on a fresh machine).
fn bpffs(done: &mut Vec<String>) -> Result<()> {
    let fs_type =
        proc::stdout(&mut proc::cmd("stat", &["-f", "-c", "%T", BPFFS]), QUICK).unwrap_or_default();
    if fs_type.trim() == "bpf_fs" {
        println!("  ok       bpffs mounted at {BPFFS}");
        return Ok(());
    }
    println!("  mount    bpffs at {BPFFS}");
    need_root("mounting bpffs")?;
    std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    proc::run(&mut proc::cmd("mount", &["-t", "bpf", "bpf", BPFFS]), QUICK)?;
    done.push(format!("mounted bpffs at {BPFFS}"));
    Ok(())
}

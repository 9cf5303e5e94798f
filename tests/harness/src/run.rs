//! One process is one run: the names of the namespaces and directories it
//! creates (unique to the run, so concurrent runs never collide), whether
//! IPv6 is off in them, and which `weft` binary its nodes run.
//!
//! Tests keep the defaults: namespaces `<prefix><pid>-<n>` (`wtnode1234-0`),
//! pins in `/sys/fs/bpf/weft-test-<pid>-<n>`, state in
//! `/tmp/weft-state-<pid>-<n>`, IPv6 as the kernel sets it, and the `weft`
//! next to the test executable (or `$WEFT_BIN`). `cargo xtask demo` and
//! `bench` [`configure`] a run of their own, so everything they create
//! starts with `<their tag><pid>-` and the leftovers of a run that was
//! killed outright are recognised by their dead pid ([`reap_stale`]).

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns;

const BPFFS_ROOT: &str = "/sys/fs/bpf";
const STATE_ROOT: &str = "/tmp";

/// What a configured run names its things and which weft it drives.
#[derive(Debug)]
pub struct Run {
    /// Namespaces are `<netns><pid>-<prefix><n>` (e.g. `wdemo1234-wtnode0`).
    pub netns: &'static str,
    /// Pin and state directories are `/sys/fs/bpf/<dirs><pid>-<n>` and
    /// `/tmp/<dirs><pid>-<n>`.
    pub dirs: &'static str,
    /// IPv6 off in every namespace, so router solicitations and DAD add no
    /// noise to counters and measurements.
    pub ipv6_off: bool,
    /// The `weft` binary nodes run; `None` when it could not be built.
    pub weft: Option<PathBuf>,
}

static RUN: OnceLock<Run> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Sets this process's run, once, before anything is created.
pub fn configure(run: Run) -> Result<()> {
    RUN.set(run).map_err(|run| {
        anyhow!(
            "the run is configured once; already {:?}, not {run:?}",
            RUN.get()
        )
    })
}

fn next() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A namespace name unique to this run and call.
pub fn unique_name(prefix: &str) -> String {
    let pid = std::process::id();
    match RUN.get() {
        None => format!("{prefix}{pid}-{}", next()),
        Some(run) => format!("{}{pid}-{prefix}{}", run.netns, next()),
    }
}

/// A fresh bpffs pin directory path for this run (not created).
pub fn pin_dir_path() -> PathBuf {
    Path::new(BPFFS_ROOT).join(dir_name("weft-test-"))
}

/// A fresh state directory path for this run (not created).
pub fn state_dir_path() -> PathBuf {
    Path::new(STATE_ROOT).join(dir_name("weft-state-"))
}

fn dir_name(default_prefix: &str) -> String {
    let prefix = RUN.get().map_or(default_prefix, |run| run.dirs);
    format!("{prefix}{}-{}", std::process::id(), next())
}

/// Whether namespaces get IPv6 turned off.
pub fn ipv6_off() -> bool {
    RUN.get().is_some_and(|run| run.ipv6_off)
}

/// The `weft` binary: the configured run's, else `$WEFT_BIN`, else the one
/// next to the test executable (`target/<profile>/weft`).
pub fn weft_binary() -> Result<PathBuf> {
    if let Some(run) = RUN.get() {
        return run
            .weft
            .clone()
            .context("this run has no weft binary (it could not be built)");
    }
    if let Some(bin) = std::env::var_os("WEFT_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target/<profile> parent")?;
    let bin = profile_dir.join("weft");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build -p weft) or set WEFT_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Namespaces of this configured run that still exist (none, after its
/// guards have dropped).
pub fn leftovers() -> Vec<String> {
    let Some(run) = RUN.get() else {
        return Vec::new();
    };
    let ours = format!("{}{}-", run.netns, std::process::id());
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&ours))
        .collect()
}

/// Removes what earlier runs of the configured kind left when they died
/// without cleaning up: namespaces `<netns><pid>-...` and directories
/// `<dirs><pid>...` (bpffs pins, state) whose pid no longer exists.
pub fn reap_stale() {
    let Some(run) = RUN.get() else {
        return;
    };
    let dead = |rest: &str| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !digits.is_empty()
            && digits.parse::<u32>().ok() != Some(std::process::id())
            && !Path::new("/proc").join(&digits).exists()
    };
    for name in netns::list() {
        if let Some(rest) = name.strip_prefix(run.netns)
            && dead(rest)
        {
            eprintln!("removing stale namespace {name} left by an earlier run");
            netns::delete(&name);
        }
    }
    for parent in [BPFFS_ROOT, STATE_ROOT] {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(run.dirs)) else {
                continue;
            };
            if dead(rest) && entry.path().is_dir() {
                eprintln!(
                    "removing stale {} left by an earlier run",
                    entry.path().display()
                );
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

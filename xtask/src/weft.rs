//! Driving the `weft` CLI for one node namespace, with a guard that runs
//! `weft teardown` and removes the node's bpffs pins and state dir on drop.
//!
//! Each node gets its own `--bpffs` and `--state-dir`, so a demo or bench
//! never touches a real weft install under /sys/fs/bpf/weft or /var/lib/weft.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::proc;

const T: Duration = Duration::from_secs(60);

/// One weft node: the CLI bound to a node namespace, pin dir and state dir.
pub struct WeftNode {
    bin: PathBuf,
    node_netns: String,
    bpffs: PathBuf,
    state_dir: PathBuf,
}

impl WeftNode {
    /// Prepare a node whose datapath lives in the (existing) namespace
    /// `node_netns`, pinned under `bpffs`, with its state in `state_dir`.
    pub fn new(bin: &Path, node_netns: &str, bpffs: PathBuf, state_dir: PathBuf) -> Self {
        Self {
            bin: bin.to_owned(),
            node_netns: node_netns.to_owned(),
            bpffs,
            state_dir,
        }
    }

    /// `weft --netns NODE --bpffs DIR --state-dir DIR ARGS...`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--netns")
            .arg(&self.node_netns)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args);
        c
    }

    /// Run a weft command, echoing it and showing its output.
    pub fn run(&self, args: &[&str]) -> Result<()> {
        println!("$ weft {}", args.join(" "));
        let mut cmd = self.cmd(args);
        let status = proc::status(&mut cmd, T)?;
        if !status.success() {
            anyhow::bail!("`weft {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Run a weft command quietly (its stderr is quoted if it fails).
    pub fn quiet(&self, args: &[&str]) -> Result<String> {
        proc::stdout(&mut self.cmd(args), T).with_context(|| format!("weft {}", args.join(" ")))
    }

    /// Run a weft command with `-o json` appended and parse its output.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.quiet(&args)?;
        serde_json::from_str(&out)
            .with_context(|| format!("`weft {}` printed no JSON: {out}", args.join(" ")))
    }
}

impl Drop for WeftNode {
    fn drop(&mut self) {
        if let Err(err) = proc::cleanup(&mut self.cmd(&["teardown"]), T) {
            eprintln!("xtask: warning: weft teardown: {err:#}");
        }
        for dir in [&self.bpffs, &self.state_dir] {
            if dir.exists() {
                // Pins are files on bpffs: unlinking them drops our references.
                if let Err(err) = fs::remove_dir_all(dir) {
                    eprintln!("xtask: warning: removing {}: {err}", dir.display());
                }
            }
        }
    }
}

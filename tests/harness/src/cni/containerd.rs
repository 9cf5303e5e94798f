//! containerd 1.6 inside a [`CniHost`]: a daemon of the test's own (root,
//! state, socket and config in the host's directory, the CRI plugin off),
//! driven with `ctr`, which reads CNI configurations from the sandbox's
//! `/etc/cni/net.d` and plugins from its `/opt/cni/bin`. On drop every
//! task and container goes, then the daemon and any shim it left.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::CniHost;
use crate::proc;

/// Bound on one `ctr` command.
const CTR: Duration = Duration::from_secs(120);
/// How long the daemon may take to serve.
const READY: Duration = Duration::from_secs(20);

pub struct Containerd<'a> {
    host: &'a CniHost,
    dir: PathBuf,
    daemon: Child,
}

impl<'a> Containerd<'a> {
    pub fn start(host: &'a CniHost) -> Result<Self> {
        let dir = host.dir().join("containerd");
        fs::create_dir_all(&dir)?;
        let d = dir.display();
        let config = format!(
            "version = 2
root = \"{d}/root\"
state = \"{d}/state\"
disabled_plugins = [\"io.containerd.grpc.v1.cri\"]
[grpc]
  address = \"{d}/containerd.sock\"
[ttrpc]
  address = \"{d}/containerd.sock.ttrpc\"
[debug]
  address = \"{d}/debug.sock\"
"
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config)?;
        let log = fs::File::create(dir.join("containerd.log"))?;
        let daemon = host
            .command(&["containerd", "--config", &config_path.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        let mut me = Self { host, dir, daemon };
        let end = Instant::now() + READY;
        loop {
            if me.output(&["version"]).is_ok_and(|o| o.status.success()) {
                return Ok(me);
            }
            if let Some(status) = me.daemon.try_wait()? {
                bail!(
                    "containerd exited ({status}): {}",
                    fs::read_to_string(me.dir.join("containerd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > end {
                bail!("containerd did not serve within {} s", READY.as_secs());
            }
            proc::sleep(Duration::from_millis(100))?;
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `ctr --address SOCK ARGS` inside the sandbox.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let socket = self.socket().to_string_lossy().into_owned();
        let mut argv = vec!["ctr", "--address", &socket];
        argv.extend(args);
        self.host.command(&argv)
    }

    pub fn output(&self, args: &[&str]) -> Result<Output> {
        proc::output(&mut self.ctr(args), CTR).context("running ctr")
    }

    /// `ctr ARGS`; fails quoting stderr unless it succeeds; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "ctr {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `ctr run --rm --cni --rootfs ROOTFS ID sh -c SCRIPT`: a container
    /// on the network of the sandbox's first configuration, to completion.
    pub fn run_cni(&self, id: &str, script: &str) -> Result<String> {
        let rootfs = self.host.rootfs().to_string_lossy().into_owned();
        self.run(&[
            "run", "--rm", "--cni", "--rootfs", &rootfs, id, "/bin/sh", "-c", script,
        ])
    }

    /// Ids of the containers this daemon knows.
    fn containers(&self) -> Vec<String> {
        self.output(&["containers", "list", "--quiet"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        for id in self.containers() {
            for args in [
                vec!["tasks", "kill", "--signal", "SIGKILL", &id],
                vec!["tasks", "delete", "--force", &id],
                vec!["containers", "delete", &id],
            ] {
                let _ = proc::cleanup(&mut self.ctr(&args), CTR);
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Shims outlive their daemon; ours name our socket.
        let socket = self.socket().to_string_lossy().into_owned();
        for pid in processes_naming(&socket) {
            // SAFETY: plain kill(2) of a shim whose command line names this
            // test's own containerd socket.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Pids whose command line contains `needle` (a path unique to the run).
fn processes_naming(needle: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

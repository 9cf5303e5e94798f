//! podman 4.3 with its CNI backend inside a [`CniHost`]: storage, run and
//! temporary directories and its `containers.conf` (CNI backend, runc,
//! cgroupfs; limits this VM allows) all in the host's directory; every
//! container is removed on drop.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::CniHost;
use crate::proc;

/// Bound on one podman command.
const PODMAN: Duration = Duration::from_secs(120);

pub struct Podman<'a> {
    host: &'a CniHost,
    dir: PathBuf,
}

impl<'a> Podman<'a> {
    pub fn new(host: &'a CniHost) -> Result<Self> {
        let dir = host.dir().join("podman");
        fs::create_dir_all(&dir)?;
        let conf = format!(
            "[containers]
default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]
[network]
network_backend = \"cni\"
cni_plugin_dirs = [\"{}\"]
network_config_dir = \"{}\"
[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
",
            host.bin_dir().display(),
            host.conf_dir().display()
        );
        fs::write(dir.join("containers.conf"), conf)?;
        Ok(Self { host, dir })
    }

    /// `podman ARGS` with the host's storage and configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = |sub: &str| self.dir.join(sub).to_string_lossy().into_owned();
        let (root, runroot, tmp) = (d("storage"), d("run"), d("tmp"));
        let mut argv = vec![
            "podman",
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--tmpdir",
            &tmp,
        ];
        argv.extend(args);
        let mut c = self.host.command(&argv);
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    /// `podman ARGS`, whatever its exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        proc::output(&mut self.command(args), PODMAN).context("running podman")
    }

    /// `podman ARGS`; fails quoting stderr unless it succeeds; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "podman {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The host's busybox root filesystem, for `--rootfs`.
    pub fn rootfs(&self) -> String {
        self.host.rootfs().to_string_lossy().into_owned()
    }

    /// Starts a container in the background on `network` running `sh -c
    /// script` with the host's busybox root filesystem; returns its id.
    pub fn start(&self, name: &str, network: &str, extra: &[&str], script: &str) -> Result<String> {
        let rootfs = self.host.rootfs().to_string_lossy().into_owned();
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend(extra);
        args.extend(["--rootfs", &rootfs, "/bin/sh", "-c", script]);
        self.run(&args)
    }

    /// Runs a container on `network` to completion; its output.
    pub fn run_once(&self, network: &str, extra: &[&str], script: &str) -> Result<String> {
        let rootfs = self.host.rootfs().to_string_lossy().into_owned();
        let mut args = vec!["run", "--rm", "--network", network];
        args.extend(extra);
        args.extend(["--rootfs", &rootfs, "/bin/sh", "-c", script]);
        self.run(&args)
    }

    /// `podman inspect --format FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> Result<String> {
        self.run(&["inspect", "--format", format, name])
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let mut rm = self.command(&["rm", "--all", "--force", "--time", "0"]);
        if let Err(e) = proc::cleanup(&mut rm, PODMAN) {
            eprintln!("warning: removing podman's containers: {e:#}");
        }
    }
}

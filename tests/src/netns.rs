//! Network namespaces owned by a test: created with a run-unique name and
//! deleted on drop (also when the test panics), with their processes.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

use crate::bpffs::unique_name;

/// A network namespace deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace `<prefix><pid>-<n>` with `lo` up.
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and fails unless it succeeds.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let out = self.exec_unchecked(argv)?;
        if !out.status.success() {
            bail!(
                "in {}: {:?} failed: {}{}",
                self.name,
                argv,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Runs a command inside the namespace, whatever its exit status.
    pub fn exec_unchecked(&self, argv: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .with_context(|| format!("running {argv:?} in {}", self.name))
    }

    /// How many of `count` pings to `ip` got an answer.
    pub fn ping(&self, ip: &str, count: u32) -> Result<u32> {
        let out = self.exec_unchecked(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            ip,
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let received = text
            .split(',')
            .find_map(|part| part.trim().strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok());
        match received {
            Some(n) => Ok(n),
            None => bail!(
                "could not read ping's summary in {}: {text}{}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it
    /// opens live here (setns is per thread).
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: `file` is an open namespace file for the duration of
            // the call; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        }))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a host command and fails with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

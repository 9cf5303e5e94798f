//! Network namespaces owned by a run: created with a run-unique name
//! ([`crate::run`]) and deleted on drop, also when a test panics or xtask
//! is interrupted, after killing whatever still runs inside them. Nothing
//! here touches the root namespace: commands run inside ours.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    proc,
    run::{ipv6_off, unique_name},
};

/// Bound on one command in a namespace (`ip`, `sysctl`, `ping -c 2`, ...).
const EXEC: Duration = Duration::from_secs(60);
/// Bound on the cleanup commands in `Drop`.
const CLEANUP: Duration = Duration::from_secs(20);

/// A network namespace deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a run-unique name from `prefix` (see
    /// [`unique_name`]).
    pub fn new(prefix: &str) -> Result<Self> {
        Self::create(&unique_name(prefix))
    }

    /// Creates namespace `name` with `lo` up (and IPv6 off if the run says
    /// so); the caller makes `name` unique to the run.
    pub fn create(name: &str) -> Result<Self> {
        proc::stdout(&mut proc::cmd("ip", &["netns", "add", name]), CLEANUP)
            .with_context(|| format!("creating namespace {name}"))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        if ipv6_off() {
            ns.sysctl(&[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME ARGV...`, to run with [`proc`] (ip execs the
    /// program, so the child's pid is the program's own).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// [`NetNs::command`] pinned to `cpu` (`taskset -c`) if given; taskset
    /// execs the program, so the child's pid is still the program's own.
    pub fn command_on(&self, cpu: Option<usize>, argv: &[&str]) -> Command {
        match cpu {
            Some(cpu) => {
                let cpu = cpu.to_string();
                let mut all = vec!["taskset", "-c", &cpu];
                all.extend(argv);
                self.command(&all)
            }
            None => self.command(argv),
        }
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
        proc::output(&mut self.command(argv), EXEC)
            .with_context(|| format!("running {argv:?} in {}", self.name))
    }

    /// `sysctl -qw SETTINGS...` inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut argv = vec!["sysctl", "-qw"];
        argv.extend(settings);
        self.exec(&argv).map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it
    /// opens live here (setns is per thread).
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
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

    /// Waits until something listens on `port` (TCP or UDP) inside this
    /// namespace, so clients don't race their server's startup.
    pub fn wait_listening(&self, udp: bool, port: u16, timeout: Duration) -> Result<()> {
        let flags = if udp { "-Hlun" } else { "-Hltn" };
        let filter = format!("sport = :{port}");
        let end = Instant::now() + timeout;
        loop {
            let out = self.exec(&["ss", flags, &filter])?;
            if !out.stdout.trim_ascii().is_empty() {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!(
                    "nothing listens on {} port {port} in {} after {}s",
                    if udp { "UDP" } else { "TCP" },
                    self.name,
                    timeout.as_secs()
                );
            }
            proc::sleep(Duration::from_millis(50))?;
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Kills every process left in namespace `name`, then deletes it.
pub(crate) fn delete(name: &str) {
    if let Ok(pids) = proc::cleanup(&mut proc::cmd("ip", &["netns", "pids", name]), CLEANUP) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: plain kill(2) of a pid that `ip netns pids` reported as
            // living in our own uniquely named namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Err(err) = proc::cleanup(&mut proc::cmd("ip", &["netns", "del", name]), CLEANUP) {
        eprintln!("warning: could not delete namespace {name}: {err:#}");
    }
}

/// Names of existing namespaces (`ip netns list`), without the `(id: N)`.
pub fn list() -> Vec<String> {
    proc::cleanup(&mut proc::cmd("ip", &["netns", "list"]), CLEANUP)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a host command and fails with its output unless it succeeds (for
/// tools that only read, such as `bpftool map dump`).
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = proc::output(&mut proc::cmd(program, args), EXEC)
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

//! Named network namespaces owned by one xtask run, removed on drop.
//!
//! Names carry the run's pid (`wdemo1234-c1`), so concurrent runs never
//! collide and leftovers of a run that was SIGKILLed can be recognised (its
//! pid is gone) and reaped by the next run. Nothing here touches the root
//! namespace: links are created inside our namespaces with `ip -n`.

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result};

use crate::proc;

const T: Duration = Duration::from_secs(20);

/// A network namespace created by this run; deleted (after killing whatever
/// still runs inside it) when dropped.
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME`, bring up `lo`, and turn IPv6 off inside it so
    /// router solicitations and DAD don't add noise to counters and benches.
    pub fn create(name: &str) -> Result<Self> {
        proc::stdout(&mut proc::cmd("ip", &["netns", "add", name]), T)
            .with_context(|| format!("creating namespace {name}"))?;
        let ns = Self {
            name: name.to_owned(),
        };
        proc::stdout(&mut ns.ip(&["link", "set", "lo", "up"]), T)?;
        proc::stdout(
            &mut ns.exec(&[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]),
            T,
        )?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        c
    }

    /// `ip netns exec NAME ARGS...` (ip execs the program, so the child's pid
    /// is the program's own pid).
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// An uplink from this namespace to `peer`, its next hop: a veth pair,
    /// `here` with `here_ip`/24 in this namespace and `there` with
    /// `there_ip`/24 in `peer`, both up, and this namespace's default route
    /// via `there_ip`. `run` runs each `ip` command (echoing it or not).
    pub fn uplink_to(
        &self,
        (here, here_ip): (&str, &str),
        peer: &Netns,
        (there, there_ip): (&str, &str),
        run: impl Fn(&mut Command) -> Result<()>,
    ) -> Result<()> {
        run(&mut self.ip(&[
            "link", "add", here, "type", "veth", "peer", "name", there, "netns", &peer.name,
        ]))?;
        run(&mut self.ip(&["addr", "add", &format!("{here_ip}/24"), "dev", here]))?;
        run(&mut self.ip(&["link", "set", here, "up"]))?;
        run(&mut peer.ip(&["addr", "add", &format!("{there_ip}/24"), "dev", there]))?;
        run(&mut peer.ip(&["link", "set", there, "up"]))?;
        run(&mut self.ip(&["route", "add", "default", "via", there_ip]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Kill every process left in namespace `name`, then delete it.
fn delete(name: &str) {
    if let Ok(pids) = proc::cleanup(&mut proc::cmd("ip", &["netns", "pids", name]), T) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: plain kill(2) of a pid that `ip netns pids` reported as
            // living in our own uniquely named namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Err(err) = proc::cleanup(&mut proc::cmd("ip", &["netns", "del", name]), T) {
        eprintln!("xtask: warning: could not delete namespace {name}: {err:#}");
    }
}

/// Names of existing namespaces (`ip netns list`), without the `(id: N)`.
pub fn list() -> Vec<String> {
    proc::cleanup(&mut proc::cmd("ip", &["netns", "list"]), T)
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Remove leftovers of earlier runs of ours that died without cleaning up:
/// namespaces named `<prefix><pid>-...` and directories `<dir_prefix><pid>...`
/// (bpffs pins, state dirs) whose pid no longer exists.
pub fn reap_stale(prefix: &str, dir_prefixes: &[&str]) {
    let dead = |rest: &str| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !digits.is_empty()
            && digits.parse::<u32>().ok() != Some(std::process::id())
            && !Path::new("/proc").join(&digits).exists()
    };
    for name in list() {
        if let Some(rest) = name.strip_prefix(prefix)
            && dead(rest)
        {
            eprintln!("xtask: removing stale namespace {name} left by an earlier run");
            delete(&name);
        }
    }
    for dir_prefix in dir_prefixes {
        let dir = Path::new(dir_prefix);
        let (Some(parent), Some(stem)) = (dir.parent(), dir.file_name().and_then(|s| s.to_str()))
        else {
            continue;
        };
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(stem)) else {
                continue;
            };
            if dead(rest) && entry.path().is_dir() {
                eprintln!(
                    "xtask: removing stale {} left by an earlier run",
                    entry.path().display()
                );
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Netns {
    /// Wait until something listens on `port` (TCP or UDP) inside this
    /// namespace, so clients don't race their server's startup.
    pub fn wait_listening(&self, udp: bool, port: u16, timeout: Duration) -> Result<()> {
        let flags = if udp { "-Hlun" } else { "-Hltn" };
        let filter = format!("sport = :{port}");
        let end = std::time::Instant::now() + timeout;
        loop {
            let out = proc::stdout(&mut self.exec(&["ss", flags, &filter]), T)?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= end {
                anyhow::bail!(
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

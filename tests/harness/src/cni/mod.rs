//! CNI runtimes on a node, with nothing of theirs outside the test: a
//! [`CniHost`] is a directory of the run (`/tmp/weft-cni-<pid>-<n>`) and a
//! mount namespace held by one process inside the node's network
//! namespace, where `/etc`, `/var/lib` and `/opt` are overlays whose upper
//! layers live in that directory and `/etc/cni/net.d`, `/opt/cni/bin`
//! and `/var/lib/cni` are the directory's own (`net.d/`, `bin/`,
//! `varlib-cni/`), and `/run` is a tmpfs of its own. Runtimes (podman,
//! containerd, `ctr`, runc, the shims) run there; the machine's
//! `/etc/cni`, `/var/lib/cni`, `/var/lib/containers` and `/run` are never
//! written. Only `/run/netns` stays shared with the machine's, so the
//! agent (in the machine's mount namespace) opens the namespaces podman
//! makes.
//!
//! Also: running a CNI plugin by hand ([`invoke`]), as libcni does, for
//! what the Debian clients never call, and for the bench.

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub mod containerd;
pub mod podman;

pub use self::{containerd::Containerd, podman::Podman};
use crate::{
    netns::NetNs,
    node::Node,
    proc,
    run::{unique_name, weft_binary},
};

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// Bound on one plugin run.
const PLUGIN: Duration = Duration::from_secs(90);
/// Bound on the host's setup.
const SETUP: Duration = Duration::from_secs(10);

/// The `weft-cni` binary next to the run's `weft`.
pub fn plugin_binary() -> Result<PathBuf> {
    let weft = weft_binary()?;
    let bin = weft.with_file_name("weft-cni");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build -p weft-cni)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The sandbox's mounts, `$D` its directory. First the mounts it builds
/// on are made slaves, so nothing mounted here reaches the machine's mount
/// namespace even where the machine's mounts are shared (systemd makes `/`
/// shared). `/run/netns` is kept as a peer of the machine's (a bind mount
/// of a shared mount joins its peer group), under a private `/run`
/// (runc's, conmon's and containerd's shim sockets go there, not into the
/// machine's `/run`).
const SANDBOX_MOUNTS: &str = "
    for m in / /etc /var/lib /opt /run /tmp; do
      mount --make-slave \"$(findmnt -n -o TARGET --target $m)\"
    done
    mkdir -p $D/netns-peer
    mount --rbind /run/netns $D/netns-peer
    for m in /etc /var/lib /opt; do
      mkdir -p $D/ov$m/up $D/ov$m/work
      mount -t overlay overlay -o lowerdir=$m,upperdir=$D/ov$m/up,workdir=$D/ov$m/work $m
    done
    mount -t tmpfs -o mode=755 weft-cni-run /run
    mkdir -p /run/netns /run/lock /etc/cni/net.d /opt/cni/bin /var/lib/cni
    mount --rbind $D/netns-peer /run/netns
    mount --bind $D/net.d /etc/cni/net.d
    mount --bind $D/bin /opt/cni/bin
    mount --bind $D/varlib-cni /var/lib/cni
";

/// A node's runtime sandbox: the directory and the mount namespace.
pub struct CniHost {
    dir: PathBuf,
    holder: Child,
}

impl CniHost {
    /// A sandbox whose processes run in `node`'s network namespace.
    pub fn new(node: &Node) -> Result<Self> {
        Self::in_namespace(&node.ns)
    }

    /// A sandbox whose processes run in network namespace `ns`.
    pub fn in_namespace(ns: &NetNs) -> Result<Self> {
        let dir = Path::new("/tmp").join(unique_name("weft-cni-"));
        for sub in ["net.d", "bin", "varlib-cni", "rootfs/bin", "ov"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        symlink(plugin_binary()?, dir.join("bin/weft"))?;
        for p in fs::read_dir(REFERENCE_PLUGINS)
            .with_context(|| format!("{REFERENCE_PLUGINS}: run `cargo xtask setup`"))?
        {
            let p = p?;
            symlink(p.path(), dir.join("bin").join(p.file_name()))?;
        }
        busybox_rootfs(&dir.join("rootfs"))?;
        let ready = dir.join("ready");
        let d = dir.display();
        let script = format!(
            "set -e
             {SANDBOX_MOUNTS}
             touch {ready}
             exec nsenter --net=/run/netns/{ns} -- sleep infinity",
            SANDBOX_MOUNTS = SANDBOX_MOUNTS.replace("$D", &d.to_string()),
            ready = ready.display(),
            ns = ns.name()
        );
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the runtime sandbox")?;
        let mut host = Self { dir, holder };
        let end = Instant::now() + SETUP;
        while !ready.exists() {
            if let Some(status) = host.holder.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = host.holder.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("the runtime sandbox exited ({status}): {err}");
            }
            if Instant::now() > end {
                bail!(
                    "the runtime sandbox was not ready within {} s",
                    SETUP.as_secs()
                );
            }
            proc::sleep(Duration::from_millis(10))?;
        }
        // Ready once `sleep` runs in the node's network namespace.
        let ns_link = format!("/run/netns/{}", ns.name());
        let node_ino = fs::metadata(&ns_link)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .with_context(|| ns_link.clone())?;
        while fs::metadata(format!("/proc/{}/ns/net", host.holder.id()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
            != Some(node_ino)
        {
            if Instant::now() > end {
                bail!("the runtime sandbox never entered {}", ns.name());
            }
            proc::sleep(Duration::from_millis(5))?;
        }
        Ok(host)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugin directory (`/opt/cni/bin` inside): `weft` and the
    /// reference plugins.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The configuration directory (`/etc/cni/net.d` inside).
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// A busybox root filesystem (`sh`, `ping`, `wget`, `httpd`, `nc`, ...).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Writes `conflist` as `net.d/FILE`.
    pub fn write_conflist(&self, file: &str, conflist: &Value) -> Result<PathBuf> {
        let path = self.conf_dir().join(file);
        fs::write(&path, serde_json::to_vec_pretty(conflist)?)?;
        Ok(path)
    }

    /// `ARGV...` inside the sandbox (its mount namespace, the node's
    /// network namespace).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.holder.id()))
            .args(["--mount", "--net", "--"])
            .args(argv);
        c
    }
}

impl Drop for CniHost {
    fn drop(&mut self) {
        // The mounts go with the last process of the namespace.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: removing {}: {e}", self.dir.display());
        }
    }
}

/// A root filesystem of the machine's static busybox and its applets.
fn busybox_rootfs(root: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: run `cargo xtask setup` (busybox-static)");
    }
    fs::copy(busybox, root.join("bin/busybox"))?;
    let list = proc::stdout(&mut proc::cmd("/bin/busybox", &["--list"]), SETUP)?;
    for applet in list.lines().filter(|a| *a != "busybox") {
        symlink("busybox", root.join("bin").join(applet))?;
    }
    for dir in ["etc", "proc", "sys", "dev", "tmp", "www"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::write(root.join("www/index.html"), "weft says hello\n")?;
    Ok(())
}

/// What one plugin run printed.
#[derive(Debug)]
pub struct PluginRun {
    pub success: bool,
    /// stdout as JSON (`Null` when empty).
    pub stdout: Value,
    pub stdout_text: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl PluginRun {
    /// The CNI error code, when it failed.
    pub fn code(&self) -> Option<u64> {
        self.stdout["code"].as_u64()
    }

    /// The result, or an error quoting what the plugin printed.
    pub fn ok(self) -> Result<Value> {
        if !self.success {
            bail!(
                "plugin failed: {} {}",
                self.stdout_text.trim(),
                self.stderr.trim()
            );
        }
        Ok(self.stdout)
    }
}

/// Runs `plugin` as a runtime does: the environment `env` only (plus
/// `PATH`), `stdin` on its standard input.
pub fn invoke(plugin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Result<PluginRun> {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied());
    invoke_command(&mut cmd, stdin)
}

/// [`invoke`] from a thread inside `ns` (a plugin that builds interfaces
/// where it runs, like `bridge`, builds them there).
pub fn invoke_in(
    ns: &NetNs,
    plugin: &Path,
    env: &[(&str, &str)],
    stdin: &[u8],
) -> Result<PluginRun> {
    let plugin = plugin.to_owned();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let stdin = stdin.to_owned();
    let worker = ns.run_in(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        invoke(&plugin, &env, &stdin)
    })?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the plugin thread panicked"))?
}

fn invoke_command(cmd: &mut Command, stdin: &[u8]) -> Result<PluginRun> {
    let what = proc::show(cmd);
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    let mut input = child.stdin.take().context("no stdin")?;
    let stdin = stdin.to_owned();
    let writer = thread::spawn(move || input.write_all(&stdin));
    let read = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = proc::wait_timeout(&mut child, &what, PLUGIN)?;
    let elapsed = started.elapsed();
    // A plugin may exit before reading everything (VERSION): fine.
    let _ = writer.join();
    let stdout_text = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    let stdout = if stdout_text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout_text)
            .with_context(|| format!("`{what}` printed no JSON: {stdout_text}"))?
    };
    Ok(PluginRun {
        success: status.success(),
        stdout,
        stdout_text,
        stderr,
        elapsed,
    })
}

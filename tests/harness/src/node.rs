//! A weft node: a namespace playing the host, driven through the real
//! `weft` binary with `--netns`, `--bpffs` and `--state-dir` of its own
//! (pins and state unique to the run), so nothing ever touches a real
//! install. `weft teardown`, the pins, the state and the namespace go away
//! on drop, in that order.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use crate::agent::{Agent, AgentLog};
use crate::{bpffs::PinDir, netns::NetNs, proc, run::weft_binary, state_dir::StateDir};

/// Bound on one `weft` command (the agent and `monitor` are spawned).
const WEFT: Duration = Duration::from_secs(120);

/// Fields drop in declaration order after `Drop::drop` ran the teardown:
/// pins and state first, the namespace last.
pub struct Node {
    bin: PathBuf,
    pins: PinDir,
    state: StateDir,
    pub ns: NetNs,
}

impl Node {
    /// A node running the run's `weft` (see [`weft_binary`]).
    pub fn new() -> Result<Self> {
        Self::with_binary(&weft_binary()?)
    }

    /// A node running `bin`.
    pub fn with_binary(bin: &Path) -> Result<Self> {
        Self::in_namespace(bin, NetNs::new("wtnode")?)
    }

    /// A node running `bin` in `ns`, which it then owns.
    pub fn in_namespace(bin: &Path, ns: NetNs) -> Result<Self> {
        Ok(Self {
            bin: bin.to_owned(),
            pins: PinDir::new().context("creating the node's bpffs pin directory")?,
            state: StateDir::new(),
            ns,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// The agent's API socket (the default, `<state dir>/agent.sock`).
    pub fn agent_socket(&self) -> PathBuf {
        self.state_dir().join("agent.sock")
    }

    /// `weft --netns NODE --bpffs PINS --state-dir STATE ARGS...`, to run
    /// with [`proc`] or spawn.
    pub fn weft_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--netns")
            .arg(self.ns.name())
            .arg("--bpffs")
            .arg(self.pin_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args);
        c
    }

    /// Starts `weft ARGS` in the background (e.g. `monitor`), output piped.
    pub fn weft_spawn(&self, args: &[&str]) -> Result<Child> {
        self.weft_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting weft")
    }

    /// Runs `weft` against this node, whatever its exit status.
    pub fn weft_unchecked(&self, args: &[&str]) -> Result<Output> {
        self.weft_env(&[], args)
    }

    /// Runs `weft` with extra environment variables, whatever its exit
    /// status.
    pub fn weft_env(&self, env: &[(&str, &str)], args: &[&str]) -> Result<Output> {
        let mut cmd = self.weft_command(args);
        cmd.envs(env.iter().copied());
        proc::output(&mut cmd, WEFT).context("running weft")
    }

    /// Runs `weft` and fails with its stderr unless it succeeds.
    pub fn weft(&self, args: &[&str]) -> Result<String> {
        let out = self.weft_unchecked(args)?;
        if !out.status.success() {
            bail!(
                "weft {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `weft ARGS -o json` and parses the output.
    pub fn weft_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.weft(&all)?;
        serde_json::from_str(&text).with_context(|| format!("weft {args:?} printed {text}"))
    }

    /// Runs `weft` for a human to watch (the demo): echoes the command,
    /// shows its output, fails unless it succeeds.
    pub fn weft_echo(&self, args: &[&str]) -> Result<()> {
        println!("$ weft {}", args.join(" "));
        let status = proc::status(&mut self.weft_command(args), WEFT)?;
        if !status.success() {
            bail!("`weft {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Packets counted for a drop reason (`weft stats -o json`).
    pub fn drops(&self, reason: &str) -> Result<u64> {
        self.stat("drops", reason)
    }

    /// Packets counted for a forwarding verdict.
    pub fn forwards(&self, kind: &str) -> Result<u64> {
        self.stat("forwards", kind)
    }

    fn stat(&self, section: &str, name: &str) -> Result<u64> {
        let stats = self.weft_json(&["stats"])?;
        stats[section][name]["packets"]
            .as_u64()
            .with_context(|| format!("stats has no {section}.{name}: {stats}"))
    }

    /// Adds an endpoint for a new container namespace; returns the
    /// container and its IP.
    pub fn container(&self, network: &str, name: &str) -> Result<(NetNs, String)> {
        self.container_with(network, name, &[])
    }

    /// [`Node::container`] with more `endpoint add` options (`--ip`,
    /// `--mtu`, ...).
    pub fn container_with(
        &self,
        network: &str,
        name: &str,
        extra: &[&str],
    ) -> Result<(NetNs, String)> {
        let ns = NetNs::new("wtc")?;
        let mut args = vec![
            "endpoint",
            "add",
            "--network",
            network,
            "--netns",
            ns.name(),
            "--name",
            name,
        ];
        args.extend(extra);
        let ep = self.weft_json(&args)?;
        let ip = ep["ip"]
            .as_str()
            .with_context(|| format!("endpoint add printed no ip: {ep}"))?
            .to_owned();
        Ok((ns, ip))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Also after Ctrl-C: the pins and links must not outlive the run.
        if let Err(err) = proc::cleanup(&mut self.weft_command(&["teardown"]), WEFT) {
            eprintln!("warning: weft teardown of {}: {err:#}", self.ns.name());
        }
    }
}

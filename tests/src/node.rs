//! A weft node for end-to-end tests: a namespace playing the host, driven
//! through the real `weft` binary with pin and state paths unique to the
//! run; `weft teardown` and the namespaces go away on drop.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};
use aya::{
    maps::MapInfo,
    programs::{
        ProgramInfo,
        links::{FdLink, PinnedLink},
    },
};
use serde_json::Value;

use crate::{
    bpffs::{PinDir, unique_name},
    netns::NetNs,
};

pub struct Node {
    pub ns: NetNs,
    pins: PinDir,
    state_dir: PathBuf,
}

impl Node {
    pub fn new() -> Result<Self> {
        let ns = NetNs::new("wtnode")?;
        let pins = PinDir::new()?;
        let state_dir = std::env::temp_dir().join(unique_name("weft-state-"));
        Ok(Self {
            ns,
            pins,
            state_dir,
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    pub fn pin_dir(&self) -> &std::path::Path {
        self.pins.path()
    }

    /// Starts `weft agent` for this node and waits until its API answers.
    pub fn start_agent(&self) -> Result<Agent> {
        self.start_agent_with(&[])
    }

    /// Starts `weft agent ARGS` (e.g. `--config FILE`) for this node and
    /// waits until its API answers.
    pub fn start_agent_with(&self, args: &[&str]) -> Result<Agent> {
        let child = Command::new(weft_binary()?)
            .env("WEFT_NETNS", self.ns.name())
            .env("WEFT_BPFFS", self.pins.path())
            .env("WEFT_STATE_DIR", &self.state_dir)
            .arg("agent")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting weft agent")?;
        let mut agent = Agent { child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(status) = self.weft_json(&["status"])
                && status["agent"] == "running"
            {
                return Ok(agent);
            }
            if let Some(exit) = agent.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = agent.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("weft agent exited ({exit}) before serving: {err}");
            }
            if std::time::Instant::now() > deadline {
                bail!("weft agent did not answer within 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The agent's API socket (the default, `<state dir>/agent.sock`).
    pub fn agent_socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }

    /// One raw HTTP/1.1 request to the agent's socket: (status, JSON body).
    pub fn api_raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(u16, Value)> {
        let mut s = UnixStream::connect(self.agent_socket()).context("connecting to the agent")?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n");
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("malformed answer: {text}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in: {head}"))?;
        let json =
            serde_json::from_str(body).with_context(|| format!("body is not JSON: {body}"))?;
        Ok((code, json))
    }

    /// A JSON request to the agent's API that must answer `want`; returns
    /// the answer's body.
    pub fn api(&self, method: &str, path: &str, body: &Value, want: u16) -> Result<Value> {
        let (code, answer) =
            self.api_raw(method, path, Some("application/json"), &body.to_string())?;
        if code != want {
            bail!("{method} {path} {body}: expected {want}, got {code}: {answer}");
        }
        Ok(answer)
    }

    /// The kernel id of every pinned program, map and link of this node,
    /// by pin path: a reload, recreation or re-attachment changes one.
    pub fn pinned_ids(&self) -> Result<BTreeMap<String, u32>> {
        let mut ids = BTreeMap::new();
        let mut walk = |dir: &str, id: &dyn Fn(&Path) -> Result<u32>| -> Result<()> {
            let path = self.pin_dir().join(dir);
            let entries = std::fs::read_dir(&path)
                .with_context(|| format!("reading pins in {}", path.display()))?;
            for entry in entries {
                let entry = entry?;
                let pin = entry.path();
                let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
                ids.insert(
                    name,
                    id(&pin).with_context(|| format!("{}", pin.display()))?,
                );
            }
            Ok(())
        };
        walk("progs", &|p| Ok(ProgramInfo::from_pin(p)?.id()))?;
        walk("maps", &|p| Ok(MapInfo::from_pin(p)?.id()))?;
        walk("links", &|p| {
            Ok(FdLink::from(PinnedLink::from_pin(p)?).info()?.id())
        })?;
        Ok(ids)
    }

    /// Starts `weft ARGS` in the background (e.g. `monitor`), output piped.
    pub fn weft_spawn(&self, args: &[&str]) -> Result<std::process::Child> {
        Command::new(weft_binary()?)
            .env("WEFT_NETNS", self.ns.name())
            .env("WEFT_BPFFS", self.pins.path())
            .env("WEFT_STATE_DIR", &self.state_dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
        Command::new(weft_binary()?)
            .env("WEFT_NETNS", self.ns.name())
            .env("WEFT_BPFFS", self.pins.path())
            .env("WEFT_STATE_DIR", &self.state_dir)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .context("running weft")
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
        let ns = NetNs::new("wtc")?;
        let ep = self.weft_json(&[
            "endpoint",
            "add",
            "--network",
            network,
            "--netns",
            ns.name(),
            "--name",
            name,
        ])?;
        let ip = ep["ip"]
            .as_str()
            .with_context(|| format!("endpoint add printed no ip: {ep}"))?
            .to_owned();
        Ok((ns, ip))
    }
}

/// A running `weft agent`, killed on drop.
pub struct Agent {
    child: std::process::Child,
}

impl Agent {
    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then everything the agent logged (its stderr).
    pub fn kill_and_log(mut self) -> Result<String> {
        self.child.kill()?;
        self.child.wait()?;
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut log)?;
        }
        Ok(log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.weft_unchecked(&["teardown"]);
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// The `weft` binary next to the test executable (target/<profile>/weft),
/// or `$WEFT_BIN`.
pub fn weft_binary() -> Result<PathBuf> {
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

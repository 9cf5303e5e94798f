//! The agent's share of `cargo xtask bench`: `weft agent` alone in a fresh
//! node namespace, its resident memory and CPU at idle, then while it
//! programs 10,000 synthetic endpoints into the maps
//! (`POST /v1/bench/endpoints`, map entries only, no veths; the agent
//! reports the wall time of the map updates).
//!
//! RSS is `VmRSS` (and the peak, `VmHWM`) from /proc/PID/status; CPU is
//! utime+stime from /proc/PID/stat over the interval, as a percentage of
//! one CPU.

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{netns::Netns, proc, weft::WeftNode};

pub const ENDPOINTS: u32 = 10_000;
const IDLE: Duration = Duration::from_secs(5);

/// Kills the agent on drop (before the node's teardown).
pub struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// utime+stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz.max(1.0))
}

/// One HTTP/1.1 request to the agent's unix socket; the body of a 2xx answer.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n");
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("\r\n"),
    }
    s.write_all(req.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed answer from the agent")?;
    let ok = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    if !ok {
        bail!(
            "{method} {path}: {} {body}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// Starts `weft agent` for `weft`'s node and waits until it answers on
/// `socket`; killed when the guard drops.
pub fn start_agent(weft: &WeftNode, socket: &Path) -> Result<AgentProc> {
    let child = weft
        .cmd(&["agent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting weft agent")?;
    let agent = AgentProc(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while request(socket, "GET", "/v1/status", None).is_err() {
        if Instant::now() > deadline {
            bail!(
                "weft agent did not answer on {} within 15 s",
                socket.display()
            );
        }
        proc::sleep(Duration::from_millis(50))?;
    }
    Ok(agent)
}

/// Runs the agent benchmark; the figures as JSON.
pub fn run(bin: &Path, ns_name: &str, bpffs: PathBuf, state_dir: PathBuf) -> Result<Value> {
    println!(
        "== agent: idle {} s, then {ENDPOINTS} synthetic endpoints",
        IDLE.as_secs()
    );
    let node = Netns::create(ns_name)?;
    let weft = WeftNode::new(bin, node.name(), bpffs, state_dir.clone());
    let socket = state_dir.join("agent.sock");
    let agent = start_agent(&weft, &socket)?;
    let pid = agent.0.id();
    proc::sleep(Duration::from_secs(1))?;

    let cpu0 = cpu_seconds(pid)?;
    proc::sleep(IDLE)?;
    let idle_cpu_pct = (cpu_seconds(pid)? - cpu0) / IDLE.as_secs_f64() * 100.0;
    let (idle_rss, _) = rss_mib(pid)?;

    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let body = request(
        &socket,
        "POST",
        "/v1/bench/endpoints",
        Some(&format!("{{\"count\": {ENDPOINTS}}}")),
    )?;
    let wall = started.elapsed().as_secs_f64();
    let busy_cpu_pct = (cpu_seconds(pid)? - cpu0) / wall * 100.0;
    let (busy_rss, peak_rss) = rss_mib(pid)?;
    let programmed: Value =
        serde_json::from_str(&body).with_context(|| format!("the agent answered {body}"))?;
    let removed: Value =
        serde_json::from_str(&request(&socket, "DELETE", "/v1/bench/endpoints", None)?)?;
    let (after_rss, _) = rss_mib(pid)?;
    drop(agent);
    drop(weft);
    drop(node);

    let map_seconds = programmed["map_update_seconds"].as_f64();
    println!(
        "agent idle: RSS {idle_rss:.1} MiB, CPU {idle_cpu_pct:.2}%; programming {ENDPOINTS}: \
         map updates {:.1} ms ({} calls), request {:.1} ms, RSS {busy_rss:.1} MiB \
         (peak {peak_rss:.1}), CPU {busy_cpu_pct:.0}%; removal {:.1} ms",
        map_seconds.unwrap_or(f64::NAN) * 1e3,
        programmed["map_calls"],
        wall * 1e3,
        removed["map_update_seconds"].as_f64().unwrap_or(f64::NAN) * 1e3,
    );
    Ok(json!({
        "endpoints": ENDPOINTS,
        "idle_seconds": IDLE.as_secs(),
        "idle_rss_mib": idle_rss,
        "idle_cpu_percent": idle_cpu_pct,
        "program_map_update_ms": map_seconds.map(|s| s * 1e3),
        "program_open_ms": programmed["open_seconds"].as_f64().map(|s| s * 1e3),
        "program_map_calls": programmed["map_calls"],
        "program_request_ms": wall * 1e3,
        "program_rss_mib": busy_rss,
        "peak_rss_mib": peak_rss,
        "program_cpu_percent": busy_cpu_pct,
        "remove_map_update_ms": removed["map_update_seconds"].as_f64().map(|s| s * 1e3),
        "removed": removed["endpoints"],
        "rss_after_remove_mib": after_rss,
        "build": "weft as `cargo xtask bench` builds it (debug userspace, release eBPF)",
        "method": "weft agent alone in a fresh node namespace; RSS = VmRSS (peak = VmHWM) from /proc/PID/status; CPU = utime+stime from /proc/PID/stat over the interval, % of one CPU; map update time reported by the agent (POST /v1/bench/endpoints: synthetic endpoints, map entries only, one bpf() call per entry, no batching in aya 0.14)",
    }))
}

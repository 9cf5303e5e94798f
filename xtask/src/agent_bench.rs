//! The agent's share of `cargo xtask bench`: `weft agent` alone in a fresh
//! node namespace, its resident memory and CPU at idle, then while it
//! programs 10,000 synthetic endpoints into the maps
//! (`POST /v1/bench/endpoints`, map entries only, no veths; the agent
//! reports the wall time of the map updates), then 1,000 real endpoints
//! added one after another through the API (veth pair into a namespace
//! each, container side configured, maps, TCX link, route, store commit),
//! each request timed by the client. Beside them: what opening the
//! datapath (loading the object, checking layouts) costs, which every
//! request paid before the engine held it open.
//!
//! RSS is `VmRSS` (and the peak, `VmHWM`) from /proc/PID/status; CPU is
//! utime+stime from /proc/PID/stat over the interval, as a percentage of
//! one CPU.

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use weft_api::{
    Client,
    requests::{AddEndpoint, BenchProgram, BenchRemove, CreateNetwork},
};
use weft_harness::{
    netns::NetNs,
    node::{AgentLog, Node},
    proc,
};

pub const ENDPOINTS: u32 = 10_000;
/// Real endpoints added one after another.
pub const ADDS: usize = 1_000;
const IDLE: Duration = Duration::from_secs(5);

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
pub(crate) fn rss_mib(pid: u32) -> Result<(f64, f64)> {
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

/// Runs the agent benchmark; the figures as JSON.
pub fn run() -> Result<Value> {
    println!(
        "== agent: idle {} s, then {ENDPOINTS} synthetic endpoints",
        IDLE.as_secs()
    );
    let node = Node::new()?;
    let client = Client::new(node.agent_socket());
    let agent = node.start_agent_logging(&[], AgentLog::Discarded)?;
    let pid = agent.pid();
    proc::sleep(Duration::from_secs(1))?;

    let cpu0 = cpu_seconds(pid)?;
    proc::sleep(IDLE)?;
    let idle_cpu_pct = (cpu_seconds(pid)? - cpu0) / IDLE.as_secs_f64() * 100.0;
    let (idle_rss, _) = rss_mib(pid)?;

    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let programmed = client.call_blocking(BenchProgram { count: ENDPOINTS })?;
    let wall = started.elapsed().as_secs_f64();
    let busy_cpu_pct = (cpu_seconds(pid)? - cpu0) / wall * 100.0;
    let (busy_rss, peak_rss) = rss_mib(pid)?;
    let removed = client.call_blocking(BenchRemove)?;
    let (after_rss, _) = rss_mib(pid)?;

    let adds = sequential_adds(&client)?;
    drop(agent);
    drop(node);

    let map_seconds = programmed.map_update_seconds;
    println!(
        "agent idle: RSS {idle_rss:.1} MiB, CPU {idle_cpu_pct:.2}%; programming {ENDPOINTS}: \
         map updates {:.1} ms ({} calls), request {:.1} ms, RSS {busy_rss:.1} MiB \
         (peak {peak_rss:.1}), CPU {busy_cpu_pct:.0}%; removal {:.1} ms",
        map_seconds * 1e3,
        programmed.map_calls,
        wall * 1e3,
        removed.map_update_seconds * 1e3,
    );
    println!(
        "endpoint add through the agent, {ADDS} sequential: p50 {:.1} ms, p99 {:.1} ms \
         (opening the datapath, once per engine now, once per request before: {:.1} ms)",
        adds.p50_ms,
        adds.p99_ms,
        programmed.open_seconds * 1e3
    );
    Ok(json!({
        "endpoints": ENDPOINTS,
        "idle_seconds": IDLE.as_secs(),
        "idle_rss_mib": idle_rss,
        "idle_cpu_percent": idle_cpu_pct,
        "program_map_update_ms": map_seconds * 1e3,
        "program_open_ms": programmed.open_seconds * 1e3,
        "program_map_calls": programmed.map_calls,
        "program_request_ms": wall * 1e3,
        "program_rss_mib": busy_rss,
        "peak_rss_mib": peak_rss,
        "program_cpu_percent": busy_cpu_pct,
        "remove_map_update_ms": removed.map_update_seconds * 1e3,
        "removed": removed.endpoints,
        "endpoint_adds": ADDS,
        "endpoint_add_p50_ms": adds.p50_ms,
        "endpoint_add_p99_ms": adds.p99_ms,
        "endpoint_add_max_ms": adds.max_ms,
        "datapath_open_ms": programmed.open_seconds * 1e3,
        "rss_after_remove_mib": after_rss,
        "build": "weft as `cargo xtask bench` builds it (release userspace and eBPF)",
        "endpoint_add_method": "AddEndpoint through the agent's socket (weft-api client), one after another, each into its own fresh namespace, timed by the client from request to answer; datapath_open_ms: the engine's one Datapath::open (object load, layout checks, map pins), which each request paid before the engine",
        "method": "weft agent alone in a fresh node namespace; RSS = VmRSS (peak = VmHWM) from /proc/PID/status; CPU = utime+stime from /proc/PID/stat over the interval, % of one CPU; map update time reported by the agent (POST /v1/bench/endpoints: synthetic endpoints, map entries only, one bpf() call per entry, no batching in aya 0.14)",
    }))
}

/// Request times of sequential endpoint adds.
struct Adds {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Adds [`ADDS`] endpoints one after another, each into a namespace of its
/// own made beforehand, and times each request.
fn sequential_adds(client: &Client) -> Result<Adds> {
    client.call_blocking(CreateNetwork {
        name: "adds".into(),
        subnet: "10.200.0.0/16".into(),
        gateway: None,
        flood: false,
        masquerade: false,
        vni: None,
    })?;
    let spaces: Vec<NetNs> = (0..ADDS)
        .map(|_| NetNs::new("wbadd"))
        .collect::<Result<_>>()?;
    let mut times = Vec::with_capacity(ADDS);
    for ns in &spaces {
        proc::check_interrupted()?;
        let started = Instant::now();
        client.call_blocking(AddEndpoint {
            network: "adds".into(),
            netns: ns.name().to_owned(),
            ip: None,
            name: None,
            ifname: None,
            mtu: None,
            labels: Vec::new(),
            mac: None,
        })?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok(Adds {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: times[times.len() - 1],
    })
}

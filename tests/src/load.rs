//! The hitless-restart contract under load, shared by the same-node, the
//! masquerade and the overlay tests: an iperf3 TCP stream and a 10 ms ping
//! flood cross the datapath while the agent (of every node the traffic
//! crosses) is SIGKILLed and restarted five times.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_harness::proc::Background;

use crate::{
    netns::NetNs,
    node::{Agent, Node},
};

/// What the load saw.
#[derive(Debug)]
pub struct LoadReport {
    pub pings_answered: usize,
    /// The longest run of unanswered pings (10 ms apart).
    pub longest_gap: u32,
    pub stream_gbps: f64,
    /// When the fifth kill came, counted from the start of the load.
    pub restarts_done_after: Duration,
}

/// Kill/restart cycles.
const CYCLES: usize = 5;
/// The ping flood: 1600 pings 10 ms apart, 16 s. The kills must all come
/// before it ends, or they did not happen under load: a cycle takes ~1.5 s
/// for one agent, and up to ~2.3 s for two overlay nodes' agents while
/// another such test runs on a 2-core machine.
const PINGS: usize = 1600;
const LOAD_WINDOW: Duration = Duration::from_millis(10 * PINGS as u64);
/// Unanswered pings must stay below this in all (and none 10 in a row).
const PINGS_LOST_MAX: usize = 100;
/// The TCP stream's length: it outlasts the flood.
const STREAM_SECS: &str = "17";

/// Runs the load from `client` to `server_ip` (an iperf3 server in `server`)
/// across five kill/restart cycles of `node`'s agent. Fails unless the
/// stream finishes and fewer than 100 of 1600 pings go unanswered, with no
/// gap over 100 ms.
pub fn restart_agent_under_load(
    node: &Node,
    client: &NetNs,
    server: &NetNs,
    server_ip: &str,
) -> Result<LoadReport> {
    restart_agents_under_load(&[node], client, server, server_ip)
}

/// [`restart_agent_under_load`] for traffic that crosses several nodes
/// (e.g. an overlay's sender and receiver): in each cycle the agents of
/// all `nodes` start together, serve, and are SIGKILLed together. Also
/// fails if the five cycles did not finish within the load.
pub fn restart_agents_under_load(
    nodes: &[&Node],
    client: &NetNs,
    server: &NetNs,
    server_ip: &str,
) -> Result<LoadReport> {
    let _server = Background::spawn(&mut server.command(&["iperf3", "-s", "-1", "-B", server_ip]))
        .context("starting iperf3 (cargo xtask setup installs it)")?;
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let stream = client
        .command(&["iperf3", "-c", server_ip, "-t", STREAM_SECS, "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let count = PINGS.to_string();
    let flood = client
        .command(&["ping", "-n", "-i", "0.01", "-c", &count, server_ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;

    for _ in 0..CYCLES {
        let agents = start_agents(nodes)?;
        std::thread::sleep(Duration::from_millis(700));
        for agent in agents {
            agent.kill()?;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let restarts_done_after = started.elapsed();

    let stream = stream.wait_with_output()?;
    let report: Value = serde_json::from_slice(&stream.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&stream.stderr)
        )
    })?;
    if report.get("error").is_some() {
        bail!("the TCP stream broke: {}", report["error"]);
    }
    if restarts_done_after > LOAD_WINDOW {
        bail!(
            "the {CYCLES} agent restarts took {restarts_done_after:?}, longer than the load \
             ({LOAD_WINDOW:?}): some did not happen under load"
        );
    }
    let received = &report["end"]["sum_received"];
    if received["bytes"].as_f64().unwrap_or(0.0) <= 0.0 {
        bail!("the stream moved no data: {report}");
    }

    let flood = flood.wait_with_output()?;
    let seqs: Vec<u32> = String::from_utf8_lossy(&flood.stdout)
        .lines()
        .filter_map(|l| {
            l.split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if seqs.len() + PINGS_LOST_MAX <= PINGS {
        bail!("only {} of {PINGS} pings answered", seqs.len());
    }
    let longest_gap = seqs
        .windows(2)
        .map(|p| p[1].saturating_sub(p[0]).saturating_sub(1))
        .max()
        .unwrap_or(0);
    // 10 missing replies in a row at 10 ms spacing = a 100 ms gap.
    if longest_gap >= 10 {
        bail!(
            "a gap of {longest_gap} pings (~{} ms) in the flood",
            longest_gap * 10
        );
    }
    Ok(LoadReport {
        pings_answered: seqs.len(),
        longest_gap,
        stream_gbps: received["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        restarts_done_after,
    })
}

/// Starts the agents of `nodes` at the same time (each start waits until
/// its API answers) and returns them once all serve.
fn start_agents(nodes: &[&Node]) -> Result<Vec<Agent>> {
    std::thread::scope(|s| {
        let starts: Vec<_> = nodes
            .iter()
            .map(|node| s.spawn(|| node.start_agent()))
            .collect();
        starts
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("an agent start panicked"))?
            })
            .collect()
    })
}

//! The hitless-restart contract under load, shared by the same-node and the
//! masquerade tests: an iperf3 TCP stream and a 10 ms ping flood cross the
//! datapath while the agent is SIGKILLed and restarted five times.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{netns::NetNs, node::Node};

/// What the load saw.
#[derive(Debug)]
pub struct LoadReport {
    pub pings_answered: usize,
    /// The longest run of unanswered pings (10 ms apart).
    pub longest_gap: u32,
    pub stream_gbps: f64,
}

/// Runs the load from `client` to `server_ip` (an iperf3 server in `server`)
/// across five agent kill/restart cycles. Fails unless the stream finishes
/// and more than 1000 of 1100 pings come back with no gap over 100 ms.
pub fn restart_agent_under_load(
    node: &Node,
    client: &NetNs,
    server: &NetNs,
    server_ip: &str,
) -> Result<LoadReport> {
    let _server = KillOnDrop(
        in_ns(server, &["iperf3", "-s", "-1", "-B", server_ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 (cargo xtask setup installs it)")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let stream = in_ns(client, &["iperf3", "-c", server_ip, "-t", "12", "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let flood = in_ns(
        client,
        &["ping", "-n", "-i", "0.01", "-c", "1100", server_ip],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()?;

    for _ in 0..5 {
        let agent = node.start_agent()?;
        std::thread::sleep(Duration::from_millis(700));
        agent.kill()?;
        std::thread::sleep(Duration::from_millis(300));
    }

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
    if seqs.len() <= 1000 {
        bail!("only {} of 1100 pings answered", seqs.len());
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
    })
}

fn in_ns(ns: &NetNs, argv: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()]).args(argv);
    cmd
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

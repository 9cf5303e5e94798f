//! Real traffic between two namespaces: iperf3 streams and sockperf
//! ping-pong, each server bound to the receiver's address inside its own
//! namespace, every process bounded in time and killed if it lingers.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::{netns::Netns, proc};

const IPERF_PORT: u16 = 5201;
const SOCKPERF_PORT: u16 = 11111;
const READY: Duration = Duration::from_secs(5);

/// CPUs to pin the server and the client to (`taskset -c`), or `None` to
/// leave placement to the scheduler.
#[derive(Clone, Copy)]
pub struct Pin {
    pub server_cpu: usize,
    pub client_cpu: usize,
}

/// `ip netns exec NS [taskset -c CPU] ARGS...` (taskset execs the program,
/// so the child's pid is still the program's own).
fn exec_on(ns: &Netns, cpu: Option<usize>, args: &[&str]) -> Command {
    match cpu {
        Some(cpu) => {
            let cpu = cpu.to_string();
            let mut all = vec!["taskset", "-c", &cpu];
            all.extend(args);
            ns.exec(&all)
        }
        None => ns.exec(args),
    }
}

/// One iperf3 run, as the receiver saw it.
#[derive(Clone, Copy, Serialize)]
pub struct Stream {
    pub gbps: f64,
    /// TCP retransmissions (sender side).
    pub retransmits: Option<u64>,
    /// UDP datagrams sent / lost percentage.
    pub udp_packets: Option<u64>,
    pub udp_lost_percent: Option<f64>,
}

/// iperf3 from `client` to `server_ip` (in `server`) for `secs` seconds;
/// `udp_rate` (e.g. "100M") switches to UDP at that rate.
pub fn iperf3(
    server: &Netns,
    client: &Netns,
    server_ip: &str,
    secs: u32,
    udp_rate: Option<&str>,
    pin: Option<Pin>,
) -> Result<Stream> {
    let port = IPERF_PORT.to_string();
    // `-1`: serve one test and exit; the guard kills it if it doesn't.
    let srv = proc::Background::spawn(&mut exec_on(
        server,
        pin.map(|p| p.server_cpu),
        &["iperf3", "-s", "-1", "-B", server_ip, "-p", &port],
    ))?;
    server.wait_listening(false, IPERF_PORT, READY)?;
    let secs_s = secs.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        server_ip,
        "-p",
        &port,
        "-t",
        &secs_s,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if let Some(rate) = udp_rate {
        args.extend(["-u", "-b", rate]);
    }
    let out = proc::output(
        &mut exec_on(client, pin.map(|p| p.client_cpu), &args),
        Duration::from_secs(u64::from(secs) + 20),
    )?;
    let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3 to {server_ip}: {err}");
    }
    if !out.status.success() {
        bail!("iperf3 to {server_ip} failed ({})", out.status);
    }
    let _ = srv.wait(Duration::from_secs(5));
    let end = &json["end"];
    let stream = if udp_rate.is_some() {
        Stream {
            gbps: end["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
            retransmits: None,
            udp_packets: end["sum"]["packets"].as_u64(),
            udp_lost_percent: end["sum"]["lost_percent"].as_f64(),
        }
    } else {
        Stream {
            gbps: end["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9,
            retransmits: end["sum_sent"]["retransmits"].as_u64(),
            udp_packets: None,
            udp_lost_percent: None,
        }
    };
    Ok(stream)
}

/// Round-trip latency percentiles from one sockperf ping-pong run.
#[derive(Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub avg_us: f64,
}

/// UDP request/response between `client` and a sockperf server on
/// `server_ip` for `secs` seconds (full round trip, microseconds).
pub fn sockperf(
    server: &Netns,
    client: &Netns,
    server_ip: &str,
    secs: u32,
    pin: Option<Pin>,
) -> Result<Latency> {
    let port = SOCKPERF_PORT.to_string();
    let _srv = proc::Background::spawn(&mut exec_on(
        server,
        pin.map(|p| p.server_cpu),
        &["sockperf", "server", "-i", server_ip, "-p", &port],
    ))?;
    server.wait_listening(true, SOCKPERF_PORT, READY)?;
    let secs_s = secs.to_string();
    let out = proc::stdout(
        &mut exec_on(
            client,
            pin.map(|p| p.client_cpu),
            &[
                "sockperf",
                "ping-pong",
                "-i",
                server_ip,
                "-p",
                &port,
                "-t",
                &secs_s,
                "--full-rtt",
            ],
        ),
        Duration::from_secs(u64::from(secs) + 20),
    )?;
    parse_sockperf(&out).with_context(|| format!("unexpected sockperf output:\n{out}"))
}

/// Pull p50, p99 and the average out of sockperf's report, e.g.
/// `sockperf: ---> percentile 50.000 =   55.292` and
/// `sockperf: Summary: Round trip is 57.604 usec`.
fn parse_sockperf(out: &str) -> Option<Latency> {
    let value_after = |key: &str| -> Option<f64> {
        out.lines().find_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split_whitespace()
                .find_map(|w| w.trim_start_matches('=').parse().ok())
        })
    };
    Some(Latency {
        p50_us: value_after("percentile 50.000")?,
        p99_us: value_after("percentile 99.000")?,
        avg_us: value_after("Round trip is")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sockperf_report() {
        let out = "sockperf: Summary: Round trip is 57.604 usec\n\
                   sockperf: ---> percentile 99.000 =   85.817\n\
                   sockperf: ---> percentile 50.000 =   55.292\n";
        let l = parse_sockperf(out).expect("parses");
        assert_eq!((l.p50_us, l.p99_us, l.avg_us), (55.292, 85.817, 57.604));
    }
}

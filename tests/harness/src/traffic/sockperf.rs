//! sockperf UDP ping-pong between two namespaces: round-trip latency
//! percentiles, the server bound to the receiver's address.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::iperf::{Pin, READY};
use crate::{netns::NetNs, proc};

const SOCKPERF_PORT: u16 = 11111;

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
    server: &NetNs,
    client: &NetNs,
    server_ip: &str,
    secs: u32,
    pin: Option<Pin>,
) -> Result<Latency> {
    let port = SOCKPERF_PORT.to_string();
    let _srv = proc::Background::spawn(&mut server.command_on(
        pin.map(|p| p.server_cpu),
        &["sockperf", "server", "-i", server_ip, "-p", &port],
    ))?;
    server.wait_listening(true, SOCKPERF_PORT, READY)?;
    let secs_s = secs.to_string();
    let out = proc::stdout(
        &mut client.command_on(
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

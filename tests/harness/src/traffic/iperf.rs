//! iperf3 streams between two namespaces, the server bound to the
//! receiver's address inside its own namespace, optionally pinned to CPUs.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::{netns::NetNs, proc};

const IPERF_PORT: u16 = 5201;
/// How long a server may take to listen.
pub(super) const READY: Duration = Duration::from_secs(5);

/// CPUs to pin the server and the client to (`taskset -c`), or `None` to
/// leave placement to the scheduler.
#[derive(Clone, Copy)]
pub struct Pin {
    pub server_cpu: usize,
    pub client_cpu: usize,
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
    server: &NetNs,
    client: &NetNs,
    server_ip: &str,
    secs: u32,
    udp_rate: Option<&str>,
    pin: Option<Pin>,
) -> Result<Stream> {
    let port = IPERF_PORT.to_string();
    // `-1`: serve one test and exit; the guard kills it if it doesn't.
    let srv = proc::Background::spawn(&mut server.command_on(
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
        &mut client.command_on(pin.map(|p| p.client_cpu), &args),
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

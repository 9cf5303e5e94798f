//! `cargo xtask bench`, overlay section: container to container across two
//! nodes, in one run, over four datapaths:
//! - `weft-tun`: weft, encapsulation by the collect-metadata vxlan device
//!   (`--encap tunnel`);
//! - `weft-bpf`: weft, encapsulation written by the program
//!   (`--encap bpf`);
//! - `kvxlan`: the kernel's own VXLAN and a Linux bridge, as Flannel's
//!   vxlan backend (and Docker's overlay) build it: a `vxlan` device with
//!   static FDB and neighbour entries, an onlink route per remote subnet;
//! - `routed`: no encapsulation, a route per remote subnet via the other
//!   node's underlay address: the limit any overlay is measured against.
//!
//! Each topology is its own underlay (`weft_harness::underlay`): a switch
//! namespace with a bridge (MTU 1500) and two nodes plugged into it
//! (`underlay`, 172.30.0.1 and .2); the client container is on node 1
//! (10.220.1.0/24), the server on node 2 (10.220.2.0/24). Encapsulated
//! paths give containers MTU 1450 (1500 - 50), the routed one 1500.
//! Repetitions are interleaved across the four like the main section;
//! medians are reported.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use weft_harness::{
    overlay::{Cluster, ClusterNet},
    proc,
    traffic::{self, Pin},
    underlay::{PeerKind, Underlay},
};

use crate::bench::{self, Samples, Target, Topology};

const UNDERLAY_MTU: u32 = 1500;
/// The network both nodes serve: 10.220.0.0/16, node i's pod CIDR
/// 10.220.i.0/24.
const NET: ClusterNet = ClusterNet {
    name: "bench",
    octet: 220,
    vni: 100,
};

/// The kernel VXLAN peers' VTEP MACs.
fn vtep_mac(i: u8) -> [u8; 6] {
    [0x02, 0x6b, 0x76, 0, 0, i]
}

/// The section's figures for the report: its JSON and its targets (which
/// join the bench's target table).
pub struct OverlayBench {
    pub json: Value,
    pub targets: Vec<Target>,
}

/// Builds the topologies, measures them `reps` times interleaved and
/// prints the section's table; returns its JSON and targets. A topology that cannot
/// be built is reported unavailable, never fails the bench.
pub fn run(weft_built: bool, reps: u32, secs: u32) -> Result<OverlayBench> {
    let mut built = Vec::new();
    let mut unavailable: Vec<(String, String)> = Vec::new();
    let mut attempt = |name: &'static str, r: Result<Topology>| -> Result<()> {
        match r {
            Ok(t) => built.push(t),
            Err(e) => {
                proc::check_interrupted()?;
                eprintln!("xtask bench: overlay topology {name} unavailable: {e:#}");
                unavailable.push((name.to_owned(), format!("{e:#}")));
            }
        }
        Ok(())
    };
    for (name, mode) in [("weft-tun", "tunnel"), ("weft-bpf", "bpf")] {
        let r = if weft_built {
            weft_overlay(name, mode)
        } else {
            Err(anyhow::anyhow!("weft could not be built"))
        };
        attempt(name, r)?;
    }
    attempt("kvxlan", kernel_overlay("kvxlan", true))?;
    attempt("routed", kernel_overlay("routed", false))?;

    let mut samples: Vec<Samples> = built.iter().map(|_| Samples::default()).collect();
    let mut one_cpu: Vec<Vec<f64>> = built.iter().map(|_| Vec::new()).collect();
    println!("\n== overlay: {reps} interleaved repetition(s), {secs} s per measurement");
    for rep in 1..=reps {
        for ((t, s), one) in built.iter().zip(&mut samples).zip(&mut one_cpu) {
            bench::measure(t, s, rep, secs)?;
            match stream_on_one_cpu(t, secs) {
                Ok(gbps) => {
                    println!(
                        "rep {rep} {:<8} stream on one CPU {gbps:7.2} Gbit/s",
                        t.name
                    );
                    one.push(gbps);
                }
                Err(e) => s.errors.push(format!("stream on one CPU: {e:#}")),
            }
        }
    }
    let names: Vec<&str> = built.iter().map(|t| t.name).collect();
    drop(built);
    Ok(report(&names, &samples, &one_cpu, &unavailable))
}

/// The stream again with sender and receiver on the same CPU: every packet
/// of the flow is then handled in order on that CPU, so the figure is the
/// path's CPU cost per byte. With them on different CPUs (`measure`),
/// TCP sends from both CPUs (the application's and the one processing
/// ACKs), the veths' per-CPU backlogs reorder segments, and spurious
/// retransmits (DSACKed) swing single runs by +-20% on a 2-core VM.
fn stream_on_one_cpu(t: &Topology, secs: u32) -> Result<f64> {
    let cpu = bench::cpus().saturating_sub(1);
    let pin = Pin {
        server_cpu: cpu,
        client_cpu: cpu,
    };
    Ok(traffic::iperf3(&t.server, &t.client, &t.server_ip, secs, None, Some(pin))?.gbps)
}

/// Median stream, p50 and p99 of one topology.
struct Row<'a> {
    name: &'a str,
    stream: Option<f64>,
    stream_one_cpu: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

fn report(
    names: &[&str],
    samples: &[Samples],
    one_cpu: &[Vec<f64>],
    unavailable: &[(String, String)],
) -> OverlayBench {
    let rows: Vec<Row> = names
        .iter()
        .zip(samples)
        .zip(one_cpu)
        .map(|((name, s), one)| Row {
            name,
            stream: bench::median(s.streams.iter().map(|x| x.gbps).collect()),
            stream_one_cpu: bench::median(one.clone()),
            p50: bench::median(s.latencies.iter().map(|x| x.p50_us).collect()),
            p99: bench::median(s.latencies.iter().map(|x| x.p99_us).collect()),
        })
        .collect();
    let get = |name: &str| rows.iter().find(|r| r.name == name);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut targets = Vec::new();
    for weft in ["weft-tun", "weft-bpf"] {
        let w = get(weft);
        for (base, stream_goal, rr_goal) in [("kvxlan", 1.05, 1.15), ("routed", 0.85, 0.85)] {
            let b = get(base);
            targets.push(Target {
                what: format!("stream {weft}/{base}"),
                value: ratio(w.and_then(|r| r.stream), b.and_then(|r| r.stream)),
                unit: "x",
                at_least: true,
                goal: stream_goal,
            });
            // Request/response rate is the inverse of the round trip: the
            // ratio of the p50 round trips, base over weft.
            targets.push(Target {
                what: format!("RR {weft}/{base}"),
                value: ratio(b.and_then(|r| r.p50), w.and_then(|r| r.p50)),
                unit: "x",
                at_least: true,
                goal: rr_goal,
            });
        }
    }

    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "\n{:<9} {:>16} {:>16} {:>14} {:>14}",
        "overlay", "stream Gbit/s", "1-CPU stream", "rtt p50 us", "rtt p99 us"
    );
    for r in &rows {
        println!(
            "{:<9} {:>16} {:>16} {:>14} {:>14}",
            r.name,
            fmt(r.stream),
            fmt(r.stream_one_cpu),
            fmt(r.p50),
            fmt(r.p99)
        );
    }
    // Not targets: the path's CPU cost per byte, without the cross-CPU
    // reordering that dominates the stream's run-to-run spread here.
    for weft in ["weft-tun", "weft-bpf"] {
        for base in ["kvxlan", "routed"] {
            let one = |n: &str| get(n).and_then(|r| r.stream_one_cpu);
            if let Some(v) = ratio(one(weft), one(base)) {
                println!("1-CPU stream {weft}/{base}: {v:.3}x");
            }
        }
    }
    for (name, why) in unavailable {
        println!(
            "{name:<9}  (unavailable: {})",
            why.lines().next().unwrap_or("")
        );
    }

    let mut topologies = serde_json::Map::new();
    for (r, s) in rows.iter().zip(samples) {
        topologies.insert(
            r.name.to_owned(),
            json!({
                "stream_gbps_median": r.stream,
                "stream_one_cpu_gbps_median": r.stream_one_cpu,
                "rtt_p50_us_median": r.p50,
                "rtt_p99_us_median": r.p99,
                "samples": {"stream": s.streams, "latency": s.latencies, "errors": s.errors},
            }),
        );
    }
    for (name, why) in unavailable {
        topologies.insert(name.clone(), json!({ "unavailable": why }));
    }
    let json = json!({
        "underlay_mtu": UNDERLAY_MTU,
        "method": "two node namespaces on an underlay switch namespace (Linux bridge); \
                   iperf3/sockperf as in the main section between a container on each node; \
                   plus the stream with client and server on the same CPU (stream_one_cpu)",
        "topologies": topologies,
    });
    OverlayBench { json, targets }
}

/// Two weft nodes with `--encap mode` on one underlay (a
/// [`Cluster`]), each owning one pod subnet of the network and knowing the
/// other; a container on each.
fn weft_overlay(name: &'static str, mode: &str) -> Result<Topology> {
    let cluster = Cluster::with_mtu(mode, 2, &[NET], UNDERLAY_MTU)?;
    println!(
        "== overlay topology {name}: {}, {} on {}, weft --encap {mode}",
        cluster.nodes[0].node.ns.name(),
        cluster.nodes[1].node.ns.name(),
        cluster.underlay.switch.name()
    );
    let (client, client_ip) = cluster.container(0, NET.name, "c1")?;
    let (server, server_ip) = cluster.container(1, NET.name, "c2")?;
    bench::check_eth0(&client, &client_ip)?;
    bench::check_eth0(&server, &server_ip)?;
    Ok(Topology {
        name,
        _nodes: Box::new(cluster),
        client,
        server,
        server_ip,
    })
}

/// Two nodes without weft (`weft_harness::peer`): containers on a bridge,
/// kernel forwarding, and either the kernel's VXLAN the way Flannel sets it
/// up (`vxlan`) or plain routes.
fn kernel_overlay(name: &'static str, vxlan: bool) -> Result<Topology> {
    let underlay = Underlay::new(UNDERLAY_MTU)?;
    let kind = |i: u8| match vxlan {
        true => PeerKind::KernelVxlan {
            vni: NET.vni,
            vtep_mac: vtep_mac(i),
        },
        false => PeerKind::Routed,
    };
    let pod_cidr = |i: u8| NET.pod_cidr(usize::from(i));
    let peers = [
        underlay.peer_node(kind(1), &pod_cidr(1))?,
        underlay.peer_node(kind(2), &pod_cidr(2))?,
    ];
    println!(
        "== overlay topology {name}: {}, {} on {}, {}",
        peers[0].ns.name(),
        peers[1].ns.name(),
        underlay.switch.name(),
        if vxlan {
            "kernel vxlan (VNI 100, nolearning, static FDB) + bridge"
        } else {
            "bridge + plain routes, no encapsulation"
        }
    );
    for (here, there) in [(0, 1), (1, 0)] {
        let remote = &peers[there];
        let remote_no = u8::try_from(there + 1).context("two peers")?;
        peers[here].add_remote(
            &pod_cidr(remote_no),
            remote.underlay_ip,
            vtep_mac(remote_no),
        )?;
    }
    let (client, _) = peers[0].container()?;
    let (server, server_ip) = peers[1].container()?;
    Ok(Topology {
        name,
        _nodes: Box::new((underlay, peers)),
        client,
        server,
        server_ip: server_ip.to_string(),
    })
}

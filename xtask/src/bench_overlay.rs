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
//! Each topology is its own underlay: a switch namespace with a bridge
//! (MTU 1500) and two node namespaces plugged into it (`underlay`,
//! 172.31.0.1 and .2); the client container is on node 1 (10.220.1.2),
//! the server on node 2 (10.220.2.2). Encapsulated paths give containers
//! MTU 1450 (1500 - 50), the routed one 1500. Repetitions are interleaved
//! across the four like the main section; medians are reported.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{Value, json};

use crate::{
    bench::{self, Samples, Target, Topology},
    netns::Netns,
    proc,
    traffic::{self, Pin},
    weft::WeftNode,
};

const T: std::time::Duration = std::time::Duration::from_secs(30);
const UNDERLAY_MTU: u32 = 1500;
const VXLAN_OVERHEAD: u32 = 50;
const UNDERLAY_IF: &str = "underlay";
const VNI: &str = "100";
const NETWORK_CIDR: &str = "10.220.0.0/16";

/// One overlay topology. Fields drop in declaration order: weft's teardown
/// first, then the containers, then the nodes and the switch.
struct Overlay {
    wefts: Vec<WeftNode>,
    t: Topology,
    _nodes: Vec<Netns>,
}

/// Node `i` (1 or 2): its underlay address, its pod subnet, its gateway and
/// its container's address.
fn underlay_ip(i: u8) -> String {
    format!("172.31.0.{i}")
}
fn pod_cidr(i: u8) -> String {
    format!("10.220.{i}.0/24")
}
fn gateway(i: u8) -> String {
    format!("10.220.{i}.1")
}
fn container_ip(i: u8) -> String {
    format!("10.220.{i}.2")
}
/// The kernel VXLAN peers' VTEP MACs.
fn vtep_mac(i: u8) -> String {
    format!("02:6b:76:00:00:{i:02x}")
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
pub fn run(
    weft_bin: Option<&Path>,
    prefix: &str,
    (bpffs_prefix, state_prefix): (&str, &str),
    reps: u32,
    secs: u32,
) -> Result<OverlayBench> {
    let mut built = Vec::new();
    let mut unavailable: Vec<(String, String)> = Vec::new();
    let mut attempt = |name: &'static str, r: Result<Overlay>| -> Result<()> {
        match r {
            Ok(o) => built.push(o),
            Err(e) => {
                proc::check_interrupted()?;
                eprintln!("xtask bench: overlay topology {name} unavailable: {e:#}");
                unavailable.push((name.to_owned(), format!("{e:#}")));
            }
        }
        Ok(())
    };
    for (name, mode) in [("weft-tun", "tunnel"), ("weft-bpf", "bpf")] {
        let r = match weft_bin {
            Some(bin) => weft_overlay(bin, name, mode, prefix, (bpffs_prefix, state_prefix)),
            None => Err(anyhow::anyhow!("weft could not be built")),
        };
        attempt(name, r)?;
    }
    attempt("kvxlan", kernel_overlay("kvxlan", true, prefix))?;
    attempt("routed", kernel_overlay("routed", false, prefix))?;

    let mut samples: Vec<Samples> = built.iter().map(|_| Samples::default()).collect();
    let mut one_cpu: Vec<Vec<f64>> = built.iter().map(|_| Vec::new()).collect();
    println!("\n== overlay: {reps} interleaved repetition(s), {secs} s per measurement");
    for rep in 1..=reps {
        for ((o, s), one) in built.iter().zip(&mut samples).zip(&mut one_cpu) {
            bench::measure(&o.t, s, rep, secs)?;
            match stream_on_one_cpu(&o.t, secs) {
                Ok(gbps) => {
                    println!(
                        "rep {rep} {:<8} stream on one CPU {gbps:7.2} Gbit/s",
                        o.t.name
                    );
                    one.push(gbps);
                }
                Err(e) => s.errors.push(format!("stream on one CPU: {e:#}")),
            }
        }
    }
    let names: Vec<&str> = built.iter().map(|o| o.t.name).collect();
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
    Ok(traffic::iperf3(&t.server, &t.client, t.server_ip, secs, None, Some(pin))?.gbps)
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

/// The switch and two nodes plugged into it; returns [node1, node2, switch].
fn underlay(tag: &str) -> Result<Vec<Netns>> {
    let switch = Netns::create(&format!("{tag}-sw"))?;
    let mtu = UNDERLAY_MTU.to_string();
    proc::stdout(
        &mut switch.ip(&["link", "add", "br0", "mtu", &mtu, "type", "bridge"]),
        T,
    )?;
    proc::stdout(&mut switch.ip(&["link", "set", "br0", "up"]), T)?;
    let mut nodes = Vec::new();
    for i in [1u8, 2] {
        let node = Netns::create(&format!("{tag}-n{i}"))?;
        let port = format!("p{i}");
        proc::stdout(
            &mut switch.ip(&[
                "link",
                "add",
                &port,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_IF,
                "mtu",
                &mtu,
                "netns",
                node.name(),
            ]),
            T,
        )?;
        proc::stdout(
            &mut switch.ip(&["link", "set", &port, "master", "br0", "up"]),
            T,
        )?;
        proc::stdout(
            &mut node.ip(&[
                "addr",
                "add",
                &format!("{}/24", underlay_ip(i)),
                "dev",
                UNDERLAY_IF,
            ]),
            T,
        )?;
        proc::stdout(&mut node.ip(&["link", "set", UNDERLAY_IF, "up"]), T)?;
        nodes.push(node);
    }
    nodes.push(switch);
    Ok(nodes)
}

/// Two weft nodes with `--encap mode`, each owning one pod subnet of the
/// network and knowing the other; a container on each.
fn weft_overlay(
    bin: &Path,
    name: &'static str,
    mode: &str,
    prefix: &str,
    (bpffs_prefix, state_prefix): (&str, &str),
) -> Result<Overlay> {
    let tag = format!("{prefix}-{name}");
    println!("== overlay topology {name}: {tag}-n1, -n2 on {tag}-sw, weft --encap {mode}");
    let nodes = underlay(&tag)?;
    let client = Netns::create(&format!("{tag}-a"))?;
    let server = Netns::create(&format!("{tag}-b"))?;
    let mut wefts = Vec::new();
    for (i, node) in [1u8, 2].into_iter().zip(&nodes) {
        wefts.push(WeftNode::new(
            bin,
            node.name(),
            PathBuf::from(format!("{bpffs_prefix}{name}-n{i}")),
            PathBuf::from(format!("{state_prefix}{name}-n{i}")),
        ));
    }
    let o = Overlay {
        wefts,
        t: Topology {
            name,
            weft: None,
            client,
            server,
            _node: None,
            server_ip: "10.220.2.2",
        },
        _nodes: nodes,
    };
    let inner_mtu = (UNDERLAY_MTU - VXLAN_OVERHEAD).to_string();
    for (i, (weft, c)) in [1u8, 2]
        .into_iter()
        .zip(o.wefts.iter().zip([&o.t.client, &o.t.server]))
    {
        let other = 3 - i;
        weft.quiet(&[
            "network",
            "create",
            "bench",
            "--subnet",
            NETWORK_CIDR,
            "--vni",
            VNI,
        ])?;
        weft.quiet(&[
            "node",
            "set",
            "--uplink",
            UNDERLAY_IF,
            "--ip",
            &underlay_ip(i),
            "--encap",
            mode,
            "--subnet",
            &format!("bench={}", pod_cidr(i)),
        ])?;
        weft.quiet(&[
            "node",
            "add",
            &format!("n{other}"),
            "--underlay",
            &underlay_ip(other),
            "--subnet",
            &format!("bench={}", pod_cidr(other)),
        ])?;
        weft.quiet(&[
            "endpoint",
            "add",
            "--network",
            "bench",
            "--netns",
            c.name(),
            "--ip",
            &container_ip(i),
            "--name",
            &format!("c{i}"),
            "--mtu",
            &inner_mtu,
        ])?;
        bench::check_eth0(c, &container_ip(i))?;
    }
    Ok(o)
}

/// Two nodes without weft: containers on a bridge `cbr0`, kernel
/// forwarding, and either the kernel's VXLAN (`vxlan`) or plain routes.
fn kernel_overlay(name: &'static str, vxlan: bool, prefix: &str) -> Result<Overlay> {
    let tag = format!("{prefix}-{name}");
    println!(
        "== overlay topology {name}: {tag}-n1, -n2 on {tag}-sw, {}",
        if vxlan {
            "kernel vxlan (VNI 100, nolearning, static FDB) + bridge"
        } else {
            "bridge + plain routes, no encapsulation"
        }
    );
    let nodes = underlay(&tag)?;
    let client = Netns::create(&format!("{tag}-a"))?;
    let server = Netns::create(&format!("{tag}-b"))?;
    let mtu = if vxlan {
        UNDERLAY_MTU - VXLAN_OVERHEAD
    } else {
        UNDERLAY_MTU
    }
    .to_string();
    for (i, (node, c)) in [1u8, 2]
        .into_iter()
        .zip(nodes.iter().zip([&client, &server]))
    {
        let other = 3 - i;
        let ip = |args: &[&str]| proc::stdout(&mut node.ip(args), T);
        ip(&["link", "add", "cbr0", "mtu", &mtu, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", gateway(i)), "dev", "cbr0"])?;
        ip(&["link", "set", "cbr0", "up"])?;
        proc::stdout(
            &mut node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
            T,
        )?;
        ip(&[
            "link",
            "add",
            "veth0",
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            c.name(),
        ])?;
        ip(&["link", "set", "veth0", "master", "cbr0", "up"])?;
        bench::container_addr(c, &format!("{}/24", container_ip(i)), Some(&gateway(i)))?;
        if vxlan {
            ip(&[
                "link",
                "add",
                "vxlan0",
                "address",
                &vtep_mac(i),
                "mtu",
                &mtu,
                "type",
                "vxlan",
                "id",
                VNI,
                "dstport",
                "4789",
                "local",
                &underlay_ip(i),
                "dev",
                UNDERLAY_IF,
                "nolearning",
            ])?;
            ip(&["link", "set", "vxlan0", "up"])?;
            // Flannel's three entries per remote node.
            let remote_net = format!("10.220.{other}.0");
            ip(&[
                "neigh",
                "replace",
                &remote_net,
                "lladdr",
                &vtep_mac(other),
                "dev",
                "vxlan0",
                "nud",
                "permanent",
            ])?;
            proc::stdout(
                &mut node.exec(&[
                    "bridge",
                    "fdb",
                    "append",
                    &vtep_mac(other),
                    "dev",
                    "vxlan0",
                    "dst",
                    &underlay_ip(other),
                    "self",
                    "permanent",
                ]),
                T,
            )?;
            ip(&[
                "route",
                "add",
                &pod_cidr(other),
                "via",
                &remote_net,
                "dev",
                "vxlan0",
                "onlink",
            ])?;
        } else {
            ip(&["route", "add", &pod_cidr(other), "via", &underlay_ip(other)])?;
        }
    }
    Ok(Overlay {
        wefts: Vec::new(),
        t: Topology {
            name,
            weft: None,
            client,
            server,
            _node: None,
            server_ip: "10.220.2.2",
        },
        _nodes: nodes,
    })
}

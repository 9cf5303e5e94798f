//! `cargo xtask bench`: weft against the two datapaths it replaces or must
//! approach, side by side in one run.
//!
//! Three topologies, each in fresh namespaces named after this run's pid:
//! - `weft`: a node namespace and two containers on one weft network;
//! - `veth`: two namespaces joined by one veth pair (the limit);
//! - `bridge`: a node namespace with a Linux bridge and a veth to each of two
//!   containers (what Docker does).
//!
//! All use MTU 1500 and IPv6 off. Repetitions are interleaved (rep 1: weft,
//! veth, bridge; rep 2: ...) so drift in machine load hits all three alike;
//! the report uses medians. Each rep runs an iperf3 TCP stream and a sockperf
//! UDP ping-pong from container A to a server bound to container B's address.
//! Then the per-packet cost of each eBPF program path comes from the
//! `prog_cost` binary of `weft-tests`, when it exists. Before that, NAT
//! (`nat_bench`): masquerade and published ports against iptables. Last, the agent alone
//! (`agent_bench`): RSS and CPU at idle and while it programs 10,000
//! endpoints into the maps. Then cluster mode against a real etcd
//! (`bench_cluster`) and CNI ADD/DEL latency against the reference bridge
//! plugin (`cni_bench`), and service VIPs against kube-proxy's iptables and
//! nftables modes plus DNS against dnsmasq (`services_bench`). Figures are checked against targets and
//! reported HIT/MISS; a MISS never fails the run.

use std::{
    any::Any,
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_harness::{
    links::plug_container,
    netns::NetNs,
    node::Node,
    proc,
    run::{self, Run},
    traffic::{self, Latency, Pin, Stream},
};

use crate::{
    agent_bench, bench_cluster, bench_overlay, build_ebpf, cni_bench, nat_bench, services_bench,
    setup,
};

const NS_PREFIX: &str = "wbench";
/// Pins in `/sys/fs/bpf/weft-bench-<pid>-<n>`, state in `/tmp/weft-bench-<pid>-<n>`.
const DIRS_PREFIX: &str = "weft-bench-";
const T: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    /// Short run: 1 repetition of 2 s per measurement (unless --reps/--secs).
    #[arg(long)]
    quick: bool,
    /// Interleaved repetitions per topology [default: 3, or 1 with --quick].
    #[arg(long)]
    reps: Option<u32>,
    /// Seconds per iperf3 / sockperf measurement [default: 5, or 2 with --quick].
    #[arg(long)]
    secs: Option<u32>,
    /// Directory for the JSON report [default: bench-results/ in the repo].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these sections, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
}

/// The bench's sections, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// weft vs veth vs Linux bridge on one node.
    SameNode,
    /// Masquerade and published ports vs iptables.
    Nat,
    /// Cross-node overlay vs kernel vxlan + bridge vs routed underlay.
    Overlay,
    /// Per-packet program cost (prog_cost).
    Prog,
    /// The agent's RSS/CPU and map programming.
    Agent,
    /// Cluster mode against a real etcd: convergence, 1,000 nodes.
    Cluster,
    /// CNI ADD/DEL latency: weft-cni vs bridge + host-local.
    Cni,
    /// Service VIPs vs kube-proxy's iptables and nftables modes; DNS vs dnsmasq.
    Services,
}

impl Args {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

/// What a section left out by `--only` reports instead of figures.
const NOT_RUN: &str = "not run (--only)";

/// One topology under test: a client and a server container and whatever
/// joins them. Fields drop in declaration order: the nodes first (weft's
/// teardown runs while the containers still exist).
pub(crate) struct Topology {
    pub(crate) name: &'static str,
    /// The nodes, switch or bridge the path needs; only held.
    pub(crate) _nodes: Box<dyn Any>,
    pub(crate) client: NetNs,
    pub(crate) server: NetNs,
    pub(crate) server_ip: String,
}

/// Samples collected for one topology.
#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) streams: Vec<Stream>,
    pub(crate) latencies: Vec<Latency>,
    pub(crate) errors: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    if !proc::is_root() {
        bail!("the bench needs root (namespaces, BPF); run it as root");
    }
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let secs = args.secs.unwrap_or(if args.quick { 2 } else { 5 }).max(1);
    setup::run()?;
    // Release: the agent runs beside the measurements (its conntrack GC
    // walks the tables every 10 s) and is measured itself.
    let weft_bin = build_ebpf::run_with(build_ebpf::Profile::Release)
        .map(|b| b.weft)
        .map_err(|e| format!("{e:#}"));
    run::configure(Run {
        netns: NS_PREFIX,
        dirs: DIRS_PREFIX,
        ipv6_off: true,
        weft: weft_bin.clone().ok(),
    })?;
    run::reap_stale();

    let mut topologies = Vec::new();
    let mut unavailable = Vec::new();
    let same_node = args.wants(Section::SameNode);
    match &weft_bin {
        _ if !same_node => {}
        Ok(_) => match weft_topology() {
            Ok(t) => topologies.push(t),
            Err(err) => {
                proc::check_interrupted()?;
                eprintln!("xtask bench: weft topology unavailable: {err:#}");
                unavailable.push(("weft", format!("{err:#}")));
            }
        },
        Err(err) => {
            eprintln!("xtask bench: weft could not be built: {err}");
            unavailable.push(("weft", format!("build failed: {err}")));
        }
    }
    let mut bridge_nf = NOT_RUN.to_owned();
    if same_node {
        topologies.push(veth_topology()?);
        let (bridge, nf) = bridge_topology()?;
        topologies.push(bridge);
        bridge_nf = nf;
    }

    let mut samples: Vec<Samples> = topologies.iter().map(|_| Samples::default()).collect();
    println!("\n== {reps} interleaved repetition(s), {secs} s per measurement");
    for rep in 1..=reps {
        for (t, s) in topologies.iter().zip(&mut samples) {
            measure(t, s, rep, secs)?;
        }
    }
    println!("\n== cleaning up namespaces");
    drop(topologies);
    let left = run::leftovers();
    if !left.is_empty() {
        eprintln!("xtask: warning: namespaces left behind: {}", left.join(" "));
    }

    let nat = if args.wants(Section::Nat) {
        nat_bench::run(weft_bin.is_ok(), reps, secs).map_err(|e| format!("{e:#}"))
    } else {
        Err(NOT_RUN.to_owned())
    };
    if let (Err(e), true) = (&nat, args.wants(Section::Nat)) {
        proc::check_interrupted()?;
        eprintln!("xtask bench: NAT measurement unavailable: {e}");
    }

    let overlay = if args.wants(Section::Overlay) {
        bench_overlay::run(weft_bin.is_ok(), reps, secs)?
    } else {
        bench_overlay::OverlayBench {
            json: json!({ "unavailable": NOT_RUN }),
            targets: Vec::new(),
        }
    };

    let prog_cost = if args.wants(Section::Prog) {
        println!("\n== per-packet cost of each program path (prog_cost)");
        prog_cost()
    } else {
        Err(NOT_RUN.to_owned())
    };
    let names: Vec<&str> = ["weft", "veth", "bridge"]
        .into_iter()
        .filter(|n| same_node && !unavailable.iter().any(|(u, _)| u == n))
        .collect();
    let agent = match &weft_bin {
        _ if !args.wants(Section::Agent) => Err(NOT_RUN.to_owned()),
        Ok(_) => agent_bench::run().map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("weft could not be built: {e}")),
    };
    if let (Err(e), true) = (&agent, args.wants(Section::Agent)) {
        proc::check_interrupted()?;
        eprintln!("xtask bench: agent measurement unavailable: {e}");
    }
    let cluster = match &weft_bin {
        _ if !args.wants(Section::Cluster) => Err(NOT_RUN.to_owned()),
        Ok(_) => bench_cluster::run().map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("weft could not be built: {e}")),
    };
    if let (Err(e), true) = (&cluster, args.wants(Section::Cluster)) {
        proc::check_interrupted()?;
        eprintln!("xtask bench: cluster measurement unavailable: {e}");
    }
    let cni = match &weft_bin {
        _ if !args.wants(Section::Cni) => Err(NOT_RUN.to_owned()),
        Ok(_) => cni_bench::run().map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("weft could not be built: {e}")),
    };
    if let (Err(e), true) = (&cni, args.wants(Section::Cni)) {
        proc::check_interrupted()?;
        eprintln!("xtask bench: CNI measurement unavailable: {e}");
    }
    let services = match &weft_bin {
        _ if !args.wants(Section::Services) => Err(NOT_RUN.to_owned()),
        Ok(_) => services_bench::run(reps, secs).map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("weft could not be built: {e}")),
    };
    if let (Err(e), true) = (&services, args.wants(Section::Services)) {
        proc::check_interrupted()?;
        eprintln!("xtask bench: services measurement unavailable: {e}");
    }
    let mut report = Report::new(&names, &samples, &unavailable, &prog_cost, &agent);
    if let Ok(nat) = &nat {
        println!();
        for line in &nat.lines {
            println!("{line}");
        }
    }
    report.targets.extend(nat_bench::targets(&nat));
    report.targets.extend(overlay.targets.iter().cloned());
    if let Ok(c) = &cluster {
        report.targets.extend(c.targets.iter().cloned());
    }
    report.targets.extend(match &cni {
        Ok(c) => c.targets.clone(),
        Err(_) => cni_bench::targets(None),
    });
    report.targets.extend(match &services {
        Ok(s) => s.targets.clone(),
        Err(_) => services_bench::targets_not_run(),
    });
    if !args.only.is_empty() {
        // Targets of the sections left out have no figures: leave them out.
        report.targets.retain(|t| t.value.is_some());
    }
    report.print();

    let stamp = timestamp();
    let doc = json!({
        "timestamp": stamp,
        "reps": reps,
        "seconds_per_measurement": secs,
        "mtu": 1500,
        "machine": {
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cpus": cpus(),
            "commit": proc::stdout(&mut proc::cmd("git", &["rev-parse", "HEAD"]), T)
                .map(|s| s.trim().to_owned()).unwrap_or_default(),
            "bridge_nf_call_iptables_in_bridge_node": bridge_nf,
        },
        "method": {
            "stream": "iperf3 TCP, 1 stream, client in container A, server bound to container B's IP (-J, receiver bits/s); server pinned to CPU 0, client to the last CPU",
            "latency": "sockperf ping-pong UDP --full-rtt, round trip in microseconds; client and server pinned to the same (last) CPU",
            "order": "repetitions interleaved across topologies; medians reported",
        },
        "topologies": report.topologies_json(),
        "prog_cost": prog_cost.as_ref().map_or_else(|e| json!({"unavailable": e}), |v| v.clone()),
        "agent": agent.as_ref().map_or_else(|e| json!({"unavailable": e}), |v| v.clone()),
        "nat": nat.as_ref().map_or_else(|e| json!({"unavailable": e}), |v| v.json.clone()),
        "overlay": overlay.json,
        "cluster": cluster.as_ref().map_or_else(|e| json!({"unavailable": e}), |c| c.json.clone()),
        "cni": cni.as_ref().map_or_else(|e| json!({"unavailable": e}), |c| c.json.clone()),
        "services": services.as_ref().map_or_else(|e| json!({"unavailable": e}), |s| s.json.clone()),
        "targets": report.targets_json(),
    });
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| repo_root().join("bench-results"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{stamp}.json"));
    fs::write(&file, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", file.display()))?;
    println!("\nreport written to {}", file.display());

    let missing: Vec<String> = unavailable
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .chain(
            names
                .iter()
                .zip(&samples)
                .filter(|(_, s)| s.streams.is_empty() || s.latencies.is_empty())
                .map(|(n, _)| (*n).to_owned()),
        )
        .collect();
    if !missing.is_empty() {
        bail!(
            "bench incomplete: no measurements for {} (see above)",
            missing.join(", ")
        );
    }
    Ok(())
}

pub(crate) fn measure(t: &Topology, s: &mut Samples, rep: u32, secs: u32) -> Result<()> {
    let last_cpu = cpus().saturating_sub(1);
    // Stream: sender and receiver on different CPUs, as they would be on a
    // busy node. Ping-pong: both on one CPU; a cross-CPU wakeup costs tens of
    // microseconds on this kind of VM and would drown the datapath's share.
    let stream_pin = Pin {
        server_cpu: 0,
        client_cpu: last_cpu,
    };
    let latency_pin = Pin {
        server_cpu: last_cpu,
        client_cpu: last_cpu,
    };
    let stream = traffic::iperf3(
        &t.server,
        &t.client,
        &t.server_ip,
        secs,
        None,
        Some(stream_pin),
    );
    let latency = traffic::sockperf(&t.server, &t.client, &t.server_ip, secs, Some(latency_pin));
    proc::check_interrupted()?;
    let mut line = format!("rep {rep} {:<7}", t.name);
    match stream {
        Ok(st) => {
            line += &format!(
                "  stream {:7.2} Gbit/s ({} retr)",
                st.gbps,
                st.retransmits.unwrap_or(0)
            );
            s.streams.push(st);
        }
        Err(e) => {
            line += "  stream FAILED";
            s.errors.push(format!("rep {rep} stream: {e:#}"));
        }
    }
    match latency {
        Ok(l) => {
            line += &format!("  rtt p50 {:7.2} us  p99 {:7.2} us", l.p50_us, l.p99_us);
            s.latencies.push(l);
        }
        Err(e) => {
            line += "  latency FAILED";
            s.errors.push(format!("rep {rep} latency: {e:#}"));
        }
    }
    println!("{line}");
    for e in s
        .errors
        .iter()
        .filter(|e| e.starts_with(&format!("rep {rep} ")))
    {
        println!("    {e}");
    }
    Ok(())
}

/// Two namespaces joined by a single veth pair: the cheapest path there is.
fn veth_topology() -> Result<Topology> {
    let client = NetNs::new("veth-a")?;
    let server = NetNs::new("veth-b")?;
    println!(
        "== topology veth: {} <-veth-> {} (10.211.0.0/24)",
        client.name(),
        server.name()
    );
    client.add_veth("eth0", &server, "eth0", Some(1500))?;
    client.add_addr("eth0", "10.211.0.2/24")?;
    server.add_addr("eth0", "10.211.0.3/24")?;
    Ok(Topology {
        name: "veth",
        _nodes: Box::new(()),
        client,
        server,
        server_ip: "10.211.0.3".into(),
    })
}

/// A node with a Linux bridge and one veth to each container (Docker's
/// way); also what the node's bridge-nf-call-iptables says.
fn bridge_topology() -> Result<(Topology, String)> {
    let node = NetNs::new("bridge-node")?;
    let client = NetNs::new("bridge-a")?;
    let server = NetNs::new("bridge-b")?;
    println!(
        "== topology bridge: {} br0 + {}, {} (10.212.0.0/24)",
        node.name(),
        client.name(),
        server.name()
    );
    node.add_bridge("br0", None)?;
    node.exec(&["ip", "addr", "add", "10.212.0.1/24", "dev", "br0"])?;
    for (i, (c, cidr)) in [(&client, "10.212.0.2/24"), (&server, "10.212.0.3/24")]
        .into_iter()
        .enumerate()
    {
        let gateway = Some("10.212.0.1");
        plug_container(
            &node,
            "br0",
            &format!("veth{i}"),
            c,
            (cidr, gateway),
            Some(1500),
        )?;
    }
    let bridge_nf = node
        .exec(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "n/a (br_netfilter not loaded)".into());
    let t = Topology {
        name: "bridge",
        _nodes: Box::new(node),
        client,
        server,
        server_ip: "10.212.0.3".into(),
    };
    Ok((t, bridge_nf))
}

/// A weft node with two containers on one network, built by the weft CLI.
fn weft_topology() -> Result<Topology> {
    let node = Node::new()?;
    println!(
        "== topology weft: {} + two containers (10.210.0.0/24)",
        node.ns.name()
    );
    node.weft(&["network", "create", "bench", "--subnet", "10.210.0.0/24"])?;
    let mut containers = Vec::new();
    for (ip, name) in [("10.210.0.2", "a"), ("10.210.0.3", "b")] {
        let (c, _) = node.container_with("bench", name, &["--ip", ip, "--mtu", "1500"])?;
        check_eth0(&c, ip)?;
        containers.push(c);
    }
    let (server, client) = (containers.pop(), containers.pop());
    Ok(Topology {
        name: "weft",
        _nodes: Box::new(node),
        client: client.expect("two containers"),
        server: server.expect("two containers"),
        server_ip: "10.210.0.3".into(),
    })
}

/// Fail unless `weft endpoint add` left `eth0` with `ip` in container `c`.
pub fn check_eth0(c: &NetNs, ip: &str) -> Result<()> {
    let addrs = c
        .exec(&["ip", "-br", "addr", "show", "dev", "eth0"])
        .with_context(|| format!("`weft endpoint add` left no eth0 in {}", c.name()))?;
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    if !addrs.contains(&format!("{ip}/")) {
        bail!(
            "`weft endpoint add` left eth0 in {} without {ip}: {}",
            c.name(),
            addrs.trim()
        );
    }
    Ok(())
}

/// `prog_cost --json` from weft-tests, or why it couldn't be had.
fn prog_cost() -> Result<Value, String> {
    let meta = proc::stdout(
        &mut proc::cmd(
            "cargo",
            &[
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ],
        ),
        T,
    )
    .map_err(|e| format!("cargo metadata: {e:#}"))?;
    let meta: Value = serde_json::from_str(&meta).map_err(|e| format!("cargo metadata: {e}"))?;
    let has_bin = meta["packages"].as_array().is_some_and(|ps| {
        ps.iter().any(|p| {
            p["name"] == "weft-tests"
                && p["targets"]
                    .as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t["name"] == "prog_cost"))
        })
    });
    if !has_bin {
        println!("prog_cost: unavailable (weft-tests has no prog_cost binary yet)");
        return Err("weft-tests has no prog_cost binary".into());
    }
    let mut cmd = proc::cmd(
        "cargo",
        &[
            "run",
            "--release",
            "--quiet",
            "-p",
            "weft-tests",
            "--bin",
            "prog_cost",
            "--",
            "--json",
        ],
    );
    println!("$ {}", proc::show(&cmd));
    let out = proc::output_stdout(&mut cmd, Duration::from_secs(30 * 60))
        .map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(format!("prog_cost failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(text.trim()).ok().or_else(|| {
        text.lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .find_map(|l| serde_json::from_str(l).ok())
    });
    match parsed {
        Some(v) if v["paths"].is_array() => Ok(v),
        _ => Err(format!(
            "prog_cost printed no {{\"paths\": [...]}} JSON: {text}"
        )),
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians per topology, the ratios and the targets they are held to.
struct Report {
    rows: Vec<Row>,
    targets: Vec<Target>,
    /// `prog_cost`'s `paths` (empty if it was unavailable).
    paths: Vec<Value>,
    /// `agent_bench`'s figures, if it ran.
    agent: Option<Value>,
}

struct Row {
    name: String,
    stream_gbps: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    samples: Value,
    note: Option<String>,
}

#[derive(Clone)]
pub struct Target {
    pub what: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    /// `>=` or `<=` `goal`.
    pub at_least: bool,
    pub goal: f64,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match self.value {
            None => "n/a",
            Some(v) if (self.at_least && v >= self.goal) || (!self.at_least && v <= self.goal) => {
                "HIT"
            }
            Some(_) => "MISS",
        }
    }
}

impl Report {
    fn new(
        names: &[&str],
        samples: &[Samples],
        unavailable: &[(&str, String)],
        prog_cost: &Result<Value, String>,
        agent: &Result<Value, String>,
    ) -> Self {
        let mut rows: Vec<Row> = names
            .iter()
            .zip(samples)
            .map(|(name, s)| Row {
                name: (*name).to_owned(),
                stream_gbps: median(s.streams.iter().map(|x| x.gbps).collect()),
                p50_us: median(s.latencies.iter().map(|x| x.p50_us).collect()),
                p99_us: median(s.latencies.iter().map(|x| x.p99_us).collect()),
                samples: json!({
                    "stream": s.streams,
                    "latency": s.latencies,
                    "errors": s.errors,
                }),
                note: None,
            })
            .collect();
        for (name, why) in unavailable {
            rows.insert(
                0,
                Row {
                    name: (*name).to_owned(),
                    stream_gbps: None,
                    p50_us: None,
                    p99_us: None,
                    samples: json!({}),
                    note: Some(why.clone()),
                },
            );
        }
        let get = |name: &str| rows.iter().find(|r| r.name == name);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let field = |name: &str, f: fn(&Row) -> Option<f64>| get(name).and_then(f);
        let mut targets = vec![
            Target {
                what: "stream weft/veth".into(),
                value: ratio(
                    field("weft", |r| r.stream_gbps),
                    field("veth", |r| r.stream_gbps),
                ),
                unit: "x",
                at_least: true,
                goal: 0.97,
            },
            Target {
                what: "stream weft/bridge".into(),
                value: ratio(
                    field("weft", |r| r.stream_gbps),
                    field("bridge", |r| r.stream_gbps),
                ),
                unit: "x",
                at_least: true,
                goal: 1.0,
            },
            Target {
                what: "p50 latency weft/bridge".into(),
                value: ratio(field("weft", |r| r.p50_us), field("bridge", |r| r.p50_us)),
                unit: "x",
                at_least: false,
                goal: 0.85,
            },
        ];
        let paths = prog_cost
            .as_ref()
            .ok()
            .and_then(|v| v["paths"].as_array().cloned())
            .unwrap_or_default();
        let mut any_path = false;
        for p in &paths {
            let name = p["name"].as_str().unwrap_or("?");
            // The forwarding paths only (not e.g. a method baseline such as
            // `bridge_single`).
            let lower = name.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "bridge" | "bridged" | "bridging" | "route" | "routed" | "routing"
            ) {
                any_path = true;
                // Judge the program's own time: the no-op calibration
                // program measures the test-run loop's overhead, which is
                // not part of the path. The raw figure stays in the label.
                let raw = p["ns_per_packet"].as_f64();
                let own = p["program_ns"].as_f64().or(raw);
                targets.push(Target {
                    what: format!(
                        "prog path {name} (program time; raw {})",
                        raw.map_or("?".into(), |r| format!("{r:.0} ns"))
                    ),
                    value: own,
                    unit: "ns",
                    at_least: false,
                    goal: 50.0,
                });
            }
        }
        // The masquerade paths, judged the same way against their own goal.
        for name in ["snat", "reverse_snat"] {
            let p = paths.iter().find(|p| p["name"] == name);
            let raw = p.and_then(|p| p["ns_per_packet"].as_f64());
            targets.push(Target {
                what: format!(
                    "prog path {name} (program time; raw {})",
                    raw.map_or("?".into(), |r| format!("{r:.0} ns"))
                ),
                value: p.and_then(|p| p["program_ns"].as_f64()).or(raw),
                unit: "ns",
                at_least: false,
                goal: 200.0,
            });
        }
        if !any_path {
            targets.push(Target {
                what: "prog paths bridging/routing".into(),
                value: None,
                unit: "ns",
                at_least: false,
                goal: 50.0,
            });
        }
        let agent = agent.as_ref().ok().cloned();
        let figure = |key: &str| agent.as_ref().and_then(|a| a[key].as_f64());
        targets.push(Target {
            what: format!(
                "agent: program {} endpoints (map updates)",
                agent_bench::ENDPOINTS
            ),
            value: figure("program_map_update_ms"),
            unit: "ms",
            at_least: false,
            goal: 1000.0,
        });
        targets.push(Target {
            what: format!(
                "agent: endpoint add p50 ({} sequential, veth included)",
                agent_bench::ADDS
            ),
            value: figure("endpoint_add_p50_ms"),
            unit: "ms",
            at_least: false,
            goal: 15.0,
        });
        targets.push(Target {
            what: "agent RSS idle".into(),
            value: figure("idle_rss_mib"),
            unit: "MiB",
            at_least: false,
            goal: 50.0,
        });
        targets.push(Target {
            what: format!("agent RSS peak programming {}", agent_bench::ENDPOINTS),
            value: figure("peak_rss_mib"),
            unit: "MiB",
            at_least: false,
            goal: 50.0,
        });
        Self {
            rows,
            targets,
            paths,
            agent,
        }
    }

    fn print(&self) {
        let fmt = |v: Option<f64>, prec: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
        };
        println!(
            "\n{:<8} {:>16} {:>14} {:>14}",
            "topology", "stream Gbit/s", "rtt p50 us", "rtt p99 us"
        );
        for r in &self.rows {
            print!(
                "{:<8} {:>16} {:>14} {:>14}",
                r.name,
                fmt(r.stream_gbps, 2),
                fmt(r.p50_us, 2),
                fmt(r.p99_us, 2)
            );
            match &r.note {
                Some(n) => println!("  (unavailable: {})", first_line(n)),
                None => println!(),
            }
        }
        if !self.paths.is_empty() {
            // `ns_per_packet` includes the test-run loop's own overhead;
            // `program_ns` (what the targets hold) has the no-op program's
            // figure subtracted, and `x no-op` divides by it: the path in
            // units of this machine's test-run overhead.
            println!(
                "\n{:<16} {:>10} {:>11} {:>8}  method",
                "program path", "ns/packet", "program ns", "x no-op"
            );
            for p in &self.paths {
                println!(
                    "{:<16} {:>10} {:>11} {:>8}  {}",
                    p["name"].as_str().unwrap_or("?"),
                    fmt(p["ns_per_packet"].as_f64(), 1),
                    fmt(p["program_ns"].as_f64(), 1),
                    fmt(p["noop_ratio"].as_f64(), 2),
                    p["method"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(a) = &self.agent {
            let f = |key: &str, prec: usize| fmt(a[key].as_f64(), prec);
            println!(
                "\nagent             RSS MiB  CPU %   (idle {} s)\n\
                 idle            {:>9} {:>6}\n\
                 programming {:>5} {:>9} {:>6}   map updates {} ms ({} bpf calls), \
                 request {} ms, peak RSS {} MiB, removal {} ms\n\
                 endpoint add    p50 {} ms, p99 {} ms over {} sequential adds; datapath open \
                 (per request before the engine) {} ms",
                a["idle_seconds"],
                f("idle_rss_mib", 1),
                f("idle_cpu_percent", 2),
                a["endpoints"],
                f("program_rss_mib", 1),
                f("program_cpu_percent", 0),
                f("program_map_update_ms", 1),
                a["program_map_calls"],
                f("program_request_ms", 1),
                f("peak_rss_mib", 1),
                f("remove_map_update_ms", 1),
                f("endpoint_add_p50_ms", 1),
                f("endpoint_add_p99_ms", 1),
                a["endpoint_adds"],
                f("datapath_open_ms", 1),
            );
        }
        println!("\n{:<28} {:>10} {:>10}  result", "target", "value", "goal");
        for t in &self.targets {
            let value = t.value.map_or_else(
                || "-".to_owned(),
                |v| match t.unit {
                    "x" => format!("{v:.3}x"),
                    unit => format!("{v:.1}{unit}"),
                },
            );
            let goal = format!(
                "{}{}{}",
                if t.at_least { ">=" } else { "<=" },
                t.goal,
                t.unit
            );
            println!("{:<28} {:>10} {:>10}  {}", t.what, value, goal, t.verdict());
        }
        println!("(targets are reported, never enforced: a MISS does not fail the bench)");
    }

    fn topologies_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for r in &self.rows {
            m.insert(
                r.name.clone(),
                json!({
                    "stream_gbps_median": r.stream_gbps,
                    "rtt_p50_us_median": r.p50_us,
                    "rtt_p99_us_median": r.p99_us,
                    "samples": r.samples,
                    "unavailable": r.note,
                }),
            );
        }
        Value::Object(m)
    }

    fn targets_json(&self) -> Value {
        self.targets
            .iter()
            .map(|t| {
                json!({
                    "what": t.what,
                    "value": t.value,
                    "unit": t.unit,
                    "goal": format!("{} {}", if t.at_least { ">=" } else { "<=" }, t.goal),
                    "result": t.verdict(),
                })
            })
            .collect()
    }
}

pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// UTC `YYYYMMDDTHHMMSSZ` (no date crate: days-to-civil from H. Hinnant).
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "19700101T000000Z");
        assert_eq!(utc(951_782_400), "20000229T000000Z");
        assert_eq!(utc(1_767_225_599), "20251231T235959Z");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}

//! `cargo xtask bench`, cluster section: weft agents in cluster mode
//! against a real etcd (Debian's etcd-server, one member in a namespace of
//! the run), beside the alternative they replace: telling every node about
//! every other by hand (`weft node add` through the agent's API).
//!
//! - Convergence: a simulated node's registration and subnet lease written
//!   to etcd (one transaction over etcd's JSON gateway) until the peer's
//!   agent answers `node ls` with it, which it does once the route is in
//!   `WEFT_ROUTES` (the engine applies before it publishes the model);
//!   p50/p99 over [`SAMPLES`], beside a `node add` of a static peer
//!   through the API, timed to its answer.
//! - Scale: [`NODES`] simulated nodes written straight to etcd, programmed
//!   by one real agent: a fresh node's cold start (agent spawned, overlay
//!   turned on, every route programmed), a reconnect after an outage (the
//!   agent cut off from etcd by a firewall rule in its own namespace while
//!   a tenth of the nodes leave and as many join: from the cut lifted to
//!   the agent's view matching the store), the agent's RSS, and the
//!   requests it sends to etcd per minute at steady state. Beside it: the
//!   same nodes given by hand, one `node add` after another.
//! - The same again with [`ENDPOINTS_PER_NODE`] endpoints registered per
//!   simulated node (records for name resolution, which the agent does not
//!   watch).

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_api::{
    Client,
    requests::{AddNode, ClusterStatus, CreateNetwork, ListNodes, SetNode},
};
use weft_harness::{
    cluster::ClusterNode,
    etcd::Etcd,
    metrics, proc,
    underlay::{Underlay, UnderlayNode},
};

use crate::bench::Target;

/// Convergence samples.
const SAMPLES: usize = 200;
/// Simulated nodes of the scale runs.
pub const NODES: usize = 1_000;
/// Endpoints registered per simulated node in the second scale run.
pub const ENDPOINTS_PER_NODE: usize = 1_000;
/// Nodes that leave (and as many that join) during the outage.
const CHURN: usize = NODES / 10;
/// The bench's network: 10.64.0.0/13, 2,047 pod subnets of /24.
const NET: &str = "bench";
const NET_CIDR: &str = "10.64.0.0/13";
const VNI: u32 = 100;
const LEASE_TTL: u32 = 30;
/// Window over which steady-state requests are counted.
const STEADY: Duration = Duration::from_secs(30);
const CONVERGE: Duration = Duration::from_secs(60);
/// Puts per transaction for bulk writes (the bench's etcd allows it).
const PER_TXN: usize = 1_000;

/// The section's figures: JSON for the report, targets for its table.
pub struct ClusterBench {
    pub json: Value,
    pub targets: Vec<Target>,
}

/// Simulated node `i`: its name, underlay address and pod subnet (the
/// `i + 2`-th /24 of the network; the first is skipped, the second is the
/// real node's, so they never meet it).
fn sim(i: usize) -> (String, Ipv4Addr, String) {
    let ip = Ipv4Addr::new(172, 30, 10 + (i / 200) as u8, (i % 200) as u8 + 1);
    let k = u32::try_from(i).unwrap_or(0) + 8;
    let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (k << 8));
    (format!("sim{i}"), ip, format!("{net}/24"))
}

fn mac_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:56:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The keys a simulated node writes: registration and subnet lease.
fn sim_keys(i: usize) -> Vec<(String, String)> {
    let (name, ip, cidr) = sim(i);
    let mac = mac_of(ip);
    vec![
        (
            format!("/weft/cluster/nodes/{name}"),
            json!({"name": name, "underlay_ip": ip, "vtep_mac": mac, "encap": "tunnel"})
                .to_string(),
        ),
        (
            format!("/weft/cluster/subnets/{NET}/{}", cidr.replace('/', "-")),
            json!({"PublicIP": ip, "BackendType": "vxlan",
                   "BackendData": {"VNI": VNI, "VtepMAC": mac}, "Node": name})
            .to_string(),
        ),
    ]
}

fn endpoint_keys(i: usize) -> Vec<(String, String)> {
    let (name, _, cidr) = sim(i);
    let base: Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    (0..ENDPOINTS_PER_NODE)
        .map(|j| {
            // Addresses repeat past a /24's hosts: records for the bench's
            // volume, never routed.
            let ip = Ipv4Addr::from(u32::from(base) + (j % 253) as u32 + 2);
            (
                format!("/weft/endpoints/{name}/ep{j}"),
                json!({"name": format!("ep{j}"), "network": NET, "ip": ip,
                       "mac": mac_of(ip), "node": name})
                .to_string(),
            )
        })
        .collect()
}

/// Cluster nodes `node ls` shows with a subnet.
fn learned(client: &Client) -> Result<BTreeSet<String>> {
    Ok(client
        .call_blocking(ListNodes)?
        .into_iter()
        .filter(|n| !n.subnets.is_empty())
        .map(|n| n.name)
        .collect())
}

/// Polls until `done` holds for the learned set; returns the time taken.
fn wait_learned(
    client: &Client,
    what: &str,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let seen = learned(client)?;
        if done(&seen) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CONVERGE {
            bail!(
                "{what}: not converged within {} s ({} nodes learned)",
                CONVERGE.as_secs(),
                seen.len()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn client_of(n: &ClusterNode) -> Client {
    Client::new(n.node.node.agent_socket())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Runs the section.
pub fn run() -> Result<ClusterBench> {
    println!("\n== cluster: a real etcd, {SAMPLES} convergence samples, {NODES} simulated nodes");
    let underlay = Underlay::new(1500)?;
    let mut etcd = Etcd::with_flags(
        &underlay,
        1,
        &[
            "--max-txn-ops",
            "1024",
            "--quota-backend-bytes",
            "8589934592",
        ],
    )?;
    let sims = etcd.grant(3600)?;
    let urls = etcd.urls();
    let first = ClusterNode::start(&underlay, &urls, "real1", LEASE_TTL, &[])?;
    let c1 = client_of(&first);
    c1.call_blocking(CreateNetwork {
        name: NET.into(),
        subnet: NET_CIDR.into(),
        gateway: None,
        flood: false,
        masquerade: false,
        vni: Some(VNI),
    })?;
    first.set_overlay("tunnel")?;
    first.wait_subnet(NET, CONVERGE)?;

    // Convergence, one node at a time, and the static alternative.
    let mut via_etcd = Vec::with_capacity(SAMPLES);
    let mut via_api = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        proc::check_interrupted()?;
        let name = sim(i).0;
        let start = Instant::now();
        etcd.put_many(sim_keys(i), sims)?;
        wait_learned(&c1, "one registration", |s| s.contains(&name))?;
        via_etcd.push(start.elapsed().as_secs_f64() * 1e3);

        let (_, ip, _) = sim(NODES + i);
        let cidr = sim(NODES + i).2;
        let start = Instant::now();
        c1.call_blocking(AddNode {
            name: format!("static{i}"),
            underlay: ip.to_string(),
            subnets: vec![format!("{NET}={cidr}")],
            vtep_mac: Some(mac_of(ip)),
        })?;
        via_api.push(start.elapsed().as_secs_f64() * 1e3);
    }
    for i in 0..SAMPLES {
        c1.call_blocking(weft_api::requests::RemoveNode {
            name: format!("static{i}"),
        })?;
    }
    via_etcd.sort_by(f64::total_cmp);
    via_api.sort_by(f64::total_cmp);
    let conv = json!({
        "samples": SAMPLES,
        "etcd_p50_ms": percentile(&via_etcd, 0.5),
        "etcd_p99_ms": percentile(&via_etcd, 0.99),
        "node_add_p50_ms": percentile(&via_api, 0.5),
        "node_add_p99_ms": percentile(&via_api, 0.99),
        "ratio_p50": percentile(&via_etcd, 0.5) / percentile(&via_api, 0.5),
    });
    println!(
        "convergence, registration in etcd -> route in the peer: p50 {:.1} ms, p99 {:.1} ms; \
         node add through the API: p50 {:.1} ms, p99 {:.1} ms (ratio p50 {:.2})",
        conv["etcd_p50_ms"].as_f64().unwrap_or(0.0),
        conv["etcd_p99_ms"].as_f64().unwrap_or(0.0),
        conv["node_add_p50_ms"].as_f64().unwrap_or(0.0),
        conv["node_add_p99_ms"].as_f64().unwrap_or(0.0),
        conv["ratio_p50"].as_f64().unwrap_or(0.0),
    );

    // The rest of the nodes, in bulk.
    let bulk: Vec<(String, String)> = (SAMPLES..NODES).flat_map(sim_keys).collect();
    etcd.put_batched(bulk, sims, PER_TXN)?;
    let all: BTreeSet<String> = (0..NODES).map(|i| sim(i).0).collect();
    wait_learned(&c1, "the first node", |s| all.is_subset(s))?;

    let plain = scale(&underlay, &mut etcd, sims, "real2", 0)?;
    let by_hand = by_hand(&underlay)?;

    println!(
        "writing {} endpoint records ...",
        NODES * ENDPOINTS_PER_NODE
    );
    let mut written = Duration::ZERO;
    for i in 0..NODES {
        proc::check_interrupted()?;
        written += etcd.put_batched(endpoint_keys(i), sims, PER_TXN)?;
    }
    println!(
        "{} endpoint records written in {:.1} s",
        NODES * ENDPOINTS_PER_NODE,
        written.as_secs_f64()
    );
    let with_eps = scale(&underlay, &mut etcd, sims, "real3", SAMPLES)?;
    drop(first);

    let targets = vec![
        target(
            "cluster: convergence p50",
            conv["etcd_p50_ms"].as_f64(),
            "ms",
            50.0,
        ),
        target(
            "cluster: cold start, 1,000 nodes",
            plain["cold_start_s"].as_f64(),
            "s",
            2.0,
        ),
        target(
            "cluster: reconnect, 1,000 nodes",
            plain["reconnect_s"].as_f64(),
            "s",
            2.0,
        ),
        target(
            "cluster: agent RSS, 1,000 nodes",
            plain["rss_mib"].as_f64(),
            "MiB",
            100.0,
        ),
        target(
            "cluster: cold start, +1,000 endpoints/node",
            with_eps["cold_start_s"].as_f64(),
            "s",
            2.0,
        ),
        target(
            "cluster: reconnect, +1,000 endpoints/node",
            with_eps["reconnect_s"].as_f64(),
            "s",
            2.0,
        ),
        target(
            "cluster: agent RSS, +1,000 endpoints/node",
            with_eps["rss_mib"].as_f64(),
            "MiB",
            100.0,
        ),
    ];
    Ok(ClusterBench {
        json: json!({
            "convergence": conv,
            "nodes": NODES,
            "scale": plain,
            "by_hand": by_hand,
            "endpoints_per_node": ENDPOINTS_PER_NODE,
            "endpoint_records_write_s": written.as_secs_f64(),
            "scale_with_endpoints": with_eps,
            "method": "one etcd 3.4 member in a namespace of the run (fsync on, data under /tmp); simulated nodes are a registration and a subnet lease each, written over etcd's JSON gateway on one etcd lease; a route counts as programmed when the agent's `node ls` (weft-api client, polled every 2 ms) shows it: the engine publishes the model after applying it to the maps; WEFT_ROUTES entries counted with bpftool after each cold start; convergence timed from before the write; cold start from spawning a fresh node's agent (overlay turned on through the CLI) to every route; reconnect: an iptables REJECT of port 2379 in the agent's own namespace, 10% of the nodes replaced meanwhile, timed from the rule's removal to the agent's view matching the store; RSS = VmRSS; requests = the agent's weft_cluster_etcd_requests_total over 30 s at steady state",
        }),
        targets,
    })
}

fn target(what: &str, value: Option<f64>, unit: &'static str, goal: f64) -> Target {
    Target {
        what: what.into(),
        value,
        unit,
        at_least: false,
        goal,
    }
}

/// A fresh node joins the cluster of [`NODES`]: cold start, reconnect
/// after an outage, RSS, steady-state requests. The nodes that join
/// during the outage are `sim(NODES + churn_from ..)`.
fn scale(
    underlay: &Underlay,
    etcd: &mut Etcd,
    sims: i64,
    name: &str,
    churn_from: usize,
) -> Result<Value> {
    let expected: BTreeSet<String> = (0..NODES).map(|i| sim(i).0).collect();
    let start = Instant::now();
    let node = ClusterNode::start(underlay, &etcd.urls(), name, LEASE_TTL, &[])?;
    node.set_overlay("tunnel")?;
    let client = client_of(&node);
    wait_learned(&client, "cold start", |s| expected.is_subset(s))?;
    let cold = start.elapsed().as_secs_f64();
    let routes = routes_in_map(&node)?;
    let pid = node.agent_pid()?;
    let rss = rss_mib(pid)?;

    // Steady state: requests to etcd over a window.
    let requests = || -> Result<f64> {
        metrics::sample(
            &metrics::scrape(&node.node.node)?,
            "weft_cluster_etcd_requests_total",
        )
    };
    let r0 = requests()?;
    proc::sleep(STEADY)?;
    let per_minute = (requests()? - r0) * 60.0 / STEADY.as_secs_f64();

    // Outage: the agent cut off, the cluster moves on.
    let rule = [
        "OUTPUT",
        "-p",
        "tcp",
        "--dport",
        "2379",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    let iptables = |op: &str| -> Result<()> {
        let mut argv = vec!["iptables", op];
        argv.extend(rule);
        node.node.node.ns.exec(&argv).map(drop)
    };
    iptables("-I")?;
    let cut = Instant::now();
    while client.call_blocking(ClusterStatus)?.connected {
        if cut.elapsed() > CONVERGE {
            iptables("-D")?;
            bail!("the agent still says it is connected with etcd cut off");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let leaving: Vec<String> = (0..CHURN)
        .flat_map(|i| sim_keys(i).into_iter().map(|(k, _)| k))
        .collect();
    etcd.delete_many(leaving)?;
    let joining: Vec<(String, String)> = (churn_from..churn_from + CHURN)
        .map(|i| i + NODES)
        .flat_map(sim_keys)
        .collect();
    etcd.put_batched(joining, sims, PER_TXN)?;
    proc::sleep(Duration::from_secs(2))?;
    iptables("-D")?;
    let now: BTreeSet<String> = (CHURN..NODES)
        .chain((churn_from..churn_from + CHURN).map(|i| i + NODES))
        .map(|i| sim(i).0)
        .collect();
    let reconnect = wait_learned(&client, "reconnect", |s| {
        now.is_subset(s) && !s.contains(&sim(0).0)
    })?
    .as_secs_f64();
    // Back as it was for the next run.
    let back: Vec<String> = (churn_from..churn_from + CHURN)
        .map(|i| i + NODES)
        .flat_map(|i| sim_keys(i).into_iter().map(|(k, _)| k))
        .collect();
    etcd.delete_many(back)?;
    etcd.put_batched((0..CHURN).flat_map(sim_keys).collect(), sims, PER_TXN)?;
    wait_learned(&client, "restore", |s| expected.is_subset(s))?;
    let rss_after = rss_mib(pid)?;
    println!(
        "{name}: cold start to {NODES} routes {cold:.2} s ({routes} in WEFT_ROUTES); reconnect \
         after an outage ({CHURN} left, {CHURN} joined) {reconnect:.2} s; RSS {rss:.1} MiB \
         ({rss_after:.1} after); {per_minute:.1} etcd requests per minute at steady state"
    );
    Ok(json!({
        "cold_start_s": cold,
        "routes_in_map": routes,
        "reconnect_s": reconnect,
        "rss_mib": rss,
        "rss_after_reconnect_mib": rss_after,
        "etcd_requests_per_minute": per_minute,
        "churn": CHURN,
    }))
}

/// The alternative: a fresh node (no cluster mode) told about [`NODES`]
/// peers by hand, one `node add` after another through its agent.
fn by_hand(underlay: &Underlay) -> Result<Value> {
    let node: UnderlayNode = underlay.weft_node()?;
    let agent = node
        .node
        .start_agent_logging(&[], weft_harness::agent::AgentLog::Discarded)?;
    let client = Client::new(node.node.agent_socket());
    client.call_blocking(CreateNetwork {
        name: NET.into(),
        subnet: NET_CIDR.into(),
        gateway: None,
        flood: false,
        masquerade: false,
        vni: Some(VNI),
    })?;
    client.call_blocking(SetNode {
        uplink: weft_harness::underlay::UNDERLAY_IF.into(),
        ip: node.underlay_ip.to_string(),
        ports: None,
        encap: Some("tunnel".into()),
        subnets: vec![format!("{NET}=10.64.1.0/24")],
        vtep_mac: None,
        xdp: false,
        conntrack_max: None,
    })?;
    let start = Instant::now();
    for i in 0..NODES {
        proc::check_interrupted()?;
        let (name, ip, cidr) = sim(i);
        client.call_blocking(AddNode {
            name,
            underlay: ip.to_string(),
            subnets: vec![format!("{NET}={cidr}")],
            vtep_mac: Some(mac_of(ip)),
        })?;
    }
    let total = start.elapsed().as_secs_f64();
    let rss = rss_mib(agent.pid())?;
    println!(
        "by hand: {NODES} `node add` one after another through the API {total:.2} s; RSS \
         {rss:.1} MiB"
    );
    Ok(json!({ "node_adds_s": total, "rss_mib": rss }))
}

/// Entries of the node's pinned `WEFT_ROUTES` (bpftool).
fn routes_in_map(node: &ClusterNode) -> Result<usize> {
    let pin = node.node.node.pin_dir().join("maps/WEFT_ROUTES");
    let out = proc::stdout(
        &mut proc::cmd(
            "bpftool",
            &["map", "dump", "pinned", &pin.to_string_lossy(), "-j"],
        ),
        Duration::from_secs(60),
    )?;
    let v: Value = serde_json::from_str(&out).context("bpftool's dump")?;
    Ok(v.as_array().map_or(0, Vec::len))
}

fn rss_mib(pid: u32) -> Result<f64> {
    Ok(crate::agent_bench::rss_mib(pid)?.0)
}

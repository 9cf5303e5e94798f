//! Cluster mode through a real etcd (Debian's etcd-server 3.4, started in
//! namespaces of the test on the underlay, data under a test-owned /tmp
//! dir, removed afterwards): weft nodes whose agents run with `--etcd`
//! join, claim pod subnets with create-only transactions and learn each
//! other's routes from the store, with no `node add`. Node loss, an etcd
//! outage under a ping flood, a 3-member etcd losing the member an agent
//! talks to and then quorum, a compaction past an agent's watch, Flannel's
//! own leases with a kernel-VXLAN node, and bad input in the store.
//!
//! Leases are short (3-6 s) so node loss is seen within seconds.

use std::{
    collections::BTreeSet,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_tests::{
    cluster::ClusterNode,
    etcd::Etcd,
    metrics,
    netns::NetNs,
    traffic::{tcp_echo, udp_echo},
    underlay::{KERNEL_VTEP, PeerKind, Underlay, parse_mac},
};

/// A ping flood (10 ms apart) running in the background.
struct Flood {
    child: Child,
    count: u32,
}

impl Flood {
    fn start(from: &NetNs, to: &str, seconds: u32) -> Result<Self> {
        let count = seconds * 100;
        let child = from
            .command(&[
                "ping",
                "-n",
                "-q",
                "-i",
                "0.01",
                "-W",
                "1",
                "-c",
                &count.to_string(),
                to,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child, count })
    }

    /// Waits for the flood to end; returns how many pings got no answer.
    fn lost(self) -> Result<u32> {
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let received: u32 = text
            .split(',')
            .find_map(|p| p.trim().strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no ping summary in {text}"))?;
        Ok(self.count - received)
    }
}

/// `network create NAME --subnet SUBNET`, then the network as `network
/// inspect` shows it.
fn network_create(n: &ClusterNode, name: &str, subnet: &str) -> Result<Value> {
    n.node
        .node
        .weft(&["network", "create", name, "--subnet", subnet])?;
    n.node.node.weft_json(&["network", "inspect", name])
}

/// Waits until every node in `nodes` knows all the others (as `cluster`
/// peers).
fn wait_full_mesh(nodes: &[&ClusterNode], within: Duration) -> Result<()> {
    for n in nodes {
        let others: BTreeSet<String> = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| o.name.clone())
            .collect();
        n.wait_nodes("every other node", within, |ls| {
            let seen: BTreeSet<String> = ls
                .iter()
                .filter(|e| {
                    e["source"] == "cluster" && !e["subnets"].as_array().is_none_or(Vec::is_empty)
                })
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect();
            others.is_subset(&seen)
        })?;
    }
    Ok(())
}

/// Three nodes join with no `node add`, the two started at once never
/// share a subnet, containers reach each other (ping, TCP, UDP); a fourth
/// joins and is reached; its agent restarted keeps its subnet and loses no
/// ping of a 10 ms flood; then it is lost (agent SIGKILLed, namespaces
/// deleted) and its routes leave every peer within TTL + 5 s, traffic to
/// it counted as `overlay_no_route`.
#[test]
fn nodes_join_learn_routes_restart_and_leave() -> Result<()> {
    const TTL: u32 = 3;
    let underlay = Underlay::new(1500)?;
    let etcd = Etcd::single(&underlay)?;
    let urls = etcd.urls();

    let n1 = ClusterNode::start(&underlay, &urls, "n1", TTL, &[])?;
    let created = network_create(&n1, "blue", "10.51.0.0/16")?;
    assert_eq!(created["name"], "blue", "{created}");
    let stored = etcd.get_prefix("/weft/cluster/networks/")?;
    assert_eq!(stored.len(), 1, "the network is in etcd: {stored:?}");
    n1.set_overlay("tunnel")?;
    let s1 = n1.wait_subnet("blue", Duration::from_secs(10))?;

    // Two nodes turn their overlay on at once: both race for the first
    // free subnet, each with a create-only transaction.
    let n2 = ClusterNode::start(&underlay, &urls, "n2", TTL, &[])?;
    let n3 = ClusterNode::start(&underlay, &urls, "n3", TTL, &[])?;
    std::thread::scope(|s| {
        let a = s.spawn(|| n2.set_overlay("tunnel"));
        let b = s.spawn(|| n3.set_overlay("bpf"));
        a.join().expect("n2 node set")?;
        b.join().expect("n3 node set")
    })?;
    let subnets: BTreeSet<String> = [&n1, &n2, &n3]
        .iter()
        .map(|n| n.wait_subnet("blue", Duration::from_secs(5)))
        .collect::<Result<_>>()?;
    assert_eq!(subnets.len(), 3, "no two nodes share a subnet: {subnets:?}");
    let leases = etcd.get_prefix("/weft/cluster/subnets/blue/")?;
    assert_eq!(leases.len(), 3, "one lease per node: {leases:?}");
    assert!(
        s1.starts_with("10.51.1."),
        "the first node takes the first free /24: {s1}"
    );

    wait_full_mesh(&[&n1, &n2, &n3], Duration::from_secs(10))?;
    let (c1, ip1) = n1.node.node.container("blue", "c1")?;
    let (c2, ip2) = n2.node.node.container("blue", "c2")?;
    let (c3, ip3) = n3.node.node.container("blue", "c3")?;
    for (from, to, what) in [
        (&c1, &ip2, "n1 -> n2"),
        (&c2, &ip3, "n2 -> n3"),
        (&c3, &ip1, "n3 -> n1"),
        (&c1, &ip3, "n1 -> n3"),
    ] {
        assert_eq!(from.ping(to, 3)?, 3, "ping {what}");
    }
    tcp_echo(&c2, &ip2, &c1, 200_000)?;
    assert!(udp_echo(&c3, &ip3, &c2)?, "UDP n2 -> n3");
    // The endpoints are registered on their nodes' leases.
    let eps = etcd.get_prefix("/weft/endpoints/")?;
    assert_eq!(eps.len(), 3, "{eps:?}");
    assert!(
        eps.iter()
            .any(|(k, v)| k == "/weft/endpoints/n2/c2" && v.contains(&ip2)),
        "{eps:?}"
    );

    // A fourth node joins and is reached from the others.
    let mut n4 = ClusterNode::join(&underlay, &urls, "n4", TTL, "tunnel", &["blue"])?;
    let s4 = n4.wait_subnet("blue", Duration::from_secs(5))?;
    wait_full_mesh(&[&n1, &n2, &n3, &n4], Duration::from_secs(10))?;
    let (c4, ip4) = n4.node.node.container("blue", "c4")?;
    assert_eq!(c1.ping(&ip4, 3)?, 3, "ping n1 -> n4");
    assert_eq!(c3.ping(&ip4, 3)?, 3, "ping n3 -> n4");

    // Its agent restarted under a 10 ms flood: same subnet, no ping lost.
    let flood = Flood::start(&c1, &ip4, 6)?;
    std::thread::sleep(Duration::from_millis(500));
    n4.kill_agent()?;
    std::thread::sleep(Duration::from_millis(500));
    n4.start_agent()?;
    assert_eq!(
        n4.wait_subnet("blue", Duration::from_secs(5))?,
        s4,
        "n4 keeps its subnet"
    );
    let lost = flood.lost()?;
    assert_eq!(lost, 0, "pings lost across n4's agent restart");
    std::thread::sleep(Duration::from_secs(u64::from(TTL) + 1));
    assert_eq!(
        etcd.get_prefix("/weft/cluster/subnets/blue/")?.len(),
        4,
        "n4's lease outlived its old agent's TTL: the restart kept it"
    );
    let status = n4.status()?;
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["lease_ttl_seconds"], TTL, "{status}");
    assert_eq!(status["subnets"][0]["cidr"], s4, "{status}");
    assert_eq!(status["endpoints"][0]["healthy"], true, "{status}");

    // Node loss: SIGKILL and namespaces gone.
    let no_route = n1.node.node.drops("overlay_no_route")?;
    n4.kill_agent()?;
    drop(c4);
    drop(n4);
    let lost_at = Instant::now();
    for n in [&n1, &n2, &n3] {
        n.wait_nodes(
            "n4 gone",
            Duration::from_secs(u64::from(TTL) + 5).saturating_sub(lost_at.elapsed()),
            |ls| !ls.iter().any(|e| e["name"] == "n4"),
        )?;
    }
    eprintln!(
        "n4's routes left every peer {:?} after it died",
        lost_at.elapsed()
    );
    assert_eq!(c1.ping(&ip4, 2)?, 0, "n4 is gone");
    assert!(
        n1.node.node.drops("overlay_no_route")? >= no_route + 2,
        "traffic to a lost node's subnet is counted as overlay_no_route"
    );
    assert_eq!(c1.ping(&ip2, 2)?, 2, "the others still talk");
    let left: Vec<(String, String)> = etcd
        .get_prefix("/weft/endpoints/n4/")?
        .into_iter()
        .chain(etcd.get_prefix("/weft/cluster/nodes/n4")?)
        .collect();
    assert!(
        left.is_empty(),
        "n4's endpoints and registration went with its lease: {left:?}"
    );

    let text = metrics::scrape(&n1.node.node)?;
    metrics::promtool_accepts(&text)?;
    assert_eq!(metrics::sample(&text, "weft_cluster_etcd_connected")?, 1.0);
    assert_eq!(metrics::sample(&text, "weft_cluster_remote_nodes")?, 2.0);
    assert!(metrics::sample(&text, "weft_cluster_lease_renewals_total")? >= 1.0);
    Ok(())
}

/// etcd stopped for 20 s under a ping flood between two nodes: no ping
/// lost, local reads answer, a cluster change is refused at once with an
/// error naming the store; a node that joins meanwhile is learned once
/// etcd is back.
#[test]
fn an_etcd_outage_loses_no_packet_and_refuses_cluster_changes() -> Result<()> {
    const TTL: u32 = 5;
    let underlay = Underlay::new(1500)?;
    let mut etcd = Etcd::single(&underlay)?;
    let urls = etcd.urls();
    let n1 = ClusterNode::start(&underlay, &urls, "n1", TTL, &[])?;
    network_create(&n1, "blue", "10.52.0.0/16")?;
    n1.set_overlay("tunnel")?;
    n1.wait_subnet("blue", Duration::from_secs(10))?;
    let n2 = ClusterNode::join(&underlay, &urls, "n2", TTL, "tunnel", &["blue"])?;
    wait_full_mesh(&[&n1, &n2], Duration::from_secs(10))?;
    let (c1, _) = n1.node.node.container("blue", "c1")?;
    let (_c2, ip2) = n2.node.node.container("blue", "c2")?;
    assert_eq!(c1.ping(&ip2, 2)?, 2);

    let flood = Flood::start(&c1, &ip2, 26)?;
    std::thread::sleep(Duration::from_secs(1));
    etcd.kill(0)?;
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    // A cluster change: a clear error, quickly.
    let asked = Instant::now();
    let out =
        n1.node
            .node
            .weft_unchecked(&["network", "create", "red", "--subnet", "10.53.0.0/16"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a cluster change during the outage must fail"
    );
    assert!(
        err.contains("cluster store") && err.contains("unreachable")
            || err.contains("did not answer"),
        "the error names the cluster store: {err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "refused, not hung: {:?}",
        asked.elapsed()
    );
    // Local reads answer.
    assert_eq!(n1.nodes()?.len(), 1, "node ls answers during the outage");
    assert_eq!(n1.status()?["connected"], false);
    // A node joins during the outage (its local intent waits for etcd).
    let n3 = ClusterNode::start(&underlay, &urls, "n3", TTL, &[])?;
    n3.set_overlay("tunnel")?;
    let left = Duration::from_secs(20).saturating_sub(down.elapsed());
    std::thread::sleep(left);
    etcd.restart(0)?;
    eprintln!("etcd was down {:?}", down.elapsed());
    let lost = flood.lost()?;
    assert_eq!(lost, 0, "pings lost during the etcd outage");

    // Back: n3 claims its subnet and is learned; the agents resynced.
    n3.wait_subnet("blue", Duration::from_secs(15))?;
    wait_full_mesh(&[&n1, &n2, &n3], Duration::from_secs(15))?;
    let (c3, ip3) = n3.node.node.container("blue", "c3")?;
    assert_eq!(
        c1.ping(&ip3, 3)?,
        3,
        "ping n1 -> n3, which joined during the outage"
    );
    assert_eq!(c3.ping(&ip2, 3)?, 3, "ping n3 -> n2");
    // Cluster changes work again, on every node: a network made and
    // removed from n1 comes and goes on n2.
    network_create(&n1, "red", "10.53.0.0/16")?;
    n2.wait_subnet("red", Duration::from_secs(10))?;
    n1.node.node.weft(&["network", "rm", "red"])?;
    let start = Instant::now();
    while n2
        .node
        .node
        .weft_json(&["network", "ls"])?
        .to_string()
        .contains("\"red\"")
    {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("network red still on n2 10 s after `network rm` on n1");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = metrics::scrape(&n1.node.node)?;
    assert!(
        metrics::sample(&text, "weft_cluster_lease_failures_total")? >= 1.0,
        "{text}"
    );
    assert!(
        metrics::sample(&text, "weft_cluster_resyncs_total")? >= 2.0,
        "{text}"
    );
    Ok(())
}

/// The etcd members `node`'s agent has connections to.
fn connected_members(node: &ClusterNode, etcd: &Etcd) -> Result<Vec<usize>> {
    let out =
        node.node
            .node
            .ns
            .exec(&["ss", "-Htn", "state", "established", "dport", "=", ":2379"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(etcd
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| text.contains(&format!("{}:2379", m.ip)))
        .map(|(i, _)| i)
        .collect())
}

/// Retries a cluster change until it succeeds or `within` passes.
fn eventually_create(
    n: &ClusterNode,
    name: &str,
    subnet: &str,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let out = n
            .node
            .node
            .weft_unchecked(&["network", "create", name, "--subnet", subnet])?;
        if out.status.success() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!(
                "network create {name} still fails after {within:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A 3-member etcd: the member an agent talks to is SIGKILLed and later
/// restored; then quorum is lost (changes refused, routes intact) and
/// restored. The agents recover by themselves each time.
#[test]
fn a_three_member_etcd_loses_a_member_and_quorum() -> Result<()> {
    const TTL: u32 = 6;
    let underlay = Underlay::new(1500)?;
    let mut etcd = Etcd::new(&underlay, 3)?;
    let urls = etcd.urls();
    let n1 = ClusterNode::start(&underlay, &urls, "n1", TTL, &[])?;
    network_create(&n1, "blue", "10.54.0.0/16")?;
    n1.set_overlay("tunnel")?;
    n1.wait_subnet("blue", Duration::from_secs(10))?;
    let n2 = ClusterNode::join(&underlay, &urls, "n2", TTL, "tunnel", &["blue"])?;
    wait_full_mesh(&[&n1, &n2], Duration::from_secs(10))?;
    let (c1, _) = n1.node.node.container("blue", "c1")?;
    let (_c2, ip2) = n2.node.node.container("blue", "c2")?;

    let talking = connected_members(&n1, &etcd)?;
    let victim = *talking
        .first()
        .context("n1's agent has no connection to any etcd member")?;
    etcd.kill(victim)?;
    let took = eventually_create(&n1, "red", "10.55.0.0/16", Duration::from_secs(15))?;
    eprintln!("member {victim} killed: cluster changes work again after {took:?}");
    n2.wait_subnet("red", Duration::from_secs(10))?;
    assert_eq!(c1.ping(&ip2, 3)?, 3, "routes intact after losing a member");
    etcd.restart(victim)?;

    // Quorum lost: two of three members down.
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    etcd.kill(others[0])?;
    etcd.kill(others[1])?;
    let asked = Instant::now();
    let out =
        n1.node
            .node
            .weft_unchecked(&["network", "create", "green", "--subnet", "10.56.0.0/16"])?;
    assert!(!out.status.success(), "no quorum, no cluster change");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "refused, not hung: {:?}",
        asked.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster store"), "{err}");
    assert_eq!(c1.ping(&ip2, 3)?, 3, "routes intact without quorum");
    std::thread::sleep(Duration::from_secs(2));
    etcd.restart(others[0])?;
    etcd.restart(others[1])?;
    let took = eventually_create(&n1, "green", "10.56.0.0/16", Duration::from_secs(20))?;
    eprintln!("quorum back: cluster changes work again after {took:?}");
    n2.wait_subnet("green", Duration::from_secs(10))?;
    wait_full_mesh(&[&n1, &n2], Duration::from_secs(10))?;
    assert_eq!(c1.ping(&ip2, 3)?, 3, "routes intact after quorum came back");
    for n in [&n1, &n2] {
        let s = n.status()?;
        assert_eq!(s["connected"], true, "{s}");
    }
    Ok(())
}

/// An agent's watch falls behind (the agent stopped) while the store moves
/// on and is compacted past it, then its connection breaks (etcd
/// restarted): the resumed watch is refused as compacted, so the agent
/// re-lists and converges, removing a node deleted meanwhile and learning
/// one added.
#[test]
fn a_compaction_past_the_watch_makes_the_agent_relist() -> Result<()> {
    let underlay = Underlay::new(1500)?;
    let mut etcd = Etcd::single(&underlay)?;
    let urls = etcd.urls();
    let n1 = ClusterNode::start(&underlay, &urls, "n1", 20, &[])?;
    network_create(&n1, "blue", "10.57.0.0/16")?;
    n1.set_overlay("tunnel")?;
    n1.wait_subnet("blue", Duration::from_secs(10))?;
    let lease = |ip: &str, node: &str| {
        format!(
            r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:56:0a:00:00:09"}},"Node":"{node}"}}"#
        )
    };
    etcd.put(
        "/weft/cluster/subnets/blue/10.57.9.0-24",
        &lease("172.30.9.9", "old"),
    )?;
    n1.wait_nodes("old", Duration::from_secs(5), |ls| {
        ls.iter().any(|n| n["name"] == "old")
    })?;
    let resyncs = |n: &ClusterNode| -> Result<f64> {
        metrics::sample(
            &metrics::scrape(&n.node.node)?,
            "weft_cluster_resyncs_total",
        )
    };
    let before = resyncs(&n1)?;

    n1.signal_agent("STOP")?;
    let moved = (|| -> Result<()> {
        // Far more revisions than the stopped agent's connection can hold
        // (flow-control windows of 64 KiB), so the changes after them can
        // only reach it through a listing.
        let filler: Vec<(String, String)> = (0..1500)
            .map(|i| (format!("/weft/cluster/filler/{}", i % 10), "x".repeat(1000)))
            .collect();
        for chunk in filler.chunks(1) {
            etcd.put_many(chunk.to_vec(), 0)?;
        }
        etcd.delete("/weft/cluster/subnets/blue/10.57.9.0-24")?;
        etcd.put(
            "/weft/cluster/subnets/blue/10.57.8.0-24",
            &lease("172.30.8.8", "new"),
        )?;
        etcd.compact(etcd.revision()?)?;
        etcd.kill(0)?;
        etcd.restart(0)
    })();
    n1.signal_agent("CONT")?;
    moved?;
    n1.wait_nodes(
        "the store after the compaction",
        Duration::from_secs(10),
        |ls| ls.iter().any(|n| n["name"] == "new") && !ls.iter().any(|n| n["name"] == "old"),
    )?;
    assert!(
        n1.log().contains("was compacted"),
        "the resumed watch was refused as compacted: {}",
        n1.log()
    );
    assert!(
        resyncs(&n1)? > before,
        "the agent re-listed after its revision was compacted"
    );
    Ok(())
}

/// A restarted agent lists the whole store and reconciles it against what
/// it had: a peer that left while it was down is removed, one that joined
/// is learned. Its subnet lease lapsed meanwhile and another node took the
/// subnet: it takes a free one and leaves the other's lease alone
/// (Flannel's #1289), as it skipped a held subnet when it first joined.
#[test]
fn a_restarted_agent_relists_and_never_takes_a_held_subnet() -> Result<()> {
    const TTL: u32 = 3;
    let underlay = Underlay::new(1500)?;
    let etcd = Etcd::single(&underlay)?;
    let lease = |ip: &str, node: &str| {
        format!(
            r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:56:0a:00:00:09"}},"Node":"{node}"}}"#
        )
    };
    let key = |cidr: &str| format!("/weft/cluster/subnets/blue/{cidr}");
    etcd.put_leased(&key("10.61.1.0-24"), &lease("172.30.9.1", "f1"), 120)?;
    let mut n1 = ClusterNode::start(&underlay, &etcd.urls(), "n1", TTL, &[])?;
    network_create(&n1, "blue", "10.61.0.0/16")?;
    n1.set_overlay("tunnel")?;
    let first = n1.wait_subnet("blue", Duration::from_secs(10))?;
    assert_eq!(
        first, "10.61.2.0/24",
        "the first free subnet, skipping f1's"
    );
    etcd.put_leased(&key("10.61.3.0-24"), &lease("172.30.9.3", "old"), 120)?;
    n1.wait_nodes("f1 and old", Duration::from_secs(5), |ls| {
        ls.iter().any(|n| n["name"] == "f1") && ls.iter().any(|n| n["name"] == "old")
    })?;

    n1.kill_agent()?;
    let start = Instant::now();
    while !etcd.get_prefix(&key("10.61.2.0-24"))?.is_empty() {
        if start.elapsed() > Duration::from_secs(u64::from(TTL) + 5) {
            bail!("n1's lease outlived its TTL with the agent dead");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let thief = lease("172.30.9.2", "thief");
    etcd.put_leased(&key("10.61.2.0-24"), &thief, 120)?;
    etcd.delete(&key("10.61.3.0-24"))?;
    etcd.put_leased(&key("10.61.4.0-24"), &lease("172.30.9.4", "new"), 120)?;

    n1.start_agent()?;
    let start = Instant::now();
    let now = loop {
        let s = n1.wait_subnet("blue", Duration::from_secs(5))?;
        if s != first {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("n1 still holds {first}, which another node took");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(now, "10.61.3.0/24", "the first free subnet now");
    let held = etcd.get_prefix(&key("10.61.2.0-24"))?;
    assert_eq!(
        held.first().map(|(_, v)| v.as_str()),
        Some(thief.as_str()),
        "the other's lease is untouched"
    );
    n1.wait_nodes("the store as it is now", Duration::from_secs(5), |ls| {
        let has = |name: &str| ls.iter().any(|n| n["name"] == name);
        has("f1") && has("thief") && has("new") && !has("old")
    })?;
    Ok(())
}

/// A weft node joins a Flannel vxlan cluster (under a prefix of its own,
/// as flanneld's `--etcd-prefix` allows): Flannel's config and a lease
/// written exactly as Flannel documents them, a kernel-VXLAN node set up as
/// Flannel's vxlan backend does; weft writes its own lease in Flannel's
/// form, which the kernel node is programmed from, and their containers
/// talk both ways.
#[test]
fn a_weft_node_joins_a_flannel_cluster() -> Result<()> {
    const VTEP: [u8; 6] = [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44];
    let underlay = Underlay::new(1500)?;
    let etcd = Etcd::single(&underlay)?;
    etcd.put(
        "/example.com/network/config",
        r#"{"Network":"10.5.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}"#,
    )?;
    let peer = underlay.peer_node(
        PeerKind::KernelVxlan {
            vni: 1,
            vtep_mac: VTEP,
        },
        "10.5.52.0/24",
    )?;
    // Flannel's own address on its device: the subnet's .0/32.
    peer.ns
        .exec(&["ip", "addr", "add", "10.5.52.0/32", "dev", KERNEL_VTEP])?;
    etcd.put_leased(
        "/example.com/network/subnets/10.5.52.0-24",
        &format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}}}"#,
            peer.underlay_ip
        ),
        60,
    )?;
    let n1 = ClusterNode::start(
        &underlay,
        &etcd.urls(),
        "w1",
        5,
        &[
            "--cluster-schema",
            "flannel",
            "--etcd-prefix",
            "/example.com/network",
        ],
    )?;
    n1.set_overlay("tunnel")?;
    let own = n1.wait_subnet("flannel", Duration::from_secs(10))?;
    n1.wait_nodes("the Flannel node", Duration::from_secs(5), |ls| {
        ls.iter().any(|n| {
            n["underlay_ip"] == peer.underlay_ip.to_string() && n["vtep_mac"] == "c6:d2:32:6f:8f:44"
        })
    })?;
    // weft's lease, in Flannel's form.
    let key = format!("/example.com/network/subnets/{}", own.replace('/', "-"));
    let leases = etcd.get_prefix(&key)?;
    let (_, value) = leases
        .first()
        .with_context(|| format!("no {key} in etcd"))?;
    let lease: Value = serde_json::from_str(value)?;
    let weft_ip = n1.node.underlay_ip;
    assert_eq!(lease["PublicIP"], weft_ip.to_string(), "{lease}");
    assert_eq!(lease["BackendType"], "vxlan", "{lease}");
    assert_eq!(lease["BackendData"]["VNI"], 1, "{lease}");
    let mac = lease["BackendData"]["VtepMAC"]
        .as_str()
        .context("VtepMAC")?;
    assert_eq!(parse_mac(mac)?, n1.node.vtep_mac()?, "{lease}");
    // What flanneld on the kernel node does with that lease.
    peer.add_remote(&own, weft_ip, parse_mac(mac)?)?;

    let (c1, ip1) = n1.node.node.container("flannel", "c1")?;
    let (k1, ipk) = peer.container()?;
    let ipk = ipk.to_string();
    assert_eq!(c1.ping(&ipk, 3)?, 3, "weft -> Flannel node");
    assert_eq!(k1.ping(&ip1, 3)?, 3, "Flannel node -> weft");
    tcp_echo(&k1, &ipk, &c1, 100_000)?;
    // Network changes belong to Flannel's config.
    let out =
        n1.node
            .node
            .weft_unchecked(&["network", "create", "x", "--subnet", "10.9.0.0/16"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Flannel"),
        "{out:?}"
    );
    Ok(())
}

/// Bad input: unreachable etcd URLs and malformed URLs, a malformed
/// network and a lease that does not parse in the store: clear errors or
/// counted skips; the agent keeps running and its maps keep what they had.
#[test]
fn bad_input_is_refused_or_skipped_never_fatal() -> Result<()> {
    let underlay = Underlay::new(1500)?;
    // A malformed URL: the agent refuses to start, saying why.
    let lone = underlay.weft_node()?;
    let out =
        lone.node
            .weft_unchecked(&["agent", "--etcd", "localhost:2379", "--node-name", "x"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid etcd URL 'localhost:2379'"), "{err}");
    // Unreachable URLs: the agent serves, says it is not connected, and a
    // cluster change is refused with the reason.
    let stray = ClusterNode::start(&underlay, "http://172.30.0.250:2379", "stray", 5, &[])?;
    let out =
        stray
            .node
            .node
            .weft_unchecked(&["network", "create", "b", "--subnet", "10.58.0.0/16"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("172.30.0.250:2379"), "{err}");
    assert_eq!(stray.status()?["connected"], false);
    drop(stray);

    let etcd = Etcd::single(&underlay)?;
    let n1 = ClusterNode::start(&underlay, &etcd.urls(), "n1", 10, &[])?;
    network_create(&n1, "blue", "10.59.0.0/16")?;
    n1.set_overlay("tunnel")?;
    n1.wait_subnet("blue", Duration::from_secs(10))?;
    let good = r#"{"PublicIP":"172.30.7.7","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:56:ac:1e:07:07"},"Node":"peer"}"#;
    etcd.put("/weft/cluster/subnets/blue/10.59.7.0-24", good)?;
    n1.wait_nodes("peer", Duration::from_secs(5), |ls| {
        ls.iter().any(|n| n["name"] == "peer")
    })?;
    let routes_before = n1.nodes()?;
    etcd.put(
        "/weft/cluster/networks/broken",
        r#"{"name":"broken","subnet":"10.60.0.0/33"}"#,
    )?;
    etcd.put(
        "/weft/cluster/subnets/blue/10.59.6.0-24",
        "this is not json",
    )?;
    etcd.put("/weft/cluster/subnets/blue/10.58.1.0-24", good)?;
    let start = Instant::now();
    let skipped = loop {
        let s = n1.status()?;
        if s["skipped"].as_u64().unwrap_or(0) >= 3 {
            break s;
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("three bad entries not counted as skipped: {s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(skipped["connected"], true, "{skipped}");
    assert_eq!(n1.nodes()?, routes_before, "bad entries change no route");
    let nets = n1.node.node.weft_json(&["network", "ls"])?;
    assert_eq!(nets.as_array().map(Vec::len), Some(1), "{nets}");
    let text = metrics::scrape(&n1.node.node)?;
    assert!(metrics::sample(&text, "weft_cluster_skipped_entries_total")? >= 3.0);
    let status = n1.node.node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    Ok(())
}

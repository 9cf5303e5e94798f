//! `cargo xtask demo`: weft moving real traffic, start to finish.
//!
//! A node namespace and four container namespaces, named after this run's
//! pid; two weft networks, blue (10.1.0.0/24: c1, c2) and green
//! (10.2.0.0/24: c3, c4). It shows bridging inside a network, isolation
//! between networks (and the drop counter that proves it), routing once the
//! networks are connected, a TCP and a UDP transfer, and c1's port
//! published on the node's uplink address, reached from an "outside"
//! namespace with no route to any container (DNAT). Then a second node
//! (its own namespace, uplink and weft) joins through the outside
//! namespace, which routes between the two uplinks: blue spans both nodes
//! over weft's VXLAN overlay, and c1 reaches c5 on the second node (ping
//! and TCP, encapsulated and decapsulated in BPF, MSS clamped). Every
//! expected outcome is checked; the run fails if one didn't happen.
//! Everything is torn down on success, error and Ctrl-C alike (RAII
//! guards; see `proc`).

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use weft_harness::{
    netns::NetNs,
    node::Node,
    outside::{NODE_UPLINK_IP, OUTSIDE_IP, UPLINK},
    proc,
    run::{self, Run},
    traffic,
};

use crate::{bench, build_ebpf, setup};

const NS_PREFIX: &str = "wdemo";
/// Pins in `/sys/fs/bpf/weft-demo-<pid>-<n>`, state in `/tmp/weft-demo-<pid>-<n>`.
const DIRS_PREFIX: &str = "weft-demo-";

/// (name, network, ip) of each container.
const CONTAINERS: [(&str, &str, &str); 4] = [
    ("c1", "blue", "10.1.0.2"),
    ("c2", "blue", "10.1.0.3"),
    ("c3", "green", "10.2.0.2"),
    ("c4", "green", "10.2.0.3"),
];

/// The demo's nodes and namespaces; fields drop in declaration order, so
/// each node's `weft teardown` runs while the containers it plugged in
/// still exist.
struct Demo {
    node: Node,
    /// The second node, for the overlay.
    node2: Node,
    containers: Vec<NetNs>,
    /// On the second node.
    c5: NetNs,
    /// Beyond the nodes' uplinks: routes between them.
    outside: NetNs,
}

/// The second node's uplink address and the outside end of its uplink.
const NODE2_UPLINK_IP: &str = "198.19.0.1";
const OUTSIDE2_IP: &str = "198.19.0.2";

pub fn run() -> Result<()> {
    if !proc::is_root() {
        anyhow::bail!("the demo needs root (namespaces, BPF); run it as root");
    }
    setup::run()?;
    let built = build_ebpf::run()?;
    run::configure(Run {
        netns: NS_PREFIX,
        dirs: DIRS_PREFIX,
        ipv6_off: true,
        weft: Some(built.weft.clone()),
    })?;
    run::reap_stale();

    let pid = std::process::id();
    let ns = |suffix: &str| NetNs::create(&format!("{NS_PREFIX}{pid}-{suffix}"));
    println!("\n== creating namespaces {NS_PREFIX}{pid}-node and {NS_PREFIX}{pid}-c1..c4");
    let mut demo = Demo {
        node: Node::in_namespace(&built.weft, ns("node")?)?,
        node2: Node::in_namespace(&built.weft, ns("node2")?)?,
        containers: Vec::new(),
        c5: ns("c5")?,
        outside: ns("out")?,
    };
    for (name, _, _) in CONTAINERS {
        demo.containers.push(ns(name)?);
    }

    let result = play(&demo);
    println!("\n== cleaning up (weft teardown, namespaces)");
    drop(demo);
    let left = run::leftovers();
    if !left.is_empty() {
        eprintln!("xtask: warning: namespaces left behind: {}", left.join(" "));
    }
    let checks = result?;
    println!("\n== summary");
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { " OK " } else { "FAIL" });
    }
    let failed = checks.iter().filter(|(_, ok)| !ok).count();
    if failed > 0 {
        anyhow::bail!("demo: {failed} expected outcome(s) did not happen");
    }
    println!("demo: every expected outcome happened; everything was cleaned up");
    Ok(())
}

/// A counter out of `weft stats -o json`: `section.key.packets`.
fn counter(stats: &Value, section: &str, key: &str) -> u64 {
    stats[section][key]["packets"].as_u64().unwrap_or(0)
}

/// Three pings for a human to watch; whether any was answered.
fn ping(from: &NetNs, to_ip: &str) -> Result<bool> {
    let mut cmd = from.command(&["ping", "-c", "3", "-i", "0.2", "-W", "1", to_ip]);
    println!("$ {}", proc::show(&cmd));
    Ok(proc::status(&mut cmd, Duration::from_secs(15))?.success())
}

/// Gives the node an uplink to the outside namespace, publishes c1's port
/// 8000 as the node's 8080 and runs iperf3 from outside to it; whether the
/// transfer worked and the dnat counter rose.
fn publish_and_reach(demo: &Demo) -> Result<bool> {
    let (weft, out) = (&demo.node, &demo.outside);
    let c1 = &demo.containers[0];
    println!("\n== an uplink to an outside namespace; c1's port 8000 published as node:8080");
    let t = Duration::from_secs(10);
    uplink(weft, (UPLINK, NODE_UPLINK_IP), out, ("eth0", OUTSIDE_IP))?;
    weft.weft_echo(&["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP])?;
    weft.weft_echo(&["publish", "c1", "8080:8000/tcp"])?;
    weft.weft_echo(&["publish", "ls"])?;
    let before = weft.weft_json(&["stats"])?;
    let _server = proc::Background::spawn(&mut c1.command(&["iperf3", "-s", "-1", "-p", "8000"]))?;
    c1.wait_listening(false, 8000, t)?;
    let mut client = out.command(&["iperf3", "-c", NODE_UPLINK_IP, "-p", "8080", "-t", "1"]);
    println!("$ {}", proc::show(&client));
    let ok = proc::status(&mut client, Duration::from_secs(20))?.success();
    let after = weft.weft_json(&["stats"])?;
    let dnat = counter(&after, "forwards", "dnat") - counter(&before, "forwards", "dnat");
    println!("dnat counter: +{dnat} packets");
    weft.weft_echo(&["ct", "ls"])?;
    Ok(ok && dnat > 0)
}

/// A second node joined to the outside namespace, which routes between the
/// two uplinks; blue across both nodes over the VXLAN overlay (bpf mode):
/// c1 on the first node pings c5 on the second and sends it TCP.
/// Returns (expected outcome, happened?) pairs.
fn overlay_to_second_node(demo: &Demo) -> Result<Vec<(String, bool)>> {
    let (weft, weft2) = (&demo.node, &demo.node2);
    let (out, c1, c5) = (&demo.outside, &demo.containers[0], &demo.c5);
    println!(
        "\n== a second node, routed to the first through the outside namespace; \
         blue spans both over VXLAN"
    );
    uplink(weft2, (UPLINK, NODE2_UPLINK_IP), out, ("eth1", OUTSIDE2_IP))?;
    // The outside routes between the two uplinks.
    proc::run(
        &mut out.command(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
        Duration::from_secs(10),
    )?;

    // blue's VNI on the first node, for the second.
    let nets = weft.weft_json(&["network", "ls"])?;
    let vni = nets
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "blue"))
        .and_then(|n| n["vni"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("network ls shows no VNI for blue: {nets}"))?
        .to_string();
    let (pod1, pod2) = ("blue=10.1.0.0/25", "blue=10.1.0.128/25");
    weft.weft_echo(&[
        "node",
        "set",
        "--uplink",
        UPLINK,
        "--ip",
        NODE_UPLINK_IP,
        "--encap",
        "bpf",
        "--subnet",
        pod1,
    ])?;
    weft2.weft_echo(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.1.0.0/24",
        "--vni",
        &vni,
    ])?;
    weft2.weft_echo(&[
        "node",
        "set",
        "--uplink",
        UPLINK,
        "--ip",
        NODE2_UPLINK_IP,
        "--encap",
        "bpf",
        "--subnet",
        pod2,
    ])?;
    weft.weft_echo(&[
        "node",
        "add",
        "node2",
        "--underlay",
        NODE2_UPLINK_IP,
        "--subnet",
        pod2,
    ])?;
    weft2.weft_echo(&[
        "node",
        "add",
        "node1",
        "--underlay",
        NODE_UPLINK_IP,
        "--subnet",
        pod1,
    ])?;
    let c5_ep = weft2.weft_json(&[
        "endpoint",
        "add",
        "--network",
        "blue",
        "--netns",
        c5.name(),
        "--name",
        "c5",
    ])?;
    let c5_ip = c5_ep["ip"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("endpoint add printed no ip: {c5_ep}"))?
        .to_owned();
    weft.weft_echo(&["node", "ls"])?;

    let mut checks = Vec::new();
    let before = (weft.weft_json(&["stats"])?, weft2.weft_json(&["stats"])?);
    let ok = ping(c1, &c5_ip)?;
    checks.push((
        format!("ping c1 (node 1) -> c5 {c5_ip} (node 2) over VXLAN"),
        ok,
    ));
    match traffic::iperf3(c5, c1, &c5_ip, 2, None, None) {
        Ok(s) => {
            println!("TCP c1 -> c5 across nodes: {:.2} Gbit/s", s.gbps);
            checks.push((
                format!(
                    "TCP c1 -> c5 across nodes moved data ({:.2} Gbit/s)",
                    s.gbps
                ),
                s.gbps > 0.0,
            ));
        }
        Err(err) => {
            proc::check_interrupted()?;
            println!("TCP c1 -> c5 failed: {err:#}");
            checks.push(("TCP c1 -> c5 across nodes moved data".into(), false));
        }
    }
    let after = (weft.weft_json(&["stats"])?, weft2.weft_json(&["stats"])?);
    let encap = counter(&after.0, "forwards", "encap_bpf").saturating_sub(counter(
        &before.0,
        "forwards",
        "encap_bpf",
    ));
    let decap = counter(&after.1, "forwards", "decap_delivered").saturating_sub(counter(
        &before.1,
        "forwards",
        "decap_delivered",
    ));
    checks.push((
        format!("node 1 encapsulated (+{encap}), node 2 decapsulated (+{decap}) in BPF"),
        encap > 0 && decap > 0,
    ));
    Ok(checks)
}

/// The scripted part; returns (expected outcome, happened?) pairs.
fn play(demo: &Demo) -> Result<Vec<(String, bool)>> {
    let weft = &demo.node;
    let c = |i: usize| &demo.containers[i];
    let mut checks = Vec::new();

    println!("\n== two networks, four containers");
    weft.weft_echo(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    weft.weft_echo(&["network", "create", "green", "--subnet", "10.2.0.0/24"])?;
    for ((name, net, ip), ns) in CONTAINERS.iter().zip(&demo.containers) {
        weft.weft_echo(&[
            "endpoint",
            "add",
            "--network",
            net,
            "--netns",
            ns.name(),
            "--ip",
            ip,
            "--name",
            name,
            "--mtu",
            "1500",
        ])?;
        bench::check_eth0(ns, ip)?;
    }
    proc::run(
        &mut c(0).command(&["ip", "-br", "addr", "show", "dev", "eth0"]),
        Duration::from_secs(10),
    )?;
    proc::run(&mut c(0).command(&["ip", "route"]), Duration::from_secs(10))?;

    println!("\n== c1 -> c2, same network (bridged in BPF)");
    let before = weft.weft_json(&["stats"])?;
    let ok = ping(c(0), "10.1.0.3")?;
    let after = weft.weft_json(&["stats"])?;
    let bridged = counter(&after, "forwards", "bridged")
        .saturating_sub(counter(&before, "forwards", "bridged"));
    checks.push(("ping c1 -> c2 (blue) answered".into(), ok));
    checks.push((
        format!("bridged counter rose (+{bridged} packets)"),
        bridged > 0,
    ));

    println!("\n== c1 -> c3, other network: isolated, must be dropped");
    let before = after;
    let ok = ping(c(0), "10.2.0.2")?;
    let after = weft.weft_json(&["stats"])?;
    let isolated = counter(&after, "drops", "network_isolated").saturating_sub(counter(
        &before,
        "drops",
        "network_isolated",
    ));
    checks.push((
        "ping c1 -> c3 blocked while blue and green are separate".into(),
        !ok,
    ));
    checks.push((
        format!("network_isolated drop counter rose (+{isolated} packets)"),
        isolated > 0,
    ));

    println!("\n== connect blue and green, c1 -> c3 again (routed in BPF)");
    weft.weft_echo(&["network", "connect", "blue", "green"])?;
    let before = after;
    let ok = ping(c(0), "10.2.0.2")?;
    let after = weft.weft_json(&["stats"])?;
    let routed = counter(&after, "forwards", "routed")
        .saturating_sub(counter(&before, "forwards", "routed"));
    checks.push(("ping c1 -> c3 answered after `network connect`".into(), ok));
    checks.push((
        format!("routed counter rose (+{routed} packets)"),
        routed > 0,
    ));

    println!("\n== TCP c1 -> c2 (iperf3, 2 s)");
    match traffic::iperf3(c(1), c(0), "10.1.0.3", 2, None, None) {
        Ok(s) => {
            println!(
                "TCP c1 -> c2: {:.2} Gbit/s, {} retransmits",
                s.gbps,
                s.retransmits.unwrap_or(0)
            );
            checks.push((
                format!("TCP c1 -> c2 moved data ({:.2} Gbit/s)", s.gbps),
                s.gbps > 0.0,
            ));
        }
        Err(err) => {
            proc::check_interrupted()?;
            println!("TCP c1 -> c2 failed: {err:#}");
            checks.push(("TCP c1 -> c2 moved data".into(), false));
        }
    }

    println!("\n== UDP c1 -> c4 across networks (iperf3 -u, 100 Mbit/s, 2 s)");
    match traffic::iperf3(c(3), c(0), "10.2.0.3", 2, Some("100M"), None) {
        Ok(s) => {
            let lost = s.udp_lost_percent.unwrap_or(100.0);
            println!(
                "UDP c1 -> c4: {:.3} Gbit/s, {} datagrams, {lost:.2}% lost",
                s.gbps,
                s.udp_packets.unwrap_or(0)
            );
            checks.push((
                format!("UDP c1 -> c4 delivered ({lost:.2}% lost)"),
                s.udp_packets.unwrap_or(0) > 0 && lost < 10.0,
            ));
        }
        Err(err) => {
            proc::check_interrupted()?;
            println!("UDP c1 -> c4 failed: {err:#}");
            checks.push(("UDP c1 -> c4 delivered".into(), false));
        }
    }

    let published = publish_and_reach(demo)?;
    checks.push((
        "outside -> node:8080 published to c1:8000 (TCP, DNAT in BPF)".into(),
        published,
    ));
    checks.extend(overlay_to_second_node(demo)?);

    println!("\n== what weft counted");
    weft.weft_echo(&["stats"])?;
    println!();
    weft.weft_echo(&["network", "ls"])?;
    Ok(checks)
}

/// `node`'s uplink to `out` (see [`NetNs::uplink_to`]), said first.
fn uplink(node: &Node, here: (&str, &str), out: &NetNs, there: (&str, &str)) -> Result<()> {
    println!(
        "uplink: {} {} {}/24 <-> {} {} {}/24, default route via {}",
        node.ns.name(),
        here.0,
        here.1,
        out.name(),
        there.0,
        there.1,
        there.1
    );
    node.ns.uplink_to(here, out, there)
}

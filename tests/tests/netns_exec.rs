//! `ip netns exec NODE weft ...` (issue 9): `ip netns exec` runs weft in a
//! private mount namespace with a fresh sysfs, where `/sys/fs/bpf` is no
//! bpffs and a bpffs weft mounted there would die with the command, taking
//! every pin, program and TCX link with it (weft once did exactly that and
//! printed success). Every mutating command here runs through `ip netns
//! exec`, with the test's own pin and state directories, and must leave a
//! datapath that works: traffic passes, the programs are attached in the
//! node, and `weft --netns NODE` (the harness's way) sees the same state
//! and pins.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::programs::{SchedClassifier, tc::TcAttachType};
use serde_json::Value;
use weft_harness::run::weft_binary;
use weft_tests::{
    netns::NetNs,
    node::{Node, PinnedIds},
    outside::{NODE_UPLINK_IP, OUTSIDE_IP, Outside, UPLINK},
    traffic::{join, tcp_echo_from, tcp_echo_server},
};

/// What weft logs (at `WEFT_LOG=info`) when it leaves a private mount
/// namespace for the one it was started from.
const LEFT_PRIVATE: &str = "left a private mount namespace";

/// `weft ARGS` for `node`, run as `ip netns exec NODE weft ...` with the
/// node's pin and state directories (never the machine's defaults) and no
/// `WEFT_*` variables, so nothing but `ip netns exec` names the node.
fn ip_netns_exec(node: &Node, prefix: &[&str], args: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .args(prefix)
        .arg(weft_binary()?)
        .arg("--bpffs")
        .arg(node.pin_dir())
        .arg("--state-dir")
        .arg(node.state_dir())
        .args(args)
        .env_remove("WEFT_NETNS")
        .env_remove("WEFT_BPFFS")
        .env_remove("WEFT_STATE_DIR")
        .env("WEFT_LOG", "info")
        .output()
        .context("running ip netns exec ... weft")
}

/// [`ip_netns_exec`] that must succeed; its stdout and stderr.
fn via_exec(node: &Node, args: &[&str]) -> Result<(String, String)> {
    let out = ip_netns_exec(node, &[], args)?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if !out.status.success() {
        bail!("ip netns exec ... weft {args:?} failed: {stderr}");
    }
    Ok((stdout, stderr))
}

/// The endpoint `name` as `weft --netns NODE endpoint ls` shows it.
fn endpoint(node: &Node, name: &str) -> Result<Option<Value>> {
    let eps = node.weft_json(&["endpoint", "ls"])?;
    Ok(eps
        .as_array()
        .context("endpoint ls is a list")?
        .iter()
        .find(|e| e["name"] == name)
        .cloned())
}

/// The ids of the programs attached (TCX ingress) to `ifname` in `ns`.
fn attached(ns: &NetNs, ifname: &str) -> Result<Vec<u32>> {
    let ifname = ifname.to_owned();
    let ids = ns
        .run_in(move || {
            let (_, progs) = SchedClassifier::query_tcx(&ifname, TcAttachType::Ingress)
                .with_context(|| format!("querying TCX ingress of {ifname}"))?;
            Ok(progs.iter().map(|p| p.id()).collect::<Vec<_>>())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("query thread panicked"))??;
    Ok(ids)
}

/// The kernel agrees with the state (`weft --netns NODE status`): every
/// endpoint's link and veth is there, nothing stale.
fn assert_kernel_matches_state(node: &Node, after: &str) -> Result<()> {
    let status = node.weft_json(&["status"])?;
    assert_eq!(
        status["kernel_matches_state"], true,
        "after {after}: {status}"
    );
    Ok(())
}

/// Container namespace `ns` plugged in through `ip netns exec` as `name`.
fn add_endpoint(node: &Node, network: &str, ns: &NetNs, name: &str, ip: Ipv4Addr) -> Result<()> {
    via_exec(
        node,
        &[
            "endpoint",
            "add",
            "--network",
            network,
            "--netns",
            ns.name(),
            "--ip",
            &ip.to_string(),
            "--name",
            name,
        ],
    )?;
    Ok(())
}

/// Starts `ip netns exec NODE weft agent` and waits until it answers.
fn start_agent(node: &Node) -> Result<KillOnDrop> {
    let child = Command::new("ip")
        .args(["netns", "exec", node.ns.name()])
        .arg(weft_binary()?)
        .arg("--bpffs")
        .arg(node.pin_dir())
        .arg("--state-dir")
        .arg(node.state_dir())
        .arg("agent")
        .env_remove("WEFT_NETNS")
        .env_remove("WEFT_BPFFS")
        .env_remove("WEFT_STATE_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ip netns exec ... weft agent")?;
    let mut agent = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if node.weft_json(&["status"])?["agent"] == "running" {
            return Ok(agent);
        }
        if let Some(exit) = agent.0.try_wait()? {
            bail!("the agent exited ({exit}) before serving");
        }
        if Instant::now() > deadline {
            bail!("the agent did not answer within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct KillOnDrop(Child);

impl KillOnDrop {
    /// SIGKILL (`ip netns exec` execs weft, so this is the agent itself).
    fn kill(mut self) -> Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_mutating_command_works_through_ip_netns_exec() -> Result<()> {
    let node = Node::new()?;
    let outside = Outside::new(&node)?;
    let (a, b, c, d) = (
        NetNs::new("wtc")?,
        NetNs::new("wtc")?,
        NetNs::new("wtc")?,
        NetNs::new("wtc")?,
    );
    let (ip_a, ip_b, ip_c, ip_d) = (
        Ipv4Addr::new(10, 231, 1, 10),
        Ipv4Addr::new(10, 231, 1, 11),
        Ipv4Addr::new(10, 231, 2, 10),
        Ipv4Addr::new(10, 231, 1, 12),
    );

    // networks and endpoints: a and b bridged on red, c on blue.
    let (_, log) = via_exec(
        &node,
        &["network", "create", "red", "--subnet", "10.231.1.0/24"],
    )?;
    via_exec(
        &node,
        &["network", "create", "blue", "--subnet", "10.231.2.0/24"],
    )?;
    add_endpoint(&node, "red", &a, "a", ip_a)?;
    add_endpoint(&node, "red", &b, "b", ip_b)?;
    add_endpoint(&node, "blue", &c, "c", ip_c)?;
    assert_eq!(
        a.ping(&ip_b.to_string(), 2)?,
        2,
        "a -> b on one network: the datapath ip netns exec set up must work after it exits"
    );
    // The programs stay attached in the node: each endpoint's host veth
    // runs the pinned weft_from_container (TCX; bpftool 7.1 does not list
    // TCX links, so the kernel is asked directly).
    let pinned = node.pinned_ids()?;
    let from_container = *pinned.get("progs/weft_from_container").with_context(|| {
        format!("weft_from_container is not pinned in the node's dir: {pinned:?}")
    })?;
    for name in ["a", "b", "c"] {
        let ep = endpoint(&node, name)?
            .with_context(|| format!("weft --netns does not see endpoint {name}"))?;
        let host = ep["host_ifname"].as_str().context("host_ifname")?;
        assert_eq!(
            attached(&node.ns, host)?,
            vec![from_container],
            "{name}'s host veth {host} runs the pinned program"
        );
    }
    assert!(
        node.forwards("bridged")? > 0,
        "stats count the bridged pings"
    );
    assert!(
        log.contains(LEFT_PRIVATE),
        "under ip netns exec weft leaves its private mount namespace: {log}"
    );
    assert_kernel_matches_state(&node, "endpoint add")?;

    // network connect / disconnect.
    via_exec(&node, &["network", "connect", "red", "blue"])?;
    assert_eq!(a.ping(&ip_c.to_string(), 2)?, 2, "a -> c once connected");
    via_exec(&node, &["network", "disconnect", "red", "blue"])?;
    assert_eq!(a.ping(&ip_c.to_string(), 2)?, 0, "a -> c after disconnect");

    // node set: masquerade out of the uplink; publish / unpublish.
    via_exec(
        &node,
        &["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP],
    )?;
    assert_eq!(node.weft_json(&["node", "show"])?["attached"], true);
    assert_eq!(a.ping(OUTSIDE_IP, 2)?, 2, "a -> outside through masquerade");
    via_exec(&node, &["publish", "a", "8080:8000"])?;
    let server = tcp_echo_server(&a, 8000, 1)?;
    assert!(
        tcp_echo_from(&outside.ns, &format!("{NODE_UPLINK_IP}:8080"), b"published")?,
        "outside -> a through the port published under ip netns exec"
    );
    join(server)?;
    via_exec(&node, &["unpublish", "a", "8080:8000"])?;
    let _server = tcp_echo_server(&a, 8000, 1)?;
    assert!(
        !tcp_echo_from(
            &outside.ns,
            &format!("{NODE_UPLINK_IP}:8080"),
            b"unpublished"
        )?,
        "an unpublished port no longer leads to a"
    );
    via_exec(&node, &["ct", "gc", "--older-than", "0"])?;
    assert_kernel_matches_state(&node, "node set, publish, unpublish, ct gc")?;

    // node add / rm (an overlay peer: a route in the datapath).
    let routes = || -> Result<usize> {
        use aya::maps::{Map, MapData, lpm_trie::LpmTrie};
        use weft_common::maps::{MAP_ROUTES, OverlayRoute};
        let data = MapData::from_pin(node.pin_dir().join("maps").join(MAP_ROUTES))?;
        let map: LpmTrie<MapData, u32, OverlayRoute> = LpmTrie::try_from(Map::LpmTrie(data))?;
        Ok(map.keys().count())
    };
    let routes_before = routes()?;
    via_exec(
        &node,
        &[
            "node",
            "add",
            "n2",
            "--underlay",
            "198.18.0.7",
            "--subnet",
            "red=10.231.1.128/25",
        ],
    )?;
    let nodes = node.weft_json(&["node", "ls"])?;
    assert!(
        nodes
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["name"] == "n2")),
        "weft --netns sees the node added under ip netns exec: {nodes}"
    );
    assert_eq!(
        routes()?,
        routes_before + 1,
        "its route is in the pinned WEFT_ROUTES"
    );
    via_exec(&node, &["node", "rm", "n2"])?;
    assert_eq!(routes()?, routes_before, "node rm takes its route out");

    // The agent under ip netns exec, and a command through it; the
    // datapath outlives the agent.
    let agent = start_agent(&node)?;
    add_endpoint(&node, "red", &d, "d", ip_d)?;
    assert_eq!(
        a.ping(&ip_d.to_string(), 2)?,
        2,
        "a -> d, added through the agent"
    );
    agent.kill()?;
    assert_eq!(
        a.ping(&ip_d.to_string(), 2)?,
        2,
        "a -> d after the agent is gone"
    );

    // Removal.
    via_exec(&node, &["endpoint", "rm", "d"])?;
    assert!(endpoint(&node, "d")?.is_none(), "d is gone from the state");
    assert_eq!(a.ping(&ip_d.to_string(), 1)?, 0, "a -> d after endpoint rm");
    via_exec(&node, &["node", "unset"])?;
    assert_eq!(node.weft_json(&["node", "show"])?["configured"], false);
    assert_eq!(a.ping(OUTSIDE_IP, 1)?, 0, "no masquerade after node unset");
    via_exec(&node, &["endpoint", "rm", "c"])?;
    via_exec(&node, &["network", "rm", "blue"])?;
    let nets = node.weft_json(&["network", "ls"])?;
    assert!(
        nets.as_array()
            .is_some_and(|n| n.len() == 1 && n[0]["name"] == "red"),
        "{nets}"
    );
    assert_kernel_matches_state(&node, "endpoint rm, node unset, network rm")?;
    assert_eq!(a.ping(&ip_b.to_string(), 1)?, 1, "a -> b still bridged");

    // teardown removes the node's pins (not just a private copy of them).
    via_exec(&node, &["teardown"])?;
    assert!(
        !node.pin_dir().join("maps").exists(),
        "teardown under ip netns exec removes the pins"
    );
    assert!(
        !a.exec_unchecked(&["ip", "link", "show", "eth0"])?
            .status
            .success(),
        "teardown under ip netns exec removes a's veth"
    );
    assert_eq!(node.weft_json(&["endpoint", "ls"])?, serde_json::json!([]));
    Ok(())
}

/// A private mount namespace that shares the host's bpffs (`unshare -m`,
/// a sandboxed service) is kept: weft pins there directly.
#[test]
fn a_private_mount_namespace_sharing_the_bpffs_is_kept() -> Result<()> {
    let node = Node::new()?;
    let out = ip_netns_exec(
        &node,
        &["unshare", "--mount", "--propagation", "slave"],
        &["network", "create", "red", "--subnet", "10.231.1.0/24"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `unshare` inside `ip netns exec` copies its private namespace, whose
    // /sys/fs/bpf is no bpffs: weft leaves it too, and pins in the node's
    // directory on the real bpffs.
    assert!(out.status.success(), "{stderr}");
    assert!(
        node.pin_dir().join("maps").join("WEFT_NETWORKS").exists(),
        "the network's maps are pinned where they outlive the command"
    );
    assert!(stderr.contains(LEFT_PRIVATE), "{stderr}");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "slave"])
        .arg(weft_binary()?)
        .args(["--netns", node.ns.name(), "--bpffs"])
        .arg(node.pin_dir())
        .arg("--state-dir")
        .arg(node.state_dir())
        .args(["network", "create", "blue", "--subnet", "10.231.2.0/24"])
        .env("WEFT_LOG", "info")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(LEFT_PRIVATE),
        "a namespace whose bpffs is the host's needs no leaving: {stderr}"
    );
    let nets = node.weft_json(&["network", "ls"])?;
    assert_eq!(nets.as_array().map(Vec::len), Some(2), "{nets}");
    Ok(())
}

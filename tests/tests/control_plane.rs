//! The control plane's promises, end to end: a change whose apply fails at
//! any of its steps leaves every map, pin, link, address, route and sysctl
//! and the store byte-identical to before (the engine applies the previous
//! model again; no change has undo code of its own), and a storm of
//! concurrent requests through the agent's API ends with the kernel
//! matching the store.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result, bail};
use weft_api::{
    Client,
    requests::{
        AddEndpoint, AddNode, ConnectNetworks, CreateNetwork, DisconnectNetworks, ListEndpoints,
        Publish, RemoveEndpoint, RemoveNode, Status, Unpublish,
    },
};
use weft_tests::{
    netns::{NetNs, run},
    node::Node,
    outside::{NODE_UPLINK_IP, Outside, UPLINK},
};

/// Everything a change could touch, as text: each pinned map's entries,
/// each pinned program (by kernel id) and link (by program and
/// interface), links,
/// addresses and routes of the node and of `containers`, IPv4 forwarding,
/// and the store's bytes.
fn snapshot(node: &Node, containers: &[&NetNs]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let pins = node.pin_dir();
    for dir in ["maps", "progs", "links"] {
        let Ok(entries) = std::fs::read_dir(pins.join(dir)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            // Counters of packets the test does not send (IPv6 chatter on
            // the uplink) move on their own; a ring buffer has no entries.
            if ["WEFT_DROPS", "WEFT_FORWARDS", "WEFT_EVENTS"].contains(&name.as_str()) {
                continue;
            }
            let path = pins.join(dir).join(&name);
            out.insert(format!("{dir}/{name}"), pinned(dir, &path)?);
        }
    }
    let xdp = pins.join("xdp-underlay");
    out.insert("xdp".into(), xdp.exists().to_string());
    let mut namespaces = vec![("node", &node.ns)];
    namespaces.extend(containers.iter().map(|c| ("container", *c)));
    for (what, ns) in namespaces {
        for argv in [
            &["ip", "-j", "-d", "link", "show"][..],
            &["ip", "-j", "addr", "show"],
            &["ip", "-j", "route", "show", "table", "all"],
        ] {
            let shown = ns.exec(argv)?;
            out.insert(
                format!("{what} {} {}", ns.name(), argv.join(" ")),
                String::from_utf8_lossy(&shown.stdout).into_owned(),
            );
        }
    }
    let fwd = node
        .ns
        .exec(&["cat", "/proc/sys/net/ipv4/conf/all/forwarding"])?;
    out.insert(
        "forwarding".into(),
        String::from_utf8_lossy(&fwd.stdout).into_owned(),
    );
    out.insert(
        "state.json".into(),
        std::fs::read_to_string(node.state_file()).unwrap_or_default(),
    );
    Ok(out)
}

/// A pin as text: a map's entries, a program's or link's kernel id.
fn pinned(dir: &str, path: &Path) -> Result<String> {
    let path = path.to_string_lossy();
    let argv: &[&str] = match dir {
        "maps" => &["-j", "map", "dump", "pinned", &path],
        "progs" => &["-j", "prog", "show", "pinned", &path],
        _ => &["-j", "link", "show", "pinned", &path],
    };
    let shown = run("bpftool", argv)?;
    if dir == "maps" {
        // A hash map's dump order is its bucket order: rewriting an entry
        // with the same value moves it to the head of its bucket (and
        // whether two keys share one depends on the map's random hash
        // seed), so entries are compared sorted by key.
        let mut entries: Vec<serde_json::Value> = serde_json::from_slice(&shown.stdout)?;
        entries.sort_by_key(|e| e["key"].to_string());
        return Ok(serde_json::Value::Array(entries).to_string());
    }
    let mut object: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    if let Some(fields) = object.as_object_mut() {
        // A program's run counters move whenever any agent on the machine
        // has kernel BPF stats on; a link is the program it runs and where
        // (one a rollback attaches again is a new object with a new id).
        for moving in ["run_cnt", "run_time_ns", "recursion_misses"] {
            fields.remove(moving);
        }
        if dir == "links" {
            fields.remove("id");
        }
    }
    Ok(object.to_string())
}

/// What differs between two snapshots, for the failure message.
fn differences(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            format!(
                "{k}:\n  before: {}\n  after:  {}",
                before.get(k).map_or("(absent)", String::as_str),
                after.get(k).map_or("(absent)", String::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `args` with its apply failing at step 1, 2, ... until it
/// succeeds; after every failure the snapshot must be what it was before.
/// Returns how many steps the change has.
fn fail_at_every_step(node: &Node, containers: &[&NetNs], args: &[&str]) -> Result<u32> {
    let before = snapshot(node, containers)?;
    for step in 1..200u32 {
        let out = node.weft_env(&[("WEFT_FAIL_AT", &step.to_string())], args)?;
        if out.status.success() {
            if step == 1 {
                bail!("weft {args:?} made no kernel change to fail");
            }
            return Ok(step - 1);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains(&format!("injected failure at step {step}")) {
            bail!("weft {args:?} with step {step} failing failed otherwise: {err}");
        }
        let after = snapshot(node, containers)?;
        if after != before {
            bail!(
                "weft {args:?} failing at step {step} ({}) left the kernel or store changed:\n{}",
                err.trim(),
                differences(&before, &after)
            );
        }
    }
    bail!("weft {args:?} never succeeded")
}

#[test]
fn a_change_failing_at_any_step_leaves_kernel_and_store_as_they_were() -> Result<()> {
    let node = Node::new()?;
    // No IPv6 in the node: its addresses and routes would change on their
    // own (duplicate address detection on the uplink).
    for conf in ["all", "default"] {
        let key = format!("net.ipv6.conf.{conf}.disable_ipv6=1");
        node.ns.exec(&["sysctl", "-qw", &key])?;
    }
    let _outside = Outside::new(&node)?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["network", "create", "green", "--subnet", "10.2.0.0/24"])?;
    let c1 = NetNs::new("wtc")?;
    let c2 = NetNs::new("wtc")?;
    let containers = [&c1, &c2];

    // The node's first endpoint: veth, container side, programs pinned,
    // maps, link, lo up with the gateway address, the host route.
    let add = [
        "endpoint",
        "add",
        "--network",
        "blue",
        "--netns",
        c1.name(),
        "--name",
        "c1",
    ];
    let steps = fail_at_every_step(&node, &containers, &add)?;
    assert!(steps >= 10, "an endpoint add has {steps} steps");
    let add2 = [
        "endpoint",
        "add",
        "--network",
        "green",
        "--netns",
        c2.name(),
        "--name",
        "c2",
    ];
    fail_at_every_step(&node, &containers, &add2)?;
    fail_at_every_step(&node, &containers, &["network", "connect", "blue", "green"])?;
    // The uplink, tunnel-mode overlay (its vxlan device) and XDP.
    let set = [
        "node",
        "set",
        "--uplink",
        UPLINK,
        "--ip",
        NODE_UPLINK_IP,
        "--encap",
        "tunnel",
        "--subnet",
        "blue=10.1.0.0/25",
        "--xdp",
    ];
    let steps = fail_at_every_step(&node, &containers, &set)?;
    assert!(steps >= 6, "a node set has {steps} steps");
    fail_at_every_step(&node, &containers, &["publish", "c1", "8080-8081:80"])?;
    fail_at_every_step(&node, &containers, &["endpoint", "rm", "c2"])?;

    // What the changes made works.
    let c1_ip = "10.1.0.2";
    let (c3, _) = node.container("blue", "c3")?;
    assert_eq!(c3.ping(c1_ip, 2)?, 2, "c3 -> c1 after the failed attempts");
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    Ok(())
}

/// One request of the storm; most succeed, some are refused (connecting
/// networks not made yet, removing what another request removed): the
/// point is the end state.
fn storm_request(client: &Client, i: usize, spares: &[NetNs]) -> Result<()> {
    let net = format!("s{}", i % 5);
    let result = match i % 10 {
        0 | 1 => client
            .call_blocking(CreateNetwork {
                name: net.clone(),
                subnet: format!("10.{}.0.0/24", 100 + i % 5),
                gateway: None,
                flood: false,
                masquerade: true,
                vni: None,
            })
            .map(drop),
        2..=4 => client
            .call_blocking(AddEndpoint {
                network: net,
                netns: spares[i].name().to_owned(),
                ip: None,
                name: Some(format!("e{i}")),
                ifname: None,
                mtu: None,
                labels: Vec::new(),
                mac: None,
            })
            .map(drop),
        5 => client
            .call_blocking(RemoveEndpoint {
                name: format!("e{}", i - 2),
            })
            .map(drop),
        6 => client
            .call_blocking(ConnectNetworks {
                a: net,
                b: format!("s{}", (i + 1) % 5),
            })
            .map(drop),
        7 => client
            .call_blocking(DisconnectNetworks {
                a: format!("s{}", (i + 4) % 5),
                b: net,
            })
            .map(drop),
        8 => client
            .call_blocking(AddNode {
                name: format!("r{i}"),
                underlay: format!("192.0.2.{}", 10 + i),
                subnets: Vec::new(),
                vtep_mac: None,
            })
            .map(drop),
        _ => client
            .call_blocking(RemoveNode {
                name: format!("r{}", i - 1),
            })
            .map(drop),
    };
    match result {
        Ok(()) | Err(weft_api::ClientError::Api(_)) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("request {i}")),
    }
}

#[test]
fn a_storm_of_concurrent_requests_ends_with_the_kernel_matching_the_store() -> Result<()> {
    let node = Node::new()?;
    let _outside = Outside::new(&node)?;
    let agent = node.start_agent()?;
    let client = Client::new(node.agent_socket());
    node.weft(&["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP])?;
    let spares: Vec<NetNs> = (0..50).map(|_| NetNs::new("wts")).collect::<Result<_>>()?;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (client, spares) = (&client, &spares);
                scope.spawn(move || storm_request(client, i, spares))
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a request panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Publications of whatever endpoints exist, and unpublishing one.
    let eps = client.call_blocking(ListEndpoints)?;
    for (n, ep) in eps.iter().enumerate() {
        client.call_blocking(Publish {
            endpoint: ep.name.clone(),
            spec: format!("{}:80", 9000 + n),
        })?;
    }
    if let Some(ep) = eps.first() {
        client.call_blocking(Unpublish {
            endpoint: Some(ep.name.clone()),
            spec: "9000".into(),
        })?;
    }

    let status = client.call_blocking(Status)?;
    assert!(status.kernel_matches_state, "{status:?}");
    assert_eq!(status.endpoints, eps.len(), "{status:?}");
    // The store alone (the agent gone) renders to what the kernel holds.
    agent.kill()?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["agent"], "not running", "{status}");
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    let stored = node.weft_json(&["endpoint", "ls"])?;
    assert_eq!(stored.as_array().map(Vec::len), Some(eps.len()), "{stored}");
    // Two endpoints of one network still reach each other.
    let same_net = eps.iter().find_map(|a| {
        let b = eps
            .iter()
            .find(|b| b.network == a.network && b.name != a.name)?;
        Some((a, b))
    });
    if let Some((a, b)) = same_net {
        let from = spares
            .iter()
            .find(|s| a.netns == s.name())
            .context("a's namespace")?;
        assert_eq!(
            from.ping(&b.ip.to_string(), 2)?,
            2,
            "{} -> {}",
            a.name,
            b.name
        );
    }
    Ok(())
}

//! The node agent end to end: it adopts what is pinned, the datapath keeps
//! forwarding while it is killed, it repairs drift, serves metrics that move
//! with real traffic, and refuses to run twice or with a bad config.

use anyhow::{Context, Result, bail};
use serde_json::json;
use weft_api::requests::{AddEndpoint, CreateNetwork, Publish, SetNode, Status};
use weft_tests::{
    load::restart_agent_under_load,
    metrics::{promtool_accepts, sample, scrape, scrape_at},
    netns::NetNs,
    node::{Node, PinnedIds},
    outside::{NODE_UPLINK_IP, Outside, UPLINK},
    traffic::{join, tcp_echo_from, tcp_echo_server},
};

fn program_id(node: &Node) -> Result<u64> {
    node.weft_json(&["status"])?["program_id"]
        .as_u64()
        .context("status has no program_id")
}

#[test]
fn agent_adopts_pins_survives_sigkill_and_repairs_drift() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let program = program_id(&node)?;

    let agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["pid"].as_u64(), Some(u64::from(agent.pid())));
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    assert_eq!(status["endpoints"].as_u64(), Some(2), "{status}");
    assert_eq!(status["routes"].as_u64(), Some(1), "{status}");
    // Each network's subnet and each direction of a link is a route.
    node.weft(&["network", "create", "red", "--subnet", "10.2.0.0/24"])?;
    node.weft(&["network", "connect", "blue", "red"])?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["routes"].as_u64(), Some(4), "{status}");
    assert_eq!(status["flows"].as_u64(), Some(0), "{status}");
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    assert!(
        node.weft(&["status"])?.contains("routes: 4"),
        "the table shows the routes"
    );
    assert_eq!(
        program_id(&node)?,
        program,
        "the agent must adopt, not reload"
    );

    // A second agent for the same node refuses to start.
    let second = node.weft_unchecked(&["agent"])?;
    assert!(!second.status.success(), "a second agent must refuse");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another weft agent"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // Metrics move with real traffic.
    let bridged = r#"weft_forward_packets_total{kind="bridged",direction="from_container"}"#;
    let before = sample(&scrape(&node)?, bridged)?;
    assert_eq!(a.ping(&ip_b, 3)?, 3);
    let after = sample(&scrape(&node)?, bridged)?;
    assert!(after >= before + 6.0, "bridged {before} -> {after}");
    let metrics = scrape(&node)?;
    promtool_accepts(&metrics)?;
    assert!(
        sample(
            &metrics,
            r#"weft_program_runs_total{program="weft_from_container"}"#
        )? > 0.0
    );
    assert!(
        sample(
            &metrics,
            r#"weft_endpoint_packets_total{endpoint="a",network="blue",direction="tx"}"#
        )? > 0.0
    );

    // SIGKILL: the datapath keeps forwarding with no agent at all.
    agent.kill()?;
    assert_eq!(node.weft_json(&["status"])?["agent"], "not running");
    assert_eq!(a.ping(&ip_b, 3)?, 3, "forwarding while the agent is dead");

    // Restart: same program, nothing recreated.
    let agent = node.start_agent()?;
    assert_eq!(
        program_id(&node)?,
        program,
        "restart must adopt the pinned program"
    );
    assert_eq!(a.ping(&ip_b, 2)?, 2);
    agent.kill()?;

    // Drift: a link pin removed behind weft's back detaches the program; the
    // status says so, and the next agent re-attaches it.
    let eps = node.weft_json(&["endpoint", "ls"])?;
    let host_if = eps[0]["host_ifname"].as_str().context("host_ifname")?;
    let name = eps[0]["name"].as_str().context("name")?;
    std::fs::remove_file(node.pin_dir().join("links").join(host_if))?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], false, "{status}");
    assert_eq!(status["drift"]["missing_links"][0], name, "{status}");
    let _agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    assert_eq!(
        status["repaired_at_start"]["reattached"][0], name,
        "{status}"
    );
    assert_eq!(program_id(&node)?, program);
    assert_eq!(a.ping(&ip_b, 2)?, 2, "forwarding after the repair");
    Ok(())
}

/// The lifecycle through the API alone: an agent started from a TOML file
/// (metrics on a non-default address), then the node's uplink, a network,
/// two endpoints and a published port created with HTTP requests on its
/// socket; SIGKILL; with no agent the datapath still bridges and serves
/// the published port from outside; a restarted agent adopts every pinned
/// program, map and link (kernel ids unchanged: nothing reloaded or
/// recreated) and finds the kernel matching the state; metrics on the
/// configured address move with the traffic, program run time included.
#[test]
fn agent_lifecycle_through_the_api() -> Result<()> {
    const METRICS: &str = "127.0.0.1:19965";
    let node = Node::new()?;
    let outside = Outside::new(&node)?;
    let config = std::env::temp_dir().join(format!("weft-agent-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("# weft agent settings\nmetrics_addr = \"{METRICS}\"\n"),
    )?;
    let config_arg = config.to_str().context("config path")?.to_owned();
    let agent = node.start_agent_with(&["--config", &config_arg]);
    let _ = std::fs::remove_file(&config);
    let agent = agent?;

    node.call(SetNode {
        uplink: UPLINK.into(),
        ip: NODE_UPLINK_IP.into(),
        ..SetNode::default()
    })?;
    node.call(CreateNetwork {
        name: "blue".into(),
        subnet: "10.1.0.0/24".into(),
        gateway: None,
        flood: false,
        masquerade: true,
        vni: None,
    })?;
    let (a, b) = (NetNs::new("wtc")?, NetNs::new("wtc")?);
    let mut ips = Vec::new();
    for (ns, name) in [(&a, "a"), (&b, "b")] {
        let netns = format!("/run/netns/{}", ns.name());
        let ep = node.call(AddEndpoint {
            network: "blue".into(),
            netns,
            ip: None,
            name: Some(name.into()),
            ifname: None,
            mtu: None,
            labels: Vec::new(),
            mac: None,
        })?;
        ips.push(ep.ip.to_string());
    }
    node.call(Publish {
        endpoint: "b".into(),
        spec: "8080:8000".into(),
    })?;
    let ip_b = &ips[1];
    assert_eq!(a.ping(ip_b, 2)?, 2, "bridged with the agent up");
    let pinned = node.pinned_ids()?;
    assert!(
        pinned.keys().any(|k| k.starts_with("progs/"))
            && pinned.keys().any(|k| k.starts_with("maps/"))
            && pinned.keys().filter(|k| k.starts_with("links/")).count() >= 3,
        "programs, maps and the endpoints' and uplink's links are pinned: {pinned:?}"
    );

    agent.kill()?;
    assert_eq!(node.weft_json(&["status"])?["agent"], "not running");
    assert_eq!(a.ping(ip_b, 3)?, 3, "bridged with no agent at all");
    let server = tcp_echo_server(&b, 8000, 1)?;
    assert!(
        tcp_echo_from(
            &outside.ns,
            &format!("{NODE_UPLINK_IP}:8080"),
            b"published, agent dead"
        )?,
        "the published port answers with no agent"
    );
    join(server)?;

    let config = std::env::temp_dir().join(format!("weft-agent2-{}.toml", std::process::id()));
    std::fs::write(&config, format!("metrics_addr = \"{METRICS}\"\n"))?;
    let agent = node.start_agent_with(&["--config", config.to_str().context("path")?]);
    let _ = std::fs::remove_file(&config);
    let _agent = agent?;
    assert_eq!(
        node.pinned_ids()?,
        pinned,
        "the restarted agent must adopt every program, map and link as pinned"
    );
    let status = node.call(Status)?;
    assert!(status.kernel_matches_state, "{status:?}");
    assert_eq!(status.endpoints, 2, "{status:?}");
    assert_eq!(
        status
            .migrated_at_start
            .as_ref()
            .map(|m| &m["reloaded_programs"]),
        Some(&json!([])),
        "{status:?}"
    );

    let runs = r#"weft_program_runs_total{program="weft_from_container"}"#;
    let time = r#"weft_program_run_time_seconds_total{program="weft_from_container"}"#;
    let before = scrape_at(&node, METRICS)?;
    assert_eq!(a.ping(ip_b, 3)?, 3, "bridged after the restart");
    let after = scrape_at(&node, METRICS)?;
    assert!(
        sample(&after, runs)? >= sample(&before, runs)? + 6.0,
        "program runs move with traffic"
    );
    assert!(
        sample(&after, time)? > sample(&before, time)?,
        "program run time moves with traffic"
    );
    promtool_accepts(&after)?;
    Ok(())
}

#[test]
fn agent_refuses_a_bad_config_with_a_clear_error() -> Result<()> {
    let node = Node::new()?;
    let config = std::env::temp_dir().join(format!("weft-bad-{}.toml", std::process::id()));
    std::fs::write(&config, "metrics_adr = \"127.0.0.1:1\"\n")?;
    let out = node.weft_unchecked(&["agent", "--config", config.to_str().context("path")?])?;
    let _ = std::fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        bail!("an agent with an unknown config key must not start");
    }
    assert!(
        stderr.contains("metrics_adr"),
        "the error must name the key: {stderr}"
    );
    let out = node.weft_unchecked(&["agent", "--metrics-addr", "nowhere"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
    Ok(())
}

/// The hitless-restart contract under load: a TCP stream (iperf3) and a
/// 10 ms ping flood cross the datapath while the agent is killed and
/// restarted five times. The stream must finish and the ping sequence must
/// have no gap over 100 ms.
#[test]
fn agent_restarts_under_load_lose_nothing() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (b, ip_b) = node.container("blue", "b")?;

    let load = restart_agent_under_load(&node, &a, &b, &ip_b)?;
    eprintln!("restart under load: {load:?}");
    Ok(())
}

/// Map entries changed behind weft's back while no agent runs (an endpoint
/// deleted from the tables, stale ones added, one rewritten) show in
/// `weft status`; the next agent puts the maps back as the state describes
/// them, reports it (status, log, metrics), and traffic flows again.
#[test]
fn agent_reconciles_tampered_maps_at_start() -> Result<()> {
    use aya::maps::{Array, HashMap, Map, MapData};
    use weft_common::maps::{
        EndpointInfo, FdbEntry, FdbKey, MAP_EP_BY_IF, MAP_EP_BY_IP, MAP_EP_IP_CACHE, MAP_FDB,
        MAP_NET_LINKS, NetPairKey, ipcache_slot,
    };

    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let agent = node.start_agent()?;
    assert_eq!(node.weft_json(&["status"])?["kernel_matches_state"], true);
    agent.kill()?;

    let open = |name: &str| -> Result<Map> {
        let data = MapData::from_pin(node.pin_dir().join("maps").join(name))?;
        Ok(Map::from_map_data(data)?)
    };
    let be = |ip: &str| -> Result<u32> {
        Ok(u32::from_ne_bytes(
            ip.parse::<std::net::Ipv4Addr>()?.octets(),
        ))
    };
    let b_be = be(&ip_b)?;
    let mut by_ip: HashMap<MapData, u32, EndpointInfo> = HashMap::try_from(open(MAP_EP_BY_IP)?)?;
    let b_info = by_ip.get(&b_be, 0)?;
    // b vanishes from the by-IP table, its cache slot and the FDB ...
    by_ip.remove(&b_be)?;
    let mut ip_cache: Array<MapData, EndpointInfo> = Array::try_from(open(MAP_EP_IP_CACHE)?)?;
    ip_cache.set(ipcache_slot(b_be), EndpointInfo::default(), 0)?;
    let mut fdb: HashMap<MapData, FdbKey, FdbEntry> = HashMap::try_from(open(MAP_FDB)?)?;
    let b_key = FdbKey {
        network_id: b_info.network_id,
        mac: b_info.mac,
        _pad: [0; 2],
    };
    fdb.remove(&b_key)?;
    // ... a stale endpoint and a stale network link appear ...
    let stale_ip = be("10.1.0.99")?;
    by_ip.insert(
        stale_ip,
        EndpointInfo {
            ip_be: stale_ip,
            ..b_info
        },
        0,
    )?;
    let mut links: HashMap<MapData, NetPairKey, u32> = HashMap::try_from(open(MAP_NET_LINKS)?)?;
    links.insert(
        NetPairKey {
            from_network: b_info.network_id,
            to_network: 77,
        },
        1,
        0,
    )?;
    // ... and a's by-ifindex entry points at the wrong counter slot.
    let mut by_if: HashMap<MapData, u32, EndpointInfo> = HashMap::try_from(open(MAP_EP_BY_IF)?)?;
    let (a_if, a_info) = by_if
        .iter()
        .filter_map(Result::ok)
        .find(|(k, _)| *k != b_info.ifindex)
        .context("a's by-ifindex entry")?;
    by_if.insert(
        a_if,
        EndpointInfo {
            stats_slot: 999,
            ..a_info
        },
        0,
    )?;
    assert_eq!(
        a.ping(&ip_b, 2)?,
        0,
        "b must be unreachable while its entries are gone"
    );

    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], false, "{status}");
    let drift = &status["drift"]["maps"];
    let of = |map: &str| -> serde_json::Value {
        drift
            .as_array()
            .and_then(|d| d.iter().find(|m| m["map"] == map).cloned())
            .unwrap_or_default()
    };
    assert_eq!(of(MAP_EP_BY_IP)["missing"][0], ip_b.as_str(), "{status}");
    assert_eq!(of(MAP_EP_BY_IP)["stale"][0], "10.1.0.99", "{status}");
    assert_eq!(
        of(MAP_FDB)["missing"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(
        of(MAP_NET_LINKS)["stale"][0],
        "network #1 -> #77",
        "{status}"
    );
    assert_eq!(
        of(MAP_EP_BY_IF)["wrong"][0],
        format!("ifindex {a_if}"),
        "{status}"
    );
    assert_eq!(
        of(MAP_EP_IP_CACHE)["missing"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );

    let agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    let repaired = &status["repaired_at_start"]["maps"];
    assert_eq!(
        repaired, drift,
        "the repair must be what status found: {status}"
    );
    let metrics = scrape(&node)?;
    promtool_accepts(&metrics)?;
    assert_eq!(sample(&metrics, "weft_reconcile_runs_total")?, 1.0);
    assert!(sample(&metrics, "weft_reconcile_last_run_timestamp_seconds")? > 1.6e9);
    for (kind, map) in [
        ("added", MAP_EP_BY_IP),
        ("removed", MAP_EP_BY_IP),
        ("added", MAP_FDB),
        ("removed", MAP_NET_LINKS),
        ("rewritten", MAP_EP_BY_IF),
    ] {
        let series = format!(r#"weft_reconcile_repairs_total{{kind="{kind}",object="{map}"}}"#);
        assert_eq!(sample(&metrics, &series)?, 1.0, "{series}");
    }
    // a's failed ARP for b must not linger into the check.
    a.exec(&["ip", "neigh", "flush", "all"])?;
    assert_eq!(a.ping(&ip_b, 2)?, 2, "forwarding after the reconcile");
    assert_eq!(by_ip.get(&b_be, 0)?, b_info);
    let log = agent.kill_and_log()?;
    assert!(
        log.contains("reconcile: WEFT_EP_BY_IP: added") && log.contains("10.1.0.99"),
        "the agent must log its repairs:\n{log}"
    );
    Ok(())
}

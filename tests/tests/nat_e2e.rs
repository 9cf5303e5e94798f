//! Masquerade end to end: containers on a node, an "outside" namespace
//! beyond the node's uplink that has no route back to any container
//! subnet, the real `weft` binary, real TCP, UDP and ICMP. Replies can
//! only come home through masquerade, and the outside servers report the
//! source address they saw. The agent's part (API routes, the 10 s
//! conntrack GC, metrics, restarts under load through SNAT) is here too.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::Value;
use weft_tests::{
    load::restart_agent_under_load,
    metrics::{sample, scrape},
    node::Node,
    outside::{
        NODE_UPLINK_IP, OUTSIDE_IP, Outside, UPLINK, tcp_fetch_many, udp_roundtrip, udp_socket_in,
    },
    traffic::tcp_connect_answers,
};

/// A node with network blue (masquerade on by default) and its uplink set,
/// with `extra` `node set` options.
fn masquerading_node(extra: &[&str]) -> Result<(Node, Outside)> {
    let node = Node::new()?;
    let outside = Outside::new(&node)?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let mut args = vec!["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP];
    args.extend(extra);
    let out = node.weft(&args)?;
    assert!(
        out.contains("forwarding"),
        "node set must say it enabled forwarding: {out}"
    );
    Ok((node, outside))
}

fn ct(node: &Node) -> Result<Vec<Value>> {
    let v = node.weft_json(&["ct", "ls"])?;
    Ok(v.as_array().context("ct ls is a list")?.clone())
}

/// The connection of `proto` from `src` in `ct ls`, if listed.
fn ct_find<'a>(conns: &'a [Value], proto: &str, src: &SocketAddr) -> Option<&'a Value> {
    conns.iter().find(|c| {
        c["proto"] == proto
            && c["original"]["src"] == src.ip().to_string()
            && (proto == "icmp" || c["original"]["sport"] == src.port())
    })
}

#[test]
fn container_reaches_the_outside_through_masquerade() -> Result<()> {
    let (node, outside) = masquerading_node(&[])?;
    let (c1, ip1) = node.container("blue", "c1")?;

    let shown = node.weft_json(&["node", "show"])?;
    assert_eq!(shown["uplink"], UPLINK, "{shown}");
    assert_eq!(shown["ip"], NODE_UPLINK_IP, "{shown}");
    assert_eq!(
        (shown["port_min"].as_u64(), shown["port_max"].as_u64()),
        (Some(61000), Some(65535)),
        "{shown}"
    );
    assert_eq!(shown["attached"], true, "{shown}");
    assert_eq!(shown["forwarding"], true, "{shown}");
    let nets = node.weft_json(&["network", "ls"])?;
    assert_eq!(
        nets[0]["masquerade"], true,
        "masquerade is on by default: {nets}"
    );

    // 1 MB over TCP from the outside; the server sees the node's address.
    let server = outside.tcp_source(1 << 20, 1)?;
    let server_port = server.port;
    let locals = tcp_fetch_many(&c1, server.addr(), 1, 1 << 20, 1)?;
    let peers = server.finish()?;
    assert_eq!(
        peers[0].ip().to_string(),
        NODE_UPLINK_IP,
        "the outside must see the node's address, not the container's"
    );
    assert!(
        (61000..=65535).contains(&peers[0].port()),
        "NAT port {} outside the range",
        peers[0].port()
    );

    // A UDP echo.
    let echo = outside.udp_echo()?;
    let sock = udp_socket_in(&c1)?;
    assert!(
        udp_roundtrip(&sock, echo.addr(), b"through the NAT")?,
        "UDP echo through masquerade"
    );
    let udp_local = sock.local_addr()?;
    let udp_local: SocketAddr = format!("{ip1}:{}", udp_local.port()).parse()?;
    let udp_peers = echo.finish()?;
    assert_eq!(udp_peers[0].ip().to_string(), NODE_UPLINK_IP);

    // ICMP echo.
    assert_eq!(c1.ping(OUTSIDE_IP, 3)?, 3, "ping container -> outside");
    assert!(node.forwards("snat")? > 0, "snat counter must move");
    assert!(node.forwards("reverse_snat")? > 0, "reverse_snat must move");

    // The table lists each connection once, with both tuples and state.
    let conns = ct(&node)?;
    let tcp_local: SocketAddr = format!("{ip1}:{}", locals[0].port()).parse()?;
    let tcp = ct_find(&conns, "tcp", &tcp_local)
        .with_context(|| format!("no TCP connection from {tcp_local} in {conns:?}"))?;
    assert_eq!(tcp["original"]["dst"], OUTSIDE_IP, "{tcp}");
    assert_eq!(tcp["original"]["dport"], server_port, "{tcp}");
    assert_eq!(tcp["translated"]["dport"], server_port, "{tcp}");
    assert_eq!(tcp["translated"]["src"], NODE_UPLINK_IP, "{tcp}");
    assert_eq!(tcp["translated"]["sport"], peers[0].port(), "{tcp}");
    assert!(
        ["closed", "fin_wait"].contains(&tcp["state"].as_str().unwrap_or("")),
        "a finished TCP connection is closing: {tcp}"
    );
    assert!(
        tcp["bytes_reply"].as_u64() >= Some(1 << 20),
        "1 MB came back: {tcp}"
    );
    let udp = ct_find(&conns, "udp", &udp_local)
        .with_context(|| format!("no UDP connection from {udp_local} in {conns:?}"))?;
    assert_eq!(udp["state"], "active", "{udp}");
    assert_eq!(udp["translated"]["src"], NODE_UPLINK_IP, "{udp}");
    assert_eq!(
        (udp["packets_orig"].as_u64(), udp["packets_reply"].as_u64()),
        (Some(1), Some(1)),
        "{udp}"
    );
    let icmp = conns
        .iter()
        .find(|c| c["proto"] == "icmp" && c["original"]["src"] == ip1.as_str())
        .with_context(|| format!("no ICMP connection in {conns:?}"))?;
    assert_eq!(icmp["translated"]["src"], NODE_UPLINK_IP, "{icmp}");
    assert_eq!(icmp["packets_orig"].as_u64(), Some(3), "{icmp}");
    let nat = node.weft_json(&["nat", "ls"])?;
    assert_eq!(nat["range_size"].as_u64(), Some(65535 - 61000 + 1), "{nat}");
    for p in nat["protocols"].as_array().context("protocols")? {
        assert!(p["used"].as_u64() >= Some(1), "{nat}");
    }

    // `node unset` stops masquerade.
    node.weft(&["node", "unset"])?;
    assert_eq!(
        node.weft_json(&["node", "show"])?["configured"],
        false,
        "node show after unset"
    );
    assert_eq!(c1.ping(OUTSIDE_IP, 2)?, 0, "no masquerade after node unset");
    assert!(ct(&node)?.is_empty(), "unset flushes the table");
    Ok(())
}

#[test]
fn a_network_without_masquerade_gets_no_translation() -> Result<()> {
    let (node, _outside) = masquerading_node(&[])?;
    node.weft(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.9.0.0/24",
        "--no-masquerade",
    ])?;
    let nets = node.weft_json(&["network", "inspect", "plain"])?;
    assert_eq!(nets["masquerade"], false, "{nets}");
    let (c, ip) = node.container("plain", "c")?;
    assert!(
        !tcp_connect_answers(&c, OUTSIDE_IP, 9)?,
        "without masquerade the outside cannot answer (it has no route back)"
    );
    assert_eq!(c.ping(OUTSIDE_IP, 2)?, 0);
    let conns = ct(&node)?;
    assert!(
        conns.iter().all(|c| c["original"]["src"] != ip.as_str()),
        "no conntrack entry for a network without masquerade: {conns:?}"
    );
    Ok(())
}

#[test]
fn node_set_validates_and_undoes() -> Result<()> {
    let node = Node::new()?;
    let _outside = Outside::new(&node)?;
    let fail = |args: &[&str], needle: &str| -> Result<()> {
        let out = node.weft_unchecked(args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(needle), "{args:?}: want '{needle}' in: {err}");
        Ok(())
    };
    let set = ["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP];
    fail(
        &["node", "set", "--uplink", "nope0", "--ip", NODE_UPLINK_IP],
        "does not exist",
    )?;
    fail(
        &["node", "set", "--uplink", UPLINK, "--ip", "198.18.0.9"],
        "not an address of uplink",
    )?;
    let range = node
        .ns
        .exec(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"])?;
    let low: u32 = String::from_utf8_lossy(&range.stdout)
        .split_whitespace()
        .next()
        .context("range")?
        .parse()?;
    let overlapping = format!("{}-{}", low - 10, low + 10);
    let mut args = set.to_vec();
    args.extend(["--ports", &overlapping]);
    fail(&args, "overlap the node's ephemeral ports")?;
    fail(
        &[&set[..], &["--ports", "9-3"]].concat(),
        "invalid port range",
    )?;
    let shown = node.weft_json(&["node", "show"])?;
    assert_eq!(
        shown["configured"], false,
        "failed sets leave nothing: {shown}"
    );
    fail(&["node", "unset"], "no node uplink is set")?;

    // `unset` puts back the forwarding the node had before `set`, whatever
    // it was: a new namespace inherits the root's, so on a forwarding host
    // (any Docker host) the node starts with 1. Both starting values, set
    // inside the node namespace only; the first without the agent, the
    // second through it (the same routes).
    let forwarding = || -> Result<String> {
        let out = node
            .ns
            .exec(&["cat", "/proc/sys/net/ipv4/conf/all/forwarding"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let mut agent = None;
    for before in ["0", "1"] {
        if before == "1" {
            agent = Some(node.start_agent()?);
        }
        node.ns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.all.forwarding={before}"),
        ])?;
        assert_eq!(forwarding()?, before, "the node starts with {before}");
        node.weft(&set)?;
        let shown = node.weft_json(&["node", "show"])?;
        assert_eq!(shown["uplink"], UPLINK, "{shown}");
        assert_eq!(forwarding()?, "1", "set turns forwarding on");
        fail(
            &["node", "set", "--uplink", "nope0", "--ip", NODE_UPLINK_IP],
            "does not exist",
        )?;
        assert_eq!(node.weft_json(&["node", "show"])?["uplink"], UPLINK);
        node.weft(&["node", "unset"])?;
        assert_eq!(node.weft_json(&["node", "show"])?["configured"], false);
        assert_eq!(
            forwarding()?,
            before,
            "unset restores the forwarding the node had before set"
        );
    }
    drop(agent);
    Ok(())
}

#[test]
fn a_thousand_concurrent_connections_through_snat() -> Result<()> {
    let (node, outside) = masquerading_node(&[])?;
    let (c1, _) = node.container("blue", "c1")?;
    let start = Instant::now();
    let server = outside.tcp_source(1024, 1000)?;
    let locals = tcp_fetch_many(&c1, server.addr(), 1000, 1024, 20)?;
    let peers = server.finish()?;
    let took = start.elapsed();
    eprintln!("1000 concurrent TCP connections through SNAT: {took:?}");
    assert_eq!(locals.len(), 1000);
    assert!(
        peers.iter().all(|p| p.ip().to_string() == NODE_UPLINK_IP),
        "every connection must leave with the node's address"
    );
    let mut ports: Vec<u16> = peers.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        1000,
        "1000 distinct NAT ports towards one server"
    );
    assert!(took.as_secs() < 60, "took {took:?}");
    let tcp_conns = ct(&node)?.iter().filter(|c| c["proto"] == "tcp").count();
    assert_eq!(tcp_conns, 1000, "ct ls lists each connection once");
    Ok(())
}

/// Pressure on one of masquerade's tables that has room for two flows:
/// two UDP flows to the outside go through, a third is dropped and counted
/// as `reason`, the two keep working, `full` checks `nat ls` then; after a
/// GC takes the two idle flows out the third goes through, and every flow
/// left with the node's address.
fn two_flows_fill_it_and_gc_makes_room(
    node: &Node,
    outside: &Outside,
    reason: &str,
    full: impl Fn(&Value),
) -> Result<()> {
    let (c1, _) = node.container("blue", "c1")?;
    let echo = outside.udp_echo()?;
    let to = echo.addr();
    let (a, b, c) = (
        udp_socket_in(&c1)?,
        udp_socket_in(&c1)?,
        udp_socket_in(&c1)?,
    );
    assert!(udp_roundtrip(&a, to, b"a")?, "first flow");
    assert!(udp_roundtrip(&b, to, b"b")?, "second flow");
    let before = node.drops(reason)?;
    assert!(
        !udp_roundtrip(&c, to, b"c")?,
        "a third flow must be refused"
    );
    assert!(node.drops(reason)? > before, "{reason} must count the drop");
    assert!(udp_roundtrip(&a, to, b"a2")?, "first flow keeps working");
    assert!(udp_roundtrip(&b, to, b"b2")?, "second flow keeps working");
    full(&node.weft_json(&["nat", "ls"])?);

    // The 60 s UDP timeout is too long for a test: `--older-than 1`
    // collects pairs idle over a second, as expiry would.
    let gc = node.weft_json(&["ct", "gc"])?;
    assert_eq!(gc["removed"].as_u64(), Some(0), "nothing expired yet: {gc}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let gc = node.weft_json(&["ct", "gc", "--older-than", "1"])?;
    assert_eq!(gc["removed"].as_u64(), Some(4), "two pairs collected: {gc}");
    assert!(udp_roundtrip(&c, to, b"c2")?, "the third flow after gc");
    let peers = echo.finish()?;
    assert!(peers.iter().all(|p| p.ip().to_string() == NODE_UPLINK_IP));
    Ok(())
}

#[test]
fn a_tiny_port_range_exhausts_cleanly_and_recovers_after_gc() -> Result<()> {
    let (node, outside) = masquerading_node(&["--ports", "30000-30001"])?;
    two_flows_fill_it_and_gc_makes_room(&node, &outside, "nat_ports_exhausted", |nat| {
        let udp = &nat["protocols"][1];
        assert_eq!(udp["proto"], "udp", "{nat}");
        assert_eq!(
            (udp["used"].as_u64(), udp["range_size"].as_u64()),
            (Some(2), Some(2)),
            "{nat}"
        );
    })
}

/// Conntrack pressure: with `node set --conntrack-max 2`, two UDP flows to
/// the outside keep working while a third is dropped as `conntrack_full`
/// (the LRU table never evicts a live flow to make room), `nat ls` shows
/// the table at its limit, and after a GC takes the two idle flows out
/// the third goes through. A limit of 0 is refused.
#[test]
fn a_full_conntrack_table_refuses_new_flows_and_recovers() -> Result<()> {
    let (node, outside) = masquerading_node(&["--conntrack-max", "2"])?;
    assert_eq!(
        node.weft_json(&["node", "show"])?["conntrack_max"].as_u64(),
        Some(2)
    );
    two_flows_fill_it_and_gc_makes_room(&node, &outside, "conntrack_full", |nat| {
        assert_eq!(
            (
                nat["conntrack"]["connections"].as_u64(),
                nat["conntrack"]["limit"].as_u64()
            ),
            (Some(2), Some(2)),
            "{nat}"
        );
    })?;
    let bad = node.weft_unchecked(&[
        "node",
        "set",
        "--uplink",
        UPLINK,
        "--ip",
        NODE_UPLINK_IP,
        "--conntrack-max",
        "0",
    ])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--conntrack-max 0"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}

/// The agent exports the table's size and port use, and its 10 s GC
/// removes a closed TCP connection once the 10 s closed timeout passed.
#[test]
fn agent_exports_nat_metrics_and_collects_expired_connections() -> Result<()> {
    let (node, outside) = masquerading_node(&["--ports", "30000-30099"])?;
    let (c1, _) = node.container("blue", "c1")?;
    let _agent = node.start_agent()?;
    let server = outside.tcp_source(4096, 1)?;
    tcp_fetch_many(&c1, server.addr(), 1, 4096, 1)?;
    server.finish()?;
    assert_eq!(ct(&node)?.len(), 1, "one connection, through the agent");
    let status = node.weft_json(&["status"])?;
    assert_eq!(
        (
            status["endpoints"].as_u64(),
            status["routes"].as_u64(),
            status["flows"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "one endpoint, one subnet route, one masqueraded flow: {status}"
    );
    assert_eq!(status["kernel_matches_state"], true, "{status}");

    let metrics = scrape(&node)?;
    assert_eq!(sample(&metrics, "weft_conntrack_entries")?, 2.0);
    assert_eq!(
        sample(&metrics, r#"weft_nat_ports_used{proto="tcp"}"#)?,
        1.0
    );
    assert_eq!(
        sample(&metrics, r#"weft_nat_ports_used{proto="udp"}"#)?,
        0.0
    );
    assert_eq!(sample(&metrics, "weft_nat_port_range_size")?, 100.0);
    // Each program counts under its own direction: SNAT where containers
    // send, reverse SNAT where replies come in on the uplink.
    let fwd = |kind: &str, direction: &str| {
        sample(
            &metrics,
            &format!(r#"weft_forward_packets_total{{kind="{kind}",direction="{direction}"}}"#),
        )
    };
    let (snat, reverse) = (
        fwd("snat", "from_container")?,
        fwd("reverse_snat", "from_uplink")?,
    );
    assert!(
        snat >= 3.0 && reverse >= 3.0,
        "snat {snat}, reverse {reverse}"
    );
    assert_eq!(fwd("snat", "from_uplink")?, 0.0);
    assert_eq!(fwd("reverse_snat", "from_container")?, 0.0);
    assert!(
        sample(
            &metrics,
            r#"weft_drop_bytes_total{reason="ttl_exceeded",direction="from_uplink"}"#
        )? == 0.0,
        "drops carry a direction too"
    );
    // A second fetch moves both directions' counters.
    let server = outside.tcp_source(4096, 1)?;
    tcp_fetch_many(&c1, server.addr(), 1, 4096, 1)?;
    server.finish()?;
    let metrics = scrape(&node)?;
    let fwd = |kind: &str, direction: &str| {
        sample(
            &metrics,
            &format!(r#"weft_forward_packets_total{{kind="{kind}",direction="{direction}"}}"#),
        )
    };
    assert!(fwd("snat", "from_container")? >= snat + 3.0);
    assert!(fwd("reverse_snat", "from_uplink")? >= reverse + 3.0);

    // Closed timeout (10 s) + one GC period (10 s) + slack.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ct(&node)?.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent's GC never removed the closed connection: {:?}",
            ct(&node)?
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(sample(&scrape(&node)?, "weft_conntrack_entries")?, 0.0);
    assert_eq!(node.weft_json(&["status"])?["flows"].as_u64(), Some(0));
    Ok(())
}

/// The hitless-restart contract through masquerade: an iperf3 stream and a
/// 10 ms ping flood from a container to the outside, both translated,
/// while the agent is SIGKILLed and restarted five times (its GC runs in
/// between). The stream must finish and no ping gap may exceed 100 ms.
#[test]
fn agent_restarts_under_load_through_snat_lose_nothing() -> Result<()> {
    let (node, outside) = masquerading_node(&[])?;
    let (c1, _) = node.container("blue", "c1")?;

    let load = restart_agent_under_load(&node, &c1, &outside.ns, OUTSIDE_IP)?;
    eprintln!("restart under load through SNAT: {load:?}");
    let conns = ct(&node)?;
    assert!(
        conns.iter().any(|c| c["proto"] == "tcp"
            && c["translated"]["src"] == NODE_UPLINK_IP
            && c["bytes_orig"].as_u64() > Some(1 << 20)),
        "the stream went through SNAT: {conns:?}"
    );
    Ok(())
}

/// The kernel id of the program the pinned link at `pin` runs.
fn link_program(pin: &std::path::Path) -> Result<u32> {
    let link = aya::programs::links::PinnedLink::from_pin(pin)
        .with_context(|| format!("opening link {}", pin.display()))?;
    Ok(aya::programs::links::FdLink::from(link)
        .info()?
        .program_id())
}

/// A layout migration reloads every pinned program; the uplink's link must
/// move onto the new `weft_from_uplink` like the endpoints' links, and
/// live connections keep going (the conntrack map is the same pin).
#[test]
fn masquerade_survives_a_map_layout_migration() -> Result<()> {
    use aya::maps::{HashMap, IterableMap, MapData};
    use weft::datapath::migrate::{self, FLOOD_16_LAYOUT, FLOOD_16_MEMBERS, FloodList16};
    use weft_common::maps::{FloodList, MAP_FLOOD, PROG_FROM_UPLINK};

    let (node, outside) = masquerading_node(&[])?;
    let (c1, _) = node.container("blue", "c1")?;
    let echo = outside.udp_echo()?;
    let sock = udp_socket_in(&c1)?;
    assert!(udp_roundtrip(&sock, echo.addr(), b"before")?);
    let uplink_pin = node.pin_dir().join("links").join(":uplink");
    let prog_pin = node.pin_dir().join("progs").join(PROG_FROM_UPLINK);
    let before = link_program(&uplink_pin)?;

    // Pin WEFT_FLOOD in its older 16-member layout, as layout.rs does.
    let flood_pin = node.pin_dir().join("maps").join(MAP_FLOOD);
    let current: HashMap<MapData, u32, FloodList> = HashMap::try_from(
        aya::maps::Map::from_map_data(MapData::from_pin(&flood_pin)?)?,
    )?;
    let mut old: HashMap<MapData, u32, FloodList16> = HashMap::try_from(
        aya::maps::Map::from_map_data(migrate::create_map(MAP_FLOOD, FLOOD_16_LAYOUT, 0)?)?,
    )?;
    for item in current.iter() {
        let (id, list) = item?;
        let mut members = [Default::default(); FLOOD_16_MEMBERS];
        members.copy_from_slice(&list.members[..FLOOD_16_MEMBERS]);
        old.insert(
            id,
            FloodList16 {
                count: list.count,
                members,
            },
            0,
        )?;
    }
    migrate::replace_pin(old.map(), &flood_pin)?;
    let _agent = node.start_agent()?;

    let after = link_program(&uplink_pin)?;
    let pinned = aya::programs::ProgramInfo::from_pin(&prog_pin)?.id();
    assert_ne!(
        after, before,
        "the uplink's link must move to the reloaded program"
    );
    assert_eq!(
        after, pinned,
        "the uplink runs the pinned {PROG_FROM_UPLINK}"
    );
    assert!(
        udp_roundtrip(&sock, echo.addr(), b"after")?,
        "a live UDP flow keeps its translation across the migration"
    );
    echo.finish()?;
    assert_eq!(
        c1.ping(OUTSIDE_IP, 2)?,
        2,
        "new connections after migration"
    );
    Ok(())
}

/// The datapath's rare-path log lines reach the agent's log (aya-log): with
/// `weft_nat_egress` gone from the tail-call table, masqueraded traffic is
/// handed to the stack untranslated (no reply can come back) and the failed
/// tail call is logged by the program and printed by the agent.
#[test]
fn a_failed_tail_call_is_logged_through_the_agent() -> Result<()> {
    use aya::maps::{Map, MapData, ProgramArray};
    use weft_common::maps::{MAP_TAILS, TAIL_NAT_EGRESS};

    let (node, _outside) = masquerading_node(&[])?;
    let (c1, _) = node.container("blue", "c1")?;
    let agent = node.start_agent()?;
    assert_eq!(c1.ping(OUTSIDE_IP, 1)?, 1, "masquerade works at first");

    let data = MapData::from_pin(node.pin_dir().join("maps").join(MAP_TAILS))?;
    let mut tails: ProgramArray<MapData> = ProgramArray::try_from(Map::from_map_data(data)?)?;
    tails.clear_index(&TAIL_NAT_EGRESS)?;
    assert_eq!(c1.ping(OUTSIDE_IP, 2)?, 0, "untranslated: no way back");
    // The agent drains the datapath's log every 250 ms.
    std::thread::sleep(Duration::from_secs(1));
    let log = agent.kill_and_log()?;
    assert!(
        log.contains("tail call to WEFT_TAILS[0] failed (slot empty)"),
        "the agent must log the datapath's line:\n{log}"
    );
    Ok(())
}

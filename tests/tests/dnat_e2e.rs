//! Published ports end to end: containers on a node with an uplink to an
//! "outside" namespace (`weft_tests::outside`), the real `weft` binary,
//! real TCP and UDP. An outside client reaches a container through the
//! node's address and a published port and keeps its own address (the
//! container's server reports the peer it saw); another container reaches
//! it the same way (hairpin); a second publication of a port is refused
//! changing nothing; unpublish stops the traffic; a container's connected
//! UDP socket gets ECONNREFUSED from the outside's ICMP port unreachable,
//! which only works if the quoted header is translated back.

use std::io::ErrorKind;

use anyhow::{Context, Result};
use serde_json::Value;
use weft_tests::{
    node::Node,
    outside::{NODE_UPLINK_IP, OUTSIDE_IP, Outside, UPLINK},
    traffic::{
        connected_udp_error, join, tcp_echo_from, tcp_echo_server, udp_echo_from, udp_echo_server,
    },
};

/// A node with network blue and its uplink set.
fn node_with_uplink() -> Result<(Node, Outside)> {
    let node = Node::new()?;
    let outside = Outside::new(&node)?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP])?;
    Ok((node, outside))
}

fn published(node: &Node) -> Result<Vec<Value>> {
    Ok(node
        .weft_json(&["publish", "ls"])?
        .as_array()
        .context("publish ls is a list")?
        .clone())
}

#[test]
fn outside_client_reaches_published_tcp_and_udp_ports() -> Result<()> {
    let (node, outside) = node_with_uplink()?;
    let (c1, ip1) = node.container("blue", "c1")?;
    let shown = node.weft_json(&["publish", "c1", "8080:8000"])?;
    assert_eq!(
        (
            shown[0]["host_port"].as_u64(),
            shown[0]["container_port"].as_u64()
        ),
        (Some(8080), Some(8000)),
        "{shown}"
    );
    node.weft(&["publish", "c1", &format!("{NODE_UPLINK_IP}:5353:5300/udp")])?;

    let server = tcp_echo_server(&c1, 8000, 1)?;
    assert!(
        tcp_echo_from(
            &outside.ns,
            &format!("{NODE_UPLINK_IP}:8080"),
            b"through a published port"
        )?,
        "TCP echo from outside"
    );
    let peers = join(server)?;
    assert_eq!(
        peers[0].ip().to_string(),
        OUTSIDE_IP,
        "the container sees the client's own address"
    );

    let server = udp_echo_server(&c1, 5300)?;
    assert!(
        udp_echo_from(
            &outside.ns,
            &format!("{NODE_UPLINK_IP}:5353"),
            b"udp published"
        )?,
        "UDP echo from outside"
    );
    assert_eq!(join(server)?.ip().to_string(), OUTSIDE_IP);
    assert!(
        node.forwards("dnat")? > 0 && node.forwards("reverse_dnat")? > 0,
        "dnat counters move"
    );

    let list = published(&node)?;
    assert_eq!(list.len(), 2, "{list:?}");
    let tcp = list
        .iter()
        .find(|p| p["proto"] == "tcp")
        .context("tcp publication")?;
    assert_eq!(
        (
            tcp["endpoint"].as_str(),
            tcp["container_ip"].as_str(),
            tcp["host_ip"].as_str()
        ),
        (Some("c1"), Some(ip1.as_str()), Some(NODE_UPLINK_IP)),
        "{tcp}"
    );

    // Conntrack shows the connections as DNAT, with an age.
    let conns = node.weft_json(&["ct", "ls"])?;
    let dnat = conns
        .as_array()
        .context("ct ls is a list")?
        .iter()
        .find(|c| c["kind"] == "dnat" && c["proto"] == "tcp")
        .with_context(|| format!("no dnat connection in {conns}"))?;
    assert_eq!(dnat["original"]["sport"], 8000, "{dnat}");
    assert_eq!(dnat["translated"]["sport"], 8080, "{dnat}");
    assert!(
        dnat["age_seconds"].as_u64().is_some()
            && dnat["age_seconds"].as_u64() >= dnat["idle_seconds"].as_u64(),
        "{dnat}"
    );

    // The same port again is refused, to any endpoint, changing nothing.
    let (_c2, _) = node.container("blue", "c2")?;
    let state_before = std::fs::read(node.state_file())?;
    for args in [
        ["publish", "c1", "8080:9000"],
        ["publish", "c2", "8080:8000/tcp"],
    ] {
        let out = node.weft_unchecked(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("already published"),
            "{args:?}: {err}"
        );
    }
    // Bad specs and addresses are refused with a reason.
    for (args, says) in [
        (vec!["publish", "c1", "8081"], "expected"),
        (vec!["publish", "c1", "8081:80/sctp"], "tcp or udp"),
        (
            vec!["publish", "c1", "10.9.9.9:8081:80"],
            "not the node's address",
        ),
        (vec!["publish", "c1", "0:80"], "1-65535"),
        (vec!["publish", "nobody", "8081:80"], "does not exist"),
    ] {
        let out = node.weft_unchecked(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(node.state_file())?,
        state_before,
        "refusals leave state.json as it was"
    );

    // Unpublished, the port is the node's again: nothing listens there.
    node.weft(&["unpublish", "c1", "8080:8000"])?;
    let _server = tcp_echo_server(&c1, 8000, 1)?;
    assert!(
        !tcp_echo_from(
            &outside.ns,
            &format!("{NODE_UPLINK_IP}:8080"),
            b"after unpublish"
        )?,
        "unpublished port still leads to the container"
    );
    assert_eq!(published(&node)?.len(), 1);

    // A range in one call: 1,000 host ports to c1's port 8000 (the server
    // above still waits for its connection); an overlapping range is
    // refused whole.
    node.weft(&["publish", "c1", "30000-30999:8000"])?;
    assert_eq!(published(&node)?.len(), 1001);
    let out = node.weft_unchecked(&["publish", "c1", "30999-31001:8000"])?;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already published"),
        "an overlapping range is refused"
    );
    assert_eq!(
        published(&node)?.len(),
        1001,
        "a refused range adds nothing"
    );
    assert!(
        tcp_echo_from(
            &outside.ns,
            &format!("{NODE_UPLINK_IP}:30500"),
            b"a port of a range"
        )?,
        "a port of a published range reaches the container"
    );
    join(_server)?;
    node.weft(&["unpublish", "30000-30999"])?;
    assert_eq!(published(&node)?.len(), 1);

    // endpoint rm removes the endpoint's publications.
    node.weft(&["endpoint", "rm", "c1"])?;
    assert!(
        published(&node)?.is_empty(),
        "endpoint rm removes its publications"
    );
    Ok(())
}

#[test]
fn hairpin_from_another_container() -> Result<()> {
    let (node, _outside) = node_with_uplink()?;
    let (c1, _) = node.container("blue", "c1")?;
    let (c2, _) = node.container("blue", "c2")?;
    node.weft(&["publish", "c1", "8080:8000"])?;
    let server = tcp_echo_server(&c1, 8000, 1)?;
    assert!(
        tcp_echo_from(&c2, &format!("{NODE_UPLINK_IP}:8080"), b"hairpin")?,
        "c2 reaches c1 through the node's address"
    );
    let peers = join(server)?;
    assert_eq!(
        peers[0].ip().to_string(),
        NODE_UPLINK_IP,
        "hairpin traffic comes from the node's address"
    );
    let conns = node.weft_json(&["ct", "ls"])?;
    assert!(
        conns
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["kind"] == "hairpin")),
        "{conns}"
    );
    Ok(())
}

#[test]
fn publications_survive_an_agent_restart() -> Result<()> {
    let (node, outside) = node_with_uplink()?;
    let (c1, _) = node.container("blue", "c1")?;
    let agent = node.start_agent()?;
    node.weft(&["publish", "c1", "8080:8000"])?;
    let refused = node.weft_unchecked(&["publish", "c1", "8080:8001"])?;
    assert!(
        !refused.status.success(),
        "the agent refuses a second publication too"
    );
    drop(agent);
    // Lost from the map while no agent runs: the next agent puts it back
    // from state.json.
    {
        use aya::maps::{HashMap, Map, MapData};
        use weft_common::maps::{MAP_PUBLISH, PublishKey, PublishTarget};
        let data = MapData::from_pin(node.pin_dir().join("maps").join(MAP_PUBLISH))?;
        let mut map: HashMap<MapData, PublishKey, PublishTarget> =
            HashMap::try_from(Map::HashMap(data))?;
        let keys: Vec<PublishKey> = map.keys().collect::<Result<_, _>>()?;
        assert_eq!(keys.len(), 1, "one published port in the map");
        map.remove(&keys[0])?;
    }
    let _agent = node.start_agent()?;
    let list = published(&node)?;
    assert_eq!(list.len(), 1, "{list:?}");
    let server = tcp_echo_server(&c1, 8000, 1)?;
    assert!(tcp_echo_from(
        &outside.ns,
        &format!("{NODE_UPLINK_IP}:8080"),
        b"after restart"
    )?);
    join(server)?;
    node.weft(&["unpublish", "8080/tcp"])?;
    assert!(published(&node)?.is_empty());
    Ok(())
}

#[test]
fn container_gets_port_unreachable_for_its_udp_flow() -> Result<()> {
    let (node, _outside) = node_with_uplink()?;
    let (c1, _) = node.container("blue", "c1")?;
    assert_eq!(
        connected_udp_error(&c1, &format!("{OUTSIDE_IP}:9"))?,
        Some(ErrorKind::ConnectionRefused),
        "expected ECONNREFUSED from the translated ICMP error"
    );
    assert!(
        node.forwards("icmp_error_translated")? > 0,
        "icmp_error_translated counts it"
    );
    Ok(())
}

#[test]
fn outside_client_gets_port_unreachable_from_a_published_port() -> Result<()> {
    let (node, outside) = node_with_uplink()?;
    // Kept: the namespace goes when its guard drops.
    let (_c1, _) = node.container("blue", "c1")?;
    // Published, but nothing listens in the container: c1's own port
    // unreachable must leave as the node's, about the published port.
    node.weft(&["publish", "c1", "5353:5300/udp"])?;
    assert_eq!(
        connected_udp_error(&outside.ns, &format!("{NODE_UPLINK_IP}:5353"))?,
        Some(ErrorKind::ConnectionRefused),
        "the outside client's connected socket gets ECONNREFUSED"
    );
    assert!(node.forwards("icmp_error_translated")? > 0);
    Ok(())
}

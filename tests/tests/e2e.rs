//! End to end on one node: a namespace playing the host, containers in
//! their own namespaces, the real `weft` binary, real ICMP, TCP and UDP.
//! Every namespace, pin and state file is unique to the run and removed on
//! drop, also when an assertion fails.

use anyhow::{Context, Result};
use weft_tests::{
    frames::{ETH_HLEN, udp},
    netns::NetNs,
    node::Node,
    traffic::{send_raw_frames, tcp_connect_answers, tcp_echo, udp_broadcast_reaches, udp_echo},
};

/// The node with networks blue (10.1.0.0/24) and green (10.2.0.0/24).
fn node_with_two_networks() -> Result<Node> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["network", "create", "green", "--subnet", "10.2.0.0/24"])?;
    Ok(node)
}

#[test]
fn same_node_bridging_routing_isolation_and_removal() -> Result<()> {
    let node = node_with_two_networks()?;
    let (c1, ip1) = node.container("blue", "c1")?;
    let (c2, ip2) = node.container("blue", "c2")?;
    let (c3, ip3) = node.container("green", "c3")?;
    let (_c4, ip4) = node.container("green", "c4")?;

    // Same network: bridged by MAC, ARP answered in BPF.
    assert_eq!(c1.ping(&ip2, 3)?, 3, "c1 -> c2 ping (same network)");
    tcp_echo(&c2, &ip2, &c1, 256 * 1024).context("c1 -> c2 TCP")?;
    assert!(udp_echo(&c2, &ip2, &c1)?, "c1 -> c2 UDP echo");
    assert!(node.forwards("bridged")? > 0, "bridged counter must move");
    assert!(
        node.forwards("arp_replied")? > 0,
        "ARP must be answered by BPF"
    );
    assert_eq!(c3.ping(&ip4, 2)?, 2, "c3 -> c4 ping (same network)");

    // The gateway is the node itself.
    assert_eq!(c1.ping("10.1.0.1", 2)?, 2, "c1 -> its gateway");

    // Different networks: isolated until connected.
    let isolated_before = node.drops("network_isolated")?;
    assert_eq!(
        c1.ping(&ip3, 3)?,
        0,
        "c1 -> c3 must be blocked before connect"
    );
    assert!(
        !tcp_connect_answers(&c1, &ip3, 9)?,
        "c1 -> c3 TCP must be blocked"
    );
    assert!(!udp_echo(&c3, &ip3, &c1)?, "c1 -> c3 UDP must be blocked");
    let isolated_after = node.drops("network_isolated")?;
    assert!(
        isolated_after >= isolated_before + 3,
        "network_isolated must count the blocked packets ({isolated_before} -> {isolated_after})"
    );

    node.weft(&["network", "connect", "blue", "green"])?;
    assert_eq!(c1.ping(&ip3, 3)?, 3, "c1 -> c3 after connect");
    tcp_echo(&c3, &ip3, &c1, 256 * 1024).context("c1 -> c3 TCP after connect")?;
    assert!(udp_echo(&c3, &ip3, &c1)?, "c1 -> c3 UDP after connect");
    assert!(node.forwards("routed")? > 0, "routed counter must move");
    let ttl = c1.exec(&["ping", "-n", "-c", "1", &ip3])?;
    assert!(
        String::from_utf8_lossy(&ttl.stdout).contains("ttl=63"),
        "a routed packet loses one TTL: {}",
        String::from_utf8_lossy(&ttl.stdout)
    );

    node.weft(&["network", "disconnect", "blue", "green"])?;
    assert_eq!(
        c1.ping(&ip3, 2)?,
        0,
        "c1 -> c3 blocked again after disconnect"
    );

    // Removing an endpoint stops its traffic and removes its veth.
    let endpoints = node.weft_json(&["endpoint", "ls"])?;
    let c2_host_if = endpoints
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["name"] == "c2"))
        .and_then(|e| e["host_ifname"].as_str())
        .context("c2 in endpoint ls")?
        .to_owned();
    node.ns.exec(&["ip", "link", "show", &c2_host_if])?;
    node.weft(&["endpoint", "rm", "c2"])?;
    assert_eq!(c1.ping(&ip2, 2)?, 0, "c1 -> removed c2 must fail");
    assert!(
        !node
            .ns
            .exec_unchecked(&["ip", "link", "show", &c2_host_if])?
            .status
            .success(),
        "host veth {c2_host_if} must be gone"
    );
    assert!(
        !c2.exec_unchecked(&["ip", "link", "show", "eth0"])?
            .status
            .success(),
        "c2's eth0 must be gone"
    );
    assert_eq!(c1.ping(&ip1, 1)?, 1, "c1 still reaches itself");

    // Removing a routed destination stops routed traffic to it too (its
    // entries, cached ones included, are gone).
    node.weft(&["network", "connect", "blue", "green"])?;
    assert_eq!(c1.ping(&ip3, 1)?, 1, "c1 -> c3 routed again");
    let missing_before = node.drops("no_such_endpoint")?;
    node.weft(&["endpoint", "rm", "c3"])?;
    assert_eq!(c1.ping(&ip3, 2)?, 0, "c1 -> removed c3 must fail");
    assert!(
        node.drops("no_such_endpoint")? >= missing_before + 2,
        "pings to a removed endpoint are counted as no_such_endpoint"
    );
    Ok(())
}

#[test]
fn broadcast_is_dropped_unless_the_network_floods() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "quiet", "--subnet", "10.5.0.0/24"])?;
    node.weft(&[
        "network",
        "create",
        "chatty",
        "--subnet",
        "10.6.0.0/24",
        "--flood",
    ])?;
    let (q1, _) = node.container("quiet", "q1")?;
    let (q2, _) = node.container("quiet", "q2")?;
    let (f1, _) = node.container("chatty", "f1")?;
    let (f2, _) = node.container("chatty", "f2")?;

    let dropped_before = node.drops("broadcast_not_flooded")?;
    assert!(
        !udp_broadcast_reaches(&q1, "10.5.0.255", &q2)?,
        "broadcast must not cross a non-flooding network"
    );
    assert!(node.drops("broadcast_not_flooded")? > dropped_before);

    assert!(
        udp_broadcast_reaches(&f1, "10.6.0.255", &f2)?,
        "broadcast must reach the other endpoint of a flooding network"
    );
    assert!(node.forwards("flooded")? > 0);
    Ok(())
}

/// Frames no stack would send, from inside a container: each is dropped
/// with its named reason and counted.
#[test]
fn malformed_frames_from_a_container_are_dropped_by_reason() -> Result<()> {
    let node = node_with_two_networks()?;
    let (c1, ip1) = node.container("blue", "c1")?;
    let (_c2, ip2) = node.container("blue", "c2")?;
    let endpoints = node.weft_json(&["endpoint", "ls"])?;
    let mac = |name: &str| -> Result<[u8; 6]> {
        let text = endpoints
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["name"] == name))
            .and_then(|e| e["mac"].as_str())
            .with_context(|| format!("{name} in endpoint ls"))?;
        let bytes: Vec<u8> = text
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<_, _>>()?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad mac {text}"))
    };
    let (mac1, mac2) = (mac("c1")?, mac("c2")?);
    let good = udp(
        (mac2, mac1),
        ip1.parse()?,
        ip2.parse()?,
        64,
        b"0123456789abcdef",
    );
    let truncated_ipv4 = good[..ETH_HLEN + 10].to_vec();
    let mut bad_ihl = good.clone();
    bad_ihl[ETH_HLEN] = 0x43;
    let mut bad_length = good.clone();
    bad_length[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&9000u16.to_be_bytes());

    let cases = [
        ("truncated_ipv4", truncated_ipv4),
        ("bad_ipv4_header", bad_ihl),
        ("bad_ipv4_length", bad_length),
    ];
    for (reason, frame) in cases {
        let before = node.drops(reason)?;
        send_raw_frames(&c1, "eth0", vec![frame.clone(), frame])?;
        let after = node.drops(reason)?;
        assert_eq!(after, before + 2, "{reason}: both frames must be counted");
    }
    Ok(())
}

/// Two nodes built at the same time, with the same network names and
/// subnets, work independently: names and pin paths are unique per run.
#[test]
fn parallel_nodes_do_not_collide() -> Result<()> {
    let build = || -> Result<()> {
        let node = Node::new()?;
        node.weft(&["network", "create", "same", "--subnet", "10.9.0.0/24"])?;
        let (a, _) = node.container("same", "a")?;
        let (_b, ip_b) = node.container("same", "b")?;
        assert_eq!(a.ping(&ip_b, 3)?, 3, "ping within a parallel node");
        Ok(())
    };
    let first = std::thread::spawn(build);
    let second = std::thread::spawn(build);
    first.join().expect("first node panicked")?;
    second.join().expect("second node panicked")?;
    Ok(())
}

/// Bad input gets a clear error and leaves state, maps and kernel as they were.
#[test]
fn bad_input_is_refused_and_changes_nothing() -> Result<()> {
    let node = node_with_two_networks()?;
    let (_c1, ip1) = node.container("blue", "c1")?;
    let spare = NetNs::new("wtc")?;

    let snapshot = |node: &Node| -> Result<(Vec<u8>, String, String, String)> {
        Ok((
            std::fs::read(node.state_file())?,
            node.weft(&["network", "ls", "-o", "json"])?,
            node.weft(&["endpoint", "ls", "-o", "json"])?,
            String::from_utf8_lossy(&node.ns.exec(&["ip", "-o", "link"])?.stdout)
                .lines()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join(" "),
        ))
    };
    let before = snapshot(&node)?;

    // Each row: a command line and a word its error message must contain.
    let spare_ns = spare.name();
    let cases: Vec<(String, &str)> = vec![
        ("network create x --subnet banana".into(), "banana"),
        (
            "network create x --subnet 10.7.0.0/33".into(),
            "10.7.0.0/33",
        ),
        (
            "network create x --subnet 10.7.0.5/24".into(),
            "10.7.0.5/24",
        ),
        (
            "network create x --subnet 10.7.0.0/24 --gateway 10.8.0.1".into(),
            "10.8.0.1",
        ),
        ("network create blue --subnet 10.7.0.0/24".into(), "blue"),
        ("network create x --subnet 10.1.0.0/16".into(), "10.1.0.0"),
        ("network rm nosuch".into(), "nosuch"),
        ("network rm blue".into(), "blue"),
        ("network connect blue nosuch".into(), "nosuch"),
        ("network connect blue blue".into(), "blue"),
        ("network disconnect blue green".into(), "connected"),
        (
            format!("endpoint add --network nosuch --netns {spare_ns}"),
            "nosuch",
        ),
        (
            "endpoint add --network blue --netns wt-no-such-netns".into(),
            "wt-no-such-netns",
        ),
        (
            format!("endpoint add --network blue --netns {spare_ns} --ip {ip1}"),
            &ip1,
        ),
        (
            format!("endpoint add --network blue --netns {spare_ns} --ip 10.2.0.9"),
            "10.2.0.9",
        ),
        (
            format!("endpoint add --network blue --netns {spare_ns} --ip 10.1.0.1"),
            "10.1.0.1",
        ),
        (
            format!("endpoint add --network blue --netns {spare_ns} --name c1"),
            "c1",
        ),
        ("endpoint rm nosuch".into(), "nosuch"),
    ];
    for (line, must_mention) in &cases {
        let args: Vec<&str> = line.split_whitespace().collect();
        let out = node.weft_unchecked(&args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "weft {args:?} must fail");
        assert!(
            stderr.contains(must_mention),
            "weft {args:?}: the error must say what was wrong ({must_mention}); got: {stderr}"
        );
        assert_eq!(
            snapshot(&node)?,
            before,
            "weft {args:?} failed but changed state, maps or links"
        );
    }
    assert!(
        !spare
            .exec_unchecked(&["ip", "link", "show", "eth0"])?
            .status
            .success(),
        "no failed endpoint add may leave an interface in the container"
    );
    Ok(())
}

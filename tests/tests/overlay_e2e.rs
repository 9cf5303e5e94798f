//! The VXLAN overlay end to end: weft nodes in their own namespaces on an
//! underlay switch (tests/src/underlay.rs), containers on different nodes
//! talking directly (ping, TCP, UDP), in both encapsulation modes; three
//! nodes with routing between connected networks, VNI isolation, masquerade
//! next to the overlay, and `node rm` stopping traffic to a node.

use anyhow::Result;
use weft_tests::{
    overlay::{Cluster, ClusterNet},
    traffic::{
        join, tcp_echo, tcp_echo_from, tcp_echo_server, udp_echo, udp_echo_from, udp_echo_server,
    },
    underlay::UNDERLAY_IF,
};

const BLUE: ClusterNet = ClusterNet {
    name: "blue",
    octet: 1,
    vni: 100,
};

/// Two nodes, one network: ping, 1 MB TCP and UDP both ways, counted as
/// encapsulated on the sender and delivered on the receiver.
fn two_nodes_talk(encap: &str, encap_kind: &str) -> Result<()> {
    let cluster = Cluster::new(encap, 2, &[BLUE])?;
    let (a, b) = (&cluster.nodes[0].node, &cluster.nodes[1].node);
    let (ca, ip_a) = cluster.container(0, "blue", "ca")?;
    let (cb, ip_b) = cluster.container(1, "blue", "cb")?;
    assert!(ip_a.starts_with("10.1.1."), "node 1's pod CIDR: {ip_a}");
    assert!(ip_b.starts_with("10.1.2."), "node 2's pod CIDR: {ip_b}");
    for n in [a, b] {
        let status = n.weft_json(&["status"])?;
        assert_eq!(
            status["kernel_matches_state"], true,
            "overlay maps (routes, VNIs, overlay config) match state.json: {status}"
        );
    }

    assert_eq!(ca.ping(&ip_b, 3)?, 3, "{encap}: ping a -> b");
    assert_eq!(cb.ping(&ip_a, 3)?, 3, "{encap}: ping b -> a");
    tcp_echo(&cb, &ip_b, &ca, 1 << 20)?;
    tcp_echo(&ca, &ip_a, &cb, 1 << 20)?;
    assert!(udp_echo(&cb, &ip_b, &ca)?, "{encap}: UDP a -> b");

    assert!(
        a.forwards(encap_kind)? > 0,
        "a encapsulated with {encap_kind}"
    );
    assert!(
        b.forwards(encap_kind)? > 0,
        "b encapsulated with {encap_kind}"
    );
    assert!(
        a.forwards("decap_delivered")? > 0,
        "a delivered decapsulated"
    );
    assert!(
        b.forwards("decap_delivered")? > 0,
        "b delivered decapsulated"
    );
    Ok(())
}

#[test]
fn bpf_encap_two_nodes() -> Result<()> {
    two_nodes_talk("bpf", "encap_bpf")
}

#[test]
fn tunnel_encap_two_nodes() -> Result<()> {
    two_nodes_talk("tunnel", "encap_tunnel")
}

/// NAT next to the overlay: a container on node 2 reaches a port published
/// on node 1's address (the address is outside weft's networks, so node 2
/// masquerades it, node 1 DNATs it, and both replies are translated back),
/// TCP and UDP; the server sees node 2's address; `unpublish` stops it.
fn published_port_across_nodes(encap: &str) -> Result<()> {
    let cluster = Cluster::new(encap, 2, &[BLUE])?;
    let node = |i: usize| &cluster.nodes[i].node;
    let (s1, _) = cluster.container(0, "blue", "s1")?;
    let (c2, _) = cluster.container(1, "blue", "c2")?;
    node(0).weft(&["publish", "s1", "8080:8000"])?;
    node(0).weft(&["publish", "s1", "5353:5300/udp"])?;
    let n1 = cluster.nodes[0].underlay_ip.to_string();
    let n2 = cluster.nodes[1].underlay_ip;

    let server = tcp_echo_server(&s1, 8000, 1)?;
    assert!(
        tcp_echo_from(&c2, &format!("{n1}:8080"), b"across nodes")?,
        "{encap}: TCP to node 1's published port from node 2's container"
    );
    assert_eq!(join(server)?[0].ip(), n2, "masqueraded by node 2");
    let server = udp_echo_server(&s1, 5300)?;
    assert!(
        udp_echo_from(&c2, &format!("{n1}:5353"), b"udp across nodes")?,
        "{encap}: UDP to node 1's published port from node 2's container"
    );
    assert_eq!(join(server)?.ip(), n2);
    for (i, kind) in [
        (1, "snat"),
        (1, "reverse_snat"),
        (0, "dnat"),
        (0, "reverse_dnat"),
    ] {
        assert!(
            node(i).forwards(kind)? > 0,
            "{encap}: node {} {kind}",
            i + 1
        );
    }
    assert_eq!(
        node(0).forwards("encap_bpf")? + node(0).forwards("encap_tunnel")?,
        0
    );

    node(0).weft(&["unpublish", "s1", "8080:8000"])?;
    assert!(
        !tcp_echo_from(&c2, &format!("{n1}:8080"), b"unpublished")?,
        "{encap}: unpublished port must not reach the container"
    );
    Ok(())
}

#[test]
fn bpf_encap_published_port_across_nodes() -> Result<()> {
    published_port_across_nodes("bpf")
}

#[test]
fn tunnel_encap_published_port_across_nodes() -> Result<()> {
    published_port_across_nodes("tunnel")
}

const RED: ClusterNet = ClusterNet {
    name: "red",
    octet: 2,
    vni: 200,
};
const GREEN: ClusterNet = ClusterNet {
    name: "green",
    octet: 3,
    vni: 300,
};

/// Three nodes, networks blue and red connected on every node, green
/// isolated: same-network and cross-network traffic between nodes, VNI
/// isolation, masquerade to outside still working while overlay traffic
/// is never translated, and `node rm` stopping traffic to a node.
fn three_nodes(encap: &str) -> Result<()> {
    let cluster = Cluster::new(encap, 3, &[BLUE, RED, GREEN])?;
    for n in &cluster.nodes {
        n.node.weft(&["network", "connect", "blue", "red"])?;
    }
    let node = |i: usize| &cluster.nodes[i].node;
    let (b1, ip_b1) = cluster.container(0, "blue", "b1")?;
    let (b2, ip_b2) = cluster.container(1, "blue", "b2")?;
    let (r3, ip_r3) = cluster.container(2, "red", "r3")?;
    let (g3, ip_g3) = cluster.container(2, "green", "g3")?;
    let (g1, ip_g1) = cluster.container(0, "green", "g1")?;

    // Same network, nodes 1 <-> 2; blue -> red across nodes 1/2 -> 3.
    assert_eq!(b1.ping(&ip_b2, 2)?, 2, "{encap}: blue n1 -> blue n2");
    assert_eq!(
        b1.ping(&ip_r3, 2)?,
        2,
        "{encap}: blue n1 -> red n3 (routed)"
    );
    assert_eq!(
        r3.ping(&ip_b2, 2)?,
        2,
        "{encap}: red n3 -> blue n2 (routed)"
    );
    assert_eq!(
        r3.ping(&ip_b1, 2)?,
        2,
        "{encap}: red n3 -> blue n1 (routed)"
    );
    assert_eq!(g1.ping(&ip_g3, 2)?, 2, "{encap}: green n1 -> green n3");
    assert_eq!(g3.ping(&ip_g1, 2)?, 2, "{encap}: green n3 -> green n1");
    tcp_echo(&r3, &ip_r3, &b1, 256 * 1024)?;
    tcp_echo(&b2, &ip_b2, &r3, 256 * 1024)?;
    assert!(udp_echo(&g3, &ip_g3, &g1)?, "{encap}: UDP green n1 -> n3");
    assert!(
        udp_echo(&r3, &ip_r3, &b2)?,
        "{encap}: UDP blue n2 -> red n3"
    );

    // Isolation: green is connected to nothing, on any node.
    let isolated = node(0).drops("network_isolated")?;
    assert_eq!(b1.ping(&ip_g3, 2)?, 0, "{encap}: blue must not reach green");
    assert!(
        node(0).drops("network_isolated")? >= isolated + 2,
        "the sending node drops it, counted"
    );

    // Overlay traffic is never masqueraded; traffic leaving weft still is
    // (node 2's underlay address is outside every weft network).
    assert_eq!(node(0).forwards("snat")?, 0, "overlay traffic was SNATed");
    let outside = cluster.nodes[1].underlay_ip.to_string();
    assert_eq!(b1.ping(&outside, 2)?, 2, "{encap}: masquerade to outside");
    assert!(node(0).forwards("snat")? >= 2, "masqueraded, counted");

    // Removing node 3 removes its routes on node 1: traffic stops, counted.
    node(0).weft(&["node", "rm", "n3"])?;
    let routes = node(0).weft_json(&["node", "ls"])?;
    assert_eq!(routes.as_array().map(Vec::len), Some(1), "{routes}");
    let no_route = node(0).drops("overlay_no_route")?;
    assert_eq!(b1.ping(&ip_r3, 2)?, 0, "{encap}: n3 removed on n1");
    assert!(
        node(0).drops("overlay_no_route")? >= no_route + 2,
        "traffic to a removed node is counted as overlay_no_route"
    );
    assert_eq!(b2.ping(&ip_r3, 2)?, 2, "{encap}: n2 still reaches n3");
    cluster.add_peer(0, 2)?;
    assert_eq!(b1.ping(&ip_r3, 2)?, 2, "{encap}: n3 added back");
    Ok(())
}

#[test]
fn bpf_encap_three_nodes() -> Result<()> {
    three_nodes("bpf")
}

#[test]
fn tunnel_encap_three_nodes() -> Result<()> {
    three_nodes("tunnel")
}

/// `node set --xdp`: the XDP early drop on the underlay drops VXLAN of an
/// unknown VNI (here from a kernel vxlan device with VNI 999 on node 2),
/// counted under the same reason; overlay traffic keeps flowing; a plain
/// `node set` takes it off again.
#[test]
fn xdp_early_drop_on_the_underlay() -> Result<()> {
    let cluster = Cluster::new("bpf", 2, &[BLUE])?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ip1 = n1.underlay_ip.to_string();
    let set = |extra: &[&str]| -> Result<String> {
        let mut args = vec![
            "node",
            "set",
            "--uplink",
            UNDERLAY_IF,
            "--ip",
            &ip1,
            "--encap",
            "bpf",
            "--subnet",
            "blue=10.1.1.0/24",
        ];
        args.extend_from_slice(extra);
        n1.node.weft(&args)
    };
    set(&["--xdp"])?;
    let link = n1
        .node
        .ns
        .exec(&["ip", "-d", "link", "show", UNDERLAY_IF])?;
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("prog/xdp"),
        "XDP attached to the underlay: {}",
        String::from_utf8_lossy(&link.stdout)
    );
    let (ca, ip_a) = cluster.container(0, "blue", "ca")?;
    let (cb, ip_b) = cluster.container(1, "blue", "cb")?;
    assert_eq!(ca.ping(&ip_b, 2)?, 2, "overlay traffic passes XDP");
    tcp_echo(&ca, &ip_a, &cb, 256 * 1024)?;

    let ns2 = &n2.node.ns;
    ns2.exec(&[
        "ip",
        "link",
        "add",
        "vx999",
        "type",
        "vxlan",
        "id",
        "999",
        "remote",
        &ip1,
        "dstport",
        "4789",
        "dev",
        UNDERLAY_IF,
    ])?;
    ns2.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "vx999"])?;
    ns2.exec(&["ip", "link", "set", "vx999", "up"])?;
    let before = n1.node.drops("vxlan_unknown_vni")?;
    assert_eq!(ns2.ping("192.0.2.2", 2)?, 0, "nobody answers VNI 999");
    assert!(
        n1.node.drops("vxlan_unknown_vni")? > before,
        "VNI 999 dropped on node 1, counted"
    );

    set(&[])?;
    // The kernel releases an unpinned link asynchronously.
    let mut attached = true;
    for _ in 0..40 {
        let link = n1
            .node
            .ns
            .exec(&["ip", "-d", "link", "show", UNDERLAY_IF])?;
        attached = String::from_utf8_lossy(&link.stdout).contains("prog/xdp");
        if !attached {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!attached, "node set without --xdp detaches it");
    assert_eq!(ca.ping(&ip_b, 2)?, 2, "overlay traffic without XDP");
    Ok(())
}

/// Bad overlay arguments get a message naming the problem and leave
/// state.json byte-identical; `node add/ls/rm` also work through the agent.
#[test]
fn bad_overlay_args_are_refused_and_the_agent_serves_nodes() -> Result<()> {
    let cluster = Cluster::new("bpf", 2, &[BLUE])?;
    let n1 = &cluster.nodes[0].node;
    let state = std::fs::read(n1.state_file())?;
    let cases: [(&[&str], &str); 14] = [
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.9.0.0/16",
                "--vni",
                "0",
            ],
            "invalid VNI",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.9.0.0/16",
                "--vni",
                "16777216",
            ],
            "invalid VNI",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.9.0.0/16",
                "--vni",
                "100",
            ],
            "already network",
        ),
        (
            &[
                "node",
                "add",
                "n3",
                "--underlay",
                "172.30.0.9",
                "--subnet",
                "blue=10.1.2.0/24",
            ],
            "overlaps node 'n2'",
        ),
        (
            &[
                "node",
                "add",
                "n3",
                "--underlay",
                "172.30.0.9",
                "--subnet",
                "nosuch=10.1.3.0/24",
            ],
            "does not exist",
        ),
        (
            &[
                "node",
                "add",
                "n3",
                "--underlay",
                "172.30.0.9",
                "--subnet",
                "blue=10.2.0.0/24",
            ],
            "not inside",
        ),
        (
            &[
                "node",
                "add",
                "n3",
                "--underlay",
                "172.30.0.9",
                "--subnet",
                "blue=10.1.9.1/24",
            ],
            "host bits",
        ),
        (
            &["node", "add", "n3", "--underlay", "nonsense"],
            "invalid underlay address",
        ),
        (
            &[
                "node",
                "add",
                "n3",
                "--underlay",
                "172.30.0.9",
                "--vtep-mac",
                "01:00:5e:00:00:01",
            ],
            "not a unicast",
        ),
        (
            &["node", "add", "n2", "--underlay", "172.30.0.9"],
            "already exists",
        ),
        (
            &["node", "add", "n3", "--underlay", "172.30.0.2"],
            "already node 'n2'",
        ),
        (&["node", "rm", "nosuch"], "does not exist"),
        (&["network", "rm", "blue"], "pod CIDR"),
        (
            &[
                "node",
                "set",
                "--uplink",
                UNDERLAY_IF,
                "--ip",
                "172.30.0.1",
                "--encap",
                "gre",
            ],
            "invalid encapsulation",
        ),
    ];
    for (args, wants) in cases {
        let out = n1.weft_unchecked(args)?;
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(wants),
            "{args:?}: expected '{wants}' in: {err}"
        );
        assert_eq!(
            std::fs::read(n1.state_file())?,
            state,
            "{args:?} changed state.json"
        );
    }

    // A route lost from the map is drift: `status` names it, the agent
    // puts it back at start.
    let routes = n1.pin_dir().join("maps").join("WEFT_ROUTES");
    let routes = routes.to_string_lossy();
    // LPM key: prefix length (u32, host order) and the address: 10.1.2.0/24.
    // (bpftool runs outside the node namespace: `ip netns exec` hides bpffs.)
    weft_tests::netns::run(
        "bpftool",
        &[
            "map", "delete", "pinned", &routes, "key", "24", "0", "0", "0", "10", "1", "2", "0",
        ],
    )?;
    let status = n1.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], false, "{status}");
    let drift = status["drift"]["maps"].to_string();
    assert!(
        drift.contains("WEFT_ROUTES") && drift.contains("10.1.2.0/24"),
        "{status}"
    );
    let _agent = n1.start_agent()?;
    let status = n1.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "repaired: {status}");
    n1.weft(&[
        "node",
        "add",
        "n3",
        "--underlay",
        "172.30.0.9",
        "--subnet",
        "blue=10.1.3.0/24",
    ])?;
    let nodes = n1.weft_json(&["node", "ls"])?;
    let n3 = nodes
        .as_array()
        .and_then(|l| l.iter().find(|n| n["name"] == "n3"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(n3["underlay_ip"], "172.30.0.9", "{nodes}");
    assert_eq!(n3["vtep_mac"], "0a:56:ac:1e:00:09", "{nodes}");
    assert_eq!(n3["subnets"][0]["vni"], 100, "{nodes}");
    let out = n1.weft_unchecked(&["node", "add", "n3", "--underlay", "172.30.0.10"])?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "the agent refuses a duplicate too"
    );
    n1.weft(&["node", "rm", "n3"])?;
    assert_eq!(
        n1.weft_json(&["node", "ls"])?.as_array().map(Vec::len),
        Some(1)
    );
    let status = n1.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    Ok(())
}

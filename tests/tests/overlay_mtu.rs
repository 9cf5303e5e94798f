//! The overlay's MTU end to end, on an underlay lowered to MTU 1400 (an
//! overlay MTU of 1350), in both encapsulation modes: containers get the
//! overlay MTU by default; containers given 1500 anyway still move 1 MB
//! over TCP both ways with no fragment created or reassembled anywhere,
//! because the datapath clamps the TCP MSS; a DF ping too big for the
//! overlay is answered with fragmentation-needed from the gateway and the
//! container's route learns the MTU; a big packet without DF is a named
//! drop, never a fragmented VXLAN packet.

use anyhow::{Context, Result};
use weft_tests::{
    netns::NetNs,
    overlay::{Cluster, ClusterNet},
    traffic::{tcp_echo, tcp_mss, udp_echo},
    underlay::{frag_creates, reassembly_requests},
};

const BLUE: ClusterNet = ClusterNet {
    name: "blue",
    octet: 1,
    vni: 100,
};
const UNDERLAY_MTU: u32 = 1400;
const OVERLAY_MTU: u32 = UNDERLAY_MTU - 50;

/// Fragments created and reassembled in every namespace of the cluster
/// and in the given containers.
fn fragments(cluster: &Cluster, containers: &[&NetNs]) -> Result<u64> {
    let mut all: Vec<&NetNs> = cluster.nodes.iter().map(|n| &n.node.ns).collect();
    all.push(&cluster.underlay.switch);
    all.extend(containers);
    let mut total = 0;
    for ns in all {
        total += frag_creates(ns)? + reassembly_requests(ns)?;
    }
    Ok(total)
}

/// `ip -o link show eth0` in `ns` names MTU `mtu`.
fn assert_link_mtu(ns: &NetNs, mtu: u32) -> Result<()> {
    let out = ns.exec(&["ip", "-o", "link", "show", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(" mtu {mtu} ")),
        "eth0 in {} should have MTU {mtu}: {text}",
        ns.name()
    );
    Ok(())
}

/// One DF ping of `size` payload bytes from `ns` to `ip`: its output.
fn df_ping(ns: &NetNs, ip: &str, size: u32, df: bool) -> Result<String> {
    let size = size.to_string();
    let pmtu = if df { "do" } else { "dont" };
    let out = ns.exec_unchecked(&[
        "ping", "-n", "-c", "1", "-W", "1", "-M", pmtu, "-s", &size, ip,
    ])?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn low_mtu_underlay(encap: &str) -> Result<()> {
    let cluster = Cluster::with_mtu(encap, 2, &[BLUE], UNDERLAY_MTU)?;
    let node = |i: usize| &cluster.nodes[i].node;
    let (d1, _) = cluster.container_with_mtu(0, "blue", "d1", None)?;
    let (d2, ip_d2) = cluster.container_with_mtu(1, "blue", "d2", None)?;
    assert_link_mtu(&d1, OVERLAY_MTU)?;
    assert_link_mtu(&d2, OVERLAY_MTU)?;
    let (w1, ip_w1) = cluster.container_with_mtu(0, "blue", "w1", Some(1500))?;
    let (w2, ip_w2) = cluster.container_with_mtu(1, "blue", "w2", Some(1500))?;
    assert_link_mtu(&w1, 1500)?;

    let before = fragments(&cluster, &[&d1, &d2, &w1, &w2])?;
    // Both ends of a connection between 1500-MTU containers settle on an
    // MSS the overlay carries: each SYN was clamped on its way in.
    let (client, server) = tcp_mss(&w2, &ip_w2, &w1)?;
    let max_mss = OVERLAY_MTU - 40;
    assert!(
        client <= max_mss && server <= max_mss,
        "{encap}: MSS {client}/{server} must be clamped to {max_mss}"
    );
    tcp_echo(&w2, &ip_w2, &w1, 1 << 20).context("1 MB TCP w1 -> w2 at MTU 1500")?;
    tcp_echo(&w1, &ip_w1, &w2, 1 << 20).context("1 MB TCP w2 -> w1 at MTU 1500")?;
    tcp_echo(&d2, &ip_d2, &d1, 1 << 20).context("1 MB TCP d1 -> d2 at the default MTU")?;
    tcp_echo(&w2, &ip_w2, &d1, 1 << 20).context("1 MB TCP d1 -> w2, mixed MTUs")?;
    assert!(udp_echo(&d2, &ip_d2, &d1)?, "{encap}: UDP d1 -> d2");
    assert_eq!(
        fragments(&cluster, &[&d1, &d2, &w1, &w2])?,
        before,
        "{encap}: no fragment may be created or reassembled anywhere"
    );

    // A DF packet too big for the overlay: fragmentation-needed from the
    // gateway with the overlay's MTU, which the container's route keeps.
    let sent = node(0).forwards("frag_needed_sent")?;
    let big = OVERLAY_MTU - 28 + 1;
    let text = df_ping(&w1, &ip_w2, big, true)?;
    assert!(
        text.contains(&format!("mtu = {OVERLAY_MTU}")),
        "{encap}: a {} byte DF ping must get frag-needed (mtu = {OVERLAY_MTU}): {text}",
        big + 28
    );
    assert!(
        node(0).forwards("frag_needed_sent")? > sent,
        "frag-needed counted"
    );
    let route = w1.exec(&["ip", "-o", "route", "get", &ip_w2])?;
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains(&format!("mtu {OVERLAY_MTU}")),
        "{encap}: w1's route to w2 learned the overlay MTU: {route}"
    );
    let text = df_ping(&w1, &ip_w2, OVERLAY_MTU - 28, true)?;
    assert!(
        text.contains("1 received"),
        "{encap}: a DF ping of exactly the overlay MTU passes: {text}"
    );

    // Without DF, from a container that has not learned the MTU: dropped
    // by name, not fragmented on the underlay.
    let (w3, _) = cluster.container_with_mtu(0, "blue", "w3", Some(1500))?;
    let dropped = node(0).drops("overlay_mtu_exceeded")?;
    let text = df_ping(&w3, &ip_w2, big, false)?;
    assert!(text.contains("0 received"), "{encap}: {text}");
    assert!(
        node(0).drops("overlay_mtu_exceeded")? > dropped,
        "{encap}: counted as overlay_mtu_exceeded"
    );
    assert_eq!(
        fragments(&cluster, &[&d1, &d2, &w1, &w2, &w3])?,
        before,
        "{encap}: still no fragment anywhere"
    );
    Ok(())
}

#[test]
fn bpf_encap_low_mtu_underlay() -> Result<()> {
    low_mtu_underlay("bpf")
}

#[test]
fn tunnel_encap_low_mtu_underlay() -> Result<()> {
    low_mtu_underlay("tunnel")
}

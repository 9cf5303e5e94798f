//! The overlay harness on its own (tests/src/underlay.rs): nodes joined by
//! the underlay switch reach each other's underlay IPs at the configured
//! MTU; two kernel-VXLAN (Flannel-style) peers carry ping, TCP and UDP
//! between their containers without fragmenting the underlay; two routed
//! peers do the same without encapsulation. These are the interop peer and
//! the baselines the weft overlay is compared with.

use anyhow::{Context, Result};
use weft_tests::{
    traffic::{tcp_echo, udp_echo},
    underlay::{PeerKind, Underlay, VXLAN_OVERHEAD, frag_creates, reassembly_requests},
};

const MTU: u32 = 1400;

#[test]
fn weft_nodes_reach_each_other_over_the_underlay() -> Result<()> {
    let underlay = Underlay::new(MTU)?;
    let a = underlay.weft_node()?;
    let b = underlay.weft_node()?;
    assert_ne!(a.underlay_ip, b.underlay_ip, "each node has its own IP");
    assert_eq!(a.node.ns.ping(&b.underlay_ip.to_string(), 2)?, 2, "a -> b");
    // A full-size DF ping fits the underlay MTU; one byte more does not.
    let fits = (MTU - 28).to_string();
    let too_big = (MTU - 27).to_string();
    let b_ip = b.underlay_ip.to_string();
    let ok = a.node.ns.exec_unchecked(&[
        "ping", "-n", "-q", "-c", "1", "-W", "1", "-M", "do", "-s", &fits, &b_ip,
    ])?;
    assert!(ok.status.success(), "a {MTU}-byte DF packet must pass");
    let refused = a.node.ns.exec_unchecked(&[
        "ping", "-n", "-q", "-c", "1", "-W", "1", "-M", "do", "-s", &too_big, &b_ip,
    ])?;
    assert!(
        !refused.status.success(),
        "a DF packet over the underlay MTU must not pass"
    );
    Ok(())
}

#[test]
fn kernel_vxlan_peers_carry_traffic_without_fragments() -> Result<()> {
    let underlay = Underlay::new(MTU)?;
    let mac1 = [0x02, 0x6b, 0x76, 0, 0, 1];
    let mac2 = [0x02, 0x6b, 0x76, 0, 0, 2];
    let p1 = underlay.peer_node(
        PeerKind::KernelVxlan {
            vni: 42,
            vtep_mac: mac1,
        },
        "10.9.1.0/24",
    )?;
    let p2 = underlay.peer_node(
        PeerKind::KernelVxlan {
            vni: 42,
            vtep_mac: mac2,
        },
        "10.9.2.0/24",
    )?;
    p1.add_remote("10.9.2.0/24", p2.underlay_ip, mac2)?;
    p2.add_remote("10.9.1.0/24", p1.underlay_ip, mac1)?;
    assert_eq!(p1.mtu, MTU - VXLAN_OVERHEAD);
    let (c1, _ip1) = p1.container()?;
    let (c2, ip2) = p2.container()?;
    let ip2 = ip2.to_string();

    let frags_before = frag_creates(&p1.ns)? + frag_creates(&p2.ns)?;
    assert_eq!(c1.ping(&ip2, 3)?, 3, "ping across the kernel VXLAN");
    tcp_echo(&c2, &ip2, &c1, 1 << 20).context("1 MB TCP across the kernel VXLAN")?;
    assert!(udp_echo(&c2, &ip2, &c1)?, "UDP across the kernel VXLAN");
    let frags_after = frag_creates(&p1.ns)? + frag_creates(&p2.ns)?;
    assert_eq!(
        frags_after, frags_before,
        "the container MTU must keep the underlay free of fragments"
    );
    assert_eq!(reassembly_requests(&p2.ns)?, 0, "nothing to reassemble");

    // The traffic really went through VXLAN: the device counted it.
    let stats = p1
        .ns
        .exec(&["cat", "/sys/class/net/vxlan0/statistics/tx_bytes"])?;
    let tx: u64 = String::from_utf8_lossy(&stats.stdout).trim().parse()?;
    assert!(
        tx > 1 << 20,
        "vxlan0 sent {tx} bytes; expected the 1 MB transfer"
    );

    // A wrong VNI on one side breaks the path: the peers are not faking it.
    let p3 = underlay.peer_node(
        PeerKind::KernelVxlan {
            vni: 43,
            vtep_mac: [0x02, 0x6b, 0x76, 0, 0, 3],
        },
        "10.9.3.0/24",
    )?;
    p3.add_remote("10.9.2.0/24", p2.underlay_ip, mac2)?;
    let (c3, _) = p3.container()?;
    assert_eq!(c3.ping(&ip2, 2)?, 0, "VNI 43 must not reach VNI 42");
    Ok(())
}

#[test]
fn routed_peers_carry_traffic_unencapsulated() -> Result<()> {
    let underlay = Underlay::new(MTU)?;
    let r1 = underlay.peer_node(PeerKind::Routed, "10.8.1.0/24")?;
    let r2 = underlay.peer_node(PeerKind::Routed, "10.8.2.0/24")?;
    r1.add_remote("10.8.2.0/24", r2.underlay_ip, [0; 6])?;
    r2.add_remote("10.8.1.0/24", r1.underlay_ip, [0; 6])?;
    assert_eq!(r1.mtu, MTU, "no encapsulation, no overhead");
    let (c1, _) = r1.container()?;
    let (c2, ip2) = r2.container()?;
    let ip2 = ip2.to_string();
    assert_eq!(c1.ping(&ip2, 3)?, 3, "ping over plain routes");
    tcp_echo(&c2, &ip2, &c1, 1 << 20).context("1 MB TCP over plain routes")?;
    assert!(udp_echo(&c2, &ip2, &c1)?, "UDP over plain routes");
    Ok(())
}

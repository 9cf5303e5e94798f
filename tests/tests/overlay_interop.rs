//! Interoperation with the kernel's own VXLAN: a weft node and a node that
//! runs only a `vxlan` device with static FDB entries, neighbours and
//! onlink routes (the way Flannel's vxlan backend sets it up), on one
//! underlay, one network and VNI. Ping, 1 MB TCP and UDP both ways, in both
//! of weft's encapsulation modes, with no fragments and both ends agreeing
//! on an MSS the overlay carries; and a port published on the weft node
//! reached by the kernel node's container, which does not masquerade: the
//! request comes over the underlay from a pod address, the reply goes back
//! translated through the overlay.

use anyhow::{Context, Result};
use weft_tests::{
    traffic::{
        join, tcp_echo, tcp_echo_from, tcp_echo_server, tcp_mss, udp_echo, udp_echo_from,
        udp_echo_server,
    },
    underlay::{KERNEL_VTEP, PeerKind, Underlay, frag_creates, reassembly_requests},
};

const VNI: u32 = 100;
const PEER_VTEP: [u8; 6] = [0x02, 0x6b, 0x76, 0, 0, 9];

/// Bytes the kernel node's vxlan device counted in `dir` (`rx`/`tx`).
fn vtep_bytes(ns: &weft_tests::netns::NetNs, dir: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{KERNEL_VTEP}/statistics/{dir}_bytes");
    let out = ns.exec(&["cat", &path])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn with_kernel_vxlan_node(encap: &str, encap_kind: &str) -> Result<()> {
    let underlay = Underlay::new(1500)?;
    let weft = underlay.weft_node()?;
    weft.node.weft(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.1.0.0/16",
        "--vni",
        &VNI.to_string(),
    ])?;
    weft.set_overlay(encap, &["blue=10.1.1.0/24"])?;
    let peer = underlay.peer_node(
        PeerKind::KernelVxlan {
            vni: VNI,
            vtep_mac: PEER_VTEP,
        },
        "10.1.9.0/24",
    )?;
    weft.add_node(
        "kernel-peer",
        peer.underlay_ip,
        &["blue=10.1.9.0/24"],
        Some(PEER_VTEP),
    )?;
    peer.add_remote("10.1.1.0/24", weft.underlay_ip, weft.vtep_mac()?)?;

    let (c1, ip_c1) = weft.node.container("blue", "c1")?;
    let (k1, ip_k1) = peer.container()?;
    let ip_k1 = ip_k1.to_string();
    let frags = |()| -> Result<u64> {
        Ok(frag_creates(&weft.node.ns)?
            + frag_creates(&peer.ns)?
            + reassembly_requests(&weft.node.ns)?
            + reassembly_requests(&peer.ns)?)
    };
    let before = frags(())?;
    let (rx, tx) = (vtep_bytes(&peer.ns, "rx")?, vtep_bytes(&peer.ns, "tx")?);

    assert_eq!(c1.ping(&ip_k1, 3)?, 3, "{encap}: weft -> kernel VXLAN node");
    assert_eq!(k1.ping(&ip_c1, 3)?, 3, "{encap}: kernel VXLAN node -> weft");
    tcp_echo(&k1, &ip_k1, &c1, 1 << 20).context("1 MB TCP weft -> kernel node")?;
    tcp_echo(&c1, &ip_c1, &k1, 1 << 20).context("1 MB TCP kernel node -> weft")?;
    assert!(
        udp_echo(&k1, &ip_k1, &c1)?,
        "{encap}: UDP weft -> kernel node"
    );
    assert!(
        udp_echo(&c1, &ip_c1, &k1)?,
        "{encap}: UDP kernel node -> weft"
    );
    assert_eq!(frags(())?, before, "{encap}: no fragments");

    // Both ways really went through the kernel's vxlan device and weft's
    // encapsulation and decapsulation.
    assert!(
        vtep_bytes(&peer.ns, "rx")? > rx + (2 << 20),
        "peer decapsulated"
    );
    assert!(
        vtep_bytes(&peer.ns, "tx")? > tx + (2 << 20),
        "peer encapsulated"
    );
    assert!(weft.node.forwards(encap_kind)? > 0, "weft encapsulated");
    assert!(
        weft.node.forwards("decap_delivered")? > 0,
        "weft delivered decapsulated"
    );

    // The kernel node's containers have MTU 1450 (Flannel's), weft's
    // endpoint the overlay's by default: both ends settle on 1410 or less.
    let (client, server) = tcp_mss(&c1, &ip_c1, &k1)?;
    assert!(
        client <= 1410 && server <= 1410,
        "{encap}: MSS {client}/{server}"
    );

    // A published port on the weft node, from the kernel node's container:
    // its request reaches the node's address over the underlay with the
    // pod address as source (no masquerade there), so the reply must be
    // translated (source: node address and published port) and sent
    // through the overlay.
    weft.node.weft(&["publish", "c1", "8080:8000"])?;
    weft.node.weft(&["publish", "c1", "5353:5300/udp"])?;
    let node_ip = weft.underlay_ip.to_string();
    let server = tcp_echo_server(&c1, 8000, 1)?;
    assert!(
        tcp_echo_from(&k1, &format!("{node_ip}:8080"), b"published, from a pod")?,
        "{encap}: TCP to a published port from the kernel node's container"
    );
    assert_eq!(
        join(server)?[0].ip().to_string(),
        ip_k1,
        "the client's own address"
    );
    let server = udp_echo_server(&c1, 5300)?;
    assert!(
        udp_echo_from(&k1, &format!("{node_ip}:5353"), b"udp from a pod")?,
        "{encap}: UDP to a published port from the kernel node's container"
    );
    assert_eq!(join(server)?.ip().to_string(), ip_k1);
    assert!(weft.node.forwards("dnat")? >= 2, "DNAT counted");

    // The node's flags follow its publications (only a publishing node
    // pays for the reply check): the kernel matches the state with ports
    // published and after the last one is gone.
    let matches = || -> Result<bool> {
        Ok(weft.node.weft_json(&["status"])?["kernel_matches_state"] == true)
    };
    assert!(matches()?, "{encap}: WEFT_NODE carries the publishing flag");
    weft.node.weft(&["unpublish", "8080/tcp"])?;
    weft.node.weft(&["unpublish", "5353/udp"])?;
    assert!(
        matches()?,
        "{encap}: WEFT_NODE lost the flag with the last port"
    );
    Ok(())
}

#[test]
fn bpf_encap_interoperates_with_a_kernel_vxlan_node() -> Result<()> {
    with_kernel_vxlan_node("bpf", "encap_bpf")
}

#[test]
fn tunnel_encap_interoperates_with_a_kernel_vxlan_node() -> Result<()> {
    with_kernel_vxlan_node("tunnel", "encap_tunnel")
}

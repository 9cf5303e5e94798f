//! The overlay's packet-table topology and VXLAN frame builders, shared by
//! the overlay packet tables and `prog_cost`: the model of
//! [`crate::topology::nat_topology`] plus this node's overlay (underlay
//! address [`NODE_IP`], VNIs for networks A and B, this node's and a
//! remote node's pod CIDRs), and the exact frames the bpf encapsulation
//! must produce and the remote node sends.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use weft::model::{
    Encap, Mac, Model, NodeOverlay, NodeUplink, PodSubnet, RemoteNode, naming::VXLAN_IFNAME,
};
use weft_common::{
    maps::{ENCAP_BPF, ENCAP_TUNNEL},
    overlay::{VXLAN_PORT, flow_src_port},
};

use crate::{
    fixture::{Datapath, Net},
    frames::{ETH_HLEN, internet_checksum},
    topology::{NET_A, NET_B, NODE_IP, nat_model},
};

/// The remote node's underlay address (on the uplink's /24).
pub const REMOTE_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 3);
pub const LOCAL_VTEP: [u8; 6] = [0x0a, 0x56, 192, 168, 77, 2];
pub const REMOTE_VTEP: [u8; 6] = [0x0a, 0x56, 192, 168, 77, 3];
pub const VNI_A: u32 = 100;
pub const VNI_B: u32 = 200;
/// Remote pod CIDRs: the upper halves of networks A and B (this node's
/// endpoints are in the lower halves).
pub const REMOTE_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 130);
pub const REMOTE_B: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 130);
/// In network A, outside this node's pod CIDR and every remote one.
pub const UNROUTED_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 200);
/// In this node's own pod CIDR of A, no endpoint.
pub const EMPTY_LOCAL_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);

/// `nat_topology` plus the overlay (see [`overlay_model`]).
pub fn overlay_topology(node: NodeUplink, mode: u8) -> Result<Datapath> {
    Datapath::with_model(overlay_model(node, mode)?)
}

/// `nat_topology`'s model plus the overlay (see [`add_overlay`]).
pub fn overlay_model(node: NodeUplink, mode: u8) -> Result<Model> {
    let mut m = nat_model(Some(node))?;
    add_overlay(&mut m, mode)?;
    Ok(m)
}

/// Adds the overlay to `m`, a model with networks A and B and the node
/// set: this node (its address the underlay's) in `mode` (`ENCAP_BPF` or
/// `ENCAP_TUNNEL`) with overlay MTU 1450, its own pod CIDRs 10.1.0.0/25
/// and 10.2.0.0/25, the remote node's 10.1.0.128/26 (A) and 10.2.0.128/25
/// (B), VNIs [`VNI_A`] and [`VNI_B`]. In tunnel mode the uplink also
/// stands in for the vxlan device.
pub fn add_overlay(m: &mut Model, mode: u8) -> Result<()> {
    let encap = match mode {
        ENCAP_BPF => Encap::Bpf,
        ENCAP_TUNNEL => Encap::Tunnel,
        other => bail!("no encapsulation mode {other}"),
    };
    for (net, vni) in [(NET_A, VNI_A), (NET_B, VNI_B)] {
        m.network_mut(&net.name())
            .with_context(|| format!("the overlay needs network {}", net.id))?
            .vni = vni;
    }
    let subnet = |net: Net, cidr: &str| -> Result<PodSubnet> {
        Ok(PodSubnet {
            network: net.name(),
            cidr: cidr.parse::<Ipv4Net>()?,
        })
    };
    let remote = RemoteNode {
        name: "remote".into(),
        underlay_ip: REMOTE_UNDERLAY,
        vtep_mac: Mac(REMOTE_VTEP),
        subnets: vec![
            subnet(NET_A, "10.1.0.128/26")?,
            subnet(NET_B, "10.2.0.128/25")?,
        ],
    };
    let own = vec![subnet(NET_A, "10.1.0.0/25")?, subnet(NET_B, "10.2.0.0/25")?];
    let node = m.node.as_mut().context("the overlay needs the node set")?;
    let tunnel = encap == Encap::Tunnel;
    node.overlay = Some(NodeOverlay {
        encap,
        vtep_mac: Mac(LOCAL_VTEP),
        mtu: 1450,
        vxlan_ifname: tunnel.then(|| VXLAN_IFNAME.to_owned()),
        vxlan_ifindex: if tunnel { node.uplink_ifindex } else { 0 },
        xdp: false,
    });
    node.subnets = own;
    m.remote_nodes.push(remote);
    Ok(())
}

/// The frame the bpf mode must produce for `inner` (an Ethernet frame,
/// its IPv4 packet as it must travel) with outer UDP source port `sport`:
/// outer Ethernet left to `bpf_redirect_neigh` (zeros), IPv4 (DF, TTL 64,
/// id 0, checksum), UDP to 4789 with checksum 0, VXLAN with the I flag,
/// inner Ethernet remote VTEP <- local VTEP.
pub fn encapsulated(
    inner: &[u8],
    outer: (Ipv4Addr, Ipv4Addr),
    sport: u16,
    vni: u32,
    flags: u8,
) -> Vec<u8> {
    let packet = &inner[ETH_HLEN..];
    let ip_len = (20 + 8 + 8 + 14 + packet.len()) as u16;
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&ip_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&outer.0.octets());
    ip.extend_from_slice(&outer.1.octets());
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    f.extend_from_slice(&(ip_len - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    let v = vni.to_be_bytes();
    f.extend_from_slice(&[flags, 0, 0, 0, v[1], v[2], v[3], 0]);
    f.extend_from_slice(&REMOTE_VTEP);
    f.extend_from_slice(&LOCAL_VTEP);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(packet);
    f
}

/// A VXLAN frame from the remote node to this one carrying `inner`.
pub fn arriving(inner: &[u8], vni: u32, flags: u8) -> Vec<u8> {
    let mut f = encapsulated(inner, (REMOTE_UNDERLAY, NODE_IP), 50_000, vni, flags);
    f[..6].copy_from_slice(&[0x02, 0x77, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0x77, 0, 0, 0, 3]);
    f
}

/// The outer UDP source port the datapath must pick for `inner`.
pub fn sport_of(inner: &[u8]) -> u16 {
    let ip = &inner[ETH_HLEN..];
    let l4 = usize::from(ip[0] & 0x0f) * 4;
    let ports = match ip[9] {
        6 | 17 => u32::from_ne_bytes([ip[l4], ip[l4 + 1], ip[l4 + 2], ip[l4 + 3]]),
        _ => 0,
    };
    flow_src_port(
        u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        ports,
        ip[9],
    )
}

/// Inner Ethernet addresses of what the remote node sends here.
pub fn vtep_to_vtep() -> ([u8; 6], [u8; 6]) {
    (LOCAL_VTEP, REMOTE_VTEP)
}

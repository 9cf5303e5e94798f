//! Nodes without weft on the underlay, the peers an overlay is compared
//! with: containers on a Linux bridge, kernel forwarding, and either the
//! kernel's own VXLAN set up the way Flannel's vxlan backend does
//! ([`PeerKind::KernelVxlan`]) or plain routes over the underlay with no
//! encapsulation at all ([`PeerKind::Routed`]): the limit any overlay is
//! measured against.

use std::{cell::Cell, net::Ipv4Addr};

use anyhow::{Context, Result, bail};

use crate::{
    links::plug_container,
    mac::mac_string,
    netns::NetNs,
    underlay::{UNDERLAY_IF, Underlay, VXLAN_OVERHEAD, VXLAN_PORT},
};

/// How a peer node reaches the other nodes' pod subnets.
#[derive(Clone, Copy, Debug)]
pub enum PeerKind {
    /// The kernel's VXLAN as Flannel's vxlan backend sets it up: a `vxlan`
    /// device (this VNI, dstport 4789, local underlay IP, nolearning) with
    /// this MAC, static FDB entries (remote VTEP MAC -> remote underlay
    /// IP), permanent neighbours and onlink routes via the device.
    KernelVxlan { vni: u32, vtep_mac: [u8; 6] },
    /// No encapsulation: a route per remote pod subnet via the remote
    /// node's underlay IP.
    Routed,
}

/// The bridge the peer's containers hang on (a Docker/Flannel `cni0`).
const PEER_BRIDGE: &str = "cbr0";
/// The kernel VXLAN device's name (Flannel: `flannel.1`).
pub const KERNEL_VTEP: &str = "vxlan0";

/// A node without weft: containers on a Linux bridge, kernel forwarding,
/// and either the kernel's VXLAN or plain routes towards the other nodes.
pub struct PeerNode {
    pub ns: NetNs,
    pub kind: PeerKind,
    pub underlay_ip: Ipv4Addr,
    /// The bridge's address: the containers' default gateway.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// The containers' MTU (the underlay's less the VXLAN overhead).
    pub mtu: u32,
    containers: Cell<u8>,
}

impl Underlay {
    /// A peer node without weft (see [`PeerNode`]) serving `pod_cidr`
    /// (`a.b.c.0/24`, the gateway `.1` on its bridge) with IPv4 forwarding.
    pub fn peer_node(&self, kind: PeerKind, pod_cidr: &str) -> Result<PeerNode> {
        let ns = NetNs::new("wtpeer")?;
        let underlay_ip = self.plug(&ns)?;
        let (net, prefix) = pod_cidr
            .split_once('/')
            .context("pod CIDR is a.b.c.d/len")?;
        let net: Ipv4Addr = net.parse()?;
        let gateway = Ipv4Addr::from(u32::from(net) + 1);
        let container_mtu = match kind {
            PeerKind::KernelVxlan { .. } => self.mtu - VXLAN_OVERHEAD,
            PeerKind::Routed => self.mtu,
        };
        ns.add_bridge(PEER_BRIDGE, Some(container_mtu))?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/{prefix}"),
            "dev",
            PEER_BRIDGE,
        ])?;
        ns.sysctl(&["net.ipv4.ip_forward=1"])?;
        if let PeerKind::KernelVxlan { vni, vtep_mac } = kind {
            let local = underlay_ip.to_string();
            ns.exec(&[
                "ip",
                "link",
                "add",
                KERNEL_VTEP,
                "address",
                &mac_string(vtep_mac),
                "mtu",
                &container_mtu.to_string(),
                "type",
                "vxlan",
                "id",
                &vni.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
                "local",
                &local,
                "dev",
                UNDERLAY_IF,
                "nolearning",
            ])?;
            ns.exec(&["ip", "link", "set", KERNEL_VTEP, "up"])?;
        }
        Ok(PeerNode {
            ns,
            kind,
            underlay_ip,
            gateway,
            prefix: prefix.parse()?,
            mtu: container_mtu,
            containers: Cell::new(0),
        })
    }
}

impl PeerNode {
    /// Makes `pod_cidr` on the node at `underlay_ip` reachable. For the
    /// kernel VXLAN, `vtep_mac` is that node's VTEP MAC: Flannel's
    /// neighbour (the subnet's `.0` -> MAC), FDB (MAC -> underlay IP) and
    /// `onlink` route via the device.
    pub fn add_remote(
        &self,
        pod_cidr: &str,
        underlay_ip: Ipv4Addr,
        vtep_mac: [u8; 6],
    ) -> Result<()> {
        let remote = underlay_ip.to_string();
        match self.kind {
            PeerKind::Routed => {
                self.ns
                    .exec(&["ip", "route", "add", pod_cidr, "via", &remote])?;
            }
            PeerKind::KernelVxlan { .. } => {
                let net = pod_cidr
                    .split_once('/')
                    .map(|(net, _)| net)
                    .context("pod CIDR is a.b.c.d/len")?;
                let mac = mac_string(vtep_mac);
                self.ns.exec(&[
                    "ip",
                    "neigh",
                    "replace",
                    net,
                    "lladdr",
                    &mac,
                    "dev",
                    KERNEL_VTEP,
                    "nud",
                    "permanent",
                ])?;
                self.ns.exec(&[
                    "bridge",
                    "fdb",
                    "append",
                    &mac,
                    "dev",
                    KERNEL_VTEP,
                    "dst",
                    &remote,
                    "self",
                    "permanent",
                ])?;
                self.ns.exec(&[
                    "ip",
                    "route",
                    "add",
                    pod_cidr,
                    "via",
                    net,
                    "dev",
                    KERNEL_VTEP,
                    "onlink",
                ])?;
            }
        }
        Ok(())
    }

    /// A container namespace on the bridge with the next free address of
    /// the pod CIDR (from `.2`) and a default route via the gateway.
    /// Returns it and its IP.
    pub fn container(&self) -> Result<(NetNs, Ipv4Addr)> {
        let n = self.containers.get() + 1;
        if n > 200 {
            bail!("a peer node holds up to 200 containers");
        }
        self.containers.set(n);
        let ip = Ipv4Addr::from(u32::from(self.gateway) + u32::from(n));
        let ns = NetNs::new("wtpc")?;
        plug_container(
            &self.ns,
            PEER_BRIDGE,
            &format!("pc{n}"),
            &ns,
            (
                &format!("{ip}/{}", self.prefix),
                Some(&self.gateway.to_string()),
            ),
            Some(self.mtu),
        )?;
        Ok((ns, ip))
    }
}

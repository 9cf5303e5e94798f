//! The underlay for overlay tests: node namespaces joined by veths to an
//! "underlay switch" namespace that holds a Linux bridge the test owns.
//! Every node gets its own underlay IP (`172.30.0.<n>/24`, n = 1, 2, ...)
//! on its end, named [`UNDERLAY_IF`]; the underlay MTU is set on both ends
//! and on the bridge. Everything goes away with the namespaces (also when a
//! test fails): a veth is deleted with the namespace it sits in.
//!
//! Besides weft nodes ([`Underlay::weft_node`]) it builds the peers an
//! overlay is compared with: a node that runs only the kernel's own VXLAN
//! the way Flannel's vxlan backend does ([`PeerKind::KernelVxlan`]) and a
//! node with plain routes over the underlay, no encapsulation at all
//! ([`PeerKind::Routed`]): the limit any overlay is measured against.

use std::{cell::Cell, net::Ipv4Addr};

use anyhow::{Context, Result, bail};

use crate::{netns::NetNs, node::Node};

/// The underlay interface's name in every node namespace.
pub const UNDERLAY_IF: &str = "underlay";
/// The bridge in the switch namespace.
const SWITCH_BRIDGE: &str = "br0";
/// VXLAN's IANA port (RFC 7348), as Flannel and weft use it.
pub const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8: what encapsulation adds.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The switch namespace and its bridge; nodes are plugged in one by one.
pub struct Underlay {
    pub switch: NetNs,
    pub mtu: u32,
    plugged: Cell<u8>,
}

impl Underlay {
    /// A switch namespace with an up bridge of MTU `mtu`.
    pub fn new(mtu: u32) -> Result<Self> {
        let switch = NetNs::new("wtsw")?;
        let mtu_s = mtu.to_string();
        switch.exec(&[
            "ip",
            "link",
            "add",
            SWITCH_BRIDGE,
            "mtu",
            &mtu_s,
            "type",
            "bridge",
        ])?;
        switch.exec(&["ip", "link", "set", SWITCH_BRIDGE, "up"])?;
        Ok(Self {
            switch,
            mtu,
            plugged: Cell::new(0),
        })
    }

    /// Plugs `ns` into the switch: a veth [`UNDERLAY_IF`] in `ns` with the
    /// next underlay IP /24, up, MTU set. Returns that IP.
    pub fn plug(&self, ns: &NetNs) -> Result<Ipv4Addr> {
        let n = self.plugged.get() + 1;
        if n > 250 {
            bail!("the underlay has room for 250 nodes");
        }
        self.plugged.set(n);
        let ip = underlay_ip(n);
        let port = format!("p{n}");
        let mtu = self.mtu.to_string();
        self.switch.exec(&[
            "ip",
            "link",
            "add",
            &port,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            UNDERLAY_IF,
            "mtu",
            &mtu,
            "netns",
            ns.name(),
        ])?;
        self.switch
            .exec(&["ip", "link", "set", &port, "master", SWITCH_BRIDGE])?;
        self.switch.exec(&["ip", "link", "set", &port, "up"])?;
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", UNDERLAY_IF])?;
        ns.exec(&["ip", "link", "set", UNDERLAY_IF, "up"])?;
        Ok(ip)
    }

    /// A weft node plugged into the underlay. Its overlay (networks, `node
    /// set`/`node add`) is left to the test.
    pub fn weft_node(&self) -> Result<UnderlayNode> {
        let node = Node::new()?;
        let underlay_ip = self.plug(&node.ns)?;
        Ok(UnderlayNode { node, underlay_ip })
    }

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
        let mtu = container_mtu.to_string();
        ns.exec(&[
            "ip",
            "link",
            "add",
            PEER_BRIDGE,
            "mtu",
            &mtu,
            "type",
            "bridge",
        ])?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/{prefix}"),
            "dev",
            PEER_BRIDGE,
        ])?;
        ns.exec(&["ip", "link", "set", PEER_BRIDGE, "up"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
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
                &mtu,
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

/// The `n`-th underlay address.
pub fn underlay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, n)
}

/// A weft node on the underlay.
pub struct UnderlayNode {
    pub node: Node,
    pub underlay_ip: Ipv4Addr,
}

impl UnderlayNode {
    /// Turns the overlay on with the underlay as uplink: `weft node set
    /// --uplink underlay --ip <underlay IP> --encap ENCAP --subnet S...`
    /// (`S` = `NET=CIDR`, this node's pod CIDRs).
    pub fn set_overlay(&self, encap: &str, subnets: &[&str]) -> Result<()> {
        let ip = self.underlay_ip.to_string();
        let mut args = vec![
            "node",
            "set",
            "--uplink",
            UNDERLAY_IF,
            "--ip",
            &ip,
            "--encap",
            encap,
        ];
        for s in subnets {
            args.extend(["--subnet", s]);
        }
        self.node.weft(&args)?;
        Ok(())
    }

    /// This node's VTEP MAC, as `weft node show` reports it.
    pub fn vtep_mac(&self) -> Result<[u8; 6]> {
        let shown = self.node.weft_json(&["node", "show"])?;
        let text = shown["overlay"]["vtep_mac"]
            .as_str()
            .with_context(|| format!("node show has no overlay.vtep_mac: {shown}"))?;
        parse_mac(text)
    }

    /// Tells this node about another one: `weft node add NAME --underlay IP
    /// --subnet S... [--vtep-mac MAC]`.
    pub fn add_node(
        &self,
        name: &str,
        underlay_ip: Ipv4Addr,
        subnets: &[&str],
        vtep_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let ip = underlay_ip.to_string();
        let mac = vtep_mac.map(mac_string);
        let mut args = vec!["node", "add", name, "--underlay", &ip];
        for s in subnets {
            args.extend(["--subnet", s]);
        }
        if let Some(mac) = &mac {
            args.extend(["--vtep-mac", mac]);
        }
        self.node.weft(&args)?;
        Ok(())
    }
}

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
        let host_end = format!("pc{n}");
        let mtu = self.mtu.to_string();
        self.ns.exec(&[
            "ip",
            "link",
            "add",
            &host_end,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            ns.name(),
        ])?;
        self.ns
            .exec(&["ip", "link", "set", &host_end, "master", PEER_BRIDGE])?;
        self.ns.exec(&["ip", "link", "set", &host_end, "up"])?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{ip}/{}", self.prefix),
            "dev",
            "eth0",
        ])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &self.gateway.to_string(),
        ])?;
        Ok((ns, ip))
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().with_context(|| format!("short MAC {text}"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {text}"))?;
    }
    if parts.next().is_some() {
        bail!("long MAC {text}");
    }
    Ok(mac)
}

/// IPv4 fragments created by `ns`'s stack so far (`Ip: FragCreates` in
/// /proc/net/snmp): a path that fragments on the way makes it grow.
pub fn frag_creates(ns: &NetNs) -> Result<u64> {
    snmp_ip(ns, "FragCreates")
}

/// Fragments `ns`'s stack had to reassemble (`Ip: ReasmReqds`).
pub fn reassembly_requests(ns: &NetNs) -> Result<u64> {
    snmp_ip(ns, "ReasmReqds")
}

fn snmp_ip(ns: &NetNs, field: &str) -> Result<u64> {
    let out = ns.exec(&["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip_lines = text.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (ip_lines.next(), ip_lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Ip lines in /proc/net/snmp of {}", ns.name());
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == field)
        .with_context(|| format!("no Ip {field} in /proc/net/snmp"))?
        .1
        .parse()
        .with_context(|| format!("Ip {field} is not a number"))
}

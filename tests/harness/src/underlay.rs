//! The underlay for overlay tests and benches: node namespaces joined by
//! veths to an "underlay switch" namespace that holds a Linux bridge the
//! run owns. Every node gets its own underlay IP (`172.30.0.<n>/24`, n = 1,
//! 2, ...) on its end, named [`UNDERLAY_IF`]; the underlay MTU is set on
//! both ends and on the bridge. Everything goes away with the namespaces
//! (also when a test fails): a veth is deleted with the namespace it sits in.
//!
//! Besides weft nodes ([`Underlay::weft_node`]) it plugs in the peers an
//! overlay is compared with ([`crate::peer`]).

use std::{cell::Cell, net::Ipv4Addr};

use anyhow::{Context, Result, bail};

pub use crate::{
    mac::{mac_string, parse_mac},
    peer::{KERNEL_VTEP, PeerKind, PeerNode},
    snmp::{frag_creates, reassembly_requests},
};
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
        switch.add_bridge(SWITCH_BRIDGE, Some(mtu))?;
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
        self.switch
            .add_veth(&port, ns, UNDERLAY_IF, Some(self.mtu))?;
        self.switch.enslave(&port, SWITCH_BRIDGE)?;
        ns.add_addr(UNDERLAY_IF, &format!("{ip}/24"))?;
        Ok(ip)
    }

    /// A weft node plugged into the underlay. Its overlay (networks, `node
    /// set`/`node add`) is left to the caller.
    pub fn weft_node(&self) -> Result<UnderlayNode> {
        let node = Node::new()?;
        let underlay_ip = self.plug(&node.ns)?;
        Ok(UnderlayNode { node, underlay_ip })
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

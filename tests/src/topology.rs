//! The topology every packet table and the per-path cost tool share:
//! networks A and B connected, C isolated, endpoint A1 sending.

use std::net::Ipv4Addr;

use anyhow::Result;
use weft::model::{Model, NodeUplink};

use crate::fixture::{Datapath, Ep, Net, TEST_RUN_IFINDEX, model};

pub const NET_A: Net = Net {
    id: 1,
    subnet: Ipv4Addr::new(10, 1, 0, 0),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 1, 0, 1),
    flood: false,
    masquerade: false,
};
pub const NET_B: Net = Net {
    id: 2,
    subnet: Ipv4Addr::new(10, 2, 0, 0),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 2, 0, 1),
    flood: false,
    masquerade: false,
};
/// Never connected to anything.
pub const NET_C: Net = Net {
    id: 3,
    subnet: Ipv4Addr::new(10, 3, 0, 0),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 3, 0, 1),
    flood: false,
    masquerade: false,
};

/// The sender of every row (the skb's device in a test run).
pub const A1: Ep = Ep {
    ifindex: TEST_RUN_IFINDEX,
    network_id: 1,
    ip: Ipv4Addr::new(10, 1, 0, 2),
    mac: [0x02, 0x57, 10, 1, 0, 2],
    stats_slot: 0,
};
pub const A2: Ep = Ep {
    ifindex: 101,
    network_id: 1,
    ip: Ipv4Addr::new(10, 1, 0, 3),
    mac: [0x02, 0x57, 10, 1, 0, 3],
    stats_slot: 1,
};
pub const B1: Ep = Ep {
    ifindex: 201,
    network_id: 2,
    ip: Ipv4Addr::new(10, 2, 0, 2),
    mac: [0x02, 0x57, 10, 2, 0, 2],
    stats_slot: 2,
};
pub const C1: Ep = Ep {
    ifindex: 301,
    network_id: 3,
    ip: Ipv4Addr::new(10, 3, 0, 2),
    mac: [0x02, 0x57, 10, 3, 0, 2],
    stats_slot: 3,
};

/// Networks A and B connected, C isolated; A1 sends.
pub fn topology() -> Result<Datapath> {
    Datapath::with_model(model(
        &[NET_A, NET_B, NET_C],
        &[A1, A2, B1, C1],
        &[(NET_A, NET_B)],
    )?)
}

/// The node's uplink address in the NAT namespace (see [`NatNode`]).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The uplink's next hop: the default route of the NAT namespace.
pub const UPLINK_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// A host outside every weft network, reached through the uplink.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// MACs of the uplink frames in the tables (the uplink NIC and its peer).
pub const UPLINK_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];

/// A namespace standing in for the node in masquerade tables:
/// `BPF_PROG_TEST_RUN` does `bpf_fib_lookup` in the calling thread's
/// namespace, so the tables run on a thread inside this one. It has an
/// uplink veth with [`NODE_IP`]/24, a default route via [`UPLINK_GATEWAY`]
/// (no neighbour entry: the lookup returns the hop unresolved, which
/// `bpf_redirect_neigh` resolves) and forwarding on.
pub struct NatNode {
    pub ns: crate::netns::NetNs,
    pub uplink_ifindex: u32,
}

impl NatNode {
    pub fn new() -> Result<Self> {
        let ns = crate::netns::NetNs::new("wtnat")?;
        ns.exec(&[
            "ip", "link", "add", "wup0", "type", "veth", "peer", "name", "wup1",
        ])?;
        ns.exec(&["ip", "link", "set", "wup0", "up"])?;
        ns.exec(&["ip", "link", "set", "wup1", "up"])?;
        ns.exec(&["ip", "addr", "add", "192.168.77.2/24", "dev", "wup0"])?;
        ns.exec(&["ip", "route", "add", "default", "via", "192.168.77.1"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let out = ns.exec(&["cat", "/sys/class/net/wup0/ifindex"])?;
        let uplink_ifindex = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        Ok(Self { ns, uplink_ifindex })
    }

    /// The node settings the tables use (`weft node set --uplink wup0 --ip
    /// NODE_IP`): ports `port_min..=port_max`.
    pub fn config(&self, port_min: u16, port_max: u16) -> NodeUplink {
        NodeUplink {
            uplink: "wup0".into(),
            uplink_ifindex: self.uplink_ifindex,
            ip: NODE_IP,
            port_min,
            port_max,
            conntrack_max: None,
            forwarding_before: None,
            overlay: None,
            subnets: Vec::new(),
        }
    }

    /// Runs `f` on a thread inside the namespace and returns its result;
    /// a panic (a failed assertion) is passed on as it was.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self.ns.run_in(f)?.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// [`topology`]'s model with masquerade on network A and the node `node`
/// (none: not configured); network C stays without masquerade.
pub fn nat_model(node: Option<NodeUplink>) -> Result<Model> {
    let masquerading = Net {
        masquerade: true,
        ..NET_A
    };
    let mut m = model(
        &[masquerading, NET_B, NET_C],
        &[A1, A2, B1, C1],
        &[(NET_A, NET_B)],
    )?;
    m.node = node;
    Ok(m)
}

/// [`topology`] with masquerade on network A and the node configured with
/// `node` (network C stays without masquerade).
pub fn nat_topology(node: NodeUplink) -> Result<Datapath> {
    Datapath::with_model(nat_model(Some(node))?)
}

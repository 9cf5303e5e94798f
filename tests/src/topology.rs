//! The topology every packet table and the per-path cost tool share:
//! networks A and B connected, C isolated, endpoint A1 sending.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::fixture::{Datapath, Ep, Net, TEST_RUN_IFINDEX};

pub const NET_A: Net = Net {
    id: 1,
    subnet: Ipv4Addr::new(10, 1, 0, 0),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 1, 0, 1),
    gateway_mac: [0x0a, 0x57, 0x46, 0, 0, 1],
    flood: false,
    masquerade: false,
};
pub const NET_B: Net = Net {
    id: 2,
    subnet: Ipv4Addr::new(10, 2, 0, 0),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 2, 0, 1),
    gateway_mac: [0x0a, 0x57, 0x46, 0, 0, 2],
    flood: false,
    masquerade: false,
};
/// Never connected to anything.
pub const NET_C: Net = Net {
    id: 3,
    subnet: Ipv4Addr::new(10, 3, 0, 0),
    prefix_len: 24,
    gateway: Ipv4Addr::new(10, 3, 0, 1),
    gateway_mac: [0x0a, 0x57, 0x46, 0, 0, 3],
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
    let mut dp = Datapath::load()?;
    for net in [NET_A, NET_B, NET_C] {
        dp.add_network(net)?;
    }
    for ep in [A1, A2, B1, C1] {
        dp.add_endpoint(ep)?;
    }
    dp.connect(NET_A.id, NET_B.id)?;
    Ok(dp)
}

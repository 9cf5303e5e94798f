//! What the engine answers: the JSON the CLI prints with `-o json` (its keys
//! are a contract other tools rely on) and renders as tables.

use std::net::Ipv4Addr;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap,
};

use crate::{
    mac::Mac,
    records::{Endpoint, NodeOverlay, NodeSource, PodSubnet, Proto, ServicePort},
};

/// A service as `service ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceView {
    pub name: String,
    pub id: u32,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub backends: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
    /// Backends taking new connections.
    pub active: usize,
    /// Backends keeping only their established connections.
    pub terminating: usize,
    /// Backends failing this node's health checks (out of the table,
    /// established connections kept).
    #[serde(default)]
    pub unhealthy: usize,
}

/// One backend of a service, as `service inspect` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendView {
    pub endpoint: String,
    pub ip: Ipv4Addr,
    /// `active`, `terminating` or `unhealthy`.
    pub state: String,
    /// Connections the datapath pinned to it, still tracked.
    pub connections: u64,
    /// New connections it was picked for, ever (`WEFT_SVC_COUNTS`).
    #[serde(default)]
    pub new_connections: u64,
    /// Share of the Maglev table's slots it holds.
    pub slots: u32,
    /// The node it lives on, when that is another node (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `service inspect`: the service, its backends and its counters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub service: ServiceView,
    pub members: Vec<BackendView>,
    pub maglev_size: u32,
    /// Connections refused for want of a backend, ever.
    #[serde(default)]
    pub refused: u64,
}

/// A network as `network ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkView {
    pub name: String,
    pub id: u32,
    pub subnet: String,
    pub gateway: Ipv4Addr,
    pub gateway_mac: Mac,
    pub flood: bool,
    /// Traffic to non-weft destinations is masqueraded out of the node's
    /// uplink (when one is set: `weft node set`).
    #[serde(default)]
    pub masquerade: bool,
    pub connected: Vec<String>,
    pub endpoints: usize,
    /// VXLAN network identifier on the overlay.
    #[serde(default)]
    pub vni: u32,
}

/// `network inspect`: the network and its endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: NetworkView,
    pub containers: Vec<Endpoint>,
}

/// The answer to a removal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Removed {
    pub removed: String,
}

/// The answer to connect and disconnect.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connection {
    pub networks: [String; 2],
    pub connected: bool,
}

/// `node show`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    pub configured: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_max: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_size: Option<u32>,
    /// Connections the conntrack table may hold before new ones are
    /// refused (`conntrack_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_max: Option<u64>,
    /// Whether `weft_from_uplink`'s link is pinned.
    pub attached: bool,
    /// `net.ipv4.conf.all.forwarding` in the node namespace.
    pub forwarding: bool,
    /// The overlay (`--encap`), if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<NodeOverlay>,
    /// This node's pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<PodSubnet>,
}

/// Another node of the overlay, as `node ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: Mac,
    pub subnets: Vec<SubnetEntry>,
    /// `static` (`node add`) or `cluster` (learned from the cluster store).
    #[serde(default)]
    pub source: NodeSource,
}

/// One pod CIDR of a node, with the VNI that carries it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubnetEntry {
    pub network: String,
    pub cidr: ipnet::Ipv4Net,
    pub vni: u32,
}

/// One published port, as `publish ls -o json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishView {
    pub endpoint: String,
    pub proto: Proto,
    /// The node's address (the uplink's), when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    /// `endpoint` names a service, `container_ip` is its VIP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service: bool,
}

/// One end of a tuple.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    /// ICMP: the echo identifier.
    pub sport: u16,
    pub dst: Ipv4Addr,
    /// ICMP: 0.
    pub dport: u16,
}

/// One translated connection, as `ct ls -o json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnView {
    /// `tcp`, `udp`, `icmp`.
    pub proto: String,
    /// As the container sent it.
    pub original: Tuple,
    /// As it left the uplink (node address, NAT port).
    pub translated: Tuple,
    /// TCP: `syn_sent`, `established`, `fin_wait`, `closed`; others
    /// `active`. `expired` once both entries are past their timeout.
    pub state: String,
    /// `snat` (masqueraded), `dnat` (to a published port) or `hairpin`
    /// (a container to a published port through the node's address).
    pub kind: String,
    /// Seconds since the connection was made (for connections migrated
    /// from a table without creation times: since their last packet then).
    pub age_seconds: u64,
    /// Seconds since the connection's last packet, either way.
    pub idle_seconds: u64,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
}

/// What a conntrack collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResult {
    /// Entries removed (two per fully expired connection).
    pub removed: usize,
    /// Entries left.
    pub remaining: usize,
}

/// NAT port use of one protocol.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortUse {
    pub proto: String,
    /// Distinct NAT ports held (a port is reused towards different
    /// destinations, so connections can outnumber it).
    pub used: usize,
    pub connections: usize,
    pub range_size: u32,
}

/// `nat ls`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NatView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    pub range_size: u32,
    pub protocols: Vec<PortUse>,
    /// Connections in the conntrack table (all kinds, published ports
    /// included) against the limit past which new ones are refused.
    #[serde(default)]
    pub conntrack: ConntrackFill,
}

/// How full the conntrack table is, in connections.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackFill {
    pub connections: u64,
    pub limit: u64,
}

/// Entries serialized as a JSON object in their given order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Reads a JSON object back keeping its order (the CLI renders what the
/// agent sent exactly as it would have rendered it itself).
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// Packets and bytes of one counter, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
}

/// One endpoint's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointStatsView {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// `weft stats`: counters summed over CPUs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsView {
    pub drops: Ordered<CounterView>,
    pub forwards: Ordered<CounterView>,
    pub endpoints: Ordered<EndpointStatsView>,
}

/// `weft status`: whether an agent is up and whether the kernel matches
/// the store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// "running" or "not running".
    pub agent: String,
    pub pid: Option<u32>,
    pub started_at: Option<u64>,
    pub networks: usize,
    pub endpoints: usize,
    /// Routes weft manages: each network's subnet plus each direction of
    /// each network link.
    #[serde(default)]
    pub routes: usize,
    /// Translated connections in conntrack (each holds two entries).
    #[serde(default)]
    pub flows: usize,
    pub program_id: Option<u32>,
    pub kernel_matches_state: bool,
    pub drift: serde_json::Value,
    /// What the agent repaired when it started.
    pub repaired_at_start: Option<serde_json::Value>,
    /// What the agent migrated when it started (map layouts, programs).
    #[serde(default)]
    pub migrated_at_start: Option<serde_json::Value>,
}

/// What programming or removing synthetic endpoints took (bench only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Timing {
    pub endpoints: u32,
    /// Synthetic services (`POST /v1/bench/services`).
    #[serde(default)]
    pub services: u32,
    /// Wall time of the map updates alone.
    pub map_update_seconds: f64,
    /// `bpf()` map calls made in that time.
    pub map_calls: u64,
    /// Opening the datapath before that (0: the engine holds it open).
    pub open_seconds: f64,
}

/// What `teardown` removed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TeardownView {
    pub endpoints: usize,
    pub networks: usize,
}

/// `cluster status`: the agent's cluster store (`weft agent --etcd`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatusView {
    /// `weft` or `flannel`.
    pub schema: String,
    pub prefix: String,
    /// This node's name in the cluster.
    pub node: String,
    /// Whether the last exchange with etcd succeeded.
    pub connected: bool,
    pub endpoints: Vec<EtcdEndpointView>,
    /// This node's etcd lease, once granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<i64>,
    pub lease_ttl_seconds: i64,
    /// Seconds the lease has left, as etcd said at the last renewal (or
    /// now, if it answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_left_seconds: Option<i64>,
    /// The pod subnets this node holds, per network.
    pub subnets: Vec<PodSubnet>,
    /// Remote nodes learned from the store.
    pub remote_nodes: usize,
    /// The revision the watch has seen up to.
    pub revision: i64,
    /// Entries of the store that did not parse and were skipped.
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One configured etcd endpoint and whether it answered just now.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdEndpointView {
    pub url: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

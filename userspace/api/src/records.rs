//! The model's records: what a node's store holds (the local store writes
//! them as `state.json`), what the engine renders the kernel's state from,
//! and what several answers show as they are.
//!
//! Pure data with serde and lookups; the rules that change it (validation,
//! allocation) live in the `weft` library's `model` module. Field names are
//! a file format: state files written by older weft builds must keep
//! reading, so new fields default.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::Mac;

/// Version of the record layout.
pub const MODEL_VERSION: u32 = 1;

/// Everything weft remembers about a node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Model {
    pub version: u32,
    /// Next network id to hand out; ids are never reused within one store
    /// so stale kernel state can never be mistaken for a new network.
    pub next_network_id: u32,
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    /// The node's uplink (`weft node set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeUplink>,
    /// Published ports (`weft publish`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Other nodes of the overlay (`weft node add`), with their pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_nodes: Vec<RemoteNode>,
    /// How the node's loopback was before weft brought it up for its
    /// gateway addresses, so it is put back once no endpoint needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopback_before: Option<Loopback>,
    /// Endpoints whose container loopback weft brought up (it was down):
    /// removing the endpoint puts it back down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raised_container_lo: Vec<String>,
    /// Networks that come from the cluster store (`weft agent --etcd`):
    /// the cluster's watch adds, changes and removes them, never a local
    /// request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_networks: Vec<String>,
    /// Services (`weft service create`): virtual IPs spread over backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Next service id; ids are never reused within one store, so a
    /// conntrack entry of a removed service never counts for a new one.
    #[serde(default = "first_id")]
    pub next_service_id: u32,
    /// Cluster-wide service settings; `None`: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_config: Option<ServiceConfig>,
    /// Services that come from the cluster store (`weft agent --etcd`):
    /// the cluster's watch adds, changes and removes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_services: Vec<String>,
    /// Endpoints of other nodes, as the cluster store lists them: backends
    /// of services (reached over the overlay) and names for DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_endpoints: Vec<RemoteEndpoint>,
    /// Backends this node's health checks found down, by service name.
    /// Runtime state of the agent's prober, never saved: after a restart
    /// no stale verdict stands, every backend starts up and is probed
    /// again (`agent::health`).
    #[serde(skip)]
    pub unhealthy: BTreeMap<String, BTreeSet<String>>,
}

fn first_id() -> u32 {
    1
}

impl Default for Model {
    fn default() -> Self {
        Self {
            version: MODEL_VERSION,
            next_network_id: 1,
            networks: Vec::new(),
            endpoints: Vec::new(),
            node: None,
            publications: Vec::new(),
            remote_nodes: Vec::new(),
            loopback_before: None,
            raised_container_lo: Vec::new(),
            services: Vec::new(),
            next_service_id: 1,
            service_config: None,
            cluster_networks: Vec::new(),
            cluster_services: Vec::new(),
            remote_endpoints: Vec::new(),
            unhealthy: BTreeMap::new(),
        }
    }
}

/// A loopback interface as weft found it before bringing it up.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Loopback {
    pub up: bool,
    /// Whether it carried 127.0.0.1 (the kernel adds it when `lo` goes up
    /// and leaves it when it goes down).
    pub had_localhost: bool,
}

/// The protocols a port can be published for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A port published on the node's address to an endpoint's port, or
/// (`service`) to a service's port, spread over this node's backends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Publication {
    /// The endpoint's name, or the service's when `service` is set.
    pub endpoint: String,
    pub proto: Proto,
    pub host_port: u16,
    /// The endpoint's port, or the service's (its port, not its target).
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service: bool,
}

impl Publication {
    /// Whether this publication leads to endpoint `name`.
    pub fn is_endpoints(&self, name: &str) -> bool {
        !self.service && self.endpoint == name
    }
}

/// How a node encapsulates overlay traffic.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Tunnel metadata and the collect-metadata vxlan device.
    Tunnel,
    /// Outer headers written by the program.
    Bpf,
}

impl Encap {
    pub fn name(self) -> &'static str {
        match self {
            Encap::Tunnel => "tunnel",
            Encap::Bpf => "bpf",
        }
    }
}

/// A node's pod CIDR of one network: a slice of the network's
/// cluster-wide subnet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodSubnet {
    pub network: String,
    pub cidr: Ipv4Net,
}

/// This node's side of the overlay (`weft node set --encap`); its underlay
/// is the uplink, its underlay address the uplink's `ip`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeOverlay {
    pub encap: Encap,
    pub vtep_mac: Mac,
    /// Largest inner packet: the uplink's MTU minus VXLAN's 50 bytes.
    pub mtu: u32,
    /// Tunnel mode: the collect-metadata vxlan device weft creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_ifname: Option<String>,
    /// Its ifindex, once created.
    #[serde(default)]
    pub vxlan_ifindex: u32,
    /// The XDP early drop is attached to the underlay (`--xdp`).
    #[serde(default)]
    pub xdp: bool,
}

/// Another node of the overlay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteNode {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: Mac,
    pub subnets: Vec<PodSubnet>,
    /// Where weft learned of it.
    #[serde(default, skip_serializing_if = "NodeSource::is_static")]
    pub source: NodeSource,
}

/// Where a remote node came from.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeSource {
    /// `weft node add`.
    #[default]
    Static,
    /// The cluster store's subnet leases (`weft agent --etcd`).
    Cluster,
}

impl NodeSource {
    pub fn is_static(&self) -> bool {
        *self == NodeSource::Static
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeSource::Static => "static",
            NodeSource::Cluster => "cluster",
        }
    }
}

/// The node's uplink: where masqueraded traffic leaves, with which address
/// and NAT port range.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeUplink {
    /// Interface name in the node namespace.
    pub uplink: String,
    pub uplink_ifindex: u32,
    /// The address masqueraded traffic leaves with (one of the uplink's).
    pub ip: Ipv4Addr,
    /// NAT port range, inclusive.
    pub port_min: u16,
    pub port_max: u16,
    /// Connections the conntrack table may hold (`--conntrack-max`); `None`:
    /// the datapath's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_max: Option<u32>,
    /// `net.ipv4.conf.all.forwarding` before `node set` turned it on, so
    /// `node unset` and `teardown` put it back; `None` if it was on already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding_before: Option<String>,
    /// The overlay, when `node set --encap` turned it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<NodeOverlay>,
    /// This node's pod CIDRs (`node set --subnet`): endpoints get their
    /// addresses there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<PodSubnet>,
}

/// A weft network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: u32,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub flood: bool,
    /// Masquerade traffic to non-weft destinations out of the node's
    /// uplink. Networks from state files older than masquerade read as
    /// `false`, as their datapath entries were written without it.
    #[serde(default)]
    pub masquerade: bool,
    /// Names of the networks this one routes to (always symmetric).
    pub connected: Vec<String>,
    /// VXLAN network identifier on the overlay; 0 (state files from before
    /// the overlay) means the network id.
    #[serde(default)]
    pub vni: u32,
}

impl Network {
    pub fn gateway_mac(&self) -> Mac {
        Mac::gateway(self.id)
    }

    /// The VNI the overlay carries this network with.
    pub fn overlay_vni(&self) -> u32 {
        if self.vni == 0 { self.id } else { self.vni }
    }
}

/// A container endpoint; also its JSON form in answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub network: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub ifname: String,
    pub host_ifname: String,
    /// The host veth's ifindex, known once the engine created it.
    pub host_ifindex: u32,
    pub mtu: u32,
    /// Index of the endpoint's counters in the per-CPU stats array.
    pub stats_slot: u32,
    /// The container runtime's id of the container, when a runtime
    /// attached it (CNI `CNI_CONTAINERID`); with `ifname`, the attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The CNI network configuration (conflist `name`) that attached it,
    /// which scopes a runtime's garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_network: Option<String>,
    /// DNS names the runtime asked for (CNI `aliases`), kept for weft's DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Labels services select their backends by (`--label k=v`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Terminating (`weft endpoint drain`): it gets no new service
    /// connections and keeps its established ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
}

/// An endpoint of another node of the cluster, as its node registered it
/// in the cluster store (and as the store's record is written).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub name: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// The node it lives on.
    pub node: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
}

/// A backend of a service, on this node or another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub terminating: bool,
    /// `None`: this node's.
    pub node: Option<&'a str>,
}

/// The DNS zone the agent answers for (`NAME.weft`).
pub const DNS_ZONE: &str = "weft";

/// Default service address range (Kubernetes' default service CIDR is in
/// 10.96.0.0/12; this is its first /16).
pub const DEFAULT_SERVICE_RANGE: &str = "10.96.0.0/16";
/// Default Maglev table size: a prime, M > 100 N for up to 163 backends
/// (Cilium's default).
pub const DEFAULT_MAGLEV_SIZE: u32 = 16381;

/// Cluster-wide service settings: the same on every node, so every node
/// builds the same Maglev tables.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Where service VIPs come from.
    pub range: Ipv4Net,
    /// Maglev table size, a prime.
    pub maglev_size: u32,
    /// `endpoint add` writes `/etc/netns/NETNS/resolv.conf` naming the
    /// gateway's DNS server, for named namespaces.
    #[serde(default)]
    pub dns: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            range: DEFAULT_SERVICE_RANGE.parse().unwrap_or_default(),
            maglev_size: DEFAULT_MAGLEV_SIZE,
            dns: false,
        }
    }
}

/// A port of a service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    /// SRV name (`_NAME._PROTO.SERVICE`); default: the port number.
    pub name: String,
    pub proto: Proto,
    pub port: u16,
    /// The backends' port.
    pub target: u16,
}

/// A service: a virtual IP whose ports are spread over its backends with
/// Maglev. Backends are the endpoints its selector matches plus the ones
/// it names.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub id: u32,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    /// Every label must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Endpoints named as backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// Client-IP affinity timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout: Option<u32>,
    /// TCP health check port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
}

impl Service {
    /// Whether endpoint `ep` is one of this service's backends.
    pub fn selects(&self, ep: &Endpoint) -> bool {
        self.selects_named(&ep.name, &ep.labels)
    }

    /// Whether the endpoint `name` with `labels` (of any node) is one of
    /// this service's backends.
    pub fn selects_named(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let by_label = !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        by_label || self.backends.iter().any(|b| b == name)
    }
}

impl Model {
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn network_mut(&mut self, name: &str) -> Option<&mut Network> {
        self.networks.iter_mut().find(|n| n.name == name)
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    pub fn endpoint_mut(&mut self, name: &str) -> Option<&mut Endpoint> {
        self.endpoints.iter_mut().find(|e| e.name == name)
    }

    /// The endpoint that holds address `ip`.
    pub fn ip_holder(&self, ip: Ipv4Addr) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|e| e.ip == ip)
            .map(|e| e.name.as_str())
    }

    /// This node's pod CIDR of network `network`, if it has one.
    pub fn own_subnet(&self, network: &str) -> Option<Ipv4Net> {
        self.node
            .as_ref()?
            .subnets
            .iter()
            .find(|s| s.network == network)
            .map(|s| s.cidr)
    }

    /// The endpoints attached to network `network`, in creation order.
    pub fn endpoints_of<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints.iter().filter(move |e| e.network == network)
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The service settings in force.
    pub fn service_config(&self) -> ServiceConfig {
        self.service_config.clone().unwrap_or_default()
    }

    /// Whether this node's health checks hold endpoint `ep` down as a
    /// backend of service `svc`.
    pub fn is_unhealthy(&self, svc: &Service, ep: &Endpoint) -> bool {
        self.unhealthy
            .get(&svc.name)
            .is_some_and(|down| down.contains(&ep.name))
    }

    /// Whether backend `m` of `svc` is one this node's health checks hold
    /// down (they probe this node's backends; another node's are its own
    /// node's to judge).
    pub fn is_unhealthy_member(&self, svc: &Service, m: &Member) -> bool {
        m.node.is_none()
            && self
                .unhealthy
                .get(&svc.name)
                .is_some_and(|down| down.contains(m.name))
    }

    /// The backends of `svc`, in name order (the order every node sees).
    pub fn members<'a>(&'a self, svc: &'a Service) -> Vec<&'a Endpoint> {
        let mut out: Vec<&Endpoint> = self.endpoints.iter().filter(|e| svc.selects(e)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The backends of `svc` on every node (this node's, then other
    /// nodes' from the cluster store), each address once: what the Maglev
    /// table is built from, the same set on every node.
    pub fn all_members<'a>(&'a self, svc: &'a Service) -> Vec<Member<'a>> {
        let mut out: Vec<Member<'a>> = self
            .members(svc)
            .into_iter()
            .map(|e| Member {
                name: &e.name,
                ip: e.ip,
                terminating: e.terminating,
                node: None,
            })
            .collect();
        for e in &self.remote_endpoints {
            if svc.selects_named(&e.name, &e.labels) && !out.iter().any(|m| m.ip == e.ip) {
                out.push(Member {
                    name: &e.name,
                    ip: e.ip,
                    terminating: e.terminating,
                    node: Some(&e.node),
                });
            }
        }
        out
    }

    /// The endpoint a container runtime attached as `ifname` of container
    /// `container_id`.
    pub fn attachment(&self, container_id: &str, ifname: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.container_id.as_deref() == Some(container_id) && e.ifname == ifname)
    }

    /// The node's overlay, if `node set --encap` turned it on.
    pub fn overlay(&self) -> Option<&NodeOverlay> {
        self.node.as_ref()?.overlay.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_without_newer_fields_still_read() {
        let old = r#"{"version":1,"next_network_id":2,"networks":[{"name":"a","id":1,
            "subnet":"10.1.0.0/24","gateway":"10.1.0.1","flood":false,"connected":[]}],
            "endpoints":[],"reservations":[]}"#;
        let m: Model = serde_json::from_str(old).unwrap();
        assert_eq!(m.node, None);
        assert!(!m.networks[0].masquerade);
        assert_eq!(m.networks[0].overlay_vni(), 1);
        assert_eq!(m.loopback_before, None);
    }

    #[test]
    fn endpoints_without_runtime_fields_still_read_and_write_as_before() {
        let old = r#"{"name":"c1","network":"a","netns":"c1","ip":"10.1.0.2",
            "mac":"02:57:0a:01:00:02","ifname":"eth0","host_ifname":"wf00000001",
            "host_ifindex":7,"mtu":1500,"stats_slot":0}"#;
        let ep: Endpoint = serde_json::from_str(old).unwrap();
        assert_eq!((ep.container_id.as_deref(), ep.aliases.len()), (None, 0));
        let again = serde_json::to_value(&ep).unwrap();
        assert!(again.get("container_id").is_none() && again.get("aliases").is_none());
    }
}

//! The cluster store (`weft agent --etcd`): what a cluster keeps in etcd,
//! its keys and values, and how a listing of them becomes a
//! [`ClusterView`]. The node-local rest of the model stays in the local
//! file ([`super::file`]); [`etcd`] is the connection.
//!
//! Two schemas, under a prefix (`--etcd-prefix`):
//!
//! | key (schema `weft`, prefix `/weft`) | value | lease |
//! |---|---|---|
//! | `P/cluster/networks/NAME` | [`ClusterNetwork`] | none |
//! | `P/cluster/subnets/NET/A.B.C.D-LEN` | [`SubnetLease`] (Flannel's form) | the node's |
//! | `P/cluster/nodes/NAME` | [`Registration`] | the node's |
//! | `P/cluster/services/NAME` | [`ClusterService`] | none |
//! | `P/endpoints/NODE/NAME` | [`EndpointRecord`] | the node's |
//!
//! Schema `flannel` (prefix `/coreos.com/network`) reads and writes
//! Flannel's own keys: `P/config` (`{"Network","SubnetLen","Backend":
//! {"Type":"vxlan","VNI"}}`) is one network (named by `--flannel-network`),
//! `P/subnets/A.B.C.D-LEN` its leases; weft's registrations and endpoints
//! sit under `P/weft/`, which Flannel never reads.
//!
//! A node lists and watches everything under the prefix that is weft's
//! (schema `weft`: `P/`; `flannel`: `P/config` to `P/weft/`): routes,
//! services and every node's endpoints, which are service backends
//! (their labels select them) and names for DNS on every node. A value
//! that does not parse is skipped and named, never fatal.

pub mod etcd;

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use weft_api::records::NodeSource;

use crate::{
    error::{Error, Result},
    model::{
        Mac, PodSubnet, RemoteNode,
        cluster::{ClusterNetwork, ClusterService, ClusterView, DEFAULT_SUBNET_LEN},
        naming::validate_name,
    },
};

/// Which keys and values the cluster uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaKind {
    Weft,
    Flannel,
}

impl SchemaKind {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "weft" => Ok(Self::Weft),
            "flannel" => Ok(Self::Flannel),
            other => Err(Error::Invalid(format!(
                "invalid cluster schema '{other}': use 'weft' (weft's own keys) or 'flannel' \
                 (Flannel's subnet leases under /coreos.com/network)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Weft => "weft",
            Self::Flannel => "flannel",
        }
    }

    /// The prefix when `--etcd-prefix` is not given.
    pub fn default_prefix(self) -> &'static str {
        match self {
            Self::Weft => "/weft",
            Self::Flannel => "/coreos.com/network",
        }
    }
}

/// The keys of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    pub kind: SchemaKind,
    /// Without a trailing `/`.
    pub prefix: String,
    /// Schema `flannel`: the name weft gives Flannel's one network.
    pub flannel_network: String,
}

/// A node's pod subnet lease, in Flannel's form (`PublicIP`, `BackendType`,
/// `BackendData.VNI/VtepMAC`); weft adds the node's name, which Flannel
/// ignores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubnetLease {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "BackendType")]
    pub backend_type: String,
    #[serde(rename = "BackendData")]
    pub backend_data: BackendData,
    #[serde(rename = "Node", default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Flannel's vxlan backend data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendData {
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: Mac,
}

/// Flannel's network config (`/coreos.com/network/config`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlannelConfig {
    #[serde(rename = "Network")]
    pub network: Ipv4Net,
    #[serde(rename = "SubnetLen", default)]
    pub subnet_len: Option<u8>,
    #[serde(rename = "Backend", default)]
    pub backend: Option<FlannelBackend>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlannelBackend {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "VNI", default)]
    pub vni: Option<u32>,
}

/// A node's registration: who it is and how to reach it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub vtep_mac: Mac,
    pub encap: String,
}

/// An endpoint of some node: a service backend for its labels, and a
/// name for DNS. Records of older weft builds (no labels) still read.
pub use weft_api::records::RemoteEndpoint as EndpointRecord;

/// One entry of the store that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub key: String,
    pub why: String,
}

/// What a listing says.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub view: ClusterView,
    /// The cluster networks with the lease keys of each, for claims.
    pub leases: BTreeMap<String, BTreeMap<Ipv4Net, SubnetLease>>,
    pub skipped: Vec<Skip>,
}

/// `A.B.C.D-LEN`, Flannel's lease key tail.
pub fn lease_name(cidr: Ipv4Net) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

fn parse_lease_name(text: &str) -> Option<Ipv4Net> {
    let (ip, len) = text.split_once('-')?;
    let net = Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.addr()).then_some(net)
}

impl Schema {
    pub fn new(kind: SchemaKind, prefix: Option<&str>, flannel_network: &str) -> Result<Self> {
        let prefix = prefix
            .unwrap_or(kind.default_prefix())
            .trim_end_matches('/');
        if !prefix.starts_with('/') {
            return Err(Error::Invalid(format!(
                "invalid etcd prefix '{prefix}': it must start with '/', e.g. {}",
                kind.default_prefix()
            )));
        }
        validate_name("network", flannel_network)?;
        Ok(Self {
            kind,
            prefix: prefix.to_owned(),
            flannel_network: flannel_network.to_owned(),
        })
    }

    /// Where weft's own records live in this schema.
    fn own_root(&self) -> String {
        match self.kind {
            SchemaKind::Weft => format!("{}/cluster", self.prefix),
            SchemaKind::Flannel => format!("{}/weft", self.prefix),
        }
    }

    /// The key range routes, services and endpoints come from: `[start,
    /// end)`.
    pub fn watched(&self) -> (String, String) {
        match self.kind {
            // Everything under the prefix ('0' follows '/').
            SchemaKind::Weft => (format!("{}/", self.prefix), format!("{}0", self.prefix)),
            // `config` up to everything under `weft/`.
            SchemaKind::Flannel => (
                format!("{}/config", self.prefix),
                format!("{}/weft0", self.prefix),
            ),
        }
    }

    /// Where service `name` is kept (cluster-wide, on no lease).
    pub fn service_key(&self, name: &str) -> String {
        format!("{}/services/{name}", self.own_root())
    }

    pub fn network_key(&self, name: &str) -> Result<String> {
        match self.kind {
            SchemaKind::Weft => Ok(format!("{}/cluster/networks/{name}", self.prefix)),
            SchemaKind::Flannel => Err(Error::Invalid(format!(
                "in schema 'flannel' the network is Flannel's config ({}/config); weft does not \
                 create or remove networks there",
                self.prefix
            ))),
        }
    }

    pub fn lease_key(&self, network: &str, cidr: Ipv4Net) -> String {
        match self.kind {
            SchemaKind::Weft => format!(
                "{}/cluster/subnets/{network}/{}",
                self.prefix,
                lease_name(cidr)
            ),
            SchemaKind::Flannel => format!("{}/subnets/{}", self.prefix, lease_name(cidr)),
        }
    }

    pub fn node_key(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.own_root())
    }

    /// Where every node's endpoints are kept.
    fn endpoints_root(&self) -> String {
        match self.kind {
            SchemaKind::Weft => format!("{}/endpoints/", self.prefix),
            SchemaKind::Flannel => format!("{}/weft/endpoints/", self.prefix),
        }
    }

    pub fn endpoints_prefix(&self, node: &str) -> String {
        format!("{}{node}/", self.endpoints_root())
    }

    pub fn endpoint_key(&self, node: &str, name: &str) -> String {
        format!("{}{name}", self.endpoints_prefix(node))
    }

    /// Parses a listing of the watched range (key -> value); this node is
    /// the one whose leases carry `own_ip`.
    pub fn parse(&self, kvs: &BTreeMap<String, Vec<u8>>, own_ip: Option<Ipv4Addr>) -> Parsed {
        let mut parsed = Parsed::default();
        let mut raw_leases: Vec<(String, String, Ipv4Net, SubnetLease)> = Vec::new();
        for (key, value) in kvs {
            match self.parse_one(key, value) {
                Ok(Entry::Network(n)) => parsed.view.networks.push(n),
                Ok(Entry::Service(svc)) => parsed.view.services.push(svc),
                Ok(Entry::Endpoint(ep)) => parsed.view.endpoints.push(ep),
                Ok(Entry::Lease(net, cidr, lease)) => {
                    raw_leases.push((key.clone(), net, cidr, lease))
                }
                Ok(Entry::Ignored) => {}
                Err(why) => parsed.skipped.push(Skip {
                    key: key.clone(),
                    why,
                }),
            }
        }
        let mut nodes: BTreeMap<Ipv4Addr, RemoteNode> = BTreeMap::new();
        for (key, network, cidr, lease) in raw_leases {
            let Some(net) = parsed.view.networks.iter().find(|n| n.name == network) else {
                parsed.skipped.push(Skip {
                    key,
                    why: format!("a lease of network '{network}', which the store does not hold"),
                });
                continue;
            };
            if !net.subnet.contains(&cidr) {
                parsed.skipped.push(Skip {
                    key,
                    why: format!(
                        "lease {cidr} is outside network '{network}' ({})",
                        net.subnet
                    ),
                });
                continue;
            }
            parsed
                .leases
                .entry(network.clone())
                .or_default()
                .insert(cidr, lease.clone());
            let subnet = PodSubnet {
                network: network.clone(),
                cidr,
            };
            if Some(lease.public_ip) == own_ip {
                if !parsed.view.own.iter().any(|s| s.network == network) {
                    parsed.view.own.push(subnet);
                }
                continue;
            }
            let node = nodes.entry(lease.public_ip).or_insert_with(|| RemoteNode {
                name: lease
                    .node
                    .clone()
                    .filter(|n| validate_name("node", n).is_ok())
                    .unwrap_or_else(|| lease.public_ip.to_string()),
                underlay_ip: lease.public_ip,
                vtep_mac: lease.backend_data.vtep_mac,
                subnets: Vec::new(),
                source: NodeSource::Cluster,
            });
            if node.subnets.iter().any(|s| s.network == network) {
                parsed.skipped.push(Skip {
                    key,
                    why: format!(
                        "node {} holds a second lease of network '{network}'",
                        lease.public_ip
                    ),
                });
                continue;
            }
            node.subnets.push(subnet);
        }
        parsed.view.nodes = nodes.into_values().collect();
        parsed
    }

    fn parse_one(&self, key: &str, value: &[u8]) -> std::result::Result<Entry, String> {
        let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_owned())?;
        if let Some(name) = key.strip_prefix(&self.service_key("")) {
            let svc: ClusterService =
                serde_json::from_str(text).map_err(|e| format!("not a weft service: {e}"))?;
            if svc.name != name {
                return Err(format!(
                    "the value names service '{}', the key '{name}'",
                    svc.name
                ));
            }
            validate_name("service", &svc.name).map_err(|e| e.to_string())?;
            return Ok(Entry::Service(svc));
        }
        if let Some(tail) = key.strip_prefix(&self.endpoints_root()) {
            let ep: EndpointRecord =
                serde_json::from_str(text).map_err(|e| format!("not a weft endpoint: {e}"))?;
            if tail != format!("{}/{}", ep.node, ep.name) {
                return Err(format!(
                    "the value names endpoint '{}' of node '{}', the key '{tail}'",
                    ep.name, ep.node
                ));
            }
            return Ok(Entry::Endpoint(ep));
        }
        match self.kind {
            SchemaKind::Weft => {
                let rest = key
                    .strip_prefix(&format!("{}/cluster/", self.prefix))
                    .unwrap_or_default();
                if let Some(name) = rest.strip_prefix("networks/") {
                    let net: ClusterNetwork = serde_json::from_str(text)
                        .map_err(|e| format!("not a weft network: {e}"))?;
                    check_network(&net, name)?;
                    Ok(Entry::Network(net))
                } else if let Some(tail) = rest.strip_prefix("subnets/") {
                    let (network, lease) = tail
                        .split_once('/')
                        .ok_or_else(|| "expected subnets/NETWORK/A.B.C.D-LEN".to_owned())?;
                    let cidr = parse_lease_name(lease)
                        .ok_or_else(|| format!("'{lease}' is not A.B.C.D-LEN"))?;
                    Ok(Entry::Lease(network.to_owned(), cidr, parse_lease(text)?))
                } else {
                    Ok(Entry::Ignored)
                }
            }
            SchemaKind::Flannel => {
                if key == format!("{}/config", self.prefix) {
                    let cfg: FlannelConfig = serde_json::from_str(text)
                        .map_err(|e| format!("not a Flannel network config: {e}"))?;
                    if let Some(b) = &cfg.backend
                        && b.kind != "vxlan"
                    {
                        return Err(format!(
                            "Flannel backend '{}' is not supported: weft speaks vxlan",
                            b.kind
                        ));
                    }
                    let net = ClusterNetwork {
                        name: self.flannel_network.clone(),
                        subnet: cfg.network.trunc(),
                        gateway: None,
                        vni: cfg.backend.and_then(|b| b.vni).unwrap_or(1),
                        flood: false,
                        masquerade: true,
                        connected: Vec::new(),
                        subnet_len: cfg.subnet_len.unwrap_or(DEFAULT_SUBNET_LEN),
                    };
                    check_network(&net, &self.flannel_network)?;
                    Ok(Entry::Network(net))
                } else if let Some(lease) = key.strip_prefix(&format!("{}/subnets/", self.prefix)) {
                    let cidr = parse_lease_name(lease)
                        .ok_or_else(|| format!("'{lease}' is not A.B.C.D-LEN"))?;
                    Ok(Entry::Lease(
                        self.flannel_network.clone(),
                        cidr,
                        parse_lease(text)?,
                    ))
                } else {
                    Ok(Entry::Ignored)
                }
            }
        }
    }
}

enum Entry {
    Network(ClusterNetwork),
    Service(ClusterService),
    Endpoint(EndpointRecord),
    Lease(String, Ipv4Net, SubnetLease),
    Ignored,
}

fn parse_lease(text: &str) -> std::result::Result<SubnetLease, String> {
    let lease: SubnetLease =
        serde_json::from_str(text).map_err(|e| format!("not a subnet lease: {e}"))?;
    if lease.backend_type != "vxlan" {
        return Err(format!(
            "backend '{}' is not supported: weft speaks vxlan",
            lease.backend_type
        ));
    }
    Ok(lease)
}

fn check_network(net: &ClusterNetwork, key_name: &str) -> std::result::Result<(), String> {
    if net.name != key_name {
        return Err(format!(
            "the value names network '{}', the key '{key_name}'",
            net.name
        ));
    }
    validate_name("network", &net.name).map_err(|e| e.to_string())?;
    if net.subnet_len < net.subnet.prefix_len() || net.subnet_len > 30 {
        return Err(format!(
            "subnet_len {} does not fit network {} (use /{} to /30)",
            net.subnet_len,
            net.subnet,
            net.subnet.prefix_len()
        ));
    }
    if net.vni == 0 || net.vni > weft_common::overlay::VNI_MAX {
        return Err(format!(
            "VNI {} is not 1 to {}",
            net.vni,
            weft_common::overlay::VNI_MAX
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvs(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn flannel_leases_as_flannel_documents_them_parse() {
        let s = Schema::new(SchemaKind::Flannel, None, "flannel").unwrap();
        let parsed = s.parse(
            &kvs(&[
                (
                    "/coreos.com/network/config",
                    r#"{"Network":"10.5.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}"#,
                ),
                (
                    "/coreos.com/network/subnets/10.5.52.0-24",
                    r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
                ),
                (
                    "/coreos.com/network/subnets/10.5.53.0-24",
                    r#"{"PublicIP":"192.168.64.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}"#,
                ),
                ("/coreos.com/network/subnets/10.5.54.0-24", "{not json"),
                (
                    "/coreos.com/network/subnets/10.5.55.0-24",
                    r#"{"PublicIP":"192.168.64.9","BackendType":"udp","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:46"}}"#,
                ),
            ]),
            Some("192.168.64.4".parse().unwrap()),
        );
        assert_eq!(parsed.view.networks.len(), 1);
        assert_eq!(parsed.view.networks[0].vni, 1);
        assert_eq!(parsed.view.nodes.len(), 1);
        let n = &parsed.view.nodes[0];
        assert_eq!(n.name, "192.168.64.3");
        assert_eq!(n.vtep_mac.to_string(), "c6:d2:32:6f:8f:44");
        assert_eq!(
            n.subnets[0].cidr,
            "10.5.52.0/24".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(
            parsed.view.own[0].cidr,
            "10.5.53.0/24".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);
        assert!(
            parsed.skipped[1].why.contains("'udp'"),
            "{:?}",
            parsed.skipped
        );
    }

    #[test]
    fn weft_keys_round_trip_and_bad_networks_are_skipped() {
        let s = Schema::new(SchemaKind::Weft, Some("/t/"), "flannel").unwrap();
        assert_eq!(s.network_key("blue").unwrap(), "/t/cluster/networks/blue");
        let cidr: Ipv4Net = "10.5.3.0/24".parse().unwrap();
        assert_eq!(
            s.lease_key("blue", cidr),
            "/t/cluster/subnets/blue/10.5.3.0-24"
        );
        let (start, end) = s.watched();
        assert!(s.lease_key("blue", cidr) > start && s.lease_key("blue", cidr) < end);
        assert!(s.endpoint_key("n1", "c1") > start && s.endpoint_key("n1", "c1") < end);
        assert!(s.service_key("web") > start && s.service_key("web") < end);
        let parsed = s.parse(
            &kvs(&[
                (
                    "/t/cluster/networks/blue",
                    r#"{"name":"blue","subnet":"10.5.0.0/16","vni":5}"#,
                ),
                (
                    "/t/cluster/networks/red",
                    r#"{"name":"red","subnet":"10.6.0.0/16","vni":0}"#,
                ),
                (
                    "/t/cluster/subnets/blue/10.5.3.0-24",
                    r#"{"PublicIP":"172.30.0.3","BackendType":"vxlan","BackendData":{"VNI":5,"VtepMAC":"0a:56:ac:1e:00:03"},"Node":"n3"}"#,
                ),
                (
                    "/t/cluster/subnets/red/10.6.3.0-24",
                    r#"{"PublicIP":"172.30.0.3","BackendType":"vxlan","BackendData":{"VNI":6,"VtepMAC":"0a:56:ac:1e:00:03"},"Node":"n3"}"#,
                ),
            ]),
            None,
        );
        assert_eq!(parsed.view.networks.len(), 1);
        assert_eq!(parsed.view.networks[0].subnet_len, 24);
        assert_eq!(parsed.view.nodes[0].name, "n3");
        let why: Vec<&str> = parsed.skipped.iter().map(|s| s.why.as_str()).collect();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("VNI 0"), "{why:?}");
        assert!(why[1].contains("does not hold"), "{why:?}");
    }
}

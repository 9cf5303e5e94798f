//! The cluster's part of a node's model (`weft agent --etcd`): the
//! networks the cluster store holds, this node's pod subnet leases and the
//! other nodes' leases, merged into the node's model. Pure: the agent's
//! cluster sync builds a [`ClusterView`] from what it listed and watched,
//! the engine merges it and renders the result like any other change.
//!
//! The merge never fails as a whole: whatever cannot be taken (a network
//! overlapping a local one, a lease outside its network, a removed network
//! that still has endpoints here) is left as the model had it and named in
//! [`Merged::skipped`], so one bad entry in the store never wipes a map.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use weft_api::{
    records::{NodeSource, RemoteEndpoint, ServicePort},
    requests::CreateNetwork,
};

use crate::model::{Model, PodSubnet, RemoteNode, Service, network, overlay};

/// Default size of a node's pod subnet of a network.
pub const DEFAULT_SUBNET_LEN: u8 = 24;

/// A network as the cluster store holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterNetwork {
    pub name: String,
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub vni: u32,
    #[serde(default)]
    pub flood: bool,
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Networks this one routes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connected: Vec<String>,
    /// Prefix length of each node's pod subnet.
    #[serde(default = "default_subnet_len")]
    pub subnet_len: u8,
}

fn yes() -> bool {
    true
}

fn default_subnet_len() -> u8 {
    DEFAULT_SUBNET_LEN
}

/// A service as the cluster store holds it: everything but its id, which
/// each node gives it (ids are node-local: they key counters and
/// affinity). The VIP is the same on every node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterService {
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<u16>,
}

impl ClusterService {
    pub fn of(svc: &Service) -> Self {
        Self {
            name: svc.name.clone(),
            vip: svc.vip,
            ports: svc.ports.clone(),
            selector: svc.selector.clone(),
            backends: svc.backends.clone(),
            affinity_timeout: svc.affinity_timeout,
            health_port: svc.health_port,
        }
    }

    /// The service on this node, with this node's id for it.
    pub fn with_id(&self, id: u32) -> Service {
        Service {
            name: self.name.clone(),
            id,
            vip: self.vip,
            ports: self.ports.clone(),
            selector: self.selector.clone(),
            backends: self.backends.clone(),
            affinity_timeout: self.affinity_timeout,
            health_port: self.health_port,
        }
    }
}

/// Everything the cluster store says about this node's model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub networks: Vec<ClusterNetwork>,
    /// This node's pod subnet leases.
    pub own: Vec<PodSubnet>,
    /// The other nodes, from their leases.
    pub nodes: Vec<RemoteNode>,
    /// The cluster's services.
    pub services: Vec<ClusterService>,
    /// The other nodes' endpoints (the caller leaves this node's out).
    pub endpoints: Vec<RemoteEndpoint>,
}

/// A merged model and what could not be taken.
#[derive(Clone, Debug)]
pub struct Merged {
    pub model: Model,
    pub skipped: Vec<String>,
}

/// `model` with its cluster part replaced by `view`.
pub fn merge(model: &Model, view: &ClusterView) -> Merged {
    let mut m = model.clone();
    let mut skipped = Vec::new();
    remove_networks(&mut m, view, &mut skipped);
    add_networks(&mut m, view, &mut skipped);
    connect(&mut m, view);
    own_subnets(&mut m, view, &mut skipped);
    remote_nodes(&mut m, view, &mut skipped);
    services(&mut m, view, &mut skipped);
    remote_endpoints(&mut m, view, &mut skipped);
    Merged { model: m, skipped }
}

/// The cluster's services replace the ones learned before (each keeps the
/// id this node gave it); a service created on this node alone, or one
/// whose VIP another service holds here, wins and the cluster's is named
/// as skipped.
fn services(m: &mut Model, view: &ClusterView, skipped: &mut Vec<String>) {
    let gone: Vec<String> = m
        .cluster_services
        .iter()
        .filter(|n| !view.services.iter().any(|s| &s.name == *n))
        .cloned()
        .collect();
    for name in gone {
        m.services.retain(|s| s.name != name);
        m.publications
            .retain(|p| !(p.service && p.endpoint == name));
        m.cluster_services.retain(|n| n != &name);
    }
    let range = m.service_config().range;
    for cs in &view.services {
        if cs.ports.is_empty() || !range.contains(&cs.vip) {
            skipped.push(format!(
                "cluster service '{}' (VIP {}, {} ports) does not fit this node's service range                  {range}",
                cs.name,
                cs.vip,
                cs.ports.len()
            ));
            continue;
        }
        if let Some(other) = m
            .services
            .iter()
            .find(|s| s.vip == cs.vip && s.name != cs.name)
        {
            skipped.push(format!(
                "cluster service '{}' has VIP {}, which service '{}' holds on this node",
                cs.name, cs.vip, other.name
            ));
            continue;
        }
        let learned = m.cluster_services.contains(&cs.name);
        match m.services.iter_mut().find(|s| s.name == cs.name) {
            Some(local) if learned => *local = cs.with_id(local.id),
            Some(_) => skipped.push(format!(
                "cluster service '{}' has the name of a service of this node alone; remove that                  one to take the cluster's",
                cs.name
            )),
            None => {
                let id = m.next_service_id;
                m.next_service_id += 1;
                m.services.push(cs.with_id(id));
                m.cluster_services.push(cs.name.clone());
            }
        }
    }
}

/// The other nodes' endpoints replace the ones listed before; one that
/// claims an address of this node's endpoints (a stale record) or a
/// network this node does not have is left out.
fn remote_endpoints(m: &mut Model, view: &ClusterView, skipped: &mut Vec<String>) {
    let mut out = Vec::new();
    for ep in &view.endpoints {
        if let Some(local) = m.endpoints.iter().find(|e| e.ip == ep.ip) {
            skipped.push(format!(
                "endpoint '{}' of node '{}' has address {}, which endpoint '{}' of this node holds",
                ep.name, ep.node, ep.ip, local.name
            ));
            continue;
        }
        if m.network(&ep.network).is_none() {
            skipped.push(format!(
                "endpoint '{}' of node '{}' is on network '{}', which this node does not have",
                ep.name, ep.node, ep.network
            ));
            continue;
        }
        out.push(ep.clone());
    }
    out.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
    m.remote_endpoints = out;
}

/// Cluster networks gone from the store: removed unless endpoints of this
/// node still use them.
fn remove_networks(m: &mut Model, view: &ClusterView, skipped: &mut Vec<String>) {
    let gone: Vec<String> = m
        .cluster_networks
        .iter()
        .filter(|n| !view.networks.iter().any(|v| &v.name == *n))
        .cloned()
        .collect();
    for name in gone {
        let eps: Vec<&str> = m.endpoints_of(&name).map(|e| e.name.as_str()).collect();
        if !eps.is_empty() {
            skipped.push(format!(
                "network '{name}' was removed from the cluster but endpoints {} of this node use \
                 it; it stays here until they are removed",
                eps.join(", ")
            ));
            continue;
        }
        let mut without = m.clone();
        if let Some(node) = without.node.as_mut() {
            node.subnets.retain(|s| s.network != name);
        }
        for n in &mut without.remote_nodes {
            n.subnets.retain(|s| s.network != name);
        }
        match network::remove(&without, &name) {
            Ok(mut new) => {
                new.cluster_networks.retain(|n| n != &name);
                *m = new;
            }
            Err(e) => skipped.push(format!("network '{name}': {e}")),
        }
    }
}

/// Cluster networks new to this node are created; known ones keep their
/// local id and take the store's settings.
fn add_networks(m: &mut Model, view: &ClusterView, skipped: &mut Vec<String>) {
    for net in &view.networks {
        if let Some(local) = m.network_mut(&net.name) {
            if local.subnet != net.subnet || local.overlay_vni() != net.vni {
                skipped.push(format!(
                    "network '{}' is {} VNI {} in the cluster but {} VNI {} on this node; \
                     remove the local one to take the cluster's",
                    net.name,
                    net.subnet,
                    net.vni,
                    local.subnet,
                    local.overlay_vni()
                ));
                continue;
            }
            local.flood = net.flood;
            local.masquerade = net.masquerade;
            if !m.cluster_networks.contains(&net.name) {
                m.cluster_networks.push(net.name.clone());
            }
            continue;
        }
        let req = CreateNetwork {
            name: net.name.clone(),
            subnet: net.subnet.to_string(),
            gateway: net.gateway.map(|g| g.to_string()),
            flood: net.flood,
            masquerade: net.masquerade,
            vni: Some(net.vni),
        };
        match network::create(m, &req) {
            Ok((mut new, _)) => {
                new.cluster_networks.push(net.name.clone());
                *m = new;
            }
            Err(e) => skipped.push(format!("cluster network '{}': {e}", net.name)),
        }
    }
}

/// Links between cluster networks as the store says (both ways); links
/// with local networks are the node's own and stay.
fn connect(m: &mut Model, view: &ClusterView) {
    let cluster = m.cluster_networks.clone();
    let wanted = |a: &str, b: &str| {
        view.networks.iter().any(|n| {
            (n.name == a && n.connected.iter().any(|c| c == b))
                || (n.name == b && n.connected.iter().any(|c| c == a))
        })
    };
    let names: Vec<String> = m.networks.iter().map(|n| n.name.clone()).collect();
    for net in &mut m.networks {
        if !cluster.contains(&net.name) {
            continue;
        }
        net.connected.retain(|c| !cluster.contains(c));
        for other in &names {
            if other != &net.name && cluster.contains(other) && wanted(&net.name, other) {
                net.connected.push(other.clone());
            }
        }
        net.connected.sort();
        net.connected.dedup();
    }
}

/// This node's leases become its pod subnets of the cluster networks.
fn own_subnets(m: &mut Model, view: &ClusterView, skipped: &mut Vec<String>) {
    let cluster = m.cluster_networks.clone();
    let Some(node) = m.node.as_ref() else {
        return;
    };
    let mut subnets: Vec<PodSubnet> = node
        .subnets
        .iter()
        .filter(|s| !cluster.contains(&s.network))
        .cloned()
        .collect();
    for lease in &view.own {
        let Some(net) = m.network(&lease.network) else {
            continue;
        };
        if !cluster.contains(&lease.network) || subnets.iter().any(|s| s.network == lease.network) {
            continue;
        }
        if !net.subnet.contains(&lease.cidr) {
            skipped.push(format!(
                "this node's lease {} is outside network '{}' ({})",
                lease.cidr, lease.network, net.subnet
            ));
            continue;
        }
        if let Some(ep) = m
            .endpoints_of(&lease.network)
            .find(|e| !lease.cidr.contains(&e.ip))
        {
            skipped.push(format!(
                "this node's lease {} of network '{}' does not hold its endpoint '{}' ({}); \
                 keeping the pod subnet it had",
                lease.cidr, lease.network, ep.name, ep.ip
            ));
            if let Some(old) = node.subnets.iter().find(|s| s.network == lease.network) {
                subnets.push(old.clone());
            }
            continue;
        }
        subnets.push(lease.clone());
    }
    if let Some(node) = m.node.as_mut() {
        node.subnets = subnets;
    }
}

/// The other nodes' leases replace every node learned before; `node add`
/// peers stay and win a conflict.
fn remote_nodes(m: &mut Model, view: &ClusterView, skipped: &mut Vec<String>) {
    m.remote_nodes.retain(|n| n.source == NodeSource::Static);
    let own_ip = m.node.as_ref().map(|n| n.ip);
    for node in &view.nodes {
        if Some(node.underlay_ip) == own_ip {
            continue;
        }
        if let Some(other) = m
            .remote_nodes
            .iter()
            .find(|n| n.name == node.name || n.underlay_ip == node.underlay_ip)
        {
            skipped.push(format!(
                "cluster node '{}' ({}) clashes with node '{}' ({}) on this node",
                node.name, node.underlay_ip, other.name, other.underlay_ip
            ));
            continue;
        }
        let mut subnets = Vec::new();
        for s in &node.subnets {
            let Some(net) = m.network(&s.network) else {
                continue;
            };
            if !net.subnet.contains(&s.cidr) {
                skipped.push(format!(
                    "node '{}''s lease {} is outside network '{}' ({})",
                    node.name, s.cidr, s.network, net.subnet
                ));
                continue;
            }
            if let Some(holder) = overlay::overlap(m, s.cidr, true) {
                skipped.push(format!(
                    "node '{}''s lease {} overlaps {holder}",
                    node.name, s.cidr
                ));
                continue;
            }
            if let Some(ep) = m.endpoints_of(&s.network).find(|e| s.cidr.contains(&e.ip)) {
                skipped.push(format!(
                    "node '{}''s lease {} holds endpoint '{}' ({}) of this node",
                    node.name, s.cidr, ep.name, ep.ip
                ));
                continue;
            }
            subnets.push(s.clone());
        }
        m.remote_nodes.push(RemoteNode {
            subnets,
            source: NodeSource::Cluster,
            ..node.clone()
        });
    }
}

/// The pod subnets of `net` (`len` bits each) in the order a node tries
/// them: the first is skipped, as Flannel does, since it holds the
/// network's gateway.
pub fn candidates(net: Ipv4Net, len: u8) -> impl Iterator<Item = Ipv4Net> {
    net.subnets(len).into_iter().flatten().skip(1)
}

#[cfg(test)]
mod tests {
    use weft_api::records::NodeUplink;

    use super::*;
    use crate::model::Mac;

    fn cnet(name: &str, subnet: &str, vni: u32) -> ClusterNetwork {
        ClusterNetwork {
            name: name.into(),
            subnet: subnet.parse().unwrap(),
            gateway: None,
            vni,
            flood: false,
            masquerade: true,
            connected: vec![],
            subnet_len: 24,
        }
    }

    fn remote(name: &str, ip: [u8; 4], subnets: &[(&str, &str)]) -> RemoteNode {
        let ip = Ipv4Addr::from(ip);
        RemoteNode {
            name: name.into(),
            underlay_ip: ip,
            vtep_mac: Mac::vtep(ip),
            subnets: subnets
                .iter()
                .map(|(n, c)| PodSubnet {
                    network: (*n).into(),
                    cidr: c.parse().unwrap(),
                })
                .collect(),
            source: NodeSource::Cluster,
        }
    }

    fn with_node() -> Model {
        Model {
            node: Some(NodeUplink {
                uplink: "underlay".into(),
                uplink_ifindex: 2,
                ip: Ipv4Addr::new(172, 30, 0, 1),
                port_min: 61000,
                port_max: 65535,
                conntrack_max: None,
                forwarding_before: None,
                overlay: None,
                subnets: vec![],
            }),
            ..Model::default()
        }
    }

    #[test]
    fn a_view_becomes_networks_subnets_and_nodes_and_goes_away_again() {
        let view = ClusterView {
            networks: vec![cnet("blue", "10.5.0.0/16", 7)],
            own: vec![PodSubnet {
                network: "blue".into(),
                cidr: "10.5.1.0/24".parse().unwrap(),
            }],
            nodes: vec![remote("n2", [172, 30, 0, 2], &[("blue", "10.5.2.0/24")])],
            ..ClusterView::default()
        };
        let merged = merge(&with_node(), &view);
        assert!(merged.skipped.is_empty(), "{:?}", merged.skipped);
        let m = merged.model;
        assert_eq!(m.network("blue").unwrap().vni, 7);
        assert_eq!(m.cluster_networks, vec!["blue".to_string()]);
        assert_eq!(m.own_subnet("blue"), Some("10.5.1.0/24".parse().unwrap()));
        assert_eq!(m.remote_nodes.len(), 1);
        assert_eq!(m.remote_nodes[0].source, NodeSource::Cluster);
        // The same view again changes nothing; an empty one removes it all.
        assert_eq!(merge(&m, &view).model, m);
        let empty = merge(&m, &ClusterView::default());
        assert!(empty.skipped.is_empty(), "{:?}", empty.skipped);
        assert_eq!(empty.model.networks, vec![]);
        assert_eq!(empty.model.remote_nodes, vec![]);
        assert_eq!(empty.model.node.unwrap().subnets, vec![]);
    }

    #[test]
    fn bad_entries_are_skipped_and_named_and_static_peers_stay() {
        let mut model = with_node();
        model.remote_nodes.push(RemoteNode {
            source: NodeSource::Static,
            ..remote("s1", [172, 30, 0, 9], &[])
        });
        let view = ClusterView {
            networks: vec![cnet("blue", "10.5.0.0/16", 7)],
            own: vec![],
            nodes: vec![
                remote("n2", [172, 30, 0, 2], &[("blue", "10.6.2.0/24")]),
                remote("n3", [172, 30, 0, 3], &[("blue", "10.5.3.0/24")]),
                remote("n4", [172, 30, 0, 4], &[("blue", "10.5.3.0/25")]),
                remote("s1", [172, 30, 0, 5], &[("blue", "10.5.5.0/24")]),
            ],
            ..ClusterView::default()
        };
        let merged = merge(&model, &view);
        let text = merged.skipped.join("\n");
        assert_eq!(merged.skipped.len(), 3, "{text}");
        assert!(text.contains("outside network 'blue'"), "{text}");
        assert!(text.contains("overlaps node 'n3'"), "{text}");
        assert!(text.contains("clashes with node 's1'"), "{text}");
        let names: Vec<&str> = merged
            .model
            .remote_nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["s1", "n2", "n3", "n4"]);
    }

    #[test]
    fn services_and_remote_endpoints_come_and_go_with_the_view() {
        let svc = ClusterService {
            name: "web".into(),
            vip: Ipv4Addr::new(10, 96, 0, 9),
            ports: vec![crate::model::service::parse_port("80/tcp:8080").unwrap()],
            selector: [("app".to_string(), "web".to_string())].into(),
            backends: vec![],
            affinity_timeout: None,
            health_port: None,
        };
        let ep = |name: &str, node: &str, ip: [u8; 4]| RemoteEndpoint {
            name: name.into(),
            network: "blue".into(),
            ip: Ipv4Addr::from(ip),
            mac: Mac::vtep(Ipv4Addr::from(ip)),
            node: node.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            terminating: false,
        };
        let view = ClusterView {
            networks: vec![cnet("blue", "10.5.0.0/16", 7)],
            services: vec![svc.clone()],
            endpoints: vec![
                ep("w2", "n2", [10, 5, 2, 2]),
                ep("w3", "n3", [10, 5, 3, 2]),
                RemoteEndpoint {
                    network: "red".into(),
                    ..ep("lost", "n9", [10, 9, 0, 2])
                },
            ],
            ..ClusterView::default()
        };
        let merged = merge(&with_node(), &view);
        assert_eq!(merged.skipped.len(), 1, "{:?}", merged.skipped);
        assert!(
            merged.skipped[0].contains("network 'red'"),
            "{:?}",
            merged.skipped
        );
        let m = merged.model;
        let web = m.service("web").unwrap();
        assert_eq!((web.vip, web.id), (svc.vip, 1));
        assert_eq!(m.cluster_services, vec!["web".to_string()]);
        let ips: Vec<Ipv4Addr> = m.all_members(web).iter().map(|b| b.ip).collect();
        assert_eq!(
            ips,
            [Ipv4Addr::new(10, 5, 2, 2), Ipv4Addr::new(10, 5, 3, 2)]
        );
        // A change keeps the node's id; leaving the view removes both.
        let mut changed = view.clone();
        changed.services[0].ports[0].target = 9090;
        changed.endpoints.remove(0);
        let m2 = merge(&m, &changed).model;
        assert_eq!(m2.service("web").unwrap().id, 1);
        assert_eq!(m2.service("web").unwrap().ports[0].target, 9090);
        assert_eq!(m2.all_members(m2.service("web").unwrap()).len(), 1);
        let gone = merge(
            &m2,
            &ClusterView {
                networks: view.networks.clone(),
                ..ClusterView::default()
            },
        )
        .model;
        assert!(gone.services.is_empty() && gone.remote_endpoints.is_empty());
        assert!(gone.cluster_services.is_empty());
    }

    #[test]
    fn candidates_skip_the_gateway_slice() {
        let c: Vec<Ipv4Net> = candidates("10.5.0.0/22".parse().unwrap(), 24).collect();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], "10.5.1.0/24".parse::<Ipv4Net>().unwrap());
    }
}

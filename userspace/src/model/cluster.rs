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

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use weft_api::{records::NodeSource, requests::CreateNetwork};

use crate::model::{Model, PodSubnet, RemoteNode, network, overlay};

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

/// Everything the cluster store says about this node's model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub networks: Vec<ClusterNetwork>,
    /// This node's pod subnet leases.
    pub own: Vec<PodSubnet>,
    /// The other nodes, from their leases.
    pub nodes: Vec<RemoteNode>,
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
    Merged { model: m, skipped }
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
    fn candidates_skip_the_gateway_slice() {
        let c: Vec<Ipv4Net> = candidates("10.5.0.0/22".parse().unwrap(), 24).collect();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], "10.5.1.0/24".parse::<Ipv4Net>().unwrap());
    }
}

//! The entries every map the model describes must hold. Pure: the same
//! model always renders the same entries, so two renders can be diffed in
//! memory and one render compared with what a pinned map holds.

use std::collections::HashMap;

use ipnet::Ipv4Net;
use weft_common::maps::{
    ENCAP_BPF, ENCAP_TUNNEL, EndpointInfo, FdbEntry, FdbKey, FloodList, IPPROTO_TCP, IPPROTO_UDP,
    MAX_FLOOD, MaglevKey, NET_FLAG_FLOOD, NET_FLAG_MASQUERADE, NODE_FLAG_CONFIGURED,
    NODE_FLAG_OVERLAY_SERVICES, NODE_FLAG_PUBLISHES, NetPairKey, NetworkInfo, NodeConfig,
    OverlayConfig, OverlayRoute, PublishKey, PublishTarget, SERVICE_NETWORK_ID, SVC_FLAG_AFFINITY,
    SVC_MEMBER_ACTIVE, SVC_MEMBER_TERMINATING, SvcEntry, SvcKey, ifcache_slot, ipcache_slot,
};

use super::maglev;
use crate::{
    datapath::ip_be,
    model::{Encap, Endpoint, Mac, Model, Network, PodSubnet, Proto, Publication},
};

/// Every entry of every map the model describes. Array maps list the
/// slots that must hold something; every other slot must be empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredMaps {
    pub networks: HashMap<u32, NetworkInfo>,
    pub subnets: HashMap<Ipv4Net, u32>,
    pub ep_by_ip: HashMap<u32, EndpointInfo>,
    pub ep_by_if: HashMap<u32, EndpointInfo>,
    pub ep_ip_cache: HashMap<u32, EndpointInfo>,
    pub ep_if_cache: HashMap<u32, EndpointInfo>,
    pub fdb: HashMap<FdbKey, FdbEntry>,
    pub net_links: HashMap<NetPairKey, u32>,
    pub flood: HashMap<u32, FloodList>,
    pub node: HashMap<u32, NodeConfig>,
    pub publish: HashMap<PublishKey, PublishTarget>,
    pub vnis: HashMap<u32, u32>,
    pub routes: HashMap<Ipv4Net, OverlayRoute>,
    pub overlay: HashMap<u32, OverlayConfig>,
    /// Counter slot -> owner (endpoint name): a slot whose owner changes
    /// is zeroed, so an endpoint never inherits another's counters.
    pub stats_owners: HashMap<u32, String>,
    pub services: HashMap<SvcKey, SvcEntry>,
    /// Maglev tables by content id (each written as its chunks): equal
    /// ids are equal tables, so a diff compares ids, not 4 KiB chunks.
    pub maglev: HashMap<u64, std::sync::Arc<maglev::Table>>,
    pub svc_slots: HashMap<u32, u32>,
    /// Members by service id: a service's set is compared as a whole
    /// when both renders hold it, so an unchanged service costs one
    /// comparison instead of one lookup per backend.
    pub svc_members: HashMap<u32, std::sync::Arc<Members>>,
}

/// The datapath's view of network `net`.
pub fn network_info(net: &Network) -> NetworkInfo {
    let flag = |on: bool, f: u8| if on { f } else { 0 };
    NetworkInfo {
        gateway_ip_be: ip_be(net.gateway),
        subnet_be: ip_be(net.subnet.network()),
        prefix_len: net.subnet.prefix_len(),
        flags: flag(net.flood, NET_FLAG_FLOOD) | flag(net.masquerade, NET_FLAG_MASQUERADE),
        gateway_mac: net.gateway_mac().octets(),
    }
}

/// The datapath's view of endpoint `ep` of network `net` (by-IP and
/// by-ifindex tables and their caches).
pub fn endpoint_info(ep: &Endpoint, net: &Network) -> EndpointInfo {
    EndpointInfo {
        ifindex: ep.host_ifindex,
        network_id: net.id,
        ip_be: ip_be(ep.ip),
        stats_slot: ep.stats_slot,
        mac: ep.mac.octets(),
        gateway_mac: net.gateway_mac().octets(),
    }
}

/// Where the forwarding table and flood lists deliver to endpoint `ep`.
pub fn fdb_entry(ep: &Endpoint) -> FdbEntry {
    FdbEntry {
        ifindex: ep.host_ifindex,
        stats_slot: ep.stats_slot,
    }
}

pub fn fdb_key(network_id: u32, mac: Mac) -> FdbKey {
    FdbKey {
        network_id,
        mac: mac.octets(),
        _pad: [0; 2],
    }
}

/// The IP protocol number of a publishable protocol.
pub fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
    }
}

/// The map key and value of publication `p` to endpoint address `ip`.
pub fn publish_entry(p: &Publication, ip: std::net::Ipv4Addr) -> (PublishKey, PublishTarget) {
    (
        PublishKey {
            port_be: p.host_port.to_be_bytes(),
            proto: proto_number(p.proto),
            _pad: 0,
        },
        PublishTarget {
            ip_be: ip_be(ip),
            port_be: p.container_port.to_be_bytes(),
            _pad: [0; 2],
        },
    )
}

/// The node's `WEFT_NODE` entry: `NODE_FLAG_PUBLISHES` says whether any
/// port is published (only then does the overlay's encapsulation look
/// conntrack up for a published port's reply), `NODE_FLAG_OVERLAY_SERVICES`
/// whether there are services and an overlay (only then does decapsulated
/// traffic look conntrack up for a remote backend's service reply).
pub fn node_config(model: &Model) -> NodeConfig {
    let Some(node) = &model.node else {
        return NodeConfig::default();
    };
    let publishes = if model.publications.is_empty() {
        0
    } else {
        NODE_FLAG_PUBLISHES
    };
    let remote_backends = if !model.services.is_empty() && model.overlay().is_some() {
        NODE_FLAG_OVERLAY_SERVICES
    } else {
        0
    };
    NodeConfig {
        uplink_ifindex: node.uplink_ifindex,
        node_ip_be: ip_be(node.ip),
        port_min: node.port_min,
        port_max: node.port_max,
        flags: NODE_FLAG_CONFIGURED | publishes | remote_backends,
    }
}

/// The datapath's view of this node's overlay (all zero: off).
pub fn overlay_config(model: &Model) -> OverlayConfig {
    let Some((node, overlay)) = model
        .node
        .as_ref()
        .and_then(|n| n.overlay.as_ref().map(|o| (n, o)))
    else {
        return OverlayConfig::default();
    };
    OverlayConfig {
        underlay_ip_be: ip_be(node.ip),
        underlay_ifindex: node.uplink_ifindex,
        vxlan_ifindex: overlay.vxlan_ifindex,
        mtu: overlay.mtu,
        vtep_mac: overlay.vtep_mac.octets(),
        mode: match overlay.encap {
            Encap::Tunnel => ENCAP_TUNNEL,
            Encap::Bpf => ENCAP_BPF,
        },
        _pad: 0,
    }
}

/// The overlay routes: this node's pod CIDRs as local entries (underlay
/// 0), every remote node's to its underlay address and VTEP MAC.
pub fn routes(model: &Model) -> HashMap<Ipv4Net, OverlayRoute> {
    let route = |subnet: &PodSubnet, underlay: u32, vtep: Mac| {
        let net = model.network(&subnet.network)?;
        Some((
            subnet.cidr,
            OverlayRoute {
                underlay_ip_be: underlay,
                vni: net.overlay_vni(),
                network_id: net.id,
                vtep_mac: vtep.octets(),
                _pad: [0; 2],
            },
        ))
    };
    let own = model.node.iter().flat_map(|n| &n.subnets);
    let local = own.filter_map(|s| route(s, 0, Mac::default()));
    let remote = model.remote_nodes.iter().flat_map(|n| {
        n.subnets
            .iter()
            .filter_map(move |s| route(s, ip_be(n.underlay_ip), n.vtep_mac))
    });
    local.chain(remote).collect()
}

/// Synthetic endpoints for benchmarking map programming (`POST
/// /v1/bench/endpoints`): entries exactly like a real endpoint's, for
/// endpoints that cannot meet real traffic (see `engine::bench`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synthetic {
    /// Network id, never a real network's (not in `WEFT_NETWORKS`).
    pub network_id: u32,
    pub endpoints: Vec<Endpoint>,
    /// Services whose backends exist only in their tables (`POST
    /// /v1/bench/services`), rendered by the same code as real ones.
    /// Shared: every change clones the synthetic entries, and comparing
    /// two clones is one pointer comparison.
    pub services: std::sync::Arc<Vec<SyntheticService>>,
}

/// A service's members: backend address (network order) -> `SVC_MEMBER_*`.
pub type Members = std::collections::BTreeMap<u32, u32>;

/// A benchmark service: one TCP port, backends given by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticService {
    /// Never a real service's (real ids count up from 1).
    pub id: u32,
    pub vip: std::net::Ipv4Addr,
    pub port: u16,
    pub target: u16,
    pub backends: Vec<std::net::Ipv4Addr>,
    /// Its members as rendered (all active), built once: they never change.
    pub members: std::sync::Arc<Members>,
}

/// Every map entry `model` (and `synthetic`) describes.
pub fn render(model: &Model, synthetic: &Synthetic) -> DesiredMaps {
    let mut d = DesiredMaps::default();
    for net in &model.networks {
        d.networks.insert(net.id, network_info(net));
        d.subnets.insert(net.subnet.trunc(), net.id);
        d.vnis.insert(net.overlay_vni(), net.id);
        let mut flood = FloodList::default();
        for ep in model.endpoints_of(&net.name).take(MAX_FLOOD) {
            flood.members[flood.count as usize] = fdb_entry(ep);
            flood.count += 1;
        }
        d.flood.insert(net.id, flood);
        for peer in &net.connected {
            if let Some(peer) = model.network(peer) {
                let key = NetPairKey {
                    from_network: net.id,
                    to_network: peer.id,
                };
                d.net_links.insert(key, 1);
            }
        }
    }
    let real = model
        .endpoints
        .iter()
        .filter_map(|ep| Some((ep, endpoint_info(ep, model.network(&ep.network)?))));
    let fake = synthetic.endpoints.iter().map(|ep| {
        let info = EndpointInfo {
            network_id: synthetic.network_id,
            gateway_mac: [0x02, 0, 0, 0, 0, 1],
            ..endpoint_info(ep, &placeholder_network())
        };
        (ep, info)
    });
    for (ep, info) in real.chain(fake) {
        d.ep_by_ip.insert(info.ip_be, info);
        d.ep_by_if.insert(info.ifindex, info);
        // A direct-mapped slot belongs to the first endpoint (in model
        // order) that maps to it; the others are found through the hash.
        d.ep_ip_cache
            .entry(ipcache_slot(info.ip_be))
            .or_insert(info);
        d.ep_if_cache
            .entry(ifcache_slot(info.ifindex))
            .or_insert(info);
        d.fdb
            .insert(fdb_key(info.network_id, ep.mac), fdb_entry(ep));
        d.stats_owners.insert(ep.stats_slot, ep.name.clone());
    }
    if !synthetic.endpoints.is_empty() {
        let mut flood = FloodList::default();
        for ep in synthetic.endpoints.iter().take(MAX_FLOOD) {
            flood.members[flood.count as usize] = fdb_entry(ep);
            flood.count += 1;
        }
        d.flood.insert(synthetic.network_id, flood);
    }
    for p in model.publications.iter().filter(|p| !p.service) {
        if let Some(ep) = model.endpoint(&p.endpoint) {
            let (k, v) = publish_entry(p, ep.ip);
            d.publish.insert(k, v);
        }
    }
    // An array slot holding the default is an empty one.
    let node = node_config(model);
    if node != NodeConfig::default() {
        d.node.insert(0, node);
    }
    let overlay = overlay_config(model);
    if overlay != OverlayConfig::default() {
        d.overlay.insert(0, overlay);
    }
    d.routes = routes(model);
    services(model, synthetic, &mut d);
    d
}

/// The Maglev table of service `svc`: its active members, or, when none
/// is left, its terminating ones (better than refusing the client).
/// Backends failing their health check are never in it; with none
/// healthy the service has no table and refuses new connections at once
/// (RST or ICMP), as kube-proxy rejects a service without ready
/// endpoints, rather than sending clients to backends known to be down.
pub fn service_table(
    model: &Model,
    svc: &crate::model::Service,
) -> Option<std::sync::Arc<maglev::Table>> {
    let healthy: Vec<_> = model
        .all_members(svc)
        .into_iter()
        .filter(|e| !model.is_unhealthy_member(svc, e))
        .collect();
    let active: Vec<_> = healthy
        .iter()
        .filter(|e| !e.terminating)
        .map(|e| e.ip)
        .collect();
    let chosen = if active.is_empty() {
        healthy.iter().map(|e| e.ip).collect()
    } else {
        active
    };
    maglev::cached(model.service_config().maglev_size, &chosen)
}

/// The service maps, and the service range in `WEFT_SUBNETS`.
fn services(model: &Model, synthetic: &Synthetic, d: &mut DesiredMaps) {
    if model.services.is_empty() && synthetic.services.is_empty() {
        return;
    }
    let config = model.service_config();
    d.subnets.insert(config.range, SERVICE_NETWORK_ID);
    let m = config.maglev_size;
    for svc in &model.services {
        let id = put_table(d, service_table(model, svc));
        for p in &svc.ports {
            let entry = SvcEntry {
                table: id,
                svc_id: svc.id,
                size: m,
                target_port_be: p.target.to_be_bytes(),
                flags: if svc.affinity_timeout.is_some() {
                    SVC_FLAG_AFFINITY
                } else {
                    0
                },
                _pad: 0,
                affinity_s: svc.affinity_timeout.unwrap_or(0),
            };
            d.services
                .insert(svc_key(svc.vip, p.port, proto_number(p.proto)), entry);
        }
        published_services(model, svc, d);
        let mut members = Members::new();
        for member in model.all_members(svc) {
            // The datapath tells only active from not: an unhealthy
            // backend, like a drained one, keeps its established flows
            // and gets no new ones, affinity's included.
            let state = if member.terminating || model.is_unhealthy_member(svc, &member) {
                SVC_MEMBER_TERMINATING
            } else {
                SVC_MEMBER_ACTIVE
            };
            members.insert(ip_be(member.ip), state);
        }
        // Only this node's backends send through the service program: a
        // remote one's replies are translated back when they arrive here
        // over the overlay (`NODE_FLAG_OVERLAY_SERVICES`); a client on
        // another node holds the connection of a local backend's reply,
        // which leaves untranslated.
        for ep in model.members(svc) {
            d.svc_slots.insert(ep.stats_slot, 1);
        }
        if !members.is_empty() {
            d.svc_members.insert(svc.id, members.into());
        }
    }
    for svc in synthetic.services.iter() {
        let id = put_table(d, maglev::cached(m, &svc.backends));
        let entry = SvcEntry {
            table: id,
            svc_id: svc.id,
            size: m,
            target_port_be: svc.target.to_be_bytes(),
            ..SvcEntry::default()
        };
        d.services
            .insert(svc_key(svc.vip, svc.port, IPPROTO_TCP), entry);
        if !svc.members.is_empty() {
            d.svc_members.insert(svc.id, svc.members.clone());
        }
    }
}

/// The `WEFT_SERVICES` entries of `svc`'s published ports (`weft publish
/// SERVICE PORT`): keyed by the node's address and the host port (no VIP
/// can be the node's address), with a Maglev table of this node's
/// backends only, as Kubernetes' `externalTrafficPolicy: Local` (the
/// client's address kept, the reply from this node).
fn published_services(model: &Model, svc: &crate::model::Service, d: &mut DesiredMaps) {
    let Some(node) = &model.node else {
        return;
    };
    let published: Vec<_> = model
        .publications
        .iter()
        .filter(|p| p.service && p.endpoint == svc.name)
        .collect();
    if published.is_empty() {
        return;
    }
    let m = model.service_config().maglev_size;
    let members: Vec<_> = model
        .members(svc)
        .into_iter()
        .filter(|e| !model.is_unhealthy(svc, e))
        .collect();
    let active: Vec<_> = members
        .iter()
        .filter(|e| !e.terminating)
        .map(|e| e.ip)
        .collect();
    let chosen = if active.is_empty() {
        members.iter().map(|e| e.ip).collect()
    } else {
        active
    };
    let id = put_table(d, maglev::cached(m, &chosen));
    for p in published {
        let Some(port) = svc
            .ports
            .iter()
            .find(|s| s.proto == p.proto && s.port == p.container_port)
        else {
            continue;
        };
        let key = svc_key(node.ip, p.host_port, proto_number(p.proto));
        let entry = SvcEntry {
            table: id,
            svc_id: svc.id,
            size: m,
            target_port_be: port.target.to_be_bytes(),
            flags: if svc.affinity_timeout.is_some() {
                SVC_FLAG_AFFINITY
            } else {
                0
            },
            _pad: 0,
            affinity_s: svc.affinity_timeout.unwrap_or(0),
        };
        d.services.insert(key, entry);
    }
}

fn svc_key(vip: std::net::Ipv4Addr, port: u16, proto: u8) -> SvcKey {
    SvcKey {
        vip_be: ip_be(vip),
        port_be: port.to_be_bytes(),
        proto,
        _pad: 0,
    }
}

/// Puts table `t` in `d`; its content id (0: no table).
fn put_table(d: &mut DesiredMaps, t: Option<std::sync::Arc<maglev::Table>>) -> u64 {
    let Some(t) = t else { return 0 };
    let id = t.id;
    d.maglev.insert(id, t);
    id
}

/// The datapath's key of chunk `chunk` of table `table`.
pub fn maglev_key(table: u64, chunk: usize) -> MaglevKey {
    MaglevKey {
        table,
        chunk: chunk as u32,
        _pad: 0,
    }
}

fn placeholder_network() -> Network {
    Network {
        name: String::new(),
        id: 0,
        subnet: Ipv4Net::default(),
        gateway: std::net::Ipv4Addr::UNSPECIFIED,
        flood: false,
        masquerade: false,
        connected: Vec::new(),
        vni: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use weft_api::requests::{AddEndpoint, CreateNetwork};

    use super::*;
    use crate::model::{endpoint, network};

    fn model_with(endpoints: &[(&str, &str)]) -> Model {
        let mut m = Model::default();
        for (i, net) in ["blue", "green"].into_iter().enumerate() {
            let req = CreateNetwork {
                name: net.into(),
                subnet: format!("10.{}.0.0/24", i + 1),
                gateway: None,
                flood: false,
                masquerade: true,
                vni: None,
            };
            m = network::create(&m, &req).unwrap().0;
        }
        for (i, (name, net)) in endpoints.iter().enumerate() {
            let req = AddEndpoint {
                network: (*net).into(),
                netns: (*name).into(),
                ip: None,
                name: None,
                ifname: None,
                mtu: None,
                labels: Vec::new(),
                mac: None,
            };
            m = endpoint::add(&m, &req).unwrap().0;
            m.endpoints[i].host_ifindex = 10 + i as u32;
        }
        m
    }

    /// Two nodes of a cluster, each with two backends of its own and the
    /// other's two as remote endpoints, render the same Maglev table and
    /// members (so any node picks the same backend for a flow); only their
    /// own backends are flagged for the service program.
    #[test]
    fn every_node_renders_the_same_table_from_local_and_remote_members() {
        use weft_api::records::RemoteEndpoint;

        use crate::model::cluster::{ClusterService, ClusterView, merge};
        let web = || [("app".to_string(), "web".to_string())].into();
        let node = |names: [&str; 2], last: [u8; 2], others: [(&str, u8); 2], other: &str| {
            let mut m = model_with(&[(names[0], "blue"), (names[1], "blue")]);
            for (ep, octet) in m.endpoints.iter_mut().zip(last) {
                ep.ip = Ipv4Addr::new(10, 1, 0, octet);
                ep.labels = web();
            }
            m.remote_endpoints = others
                .iter()
                .map(|(name, octet)| RemoteEndpoint {
                    name: (*name).into(),
                    network: "blue".into(),
                    ip: Ipv4Addr::new(10, 1, 0, *octet),
                    mac: Mac::gateway(*octet as u32),
                    node: other.into(),
                    labels: web(),
                    terminating: false,
                })
                .collect();
            let view = ClusterView {
                services: vec![ClusterService {
                    name: "web".into(),
                    vip: Ipv4Addr::new(10, 96, 0, 7),
                    ports: vec![crate::model::service::parse_port("80/tcp:8080").unwrap()],
                    selector: web(),
                    backends: vec![],
                    affinity_timeout: None,
                    health_port: None,
                }],
                endpoints: m.remote_endpoints.clone(),
                ..ClusterView::default()
            };
            let merged = merge(&m, &view);
            assert!(merged.skipped.is_empty(), "{:?}", merged.skipped);
            render(&merged.model, &Synthetic::default())
        };
        let d1 = node(["a", "b"], [2, 3], [("c", 130), ("d", 131)], "n2");
        let d2 = node(["c", "d"], [130, 131], [("a", 2), ("b", 3)], "n1");
        assert_eq!(d1.services, d2.services, "the same table id on both nodes");
        assert_eq!(d1.maglev, d2.maglev, "the same slots on both nodes");
        assert_eq!(d1.svc_members, d2.svc_members);
        assert_eq!(
            d1.svc_members.values().map(|m| m.len()).sum::<usize>(),
            4,
            "every node's backends are members"
        );
        let slots: std::collections::BTreeSet<Ipv4Addr> = d1
            .maglev
            .values()
            .flat_map(|t| &t.chunks)
            .flat_map(|c| c.slots.iter().copied())
            .filter(|&ip| ip != 0)
            .map(|ip| Ipv4Addr::from(ip.to_ne_bytes()))
            .collect();
        assert_eq!(slots.len(), 4, "the table holds all four: {slots:?}");
        assert_eq!(d1.svc_slots.len(), 2, "only local backends are flagged");
    }

    #[test]
    fn endpoints_render_into_every_lookup_table() {
        let m = model_with(&[("a", "blue"), ("b", "blue"), ("c", "green")]);
        let d = render(&m, &Synthetic::default());
        assert_eq!(d.networks.len(), 2);
        assert_eq!(d.ep_by_ip.len(), 3);
        let a = d.ep_by_if[&10];
        assert_eq!(a.ip_be, ip_be(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(a.gateway_mac, Mac::gateway(1).octets());
        assert_eq!(d.ep_if_cache[&ifcache_slot(10)], a);
        assert_eq!(d.flood[&1].count, 2);
        assert_eq!(d.flood[&2].count, 1);
        assert!(d.net_links.is_empty());
        assert!(d.node.is_empty(), "no node: WEFT_NODE stays empty");
        assert_eq!(d.stats_owners[&2], "c");
    }

    #[test]
    fn a_cache_slot_goes_to_the_first_endpoint_mapping_to_it() {
        let mut m = model_with(&[("a", "blue"), ("b", "blue")]);
        // Two ifindexes one cache size apart share a slot.
        m.endpoints[1].host_ifindex = 10 + weft_common::maps::EP_CACHE_SLOTS;
        let d = render(&m, &Synthetic::default());
        assert_eq!(d.ep_if_cache.len(), 1);
        assert_eq!(d.ep_if_cache[&ifcache_slot(10)].ifindex, 10);
        assert_eq!(d.ep_by_if.len(), 2);
        m.endpoints.remove(0);
        let d = render(&m, &Synthetic::default());
        assert_eq!(
            d.ep_if_cache[&ifcache_slot(10)].ifindex,
            10 + weft_common::maps::EP_CACHE_SLOTS
        );
    }

    #[test]
    fn connections_publications_and_routes() {
        let mut m = model_with(&[("a", "blue")]);
        m = network::connect(&m, "blue", "green").unwrap();
        m.node = Some(crate::model::NodeUplink {
            uplink: "up".into(),
            uplink_ifindex: 3,
            ip: Ipv4Addr::new(192, 0, 2, 1),
            port_min: 61000,
            port_max: 65535,
            conntrack_max: None,
            forwarding_before: None,
            overlay: None,
            subnets: vec![PodSubnet {
                network: "blue".into(),
                cidr: "10.1.0.0/25".parse().unwrap(),
            }],
        });
        m.publications.push(Publication {
            service: false,
            endpoint: "a".into(),
            proto: Proto::Udp,
            host_port: 53,
            container_port: 5353,
        });
        let d = render(&m, &Synthetic::default());
        assert_eq!(d.net_links.len(), 2);
        assert_eq!(d.node[&0].flags, NODE_FLAG_CONFIGURED | NODE_FLAG_PUBLISHES);
        let (k, v) = d.publish.iter().next().unwrap();
        assert_eq!((k.proto, u16::from_be_bytes(k.port_be)), (IPPROTO_UDP, 53));
        assert_eq!(u16::from_be_bytes(v.port_be), 5353);
        let local = d.routes[&"10.1.0.0/25".parse().unwrap()];
        assert_eq!((local.underlay_ip_be, local.vni), (0, 1));
    }

    #[test]
    fn services_render_tables_members_and_the_range() {
        use weft_api::requests::CreateService;
        let mut m = model_with(&[("a", "blue"), ("b", "blue"), ("c", "green")]);
        m.endpoints[0].labels.insert("app".into(), "web".into());
        m.endpoints[1].labels.insert("app".into(), "web".into());
        let req = CreateService {
            name: "web".into(),
            ports: vec!["80/tcp:8080".into(), "53/udp".into()],
            selector: vec!["app=web".into()],
            ..CreateService::default()
        };
        m = crate::model::service::create(&m, &req).unwrap().0;
        let d = render(&m, &Synthetic::default());
        assert_eq!(
            d.subnets[&"10.96.0.0/16".parse().unwrap()],
            SERVICE_NETWORK_ID
        );
        assert_eq!(d.services.len(), 2);
        let entry = d.services.values().next().unwrap();
        assert_ne!(entry.table, 0);
        // 16381 slots in 16 chunks of 1024.
        assert_eq!(d.maglev.len(), 1);
        assert_eq!(d.maglev[&entry.table].chunks.len(), 16);
        assert_eq!(d.svc_members.values().map(|m| m.len()).sum::<usize>(), 2);
        assert_eq!(d.svc_slots.len(), 2);
        let table = entry.table;

        // Draining one backend swaps in a new table without it; draining
        // both falls back to the terminating ones.
        m.endpoints[0].terminating = true;
        let d2 = render(&m, &Synthetic::default());
        let e2 = d2.services.values().next().unwrap();
        assert_ne!(e2.table, table);
        assert!(d2.maglev.values().flat_map(|t| &t.chunks).all(|c| {
            c.slots
                .iter()
                .all(|&ip| ip == 0 || ip == ip_be(m.endpoints[1].ip))
        }));
        assert_eq!(
            d2.svc_members
                .values()
                .flat_map(|m| m.values())
                .filter(|&&s| s == SVC_MEMBER_TERMINATING)
                .count(),
            1
        );
        m.endpoints[1].terminating = true;
        let d3 = render(&m, &Synthetic::default());
        assert_eq!(d3.services.values().next().unwrap().table, table);

        // An unhealthy backend is out of the table and not active, even
        // when it is the only one left: the service then refuses.
        m.endpoints[1].terminating = false;
        m.endpoints[0].terminating = false;
        let name = m.endpoints[0].name.clone();
        m.unhealthy
            .insert("web".into(), [name.clone()].into_iter().collect());
        let d5 = render(&m, &Synthetic::default());
        let e5 = d5.services.values().next().unwrap();
        assert!(d5.maglev.values().flat_map(|t| &t.chunks).all(|c| {
            c.slots
                .iter()
                .all(|&ip| ip == 0 || ip == ip_be(m.endpoints[1].ip))
        }));
        assert_eq!(
            d5.svc_members[&m.services[0].id][&ip_be(m.endpoints[0].ip)],
            SVC_MEMBER_TERMINATING
        );
        m.unhealthy.insert(
            "web".into(),
            [name, m.endpoints[1].name.clone()].into_iter().collect(),
        );
        let d6 = render(&m, &Synthetic::default());
        assert_eq!(d6.services.values().next().unwrap().table, 0);
        assert_ne!(e5.table, 0);
        m.unhealthy.clear();

        // No member: the entry stays, with no table (no-backend drop).
        m.endpoints[0].labels.clear();
        m.endpoints[1].labels.clear();
        let d4 = render(&m, &Synthetic::default());
        assert_eq!(d4.services.values().next().unwrap().table, 0);
        assert!(d4.maglev.is_empty() && d4.svc_slots.is_empty());
    }
}

//! Answers built from the model and from what the kernel holds now.

use std::{collections::BTreeSet, net::Ipv4Addr};

use weft_api::views::{
    ConnView, ConntrackFill, CounterView, EndpointStatsView, NatView, NetworkDetail, NetworkView,
    NodeEntry, NodeView, Ordered, PortUse, PublishView, StatsView, SubnetEntry, Tuple,
};
use weft_common::maps::{
    CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_TCP_CLOSED, CT_TCP_ESTABLISHED, CT_TCP_FIN_WAIT,
    CT_TCP_SYN_SENT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    datapath::{conntrack, counters::read_counters, ct_budget, ip_be, paths::Paths, sysctl},
    error::Result,
    model::{Model, Network, Publication, RemoteNode, require_network},
};

pub fn network(net: &Network, model: &Model) -> NetworkView {
    let connected: BTreeSet<String> = net.connected.iter().cloned().collect();
    NetworkView {
        name: net.name.clone(),
        id: net.id,
        subnet: net.subnet.to_string(),
        gateway: net.gateway,
        gateway_mac: net.gateway_mac(),
        flood: net.flood,
        masquerade: net.masquerade,
        connected: connected.into_iter().collect(),
        endpoints: model.endpoints_of(&net.name).count(),
        vni: net.overlay_vni(),
    }
}

pub fn networks(model: &Model) -> Vec<NetworkView> {
    model.networks.iter().map(|n| network(n, model)).collect()
}

pub fn network_detail(model: &Model, name: &str) -> Result<NetworkDetail> {
    let net = require_network(model, name)?;
    Ok(NetworkDetail {
        network: network(net, model),
        containers: model.endpoints_of(name).cloned().collect(),
    })
}

pub fn remote_node(node: &RemoteNode, model: &Model) -> NodeEntry {
    NodeEntry {
        name: node.name.clone(),
        underlay_ip: node.underlay_ip,
        vtep_mac: node.vtep_mac,
        subnets: node
            .subnets
            .iter()
            .map(|s| SubnetEntry {
                network: s.network.clone(),
                cidr: s.cidr,
                vni: model.network(&s.network).map_or(0, |n| n.overlay_vni()),
            })
            .collect(),
        source: node.source,
    }
}

pub fn publication(model: &Model, p: &Publication) -> PublishView {
    PublishView {
        endpoint: p.endpoint.clone(),
        proto: p.proto,
        host_ip: model.node.as_ref().map(|n| n.ip),
        host_port: p.host_port,
        container_ip: if p.service {
            model.service(&p.endpoint).map(|s| s.vip)
        } else {
            model.endpoint(&p.endpoint).map(|e| e.ip)
        }
        .unwrap_or(Ipv4Addr::UNSPECIFIED),
        container_port: p.container_port,
        service: p.service,
    }
}

/// The node's uplink as the model has it, with whether its program is
/// attached and whether the node forwards.
pub fn node(paths: &Paths, model: &Model) -> NodeView {
    let forwarding = sysctl::read(sysctl::FORWARDING).is_ok_and(|v| v == "1");
    let attached = paths.uplink_link_pin().exists();
    match &model.node {
        None => NodeView {
            forwarding,
            attached,
            ..NodeView::default()
        },
        Some(n) => NodeView {
            configured: true,
            uplink: Some(n.uplink.clone()),
            uplink_ifindex: Some(n.uplink_ifindex),
            ip: Some(n.ip),
            port_min: Some(n.port_min),
            port_max: Some(n.port_max),
            port_range_size: Some(u32::from(n.port_max - n.port_min) + 1),
            conntrack_max: Some(ct_budget::effective_limit(n.conntrack_max)),
            attached,
            forwarding,
            overlay: n.overlay.clone(),
            subnets: n.subnets.clone(),
        },
    }
}

/// Every drop and forward counter, and each endpoint's, from the pinned
/// maps (zeros when nothing is set up).
pub fn stats(paths: &Paths, model: &Model) -> Result<StatsView> {
    let slots: Vec<u32> = model.endpoints.iter().map(|e| e.stats_slot).collect();
    let counters = read_counters(paths, &slots)?;
    let view = |c: &weft_common::maps::Counter| CounterView {
        packets: c.packets,
        bytes: c.bytes,
    };
    Ok(StatsView {
        drops: Ordered(
            counters
                .drops
                .iter()
                .map(|(r, c)| (r.name().to_string(), view(c)))
                .collect(),
        ),
        forwards: Ordered(
            counters
                .forwards
                .iter()
                .map(|(r, c)| (r.name().to_string(), view(c)))
                .collect(),
        ),
        endpoints: Ordered(
            model
                .endpoints
                .iter()
                .zip(&counters.endpoints)
                .map(|(ep, (_, s))| {
                    let s = EndpointStatsView {
                        rx_packets: s.rx_packets,
                        rx_bytes: s.rx_bytes,
                        tx_packets: s.tx_packets,
                        tx_bytes: s.tx_bytes,
                    };
                    (ep.name.clone(), s)
                })
                .collect(),
        ),
    })
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        other => other.to_string(),
    }
}

fn tuple(t: (u32, [u8; 2], u32, [u8; 2])) -> Tuple {
    Tuple {
        src: Ipv4Addr::from(t.0.to_ne_bytes()),
        sport: u16::from_be_bytes(t.1),
        dst: Ipv4Addr::from(t.2.to_ne_bytes()),
        dport: u16::from_be_bytes(t.3),
    }
}

/// Every translated connection, each once.
pub fn connections(paths: &Paths) -> Result<Vec<ConnView>> {
    let entries = conntrack::snapshot(paths)?;
    let now = conntrack::now_ns();
    Ok(conntrack::connections(&entries, now)
        .into_iter()
        .map(|c| ConnView {
            proto: proto_name(c.proto),
            original: tuple(c.original),
            translated: tuple(c.translated),
            state: if c.expired {
                "expired".into()
            } else if c.proto == IPPROTO_TCP {
                match c.tcp_state {
                    CT_TCP_SYN_SENT => "syn_sent",
                    CT_TCP_ESTABLISHED => "established",
                    CT_TCP_FIN_WAIT => "fin_wait",
                    CT_TCP_CLOSED => "closed",
                    _ => "none",
                }
                .into()
            } else {
                "active".into()
            },
            kind: if c.flags & CT_FLAG_HAIRPIN != 0 {
                "hairpin"
            } else if c.flags & CT_FLAG_DNAT != 0 {
                "dnat"
            } else {
                "snat"
            }
            .into(),
            age_seconds: now.saturating_sub(c.created_ns) / 1_000_000_000,
            idle_seconds: now.saturating_sub(c.last_seen_ns) / 1_000_000_000,
            packets_orig: c.packets_orig,
            bytes_orig: c.bytes_orig,
            packets_reply: c.packets_reply,
            bytes_reply: c.bytes_reply,
        })
        .collect())
}

/// NAT port use by protocol, for the node's address and range.
pub fn nat(paths: &Paths, model: &Model) -> Result<NatView> {
    let Some(node) = &model.node else {
        return Ok(NatView {
            ip: None,
            ports: None,
            range_size: 0,
            protocols: Vec::new(),
            conntrack: ConntrackFill::default(),
        });
    };
    let size = u32::from(node.port_max - node.port_min) + 1;
    let entries = conntrack::snapshot(paths)?;
    let used = conntrack::ports_used(&entries, ip_be(node.ip), (node.port_min, node.port_max));
    let protocols = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]
        .into_iter()
        .map(|p| {
            let (used, connections) = used.get(&p).copied().unwrap_or((0, 0));
            PortUse {
                proto: proto_name(p),
                used,
                connections,
                range_size: size,
            }
        })
        .collect();
    Ok(NatView {
        ip: Some(node.ip),
        ports: Some(format!("{}-{}", node.port_min, node.port_max)),
        range_size: size,
        protocols,
        conntrack: ConntrackFill {
            connections: conntrack::connection_count(&entries),
            limit: ct_budget::effective_limit(node.conntrack_max),
        },
    })
}

/// Each network's subnet route plus each direction of each network link.
pub fn managed_routes(model: &Model) -> usize {
    model.networks.iter().map(|n| 1 + n.connected.len()).sum()
}

/// A service as `service ls` shows it.
pub fn service(svc: &crate::model::Service, model: &Model) -> weft_api::views::ServiceView {
    let members = model.all_members(svc);
    let unhealthy = members
        .iter()
        .filter(|e| model.is_unhealthy_member(svc, e))
        .count();
    let terminating = members
        .iter()
        .filter(|e| e.terminating && !model.is_unhealthy_member(svc, e))
        .count();
    weft_api::views::ServiceView {
        name: svc.name.clone(),
        id: svc.id,
        vip: svc.vip,
        ports: svc.ports.clone(),
        selector: svc.selector.clone(),
        backends: svc.backends.clone(),
        affinity_timeout: svc.affinity_timeout,
        health_port: svc.health_port,
        active: members.len() - terminating - unhealthy,
        terminating,
        unhealthy,
    }
}

/// `service inspect`: the backends with their state, Maglev share and the
/// connections conntrack pins to them (client-side entries of this
/// service's VIP; an unreadable table counts none).
pub fn service_detail(
    paths: &Paths,
    model: &Model,
    name: &str,
) -> Result<weft_api::views::ServiceDetail> {
    let svc = crate::model::service::require(model, name)?;
    let table = crate::render::maps::service_table(model, svc);
    let now = conntrack::now_ns();
    let entries = conntrack::snapshot(paths).unwrap_or_default();
    let vip_be = crate::datapath::ip_be(svc.vip);
    let counts = crate::datapath::counters::service_counts(paths).unwrap_or_default();
    let pinned = |ip: Ipv4Addr| {
        let ip_be = crate::datapath::ip_be(ip);
        entries
            .iter()
            .filter(|(k, e)| {
                e.flags & weft_common::maps::CT_FLAG_SERVICE != 0
                    && e.direction != weft_common::maps::CT_DIR_ORIGINAL
                    && k.dst_ip_be == vip_be
                    && e.xlate_ip_be == ip_be
                    && !conntrack::expired(k, e, None, now, None)
            })
            .count() as u64
    };
    let members = model
        .all_members(svc)
        .into_iter()
        .map(|ep| {
            let slots = table.as_ref().map_or(0, |t| {
                t.backends
                    .iter()
                    .position(|b| *b == ep.ip)
                    .map_or(0, |i| t.shares()[i])
            });
            weft_api::views::BackendView {
                endpoint: ep.name.to_owned(),
                ip: ep.ip,
                state: if model.is_unhealthy_member(svc, &ep) {
                    "unhealthy"
                } else if ep.terminating {
                    "terminating"
                } else {
                    "active"
                }
                .into(),
                connections: pinned(ep.ip),
                new_connections: counts.get(&(svc.id, ep.ip)).copied().unwrap_or(0),
                slots,
                node: ep.node.map(str::to_owned),
            }
        })
        .collect();
    Ok(weft_api::views::ServiceDetail {
        service: service(svc, model),
        members,
        maglev_size: model.service_config().maglev_size,
        refused: counts
            .get(&(svc.id, Ipv4Addr::UNSPECIFIED))
            .copied()
            .unwrap_or(0),
    })
}

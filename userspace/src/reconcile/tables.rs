//! The maps `state.json` describes, each with the entries the state says it
//! must hold. A new such map: one `desired` function and one line in
//! [`tables`].

use weft_common::maps::{
    EndpointInfo, FdbEntry, FdbKey, FloodList, MAP_EP_BY_IF, MAP_EP_BY_IP, MAP_EP_IF_CACHE,
    MAP_EP_IP_CACHE, MAP_FDB, MAP_FLOOD, MAP_NET_LINKS, MAP_NETWORKS, MAP_NODE, MAP_OVERLAY,
    MAP_PUBLISH, MAP_ROUTES, MAP_SUBNETS, MAP_VNIS, NetPairKey, NetworkInfo, NodeConfig,
    OverlayConfig, OverlayRoute, PublishKey, PublishTarget, ifcache_slot, ipcache_slot,
};

use super::{Hash, Prefixes, Slots, Table};
use crate::{
    cmd::{
        endpoint::{endpoint_info, fdb_entry, flood_list},
        node::node_config_of,
        publish,
    },
    datapath::{fdb_key, network_info},
    mac::Mac,
    overlay,
    state::State,
};

/// Every map the saved state describes, in the order a repair writes them:
/// tables before the caches in front of them, so the program never finds a
/// cached endpoint the table lacks.
pub fn tables() -> &'static [&'static dyn Table] {
    TABLES
}

static TABLES: &[&dyn Table] = &[
    &NETWORKS,
    &SUBNETS,
    &EP_BY_IP,
    &EP_BY_IF,
    &EP_IP_CACHE,
    &EP_IF_CACHE,
    &FDB,
    &NET_LINKS,
    &FLOOD,
    &NODE,
    &PUBLISH,
    &VNIS,
    &ROUTES,
    &OVERLAY,
];

static NETWORKS: Hash<u32, NetworkInfo> = Hash {
    map: MAP_NETWORKS,
    desired: |st| {
        st.networks
            .iter()
            .map(|n| (n.id, network_info(n)))
            .collect()
    },
    name: |id| format!("network #{id}"),
};

static SUBNETS: Prefixes<u32> = Prefixes {
    map: MAP_SUBNETS,
    desired: |st| {
        st.networks
            .iter()
            .map(|n| (n.subnet.trunc(), n.id))
            .collect()
    },
};

/// Every endpoint whose network exists, as the datapath sees it.
fn endpoints(st: &State) -> impl Iterator<Item = EndpointInfo> + '_ {
    st.endpoints
        .iter()
        .filter_map(|ep| Some(endpoint_info(ep, st.network(&ep.network)?)))
}

fn ip_name(ip_be: &u32) -> String {
    std::net::Ipv4Addr::from(ip_be.to_ne_bytes()).to_string()
}

static EP_BY_IP: Hash<u32, EndpointInfo> = Hash {
    map: MAP_EP_BY_IP,
    desired: |st| endpoints(st).map(|i| (i.ip_be, i)).collect(),
    name: ip_name,
};

static EP_BY_IF: Hash<u32, EndpointInfo> = Hash {
    map: MAP_EP_BY_IF,
    desired: |st| endpoints(st).map(|i| (i.ifindex, i)).collect(),
    name: |ifindex| format!("ifindex {ifindex}"),
};

static EP_IP_CACHE: Slots<EndpointInfo> = Slots {
    map: MAP_EP_IP_CACHE,
    desired: |st| endpoints(st).map(|i| (ipcache_slot(i.ip_be), i)).collect(),
};

static EP_IF_CACHE: Slots<EndpointInfo> = Slots {
    map: MAP_EP_IF_CACHE,
    desired: |st| {
        endpoints(st)
            .map(|i| (ifcache_slot(i.ifindex), i))
            .collect()
    },
};

static FDB: Hash<FdbKey, FdbEntry> = Hash {
    map: MAP_FDB,
    desired: |st| {
        st.endpoints
            .iter()
            .filter_map(|ep| Some((fdb_key(st.network(&ep.network)?.id, ep.mac), fdb_entry(ep))))
            .collect()
    },
    name: |k| format!("network #{} {}", k.network_id, Mac(k.mac)),
};

static NET_LINKS: Hash<NetPairKey, u32> = Hash {
    map: MAP_NET_LINKS,
    desired: |st| {
        st.networks
            .iter()
            .flat_map(|n| {
                n.connected.iter().filter_map(move |peer| {
                    let key = NetPairKey {
                        from_network: n.id,
                        to_network: st.network(peer)?.id,
                    };
                    Some((key, 1))
                })
            })
            .collect()
    },
    name: |k| format!("network #{} -> #{}", k.from_network, k.to_network),
};

static FLOOD: Hash<u32, FloodList> = Hash {
    map: MAP_FLOOD,
    desired: |st| {
        st.networks
            .iter()
            .map(|n| (n.id, flood_list(st, &n.name)))
            .collect()
    },
    name: |id| format!("network #{id}"),
};

static NODE: Slots<NodeConfig> = Slots {
    map: MAP_NODE,
    desired: |st| vec![(0, node_config_of(st).unwrap_or_default())],
};

static VNIS: Hash<u32, u32> = Hash {
    map: MAP_VNIS,
    desired: |st| {
        st.networks
            .iter()
            .map(|n| (n.overlay_vni(), n.id))
            .collect()
    },
    name: |vni| format!("VNI {vni}"),
};

static ROUTES: Prefixes<OverlayRoute> = Prefixes {
    map: MAP_ROUTES,
    desired: |st| overlay::routes(st).into_iter().collect(),
};

static OVERLAY: Slots<OverlayConfig> = Slots {
    map: MAP_OVERLAY,
    desired: |st| vec![(0, overlay::overlay_config(st.node.as_ref()))],
};

static PUBLISH: Hash<PublishKey, PublishTarget> = Hash {
    map: MAP_PUBLISH,
    desired: |st| {
        st.publications
            .iter()
            .filter_map(|p| Some(publish::entry(p, st.endpoint(&p.endpoint)?.ip)))
            .collect()
    },
    name: |k| {
        let proto = if k.proto == weft_common::maps::IPPROTO_UDP {
            "udp"
        } else {
            "tcp"
        };
        format!("published port {}/{proto}", u16::from_be_bytes(k.port_be))
    },
};

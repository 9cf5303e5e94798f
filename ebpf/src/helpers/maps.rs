//! The datapath's maps, pinned by name so every `weft` invocation and the
//! agent share one copy (see `weft_common::maps` for the ABI).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use weft_common::maps::{
    COUNTER_SLOTS, CT_BUDGET_SLOTS, CT_CLOSING_MAX_ENTRIES, CT_MAX_ENTRIES, Counter, CtEntry,
    CtKey, ENCAP_NONE, EP_CACHE_SLOTS, EndpointInfo, EndpointStats, FdbEntry, FdbKey, FloodList,
    MAX_ENDPOINTS, MAX_NET_LINKS, MAX_NETWORKS, MAX_PUBLISHED, MAX_ROUTES, NODE_FLAG_CONFIGURED,
    NetPairKey, NetworkInfo, NodeConfig, OverlayConfig, OverlayRoute, PublishKey, PublishTarget,
    ifcache_slot, ipcache_slot,
};

/// Tail-call targets (`weft_common::maps::TAIL_*`), filled by userspace;
/// jumped to through `tail::hand_over`.
#[map(name = "WEFT_TAILS")]
pub static TAILS: ProgramArray = ProgramArray::pinned(weft_common::maps::MAX_TAILS, 0);

#[map(name = "WEFT_NETWORKS")]
pub static NETWORKS: HashMap<u32, NetworkInfo> = HashMap::pinned(MAX_NETWORKS, 0);

#[map(name = "WEFT_SUBNETS")]
pub static SUBNETS: LpmTrie<u32, u32> = LpmTrie::pinned(MAX_NETWORKS, 0);

#[map(name = "WEFT_EP_BY_IP")]
pub static EP_BY_IP: HashMap<u32, EndpointInfo> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "WEFT_EP_BY_IF")]
pub static EP_BY_IF: HashMap<u32, EndpointInfo> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "WEFT_EP_IPCACHE")]
pub static EP_IP_CACHE: Array<EndpointInfo> = Array::pinned(EP_CACHE_SLOTS, 0);

#[map(name = "WEFT_EP_IFCACHE")]
pub static EP_IF_CACHE: Array<EndpointInfo> = Array::pinned(EP_CACHE_SLOTS, 0);

#[map(name = "WEFT_FDB")]
pub static FDB: HashMap<FdbKey, FdbEntry> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "WEFT_NET_LINKS")]
pub static NET_LINKS: HashMap<NetPairKey, u32> = HashMap::pinned(MAX_NET_LINKS, 0);

#[map(name = "WEFT_FLOOD")]
pub static FLOOD: HashMap<u32, FloodList> = HashMap::pinned(MAX_NETWORKS, 0);

#[map(name = "WEFT_DROPS")]
pub static DROPS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

#[map(name = "WEFT_FORWARDS")]
pub static FORWARDS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

/// An array, not a hash: counting on the fast path is an inlined index.
#[map(name = "WEFT_EP_STATS")]
pub static EP_STATS: PerCpuArray<EndpointStats> = PerCpuArray::pinned(MAX_ENDPOINTS, 0);

/// Entry 0: the node's uplink and masquerade settings.
#[map(name = "WEFT_NODE")]
pub static NODE: Array<NodeConfig> = Array::pinned(1, 0);

/// Connection tracking of open connections. LRU, so entries nobody
/// collected (no agent running) make room for new ones by themselves; a
/// TCP connection moves to [`CT_CLOSING`] when it closes, and while a GC
/// keeps `CT_BUDGET` fresh new connections are refused before the table
/// is full, so no open connection is ever evicted.
#[map(name = "WEFT_CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(CT_MAX_ENTRIES, 0);

/// Closed TCP connections (`weft_common::maps::MAP_CT_CLOSING`).
#[map(name = "WEFT_CT_CLOSING")]
pub static CT_CLOSING: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(CT_CLOSING_MAX_ENTRIES, 0);

/// The connection budget of [`CT`] (`weft_common::maps::MAP_CT_BUDGET`).
#[map(name = "WEFT_CT_BUDGET")]
pub static CT_BUDGET: PerCpuArray<u64> = PerCpuArray::pinned(CT_BUDGET_SLOTS, 0);

/// Published ports (DNAT): a hash, so a lookup costs the same for one
/// published port as for ten thousand.
#[map(name = "WEFT_PUBLISH")]
pub static PUBLISH: HashMap<PublishKey, PublishTarget> = HashMap::pinned(MAX_PUBLISHED, 0);

/// Where published port `port_be` of protocol `proto` leads.
#[inline(always)]
pub fn published(proto: u8, port_be: [u8; 2]) -> Option<PublishTarget> {
    let key = PublishKey {
        port_be,
        proto,
        _pad: 0,
    };
    // SAFETY: as in `network`.
    PUBLISH.get_ptr(key).map(|p| unsafe { *p })
}

/// Entry 0: this node's overlay (mode `ENCAP_NONE` until configured).
#[map(name = "WEFT_OVERLAY")]
pub static OVERLAY: Array<OverlayConfig> = Array::pinned(1, 0);

/// Pod CIDRs of every node to the node that owns them.
#[map(name = "WEFT_ROUTES")]
pub static ROUTES: LpmTrie<u32, OverlayRoute> = LpmTrie::pinned(MAX_ROUTES, 0);

/// VNI (host order) to this node's network id.
#[map(name = "WEFT_VNIS")]
pub static VNIS: HashMap<u32, u32> = HashMap::pinned(MAX_NETWORKS, 0);

/// This node's overlay settings, once an encapsulation mode is set.
#[inline(always)]
pub fn overlay_config() -> Option<OverlayConfig> {
    OVERLAY.get(0).copied().filter(|o| o.mode != ENCAP_NONE)
}

/// The overlay route (longest prefix) for `ip_be`.
#[inline(always)]
pub fn overlay_route(ip_be: u32) -> Option<OverlayRoute> {
    ROUTES
        .get(aya_ebpf::maps::lpm_trie::Key::new(32, ip_be))
        .copied()
}

/// This node's network carried by VXLAN network identifier `vni`.
#[inline(always)]
pub fn network_of_vni(vni: u32) -> Option<u32> {
    // SAFETY: as in `network`.
    VNIS.get_ptr(vni).map(|p| unsafe { *p })
}

/// The node's masquerade settings, once userspace has configured them.
#[inline(always)]
pub fn node_config() -> Option<NodeConfig> {
    NODE.get(0)
        .copied()
        .filter(|n| n.flags & NODE_FLAG_CONFIGURED != 0)
}

/// A copy of the network with id `id`.
#[inline(always)]
pub fn network(id: u32) -> Option<NetworkInfo> {
    // SAFETY: a successful lookup returns a pointer valid for this program
    // run; the value is copied out at once.
    NETWORKS.get_ptr(id).map(|p| unsafe { *p })
}

/// A copy of the endpoint whose host-side veth is `ifindex`: from the
/// direct-mapped cache when it holds it, else from the hash.
#[inline(always)]
pub fn endpoint_by_ifindex(ifindex: u32) -> Option<EndpointInfo> {
    if let Some(cached) = EP_IF_CACHE.get(ifcache_slot(ifindex))
        && cached.ifindex == ifindex
    {
        return Some(*cached);
    }
    // SAFETY: as in `network`.
    EP_BY_IF.get_ptr(ifindex).map(|p| unsafe { *p })
}

/// A copy of the endpoint owning IPv4 address `ip_be`: from the
/// direct-mapped cache when it holds it, else from the hash.
#[inline(always)]
pub fn endpoint_by_ip(ip_be: u32) -> Option<EndpointInfo> {
    if let Some(cached) = EP_IP_CACHE.get(ipcache_slot(ip_be))
        && cached.ifindex != 0
        && cached.ip_be == ip_be
    {
        return Some(*cached);
    }
    // SAFETY: as in `network`.
    EP_BY_IP.get_ptr(ip_be).map(|p| unsafe { *p })
}

/// Where to deliver a frame for `mac` in network `network_id`.
#[inline(always)]
pub fn fdb_lookup(network_id: u32, mac: [u8; 6]) -> Option<FdbEntry> {
    let key = FdbKey {
        network_id,
        mac,
        _pad: [0; 2],
    };
    // SAFETY: as in `network`.
    FDB.get_ptr(key).map(|p| unsafe { *p })
}

/// Whether network `from` may route to network `to`.
#[inline(always)]
pub fn networks_linked(from: u32, to: u32) -> bool {
    let key = NetPairKey {
        from_network: from,
        to_network: to,
    };
    NET_LINKS.get_ptr(key).is_some()
}

/// The id of the weft network whose subnet contains `ip_be`.
#[inline(always)]
pub fn network_of_address(ip_be: u32) -> Option<u32> {
    SUBNETS
        .get(aya_ebpf::maps::lpm_trie::Key::new(32, ip_be))
        .copied()
}

/// The flood list of network `id`, read in place (it is too big to copy to
/// the 512-byte BPF stack comfortably).
#[inline(always)]
pub fn flood_list(id: u32) -> Option<&'static FloodList> {
    // SAFETY: a successful lookup returns a pointer to the map value that
    // stays valid for this program run; it is only read.
    FLOOD.get_ptr(id).map(|p| unsafe { &*p })
}

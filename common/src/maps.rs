//! Map names, sizes, keys and values.

use bytemuck::{Pod, Zeroable};

/// Networks by id: [`NetworkInfo`].
pub const MAP_NETWORKS: &str = "WEFT_NETWORKS";
/// Subnet prefixes (LPM trie, IPv4 network-order key) to network id.
pub const MAP_SUBNETS: &str = "WEFT_SUBNETS";
/// Endpoints by IPv4 address (`u32` holding the network-order octets).
pub const MAP_EP_BY_IP: &str = "WEFT_EP_BY_IP";
/// Direct-mapped array in front of [`MAP_EP_BY_IP`], slot [`ipcache_slot`].
pub const MAP_EP_IP_CACHE: &str = "WEFT_EP_IPCACHE";
/// Endpoints by the ifindex of their host-side veth.
pub const MAP_EP_BY_IF: &str = "WEFT_EP_BY_IF";
/// Direct-mapped array in front of [`MAP_EP_BY_IF`]: slot
/// [`ifcache_slot`]`(ifindex)` holds that endpoint if no other took the slot
/// first. An array lookup is inlined by the verifier; a hash lookup is a call
/// that costs ~25 ns, on every packet.
pub const MAP_EP_IF_CACHE: &str = "WEFT_EP_IFCACHE";
/// Forwarding table: [`FdbKey`] to [`FdbEntry`].
pub const MAP_FDB: &str = "WEFT_FDB";
/// Which networks may route to which: [`NetPairKey`] to `1`.
pub const MAP_NET_LINKS: &str = "WEFT_NET_LINKS";
/// Flood lists per network id: [`FloodList`].
pub const MAP_FLOOD: &str = "WEFT_FLOOD";
/// Per-CPU [`Counter`] per drop reason, indexed by reason code.
pub const MAP_DROPS: &str = "WEFT_DROPS";
/// Per-CPU [`Counter`] per forwarding verdict, indexed by [`crate::reason::Forward`] code.
pub const MAP_FORWARDS: &str = "WEFT_FORWARDS";
/// Per-CPU [`EndpointStats`] indexed by `EndpointInfo::stats_slot`.
pub const MAP_EP_STATS: &str = "WEFT_EP_STATS";

/// Every map weft pins, in a stable order (for dumps and cleanup).
pub const ALL_MAPS: [&str; 12] = [
    MAP_NETWORKS,
    MAP_SUBNETS,
    MAP_EP_BY_IP,
    MAP_EP_IP_CACHE,
    MAP_EP_BY_IF,
    MAP_EP_IF_CACHE,
    MAP_FDB,
    MAP_NET_LINKS,
    MAP_FLOOD,
    MAP_DROPS,
    MAP_FORWARDS,
    MAP_EP_STATS,
];

/// The TC program attached to the host side of every container veth.
pub const PROG_FROM_CONTAINER: &str = "weft_from_container";
/// A no-op program, never attached: measures BPF_PROG_TEST_RUN's overhead.
pub const PROG_CALIBRATE: &str = "weft_calibrate";

pub const MAX_NETWORKS: u32 = 1024;
/// Endpoints per node; also the number of per-endpoint counter slots.
pub const MAX_ENDPOINTS: u32 = 16_384;
pub const MAX_NET_LINKS: u32 = 4096;
/// Slots of each direct-mapped endpoint cache; a power of two.
pub const EP_CACHE_SLOTS: u32 = 16_384;

/// The [`MAP_EP_IF_CACHE`] slot for `ifindex`. An empty slot has ifindex 0,
/// which no interface has, so it never matches.
pub const fn ifcache_slot(ifindex: u32) -> u32 {
    ifindex & (EP_CACHE_SLOTS - 1)
}

/// The [`MAP_EP_IP_CACHE`] slot for a network-order address. Folding the
/// high half into the low one keeps `10.1.0.2` and `10.2.0.2` apart. An
/// empty slot holds ifindex 0 and is never a match.
pub const fn ipcache_slot(ip_be: u32) -> u32 {
    let ip = u32::from_be(ip_be);
    (ip ^ (ip >> 16) ^ (ip >> 8)) & (EP_CACHE_SLOTS - 1)
}

/// How many endpoints one network floods broadcast to; the loop must be bounded.
pub const MAX_FLOOD: usize = 32;
/// Size of the drop and forward counter arrays.
pub const MAX_REASONS: u32 = 64;

/// `NetworkInfo::flags`: flood broadcast/multicast to the network's endpoints
/// instead of dropping it.
pub const NET_FLAG_FLOOD: u8 = 1;

/// A network as the datapath sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetworkInfo {
    pub gateway_ip_be: u32,
    pub subnet_be: u32,
    pub prefix_len: u8,
    pub flags: u8,
    pub gateway_mac: [u8; 6],
}

/// A container endpoint as the datapath sees it.
///
/// Carries copies of what forwarding needs on every packet (the network's
/// gateway MAC, the counter slot) so the fast path does no further lookups.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointInfo {
    /// ifindex of the host-side veth in the node namespace.
    pub ifindex: u32,
    pub network_id: u32,
    pub ip_be: u32,
    /// Index of this endpoint's counters in `WEFT_EP_STATS`.
    pub stats_slot: u32,
    pub mac: [u8; 6],
    /// The gateway MAC of the endpoint's network.
    pub gateway_mac: [u8; 6],
}

/// Where a forwarding-table hit delivers: the host-side veth and the
/// destination's counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub stats_slot: u32,
}

/// Key of the forwarding table: a MAC within one network.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FdbKey {
    pub network_id: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Key of the routing permission table: traffic from one network to another.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct NetPairKey {
    pub from_network: u32,
    pub to_network: u32,
}

/// A network's endpoints that receive flooded broadcast and multicast.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FloodList {
    pub count: u32,
    pub members: [FdbEntry; MAX_FLOOD],
}

impl Default for FloodList {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// A packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-endpoint counters, from the container's point of view: `tx` is what the
/// container sent, `rx` what weft delivered into it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

const _: () = {
    assert!(EP_CACHE_SLOTS.is_power_of_two());
    assert!(size_of::<NetworkInfo>() == 16);
    assert!(size_of::<EndpointInfo>() == 28);
    assert!(size_of::<FdbEntry>() == 8);
    assert!(size_of::<FdbKey>() == 12);
    assert!(size_of::<NetPairKey>() == 8);
    assert!(size_of::<FloodList>() == 4 + 8 * MAX_FLOOD);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<EndpointStats>() == 32);
};

#[cfg(feature = "user")]
mod user {
    //! SAFETY (all impls): each type is `#[repr(C)]`, `Pod` (no padding, no
    //! invalid bit patterns), so any byte pattern from a map is a valid value.
    use super::*;

    unsafe impl aya::Pod for NetworkInfo {}
    unsafe impl aya::Pod for EndpointInfo {}
    unsafe impl aya::Pod for FdbKey {}
    unsafe impl aya::Pod for FdbEntry {}
    unsafe impl aya::Pod for NetPairKey {}
    unsafe impl aya::Pod for FloodList {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for EndpointStats {}
}

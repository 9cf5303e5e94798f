//! Map names, sizes, keys and values, and each pinned map's layout version.
//!
//! **Layout versions.** Pinned maps outlive weft processes, so a new weft
//! may find entries an older one wrote. The kernel tells it a map's type,
//! key size, value size and max entries, but not what the bytes mean: two
//! `u32` fields swapped, a unit changed or padding given a meaning keep
//! every size. So every map has a version in [`LAYOUT_VERSIONS`], recorded
//! in `WEFT_META` when it is pinned. **Bump a map's version whenever the
//! meaning of its key or value changes, sizes changed or not** (a field
//! added, removed, moved, renamed to something else, a unit or encoding
//! changed, padding given a meaning), and bump `ABI_VERSION` with it.
//! Then register a migration from the old version in
//! `userspace/src/migrate.rs`, or accept that weft refuses pinned maps of
//! the old version (naming the map and both versions, changing nothing).
//! Versions started at 1 with map ABI v7; maps pinned before carry no
//! version and count as version 1 (their earlier layouts differ in size).

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
/// Per-CPU [`Counter`] per direction and drop reason, indexed by
/// [`counter_slot`]`(direction, reason code)`.
pub const MAP_DROPS: &str = "WEFT_DROPS";
/// Per-CPU [`Counter`] per direction and forwarding verdict, indexed by
/// [`counter_slot`]`(direction, `[`crate::reason::Forward`]` code)`.
pub const MAP_FORWARDS: &str = "WEFT_FORWARDS";
/// Per-CPU [`EndpointStats`] indexed by `EndpointInfo::stats_slot`.
pub const MAP_EP_STATS: &str = "WEFT_EP_STATS";

/// The node's masquerade settings: a one-entry array of [`NodeConfig`].
pub const MAP_NODE: &str = "WEFT_NODE";
/// Connection tracking for masquerade: LRU hash of [`CtKey`] to [`CtEntry`],
/// two entries per connection (see [`CtEntry`]).
pub const MAP_CT: &str = "WEFT_CT";
/// Closed TCP connections, moved out of [`MAP_CT`] when they close (same
/// key and value): their late packets (a final ACK, a retransmitted FIN)
/// are still translated and their NAT ports stay taken until they expire,
/// while churn of short connections never fills [`MAP_CT`], whose LRU
/// would otherwise evict open connections (new ones first) to make room.
pub const MAP_CT_CLOSING: &str = "WEFT_CT_CLOSING";
/// The conntrack table's connection budget: a per-CPU array of `u64` slots
/// (`CT_BUDGET_*`). A new connection is refused (`conntrack_full`) while
/// the estimate of open connections, `created - closed - removed`, is at
/// the limit, so new connections never crowd out open ones; a closed TCP
/// connection stops counting at once (connect-per-request churn never
/// hits the limit, and the LRU recycles closed entries). The estimate counts
/// only while a conntrack GC has refreshed it within
/// [`CT_BUDGET_FRESH_NS`] (with no GC running, e.g. no agent, expired
/// entries are never counted out, and the table falls back to plain LRU
/// eviction instead of refusing everything).
pub const MAP_CT_BUDGET: &str = "WEFT_CT_BUDGET";

/// Published ports (DNAT): [`PublishKey`] to [`PublishTarget`].
pub const MAP_PUBLISH: &str = "WEFT_PUBLISH";

/// This node's overlay settings: a one-entry array of [`OverlayConfig`].
pub const MAP_OVERLAY: &str = "WEFT_OVERLAY";
/// Overlay routes: pod CIDRs (LPM trie, IPv4 network-order key, like
/// [`MAP_SUBNETS`]) to [`OverlayRoute`].
pub const MAP_ROUTES: &str = "WEFT_ROUTES";
/// VXLAN network identifiers (host order) to this node's network id.
pub const MAP_VNIS: &str = "WEFT_VNIS";

/// Services: [`SvcKey`] (VIP, port, protocol) to [`SvcEntry`].
pub const MAP_SERVICES: &str = "WEFT_SERVICES";
/// Maglev tables in chunks: [`MaglevKey`] to [`MaglevChunk`]. A table is
/// keyed by its content id, so a changed backend set is a new table
/// written beside the old one; the service's entry switches to it in one
/// update (no flow ever reads a half-built table), then the old one goes.
pub const MAP_MAGLEV: &str = "WEFT_MAGLEV";
/// Per endpoint counter slot: 1 if the endpoint is a backend of some
/// service on this node, so only backends' packets pay for the reverse
/// translation lookup.
pub const MAP_SVC_SLOTS: &str = "WEFT_SVC_SLOTS";
/// Service members: [`MemberKey`] to `SVC_MEMBER_*` (affinity only sticks
/// to a backend still in the service). Map names stay within the kernel's
/// 15 characters (`BPF_OBJ_NAME_LEN`), or the pinned map's name is cut.
pub const MAP_SVC_MEMBERS: &str = "WEFT_MEMBERS";
/// Client-IP affinity: LRU hash of [`AffinityKey`] to [`AffinityEntry`].
pub const MAP_AFFINITY: &str = "WEFT_AFFINITY";
/// New connections per service member, per CPU: [`MemberKey`] to `u64`
/// (ip 0: connections refused for want of a backend). The datapath
/// creates the entries.
pub const MAP_SVC_COUNTS: &str = "WEFT_SVC_COUNTS";

/// Every map weft pins, in a stable order (for dumps and cleanup).
pub const ALL_MAPS: [&str; 29] = [
    MAP_TAILS,
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
    MAP_NODE,
    MAP_CT,
    MAP_CT_CLOSING,
    MAP_CT_BUDGET,
    crate::events::MAP_EVENTS,
    crate::events::MAP_TRACE,
    MAP_PUBLISH,
    MAP_OVERLAY,
    MAP_ROUTES,
    MAP_VNIS,
    MAP_SERVICES,
    MAP_MAGLEV,
    MAP_SVC_SLOTS,
    MAP_SVC_MEMBERS,
    MAP_AFFINITY,
    MAP_SVC_COUNTS,
];

/// Layout version of each map of [`ALL_MAPS`], in the same order (checked
/// at compile time): the version of the meaning of its key and value types.
/// See the module documentation for when to bump one.
pub const LAYOUT_VERSIONS: [(&str, u16); ALL_MAPS.len()] = [
    (MAP_TAILS, 1),
    (MAP_NETWORKS, 1),
    (MAP_SUBNETS, 1),
    (MAP_EP_BY_IP, 1),
    (MAP_EP_IP_CACHE, 1),
    (MAP_EP_BY_IF, 1),
    (MAP_EP_IF_CACHE, 1),
    (MAP_FDB, 1),
    (MAP_NET_LINKS, 1),
    (MAP_FLOOD, 1),
    (MAP_DROPS, 1),
    (MAP_FORWARDS, 1),
    (MAP_EP_STATS, 1),
    (MAP_NODE, 1),
    (MAP_CT, 2),
    (MAP_CT_CLOSING, 2),
    (MAP_CT_BUDGET, 1),
    (crate::events::MAP_EVENTS, 1),
    (crate::events::MAP_TRACE, 1),
    (MAP_PUBLISH, 1),
    (MAP_OVERLAY, 1),
    (MAP_ROUTES, 1),
    (MAP_VNIS, 1),
    (MAP_SERVICES, 1),
    (MAP_MAGLEV, 1),
    (MAP_SVC_SLOTS, 1),
    (MAP_SVC_MEMBERS, 1),
    (MAP_AFFINITY, 1),
    (MAP_SVC_COUNTS, 1),
];

/// The layout version of pinned map `name` (see [`LAYOUT_VERSIONS`]), or
/// `None` if weft pins no map of that name.
pub const fn layout_version(name: &str) -> Option<u16> {
    let mut i = 0;
    while i < LAYOUT_VERSIONS.len() {
        if str_eq(LAYOUT_VERSIONS[i].0, name) {
            return Some(LAYOUT_VERSIONS[i].1);
        }
        i += 1;
    }
    None
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// Every pinned map has a version: a map added to `ALL_MAPS` without one
// (or listed out of order) does not compile.
const _: () = {
    let mut i = 0;
    while i < ALL_MAPS.len() {
        assert!(str_eq(LAYOUT_VERSIONS[i].0, ALL_MAPS[i]));
        assert!(LAYOUT_VERSIONS[i].1 >= 1);
        i += 1;
    }
};

/// The TC program attached to the host side of every container veth.
pub const PROG_FROM_CONTAINER: &str = "weft_from_container";
/// The TC ingress program on the node's uplink NIC: reverse masquerade.
pub const PROG_FROM_UPLINK: &str = "weft_from_uplink";
/// Masquerade egress, reached from `weft_from_container` by tail call so
/// NAT's stack and registers never weigh on the bridging/routing fast path.
pub const PROG_NAT_EGRESS: &str = "weft_nat_egress";

/// Tail-call table: index to program (see the `TAIL_*` indexes).
pub const MAP_TAILS: &str = "WEFT_TAILS";
/// `WEFT_TAILS` slot of [`PROG_NAT_EGRESS`].
pub const TAIL_NAT_EGRESS: u32 = 0;
/// `WEFT_TAILS` slot of [`PROG_OVERLAY_ENCAP`].
pub const TAIL_OVERLAY_ENCAP: u32 = 1;
/// `WEFT_TAILS` slot of [`PROG_SERVICE`].
pub const TAIL_SERVICE: u32 = 2;
pub const MAX_TAILS: u32 = 4;
/// Service load balancing, entered by tail call from
/// `weft_from_container` for packets to the service range and for every
/// packet a service backend sends (its replies are translated back).
pub const PROG_SERVICE: &str = "weft_service";
/// VXLAN encapsulation toward another node, entered by tail call from
/// `weft_from_container` for destinations in a weft network with no local
/// endpoint.
pub const PROG_OVERLAY_ENCAP: &str = "weft_overlay_encap";
/// TC ingress on the collect-metadata vxlan device (tunnel mode): frames
/// the kernel decapsulated, delivered into their containers.
pub const PROG_FROM_VXLAN: &str = "weft_from_vxlan";
/// XDP on the underlay NIC (`node set --xdp`): VXLAN not for this node or
/// with an unknown VNI dropped before an skb exists.
pub const PROG_XDP_UNDERLAY: &str = "weft_xdp_underlay";
/// A no-op program, never attached: measures BPF_PROG_TEST_RUN's overhead.
pub const PROG_CALIBRATE: &str = "weft_calibrate";

pub const MAX_NETWORKS: u32 = 1024;
/// Endpoints per node; also the number of per-endpoint counter slots.
pub const MAX_ENDPOINTS: u32 = 16_384;
pub const MAX_NET_LINKS: u32 = 4096;
/// Entries of [`MAP_CT`]: two per connection.
pub const CT_MAX_ENTRIES: u32 = 65_536;
/// Entries of [`MAP_CT_CLOSING`]: two per closed connection.
pub const CT_CLOSING_MAX_ENTRIES: u32 = 65_536;
/// [`MAP_CT_BUDGET`] slot: connections the datapath created on this CPU,
/// ever (each CPU adds to its own copy; their sum is the total; nothing
/// else writes it).
pub const CT_BUDGET_CREATED: u32 = 0;
/// [`MAP_CT_BUDGET`] slot: TCP connections the datapath saw close (both
/// FINs, or an RST) on this CPU, ever; summed like `created`.
pub const CT_BUDGET_CLOSED: u32 = 1;
/// [`MAP_CT_BUDGET`] slot, the same on every CPU: the total `created -
/// closed` less the open connections the last GC counted (the GC writes
/// it: flows that expired or were evicted), so `created - closed -
/// removed` estimates the open connections now.
pub const CT_BUDGET_REMOVED: u32 = 2;
/// [`MAP_CT_BUDGET`] slot, the same on every CPU: `CLOCK_MONOTONIC` ns of
/// the last GC that wrote `removed`; 0: never.
pub const CT_BUDGET_REFRESHED: u32 = 3;
/// [`MAP_CT_BUDGET`] slot, the same on every CPU: open connections
/// allowed; 0: [`CT_DEFAULT_LIMIT`].
pub const CT_BUDGET_LIMIT: u32 = 4;
/// CPUs whose `created` counts the datapath sums (more than any node
/// this runs on; the sum stops at the first CPU the kernel does not have).
pub const CT_BUDGET_MAX_CPUS: u32 = 512;
pub const CT_BUDGET_SLOTS: u32 = 5;
/// Connections allowed by default: 90% of the table's pairs, leaving the
/// LRU's per-CPU free lists room so an insert never evicts a live entry.
pub const CT_DEFAULT_LIMIT: u64 = (CT_MAX_ENTRIES as u64 / 2) * 9 / 10;
/// How long a GC's count stays trusted: three of the agent's 10 s GC
/// rounds and then some.
pub const CT_BUDGET_FRESH_NS: u64 = 60_000_000_000;
/// Entries of [`MAP_PUBLISH`]: published ports per node.
pub const MAX_PUBLISHED: u32 = 16_384;
/// Entries of [`MAP_ROUTES`]: pod CIDRs of all nodes, all networks.
pub const MAX_ROUTES: u32 = 16_384;
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
/// Drop reason and forward kind codes are below this.
pub const MAX_REASONS: u32 = 64;

/// Counter direction: the packet came from a container (`weft_from_container`
/// and its tail calls; ingress on the host veth).
pub const DIR_FROM_CONTAINER: u32 = 0;
/// Counter direction: the packet came in on the uplink (`weft_from_uplink`).
pub const DIR_FROM_UPLINK: u32 = 1;
/// Directions counted, and their metric label values, by direction number.
pub const DIRECTIONS: [&str; 2] = ["from_container", "from_uplink"];
/// Size of the drop and forward counter arrays: one block of
/// [`MAX_REASONS`] per direction.
pub const COUNTER_SLOTS: u32 = MAX_REASONS * DIRECTIONS.len() as u32;

/// The counter of reason/kind `code` seen in `direction`. Direction 0 is
/// where every counter was before counters had directions, so older
/// counters keep their index.
#[inline(always)]
pub const fn counter_slot(direction: u32, code: u32) -> u32 {
    direction * MAX_REASONS + code
}

/// `NetworkInfo::flags`: flood broadcast/multicast to the network's endpoints
/// instead of dropping it.
pub const NET_FLAG_FLOOD: u8 = 1;
/// `NetworkInfo::flags`: traffic from this network to addresses outside
/// every weft network leaves through the uplink with the node's address
/// (SNAT/masquerade), when the node is configured ([`NodeConfig`]).
pub const NET_FLAG_MASQUERADE: u8 = 2;

/// `NodeConfig::flags`: userspace has filled the entry; until then nothing
/// is masqueraded.
pub const NODE_FLAG_CONFIGURED: u32 = 1;
/// `NodeConfig::flags`: some port is published on this node. Only then
/// does a container's packet into the overlay pay for a conntrack lookup
/// (a reply to a published port's client that is a pod on another node
/// must be translated back first); a flag bit that an older weft left 0
/// only turns that check off.
pub const NODE_FLAG_PUBLISHES: u32 = 2;
/// `NodeConfig::flags`: the node has services and an overlay, so a
/// service connection may have its backend on another node (or had one
/// that left the service, whose established connections go on). Only then
/// does traffic decapsulated here pay for a conntrack lookup (such a
/// backend's reply must get the VIP back before it reaches the client); a
/// flag bit an older weft left 0 only turns that check off.
pub const NODE_FLAG_OVERLAY_SERVICES: u32 = 4;

/// The node's uplink and masquerade port range: entry 0 of [`MAP_NODE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeConfig {
    /// ifindex of the uplink NIC in the node namespace.
    pub uplink_ifindex: u32,
    /// The address masqueraded traffic leaves with.
    pub node_ip_be: u32,
    /// NAT ports (and ICMP echo identifiers), host order, inclusive. Pick a
    /// range disjoint from the node's `ip_local_port_range`: the datapath
    /// cannot see the node's own sockets.
    pub port_min: u16,
    pub port_max: u16,
    /// [`NODE_FLAG_CONFIGURED`], [`NODE_FLAG_PUBLISHES`],
    /// [`NODE_FLAG_OVERLAY_SERVICES`].
    pub flags: u32,
}

/// `OverlayConfig::mode`: no overlay on this node.
pub const ENCAP_NONE: u8 = 0;
/// `OverlayConfig::mode`: `bpf_skb_set_tunnel_key` and a redirect to the
/// collect-metadata vxlan device, which adds the outer headers.
pub const ENCAP_TUNNEL: u8 = 1;
/// `OverlayConfig::mode`: the program writes the outer headers itself
/// (`bpf_skb_adjust_room`) and redirects to the underlay NIC.
pub const ENCAP_BPF: u8 = 2;

/// This node's overlay: entry 0 of [`MAP_OVERLAY`]. The underlay is the
/// uplink of [`NodeConfig`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OverlayConfig {
    /// This node's underlay address: the outer source, and the only outer
    /// destination decapsulated.
    pub underlay_ip_be: u32,
    /// The underlay NIC in the node namespace.
    pub underlay_ifindex: u32,
    /// Tunnel mode: the collect-metadata vxlan device; 0 otherwise.
    pub vxlan_ifindex: u32,
    /// Largest inner IPv4 packet the overlay carries (underlay MTU minus
    /// [`crate::overlay::VXLAN_OVERHEAD`]); 0 when unknown.
    pub mtu: u32,
    /// This node's VTEP MAC: the inner source MAC of what it encapsulates.
    pub vtep_mac: [u8; 6],
    /// `ENCAP_*`.
    pub mode: u8,
    pub _pad: u8,
}

/// Where an overlay route sends a destination: entry of [`MAP_ROUTES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OverlayRoute {
    /// The remote node's underlay address; 0 marks this node's own pod
    /// CIDR (nothing to encapsulate: a miss there is `no_such_endpoint`).
    pub underlay_ip_be: u32,
    /// VXLAN network identifier of the prefix's network, host order.
    pub vni: u32,
    /// This node's id of the prefix's network.
    pub network_id: u32,
    /// Inner destination MAC: the remote VTEP's (a kernel vxlan device
    /// only accepts frames to its own MAC).
    pub vtep_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// How many ports of the range one new connection tries before it is
/// dropped as `nat_ports_exhausted` (the verifier needs a bound).
pub const NAT_PORT_PROBES: u32 = 32;

/// Services per node (entries of [`MAP_SERVICES`]: one per VIP port).
pub const MAX_SERVICE_PORTS: u32 = 65_536;
/// Slots of one [`MaglevChunk`].
pub const MAGLEV_CHUNK: u32 = 1024;
/// Largest Maglev table size (Cilium's largest, a prime).
pub const MAGLEV_MAX: u32 = 131_071;
/// Entries of [`MAP_MAGLEV`]: 4 KiB chunks, allocated as used.
pub const MAX_MAGLEV_CHUNKS: u32 = 65_536;
/// Entries of [`MAP_SVC_MEMBERS`] and [`MAP_SVC_COUNTS`].
pub const MAX_SVC_MEMBERS: u32 = 262_144;
/// Entries of [`MAP_AFFINITY`].
pub const MAX_AFFINITY: u32 = 65_536;
/// The network id [`MAP_SUBNETS`] gives the service range: no network
/// has it (ids stop far below), and the datapath hands such packets to
/// the service program.
pub const SERVICE_NETWORK_ID: u32 = u32::MAX;
/// Hash seed of the datapath's flow hash for Maglev: fixed, so every node
/// picks the same slot for the same flow.
pub const MAGLEV_FLOW_SEED: u32 = 0x6d61_676c;

/// `SvcEntry::flags`: client-IP affinity.
pub const SVC_FLAG_AFFINITY: u8 = 1;
/// [`MAP_SVC_MEMBERS`] values.
pub const SVC_MEMBER_ACTIVE: u32 = 1;
pub const SVC_MEMBER_TERMINATING: u32 = 2;

/// A service port: traffic to this VIP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SvcKey {
    pub vip_be: u32,
    pub port_be: [u8; 2],
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}

/// What a service port leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SvcEntry {
    /// The Maglev table's content id in [`MAP_MAGLEV`]; 0: no backend.
    pub table: u64,
    pub svc_id: u32,
    /// The table's size M (slots).
    pub size: u32,
    /// The backends' port.
    pub target_port_be: [u8; 2],
    /// `SVC_FLAG_*`.
    pub flags: u8,
    pub _pad: u8,
    /// Client-IP affinity timeout, seconds.
    pub affinity_s: u32,
}

/// A chunk of a Maglev table: slots `chunk * MAGLEV_CHUNK ..`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MaglevKey {
    pub table: u64,
    pub chunk: u32,
    pub _pad: u32,
}

/// Backend addresses (network order) of [`MAGLEV_CHUNK`] slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct MaglevChunk {
    pub slots: [u32; MAGLEV_CHUNK as usize],
}

impl Default for MaglevChunk {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// A backend of a service (or, with ip 0, the service itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MemberKey {
    pub svc_id: u32,
    pub ip_be: u32,
}

/// A client of an affinity service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct AffinityKey {
    pub svc_id: u32,
    pub client_ip_be: u32,
}

/// Where an affinity client goes, and when it last did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AffinityEntry {
    pub last_seen_ns: u64,
    pub backend_ip_be: u32,
    pub _pad: u32,
}

/// IP protocol numbers the conntrack handles.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A connection tuple as a packet carries it. ICMP echo: the identifier in
/// `src_port_be`, zeros in `dst_port_be`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub src_ip_be: u32,
    pub dst_ip_be: u32,
    pub src_port_be: [u8; 2],
    pub dst_port_be: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// `CtEntry::direction`: keyed by the container's own tuple (egress).
pub const CT_DIR_ORIGINAL: u8 = 0;
/// `CtEntry::direction`: keyed by the tuple replies carry on the uplink
/// (outside -> node ip : NAT port).
pub const CT_DIR_REPLY: u8 = 1;

/// `CtEntry::tcp_state`: not TCP.
pub const CT_TCP_NONE: u8 = 0;
/// First packet was a SYN; no reply yet.
pub const CT_TCP_SYN_SENT: u8 = 1;
/// A reply was seen (or the flow was picked up mid-stream).
pub const CT_TCP_ESTABLISHED: u8 = 2;
/// One side sent FIN.
pub const CT_TCP_FIN_WAIT: u8 = 3;
/// RST, or FIN from both sides: closing, short timeout.
pub const CT_TCP_CLOSED: u8 = 4;

/// `CtEntry::fin_seen` bits.
pub const CT_FIN_ORIGINAL: u8 = 1;
pub const CT_FIN_REPLY: u8 = 2;

/// Timeouts after `last_seen_ns`; an older entry is treated as absent.
pub const CT_TIMEOUT_TCP_ESTABLISHED_S: u64 = 7200;
pub const CT_TIMEOUT_TCP_TRANSITORY_S: u64 = 120;
pub const CT_TIMEOUT_TCP_CLOSED_S: u64 = 10;
pub const CT_TIMEOUT_UDP_S: u64 = 60;
pub const CT_TIMEOUT_ICMP_S: u64 = 30;

/// The timeout of an entry of protocol `proto` in TCP state `tcp_state`, in
/// nanoseconds (the unit of `bpf_ktime_get_ns`).
pub const fn ct_timeout_ns(proto: u8, tcp_state: u8) -> u64 {
    let secs = match proto {
        IPPROTO_TCP => match tcp_state {
            CT_TCP_ESTABLISHED => CT_TIMEOUT_TCP_ESTABLISHED_S,
            CT_TCP_CLOSED => CT_TIMEOUT_TCP_CLOSED_S,
            _ => CT_TIMEOUT_TCP_TRANSITORY_S,
        },
        IPPROTO_UDP => CT_TIMEOUT_UDP_S,
        _ => CT_TIMEOUT_ICMP_S,
    };
    secs * 1_000_000_000
}

/// One direction of a masqueraded connection.
///
/// Each connection has two entries: the original one (key: the container's
/// tuple; translation: node ip + NAT port) and the reply one (key: outside
/// -> node ip : NAT port; translation: container ip + original port). Each
/// entry can name its partner from its key and translation. A packet
/// touches only the entry it hits: the original entry moves `*_orig`, the
/// reply entry `*_reply`, so a connection's totals are the sum of both.
/// `tcp_state` and `fin_seen` are written to both on a change.
/// `last_seen_ns` is refreshed on the entry hit; an entry counts as expired
/// only when it and its partner are both older than their timeout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last packet.
    pub last_seen_ns: u64,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
    /// The address this direction is rewritten to: the node's (original
    /// entry, source) or the container's (reply entry, destination).
    pub xlate_ip_be: u32,
    /// The container's host-side veth.
    pub ifindex: u32,
    /// The container's counter slot in `WEFT_EP_STATS`.
    pub stats_slot: u32,
    /// The port (ICMP: echo identifier) this direction is rewritten to.
    pub xlate_port_be: [u8; 2],
    /// `CT_TCP_*`.
    pub tcp_state: u8,
    /// `CT_DIR_*`.
    pub direction: u8,
    /// `CT_FIN_*` bits.
    pub fin_seen: u8,
    /// Original entries: the FIB's next hop toward the destination (network
    /// order; all zero = not looked up yet), so established flows skip the
    /// ~200 ns `bpf_fib_lookup` on most packets.
    pub next_hop_be: [u8; 4],
    /// `CT_FLAG_*`: how the connection was made.
    pub flags: u8,
    /// Hairpin entries ([`CT_FLAG_HAIRPIN`]): the source port the packet
    /// leaves with (the node's address is its source address). A published
    /// port's entries ([`CT_FLAG_DNAT`] alone): the client's port on the
    /// other side, which the packet's other port is rewritten to: the
    /// container's side sees the client with another port when the
    /// client's own was taken there (one client port to two host ports
    /// that lead to one container port is one tuple in the container); 0
    /// (entries of layout version 1): the same port on both sides.
    pub peer_port_be: [u8; 2],
    /// `bpf_ktime_get_ns` when the connection was created (its age).
    pub created_ns: u64,
}

/// `CtEntry::flags`: made by a packet to a published port (DNAT); the
/// original entry is the container's reply side.
pub const CT_FLAG_DNAT: u8 = 1;
/// `CtEntry::flags`: a container reaching a published port through the
/// node's address (hairpin): both entries rewrite source *and*
/// destination, source to the node's address and `peer_port_be`,
/// destination to `xlate_ip_be:xlate_port_be`, and deliver to `ifindex`.
pub const CT_FLAG_HAIRPIN: u8 = 2;
/// `CtEntry::flags`: a service connection (with [`CT_FLAG_DNAT`]): the
/// client-side entry (direction reply, like a published port's inbound
/// one) translates VIP:port to the backend `xlate_ip_be:xlate_port_be`;
/// the backend-side entry (direction original) translates the source back
/// to the VIP and service port. With [`CT_FLAG_HAIRPIN`] (the client is
/// the backend) both entries also rewrite the source to the VIP.
pub const CT_FLAG_SERVICE: u8 = 4;

/// A published port: traffic to the node's address and this port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PublishKey {
    pub port_be: [u8; 2],
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}

/// Where a published port leads: a container's address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PublishTarget {
    pub ip_be: u32,
    pub port_be: [u8; 2],
    pub _pad: [u8; 2],
}

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

impl CtKey {
    /// A conntrack key. ICMP keys carry the echo identifier as the source
    /// port and 0 as the destination port.
    #[inline(always)]
    pub const fn new(
        proto: u8,
        src_ip_be: u32,
        dst_ip_be: u32,
        sport: [u8; 2],
        dport: [u8; 2],
    ) -> Self {
        Self {
            src_ip_be,
            dst_ip_be,
            src_port_be: sport,
            dst_port_be: if proto == IPPROTO_ICMP { [0; 2] } else { dport },
            proto,
            _pad: [0; 3],
        }
    }

    /// The key replies carry on the uplink for this original tuple sent as
    /// `node_ip:nat_port` (ICMP echo replies carry the identifier).
    #[inline(always)]
    pub const fn reply(&self, node_ip_be: u32, nat_port: [u8; 2]) -> Self {
        if self.proto == IPPROTO_ICMP {
            Self::new(IPPROTO_ICMP, self.dst_ip_be, node_ip_be, nat_port, [0; 2])
        } else {
            Self::new(
                self.proto,
                self.dst_ip_be,
                node_ip_be,
                self.dst_port_be,
                nat_port,
            )
        }
    }

    /// The key of the other entry of the connection that `entry`, found at
    /// this key, belongs to. The datapath and `weft ct` share this rule.
    #[inline(always)]
    pub const fn partner(&self, entry: &CtEntry) -> Self {
        if entry.flags & CT_FLAG_HAIRPIN != 0 {
            // The partner is what the destination sends back to the
            // source port this entry gave the packet.
            Self::new(
                self.proto,
                entry.xlate_ip_be,
                self.dst_ip_be,
                entry.xlate_port_be,
                entry.peer_port_be,
            )
        } else if entry.direction == CT_DIR_ORIGINAL {
            let mut reply = self.reply(entry.xlate_ip_be, entry.xlate_port_be);
            if let Some(client) = entry.dnat_peer_port() {
                reply.src_port_be = client;
            }
            reply
        } else {
            let peer_port = match entry.dnat_peer_port() {
                Some(port) => port,
                None => self.src_port_be,
            };
            Self::new(
                self.proto,
                entry.xlate_ip_be,
                self.src_ip_be,
                entry.xlate_port_be,
                peer_port,
            )
        }
    }

    /// Whether `partner`, the entry found at `self.partner(entry)`, names
    /// this key back: only then are the two one connection. A key can be
    /// taken by a newer connection while a closed one still names it, and
    /// pairing with that would translate one connection with another's
    /// ports.
    #[inline(always)]
    pub fn pairs_with(&self, entry: &CtEntry, partner: &CtEntry) -> bool {
        self.partner(entry).names(partner, self)
    }

    /// Whether `entry`, found at this key, names `key` as its partner.
    #[inline(always)]
    pub fn names(&self, entry: &CtEntry, key: &CtKey) -> bool {
        let back = self.partner(entry);
        let port = |p: [u8; 2]| u32::from(u16::from_ne_bytes(p));
        // One comparison, not five: in the datapath every branch before a
        // probe loop multiplies what the verifier walks.
        let diff = (back.src_ip_be ^ key.src_ip_be)
            | (back.dst_ip_be ^ key.dst_ip_be)
            | (port(back.src_port_be) ^ port(key.src_port_be))
            | ((port(back.dst_port_be) ^ port(key.dst_port_be)) << 16)
            | u32::from(back.proto ^ key.proto);
        diff == 0
    }
}

impl CtEntry {
    /// A published port's entry: the client's port on the other side of
    /// the translation (see [`CtEntry::peer_port_be`]), if recorded.
    #[inline(always)]
    pub const fn dnat_peer_port(&self) -> Option<[u8; 2]> {
        if self.flags & (CT_FLAG_DNAT | CT_FLAG_HAIRPIN) == CT_FLAG_DNAT
            && !(self.peer_port_be[0] == 0 && self.peer_port_be[1] == 0)
        {
            Some(self.peer_port_be)
        } else {
            None
        }
    }

    /// Whether the entry was seen within its protocol/state timeout, or
    /// within `max_idle_ns` when that is shorter (`u64::MAX`: no cap).
    #[inline(always)]
    pub const fn fresh(&self, proto: u8, now: u64, max_idle_ns: u64) -> bool {
        let timeout = ct_timeout_ns(proto, self.tcp_state);
        let limit = if max_idle_ns < timeout {
            max_idle_ns
        } else {
            timeout
        };
        now.saturating_sub(self.last_seen_ns) <= limit
    }
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
    assert!(size_of::<NodeConfig>() == 16);
    assert!(size_of::<CtKey>() == 16);
    assert!(size_of::<CtEntry>() == 72);
    assert!(size_of::<PublishKey>() == 4);
    assert!(size_of::<PublishTarget>() == 8);
    assert!(size_of::<OverlayConfig>() == 24);
    assert!(size_of::<OverlayRoute>() == 20);
    assert!(size_of::<SvcKey>() == 8);
    assert!(size_of::<SvcEntry>() == 24);
    assert!(size_of::<MaglevKey>() == 16);
    assert!(size_of::<MaglevChunk>() == 4 * MAGLEV_CHUNK as usize);
    assert!(size_of::<MemberKey>() == 8);
    assert!(size_of::<AffinityKey>() == 8);
    assert!(size_of::<AffinityEntry>() == 16);
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
    unsafe impl aya::Pod for NodeConfig {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for PublishKey {}
    unsafe impl aya::Pod for PublishTarget {}
    unsafe impl aya::Pod for OverlayConfig {}
    unsafe impl aya::Pod for OverlayRoute {}
    unsafe impl aya::Pod for SvcKey {}
    unsafe impl aya::Pod for SvcEntry {}
    unsafe impl aya::Pod for MaglevKey {}
    unsafe impl aya::Pod for MaglevChunk {}
    unsafe impl aya::Pod for MemberKey {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for AffinityEntry {}
}

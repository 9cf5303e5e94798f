//! The kernel side of weft: loading the eBPF object with pinned maps,
//! attaching the program to container veths, and typed map access.
//!
//! Maps and the program are pinned under the bpffs directory so every `weft`
//! invocation (and later the agent) shares one copy. Per-endpoint TCX links
//! (kernel >= 6.6) are pinned too, so the program stays attached after this
//! process exits.

use std::{fs, io::ErrorKind, net::Ipv4Addr, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TcAttachType, links::FdLink},
    util::nr_cpus,
};
use ipnet::Ipv4Net;
use weft_common::{
    maps::{
        Counter, DIRECTIONS, EndpointInfo, EndpointStats, FdbEntry, FdbKey, FloodList, MAP_DROPS,
        MAP_EP_BY_IF, MAP_EP_BY_IP, MAP_EP_IF_CACHE, MAP_EP_IP_CACHE, MAP_EP_STATS, MAP_FDB,
        MAP_FLOOD, MAP_FORWARDS, MAP_NET_LINKS, MAP_NETWORKS, MAP_PUBLISH, MAP_SUBNETS, MAP_TAILS,
        NetPairKey, NetworkInfo, PROG_FROM_CONTAINER, PublishKey, PublishTarget, counter_slot,
        ifcache_slot, ipcache_slot,
    },
    reason::{Drop, Forward},
};

mod overlay;
mod uplink;

pub use self::{
    overlay::{VXLAN_LINK_PIN, detach_vxlan, detach_xdp},
    uplink::{detach_uplink, put_node_pinned},
};
use crate::{
    error::{Error, Result},
    mac::Mac,
    migrate,
    object::ebpf_object,
    paths::Paths,
    state::Network,
};

/// The loaded datapath object, with its maps opened from (or created at)
/// their pins.
pub struct Datapath {
    ebpf: Ebpf,
    paths: Paths,
    /// Whether this instance loaded and pinned the program (first attach on
    /// this node), so a rollback can remove the pin again.
    pinned_program: bool,
}

/// Network-order `u32` of an address, as the maps store it.
pub fn ip_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The datapath's view of network `net`.
pub fn network_info(net: &Network) -> NetworkInfo {
    NetworkInfo {
        gateway_ip_be: ip_be(net.gateway),
        subnet_be: ip_be(net.subnet.network()),
        prefix_len: net.subnet.prefix_len(),
        flags: (if net.flood {
            weft_common::maps::NET_FLAG_FLOOD
        } else {
            0
        }) | (if net.masquerade {
            weft_common::maps::NET_FLAG_MASQUERADE
        } else {
            0
        }),
        gateway_mac: net.gateway_mac().octets(),
    }
}

pub fn fdb_key(network_id: u32, mac: Mac) -> FdbKey {
    FdbKey {
        network_id,
        mac: mac.octets(),
        _pad: [0; 2],
    }
}

/// Treats "no such element" from a delete as success: removal is idempotent.
pub(crate) fn absent_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(e)) if e.io_error.kind() == ErrorKind::NotFound => Ok(()),
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
        other => other,
    }
}

fn is_absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.kind() == ErrorKind::NotFound,
        _ => false,
    }
}

impl Datapath {
    /// Loads the embedded object, reusing pinned maps or creating and
    /// pinning them. Mounts bpffs first if needed.
    pub fn open(paths: &Paths) -> Result<Self> {
        Self::open_migrating(paths).map(|(dp, _)| dp)
    }

    /// [`Self::open`], saying what it migrated: pinned maps whose layout
    /// changed are migrated first (or refused, changing nothing), and
    /// programs still on replaced maps are reloaded (see [`migrate`]).
    pub fn open_migrating(paths: &Paths) -> Result<(Self, migrate::Report)> {
        paths.prepare_bpffs()?;
        let plan = migrate::plan(paths)?;
        let mut report = migrate::Report {
            migrated: migrate::migrate_maps(paths, &plan)?,
            ..Default::default()
        };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(paths.maps_dir())
            .load(ebpf_object())
            .map_err(|e| Error::Ebpf {
                what: format!(
                    "cannot load the datapath with maps pinned in {}",
                    paths.maps_dir().display()
                ),
                source: Box::new(e),
            })?;
        if let Some(why) = migrate::stale_programs(paths)? {
            log::warn!("reloading the pinned programs: {why}");
            migrate::refresh_programs(&mut ebpf, paths, &mut report)?;
        }
        migrate::record(paths)?;
        Ok((
            Self {
                ebpf,
                paths: paths.clone(),
                pinned_program: false,
            },
            report,
        ))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        self.ebpf.map_mut(name).ok_or_else(|| {
            Error::Invalid(format!(
                "the embedded eBPF object has no map {name}; this weft build is broken, rebuild it"
            ))
        })
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>> {
        HashMap::try_from(self.map_mut(name)?)
            .map_err(|e| Error::map(format!("map {name} has an unexpected type"), e))
    }

    pub fn put_network(&mut self, net: &Network) -> Result<()> {
        let info = network_info(net);
        self.hash::<u32, NetworkInfo>(MAP_NETWORKS)?
            .insert(net.id, info, 0)
            .map_err(|e| {
                Error::map(
                    format!("cannot write network {} to {MAP_NETWORKS}", net.name),
                    e,
                )
            })
    }

    pub fn del_network(&mut self, id: u32) -> Result<()> {
        absent_ok(self.hash::<u32, NetworkInfo>(MAP_NETWORKS)?.remove(&id)).map_err(|e| {
            Error::map(
                format!("cannot remove network #{id} from {MAP_NETWORKS}"),
                e,
            )
        })
    }

    fn subnets(&mut self) -> Result<LpmTrie<&mut MapData, u32, u32>> {
        LpmTrie::try_from(self.map_mut(MAP_SUBNETS)?)
            .map_err(|e| Error::map(format!("map {MAP_SUBNETS} has an unexpected type"), e))
    }

    pub fn put_subnet(&mut self, subnet: Ipv4Net, id: u32) -> Result<()> {
        let key =
            aya::maps::lpm_trie::Key::new(u32::from(subnet.prefix_len()), ip_be(subnet.network()));
        self.subnets()?
            .insert(&key, id, 0)
            .map_err(|e| Error::map(format!("cannot write subnet {subnet} to {MAP_SUBNETS}"), e))
    }

    pub fn del_subnet(&mut self, subnet: Ipv4Net) -> Result<()> {
        let key =
            aya::maps::lpm_trie::Key::new(u32::from(subnet.prefix_len()), ip_be(subnet.network()));
        absent_ok(self.subnets()?.remove(&key)).map_err(|e| {
            Error::map(
                format!("cannot remove subnet {subnet} from {MAP_SUBNETS}"),
                e,
            )
        })
    }

    /// The flood list of network `id` (empty if it has none).
    pub fn flood_list(&mut self, id: u32) -> Result<FloodList> {
        match self.hash::<u32, FloodList>(MAP_FLOOD)?.get(&id, 0) {
            Ok(list) => Ok(list),
            Err(e) if is_absent(&e) => Ok(FloodList::default()),
            Err(e) => Err(Error::map(format!("cannot read {MAP_FLOOD}"), e)),
        }
    }

    pub fn put_flood_list(&mut self, id: u32, list: &FloodList) -> Result<()> {
        self.hash::<u32, FloodList>(MAP_FLOOD)?
            .insert(id, *list, 0)
            .map_err(|e| Error::map(format!("cannot write network #{id} to {MAP_FLOOD}"), e))
    }

    pub fn del_flood_list(&mut self, id: u32) -> Result<()> {
        absent_ok(self.hash::<u32, FloodList>(MAP_FLOOD)?.remove(&id))
            .map_err(|e| Error::map(format!("cannot remove network #{id} from {MAP_FLOOD}"), e))
    }

    /// Publishes a port (`weft publish`).
    pub fn put_publish(&mut self, key: PublishKey, target: PublishTarget) -> Result<()> {
        self.hash::<PublishKey, PublishTarget>(MAP_PUBLISH)?
            .insert(key, target, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_PUBLISH}"), e))
    }

    pub fn del_publish(&mut self, key: PublishKey) -> Result<()> {
        absent_ok(
            self.hash::<PublishKey, PublishTarget>(MAP_PUBLISH)?
                .remove(&key),
        )
        .map_err(|e| Error::map(format!("cannot remove from {MAP_PUBLISH}"), e))
    }

    /// Lets networks `a` and `b` route to each other (both directions).
    pub fn link_networks(&mut self, a: u32, b: u32) -> Result<()> {
        let mut map = self.hash::<NetPairKey, u32>(MAP_NET_LINKS)?;
        for (from_network, to_network) in [(a, b), (b, a)] {
            let key = NetPairKey {
                from_network,
                to_network,
            };
            if let Err(e) = map.insert(key, 1, 0) {
                let undo = NetPairKey {
                    from_network: a,
                    to_network: b,
                };
                let _ = map.remove(&undo);
                return Err(Error::map(format!("cannot write {MAP_NET_LINKS}"), e));
            }
        }
        Ok(())
    }

    pub fn unlink_networks(&mut self, a: u32, b: u32) -> Result<()> {
        let mut map = self.hash::<NetPairKey, u32>(MAP_NET_LINKS)?;
        for (from_network, to_network) in [(a, b), (b, a)] {
            let key = NetPairKey {
                from_network,
                to_network,
            };
            absent_ok(map.remove(&key))
                .map_err(|e| Error::map(format!("cannot remove from {MAP_NET_LINKS}"), e))?;
        }
        Ok(())
    }

    /// Publishes endpoint `ep` in the by-ip and by-ifindex tables, and in
    /// their direct-mapped caches where its slot is free.
    pub fn put_endpoint(&mut self, ep: &EndpointInfo) -> Result<()> {
        self.hash::<u32, EndpointInfo>(MAP_EP_BY_IP)?
            .insert(ep.ip_be, *ep, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_EP_BY_IP}"), e))?;
        self.hash::<u32, EndpointInfo>(MAP_EP_BY_IF)?
            .insert(ep.ifindex, *ep, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_EP_BY_IF}"), e))?;
        self.cache_endpoint(MAP_EP_IF_CACHE, ifcache_slot(ep.ifindex), ep)?;
        self.cache_endpoint(MAP_EP_IP_CACHE, ipcache_slot(ep.ip_be), ep)
    }

    /// Removes endpoint `ifindex`/`ip` from the tables and its caches.
    pub fn del_endpoint(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<()> {
        // Caches first: the program must never find an entry the hash no
        // longer backs.
        self.uncache_endpoint(MAP_EP_IF_CACHE, ifcache_slot(ifindex), ifindex)?;
        self.uncache_endpoint(MAP_EP_IP_CACHE, ipcache_slot(ip_be(ip)), ifindex)?;
        absent_ok(
            self.hash::<u32, EndpointInfo>(MAP_EP_BY_IP)?
                .remove(&ip_be(ip)),
        )
        .map_err(|e| Error::map(format!("cannot remove {ip} from {MAP_EP_BY_IP}"), e))?;
        absent_ok(
            self.hash::<u32, EndpointInfo>(MAP_EP_BY_IF)?
                .remove(&ifindex),
        )
        .map_err(|e| Error::map(format!("cannot remove #{ifindex} from {MAP_EP_BY_IF}"), e))
    }

    fn cache(&mut self, name: &'static str) -> Result<Array<&mut MapData, EndpointInfo>> {
        Array::try_from(self.map_mut(name)?)
            .map_err(|e| Error::map(format!("map {name} has an unexpected type"), e))
    }

    /// Puts `ep` in cache slot `slot` unless a live endpoint already holds
    /// it; the loser of a collision is found through the hash instead.
    fn cache_endpoint(&mut self, name: &'static str, slot: u32, ep: &EndpointInfo) -> Result<()> {
        let current = self
            .cache(name)?
            .get(&slot, 0)
            .map_err(|e| Error::map(format!("cannot read {name}"), e))?;
        let holder_alive = current.ifindex != 0
            && current.ifindex != ep.ifindex
            && self
                .hash::<u32, EndpointInfo>(MAP_EP_BY_IF)?
                .get(&current.ifindex, 0)
                .is_ok();
        if holder_alive {
            return Ok(());
        }
        self.cache(name)?
            .set(slot, *ep, 0)
            .map_err(|e| Error::map(format!("cannot write {name}"), e))
    }

    /// Empties cache slot `slot` if endpoint `ifindex` holds it.
    fn uncache_endpoint(&mut self, name: &'static str, slot: u32, ifindex: u32) -> Result<()> {
        let mut cache = self.cache(name)?;
        let current = cache
            .get(&slot, 0)
            .map_err(|e| Error::map(format!("cannot read {name}"), e))?;
        if current.ifindex != ifindex {
            return Ok(());
        }
        cache
            .set(slot, EndpointInfo::default(), 0)
            .map_err(|e| Error::map(format!("cannot clear slot {slot} of {name}"), e))
    }

    pub fn put_fdb(&mut self, network_id: u32, mac: Mac, target: FdbEntry) -> Result<()> {
        self.hash::<FdbKey, FdbEntry>(MAP_FDB)?
            .insert(fdb_key(network_id, mac), target, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_FDB}"), e))
    }

    pub fn del_fdb(&mut self, network_id: u32, mac: Mac) -> Result<()> {
        absent_ok(
            self.hash::<FdbKey, FdbEntry>(MAP_FDB)?
                .remove(&fdb_key(network_id, mac)),
        )
        .map_err(|e| Error::map(format!("cannot remove {mac} from {MAP_FDB}"), e))
    }

    fn ep_stats(&mut self) -> Result<PerCpuArray<&mut MapData, EndpointStats>> {
        PerCpuArray::try_from(self.map_mut(MAP_EP_STATS)?)
            .map_err(|e| Error::map(format!("map {MAP_EP_STATS} has an unexpected type"), e))
    }

    /// Zeroes counter slot `slot`, for an endpoint that takes it or leaves it
    /// (array slots cannot be deleted, only reset).
    pub fn zero_endpoint_stats(&mut self, slot: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(what, e)| Error::io(format!("cannot read {what}"), e))?;
        let zeros = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
            .map_err(|e| Error::io("cannot size per-CPU endpoint counters", e))?;
        self.ep_stats()?
            .set(slot, zeros, 0)
            .map_err(|e| Error::map(format!("cannot write slot {slot} of {MAP_EP_STATS}"), e))
    }

    /// Attaches the program to TC ingress of `host_ifname` (a TCX link) and
    /// pins the link so it outlives this process. Loads and pins the program
    /// on first use.
    /// Loads, pins and installs the tail-call programs (masquerade egress)
    /// unless they are pinned already; the pinned table keeps its entries
    /// after this process exits.
    fn install_tails(&mut self) -> Result<()> {
        for (name, slot) in migrate::TAILS {
            self.install_tail(name, slot)?;
        }
        Ok(())
    }

    fn install_tail(&mut self, name: &str, slot: u32) -> Result<()> {
        let pin = self.paths.prog_pin(name);
        if pin.exists() {
            return Ok(());
        }
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the embedded eBPF object has no program {name}; rebuild weft"
                ))
            })?
            .try_into()
            .map_err(|e| Error::program(format!("{name} is not a TC program"), e))?;
        prog.load()
            .map_err(|e| Error::program(format!("the kernel rejected {name}"), e))?;
        let fd = prog
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|e| Error::program(format!("cannot use {name}'s fd"), e))?;
        prog.pin(&pin)
            .map_err(|e| Error::pin(format!("cannot pin {name} at {}", pin.display()), e))?;
        migrate::record_program(&self.paths, name)?;
        let map = self.map_mut(MAP_TAILS)?;
        let mut tails = aya::maps::ProgramArray::try_from(map)
            .map_err(|e| Error::map(format!("map {MAP_TAILS} has an unexpected type"), e))?;
        tails
            .set(slot, &fd, 0)
            .map_err(|e| Error::map(format!("cannot install {name} in {MAP_TAILS}"), e))
    }

    pub fn attach(&mut self, host_ifname: &str) -> Result<()> {
        let _first_use = crate::objlock::programs(&self.paths)?;
        let prog_pin = self.paths.prog_pin(PROG_FROM_CONTAINER);
        if !prog_pin.exists() {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(PROG_FROM_CONTAINER)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the embedded eBPF object has no program {PROG_FROM_CONTAINER}; rebuild weft"
                    ))
                })?
                .try_into()
                .map_err(|e| Error::program(format!("{PROG_FROM_CONTAINER} is not a TC program"), e))?;
            prog.load().map_err(|e| {
                Error::program(format!("the kernel rejected {PROG_FROM_CONTAINER}"), e)
            })?;
            prog.pin(&prog_pin).map_err(|e| {
                Error::pin(
                    format!("cannot pin {PROG_FROM_CONTAINER} at {}", prog_pin.display()),
                    e,
                )
            })?;
            self.pinned_program = true;
            migrate::record_program(&self.paths, PROG_FROM_CONTAINER)?;
        }
        self.install_tails()?;
        let mut prog = SchedClassifier::from_pin(&prog_pin).map_err(|e| {
            Error::program(
                format!("cannot open the pinned program {}", prog_pin.display()),
                e,
            )
        })?;
        let link_pin = self.paths.link_pin(host_ifname);
        // A pin left by a crashed run refers to a veth that no longer exists.
        remove_pin(&link_pin)?;
        let id = prog
            .attach(host_ifname, TcAttachType::Ingress)
            .map_err(|e| {
                Error::program(
                    format!("cannot attach {PROG_FROM_CONTAINER} to {host_ifname}"),
                    e,
                )
            })?;
        let link = prog
            .take_link(id)
            .map_err(|e| Error::program(format!("cannot take the link on {host_ifname}"), e))?;
        let link: FdLink = link.try_into().map_err(|e| {
            Error::link(
                format!("the link on {host_ifname} is not a TCX link (weft needs kernel >= 6.6)"),
                e,
            )
        })?;
        link.pin(&link_pin).map_err(|e| {
            Error::pin(
                format!(
                    "cannot pin the link on {host_ifname} at {}",
                    link_pin.display()
                ),
                e,
            )
        })?;
        Ok(())
    }
}

impl Datapath {
    /// Removes the program pin if this instance created it (rollback of the
    /// first `attach` on a node). Links already pinned keep the program alive.
    pub fn unpin_new_program(&mut self) -> Result<()> {
        if self.pinned_program {
            remove_pin(&self.paths.prog_pin(PROG_FROM_CONTAINER))?;
            self.pinned_program = false;
        }
        Ok(())
    }
}

/// Detaches the program from `host_ifname` by removing its pinned link (the
/// kernel drops a TCX link once nothing references it).
pub fn detach(paths: &Paths, host_ifname: &str) -> Result<()> {
    remove_pin(&paths.link_pin(host_ifname))
}

pub(crate) fn remove_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("cannot remove pin {}", path.display()),
            e,
        )),
    }
}

/// Counters read from the pinned maps, summed over CPUs.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// All directions together.
    pub drops: Vec<(Drop, Counter)>,
    pub forwards: Vec<(Forward, Counter)>,
    /// Per direction (its name from `DIRECTIONS`).
    pub directed_drops: Vec<(&'static str, Drop, Counter)>,
    pub directed_forwards: Vec<(&'static str, Forward, Counter)>,
    /// Per counter slot, for the slots asked for.
    pub endpoints: Vec<(u32, EndpointStats)>,
}

pub(crate) fn open_pinned(paths: &Paths, name: &str) -> Result<Option<Map>> {
    let path = paths.maps_dir().join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::map(format!("cannot open pinned map {}", path.display()), e))?;
    Map::from_map_data(data)
        .map(Some)
        .map_err(|e| Error::map(format!("cannot open pinned map {}", path.display()), e))
}

fn sum_counters(values: &PerCpuValues<Counter>) -> Counter {
    total(values.iter().copied())
}

fn total(counters: impl Iterator<Item = Counter>) -> Counter {
    counters.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// Reads every drop and forward counter and the counters of `slots`
/// from the pinned maps, without loading anything. Absent maps read as zero
/// (nothing was ever set up).
pub fn read_counters(paths: &Paths, slots: &[u32]) -> Result<Counters> {
    let array = |name: &'static str| -> Result<Option<PerCpuArray<MapData, Counter>>> {
        open_pinned(paths, name)?
            .map(|m| {
                PerCpuArray::try_from(m)
                    .map_err(|e| Error::map(format!("map {name} has an unexpected type"), e))
            })
            .transpose()
    };
    let read = |arr: &Option<PerCpuArray<MapData, Counter>>, code: u32| -> Result<Counter> {
        match arr {
            Some(a) => a
                .get(&code, 0)
                .map(|v| sum_counters(&v))
                .map_err(|e| Error::map("cannot read counters", e)),
            None => Ok(Counter::default()),
        }
    };
    let drops_map = array(MAP_DROPS)?;
    let forwards_map = array(MAP_FORWARDS)?;
    let mut out = Counters::default();
    for (direction, name) in (0u32..).zip(DIRECTIONS) {
        for r in Drop::ALL {
            let c = read(&drops_map, counter_slot(direction, r.code()))?;
            out.directed_drops.push((name, r, c));
        }
        for r in Forward::ALL {
            let c = read(&forwards_map, counter_slot(direction, r.code()))?;
            out.directed_forwards.push((name, r, c));
        }
    }
    out.drops = Drop::ALL
        .into_iter()
        .map(|r| {
            (
                r,
                total(out.directed_drops.iter().filter(|d| d.1 == r).map(|d| d.2)),
            )
        })
        .collect();
    out.forwards = Forward::ALL
        .into_iter()
        .map(|r| {
            (
                r,
                total(
                    out.directed_forwards
                        .iter()
                        .filter(|d| d.1 == r)
                        .map(|d| d.2),
                ),
            )
        })
        .collect();
    let ep_map: Option<PerCpuArray<MapData, EndpointStats>> = open_pinned(paths, MAP_EP_STATS)?
        .map(|m| {
            PerCpuArray::try_from(m)
                .map_err(|e| Error::map(format!("map {MAP_EP_STATS} has an unexpected type"), e))
        })
        .transpose()?;
    for &slot in slots {
        let stats = match &ep_map {
            Some(m) => match m.get(&slot, 0) {
                Ok(v) => v
                    .iter()
                    .fold(EndpointStats::default(), |a, s| EndpointStats {
                        rx_packets: a.rx_packets + s.rx_packets,
                        rx_bytes: a.rx_bytes + s.rx_bytes,
                        tx_packets: a.tx_packets + s.tx_packets,
                        tx_bytes: a.tx_bytes + s.tx_bytes,
                    }),
                Err(e) if is_absent(&e) => EndpointStats::default(),
                Err(e) => return Err(Error::map(format!("cannot read {MAP_EP_STATS}"), e)),
            },
            None => EndpointStats::default(),
        };
        out.endpoints.push((slot, stats));
    }
    Ok(out)
}

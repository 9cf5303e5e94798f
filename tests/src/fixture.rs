//! The real datapath object, loaded with its own pinned maps, filled per
//! test, and driven through `BPF_PROG_TEST_RUN`.

use std::{collections::HashMap as StdHashMap, net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
};
use weft_common::{
    maps::{
        CT_BUDGET_CREATED, CT_BUDGET_LIMIT, CT_BUDGET_REFRESHED, CT_BUDGET_REMOVED, Counter,
        CtEntry, CtKey, DIRECTIONS, EndpointInfo, EndpointStats, FdbEntry, FdbKey, FloodList,
        MAP_CT, MAP_CT_BUDGET, MAP_CT_CLOSING, MAP_DROPS, MAP_EP_BY_IF, MAP_EP_BY_IP,
        MAP_EP_IF_CACHE, MAP_EP_IP_CACHE, MAP_EP_STATS, MAP_FDB, MAP_FLOOD, MAP_FORWARDS,
        MAP_NET_LINKS, MAP_NETWORKS, MAP_NODE, MAP_OVERLAY, MAP_PUBLISH, MAP_ROUTES, MAP_SUBNETS,
        MAP_TAILS, MAP_VNIS, MAX_FLOOD, NET_FLAG_FLOOD, NET_FLAG_MASQUERADE, NODE_FLAG_CONFIGURED,
        NODE_FLAG_PUBLISHES, NetPairKey, NetworkInfo, NodeConfig, OverlayConfig, OverlayRoute,
        PROG_CALIBRATE, PROG_FROM_CONTAINER, PROG_FROM_UPLINK, PROG_NAT_EGRESS, PROG_OVERLAY_ENCAP,
        PROG_XDP_UNDERLAY, PublishKey, PublishTarget, TAIL_NAT_EGRESS, TAIL_OVERLAY_ENCAP,
        counter_slot, ifcache_slot, ipcache_slot,
    },
    reason::{Drop, Forward},
};

use crate::bpffs::PinDir;

/// The ifindex `BPF_PROG_TEST_RUN` gives the skb when no ctx is passed (the
/// test namespace's loopback), so the sending endpoint of every row.
pub const TEST_RUN_IFINDEX: u32 = 1;

/// `TC_ACT_*` verdicts as the program returns them.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_STOLEN: u32 = 4;
pub const TC_ACT_REDIRECT: u32 = 7;

/// A network as a test declares it.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub id: u32,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub gateway_mac: [u8; 6],
    pub flood: bool,
    /// SNAT traffic to outside weft through the node's uplink.
    pub masquerade: bool,
}

/// An endpoint as a test declares it.
#[derive(Clone, Copy, Debug)]
pub struct Ep {
    pub ifindex: u32,
    pub network_id: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub stats_slot: u32,
}

/// What one run of the program did.
#[derive(Debug)]
pub struct RunOutcome {
    pub action: u32,
    pub output: Vec<u8>,
    pub duration: Duration,
}

/// The datapath loaded for one test, with maps pinned in a private dir.
pub struct Datapath {
    ebpf: Ebpf,
    /// Gateway MAC per network id, copied into endpoints as userspace does.
    gateway_macs: StdHashMap<u32, [u8; 6]>,
    /// Counter slot per endpoint ifindex, so tests can ask by ifindex.
    slots: StdHashMap<u32, u32>,
    // Dropped after `ebpf`, so the pins go once nothing else uses the maps.
    _pins: PinDir,
}

impl Datapath {
    /// Loads the object `weft` embeds and its `weft_from_container` and
    /// `weft_from_uplink` programs.
    pub fn load() -> Result<Self> {
        let pins = PinDir::new().context("creating a bpffs pin directory")?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.path())
            .load(weft::datapath::object::ebpf_object())
            .context("loading the weft eBPF object")?;
        for name in [
            PROG_FROM_CONTAINER,
            PROG_FROM_UPLINK,
            PROG_NAT_EGRESS,
            PROG_OVERLAY_ENCAP,
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the verifier rejected {name}"))?;
        }
        // Install the tail-call targets, as userspace does on a node.
        let nat_egress: &SchedClassifier = ebpf
            .program(PROG_NAT_EGRESS)
            .ok_or_else(|| anyhow!("program {PROG_NAT_EGRESS} missing"))?
            .try_into()?;
        let nat_fd = nat_egress.fd()?.try_clone()?;
        let mut tails = aya::maps::ProgramArray::try_from(
            ebpf.map_mut(MAP_TAILS)
                .ok_or_else(|| anyhow!("map {MAP_TAILS} missing"))?,
        )?;
        tails.set(TAIL_NAT_EGRESS, &nat_fd, 0)?;
        let encap: &SchedClassifier = ebpf
            .program(PROG_OVERLAY_ENCAP)
            .ok_or_else(|| anyhow!("program {PROG_OVERLAY_ENCAP} missing"))?
            .try_into()?;
        let encap_fd = encap.fd()?.try_clone()?;
        let mut tails = aya::maps::ProgramArray::try_from(
            ebpf.map_mut(MAP_TAILS)
                .ok_or_else(|| anyhow!("map {MAP_TAILS} missing"))?,
        )?;
        tails.set(TAIL_OVERLAY_ENCAP, &encap_fd, 0)?;
        Ok(Self {
            ebpf,
            gateway_macs: StdHashMap::new(),
            slots: StdHashMap::new(),
            _pins: pins,
        })
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    pub fn add_network(&mut self, net: Net) -> Result<()> {
        self.gateway_macs.insert(net.id, net.gateway_mac);
        let info = NetworkInfo {
            gateway_ip_be: u32::from_ne_bytes(net.gateway.octets()),
            subnet_be: u32::from_ne_bytes(net.subnet.octets()),
            prefix_len: net.prefix_len,
            flags: if net.flood { NET_FLAG_FLOOD } else { 0 }
                | if net.masquerade {
                    NET_FLAG_MASQUERADE
                } else {
                    0
                },
            gateway_mac: net.gateway_mac,
        };
        HashMap::<_, u32, NetworkInfo>::try_from(self.map(MAP_NETWORKS)?)?
            .insert(net.id, info, 0)?;
        LpmTrie::<_, u32, u32>::try_from(self.map(MAP_SUBNETS)?)?.insert(
            &Key::new(u32::from(net.prefix_len), info.subnet_be),
            net.id,
            0,
        )?;
        Ok(())
    }

    pub fn add_endpoint(&mut self, ep: Ep) -> Result<()> {
        let gateway_mac = *self
            .gateway_macs
            .get(&ep.network_id)
            .ok_or_else(|| anyhow!("add network {} before its endpoints", ep.network_id))?;
        let info = EndpointInfo {
            ifindex: ep.ifindex,
            network_id: ep.network_id,
            ip_be: u32::from_ne_bytes(ep.ip.octets()),
            stats_slot: ep.stats_slot,
            mac: ep.mac,
            gateway_mac,
        };
        self.slots.insert(ep.ifindex, ep.stats_slot);
        HashMap::<_, u32, EndpointInfo>::try_from(self.map(MAP_EP_BY_IP)?)?
            .insert(info.ip_be, info, 0)?;
        HashMap::<_, u32, EndpointInfo>::try_from(self.map(MAP_EP_BY_IF)?)?
            .insert(ep.ifindex, info, 0)?;
        self.put_ifcache(ifcache_slot(ep.ifindex), info)?;
        self.put_ipcache(ipcache_slot(info.ip_be), info)?;
        let fdb_key = FdbKey {
            network_id: ep.network_id,
            mac: ep.mac,
            _pad: [0; 2],
        };
        let entry = FdbEntry {
            ifindex: ep.ifindex,
            stats_slot: ep.stats_slot,
        };
        HashMap::<_, FdbKey, FdbEntry>::try_from(self.map(MAP_FDB)?)?.insert(fdb_key, entry, 0)?;
        let zeros = per_cpu(EndpointStats::default())?;
        PerCpuArray::<_, EndpointStats>::try_from(self.map(MAP_EP_STATS)?)?.set(
            ep.stats_slot,
            zeros,
            0,
        )?;
        Ok(())
    }

    /// Writes `info` into cache slot `slot` of the by-ifindex cache, e.g. to
    /// make another endpoint own a sender's slot (a collision).
    pub fn put_ifcache(&mut self, slot: u32, info: EndpointInfo) -> Result<()> {
        Array::<_, EndpointInfo>::try_from(self.map(MAP_EP_IF_CACHE)?)?.set(slot, info, 0)?;
        Ok(())
    }

    /// Writes `info` into slot `slot` of the by-IP cache.
    pub fn put_ipcache(&mut self, slot: u32, info: EndpointInfo) -> Result<()> {
        Array::<_, EndpointInfo>::try_from(self.map(MAP_EP_IP_CACHE)?)?.set(slot, info, 0)?;
        Ok(())
    }

    /// Lets networks `a` and `b` route to each other.
    pub fn connect(&mut self, a: u32, b: u32) -> Result<()> {
        let mut links = HashMap::<_, NetPairKey, u32>::try_from(self.map(MAP_NET_LINKS)?)?;
        for (from, to) in [(a, b), (b, a)] {
            links.insert(
                NetPairKey {
                    from_network: from,
                    to_network: to,
                },
                1,
                0,
            )?;
        }
        Ok(())
    }

    pub fn set_flood_list(&mut self, network_id: u32, members: &[Ep]) -> Result<()> {
        let mut list = FloodList::default();
        for (entry, ep) in list.members.iter_mut().zip(members.iter().take(MAX_FLOOD)) {
            *entry = FdbEntry {
                ifindex: ep.ifindex,
                stats_slot: ep.stats_slot,
            };
        }
        list.count = members.len().min(MAX_FLOOD) as u32;
        HashMap::<_, u32, FloodList>::try_from(self.map(MAP_FLOOD)?)?
            .insert(network_id, list, 0)?;
        Ok(())
    }

    /// Writes the node's masquerade settings (`WEFT_NODE` entry 0).
    pub fn set_node(&mut self, node: NodeConfig) -> Result<()> {
        Array::<_, NodeConfig>::try_from(self.map(MAP_NODE)?)?.set(0, node, 0)?;
        Ok(())
    }

    /// Runs `frame` once through the XDP early drop `weft_xdp_underlay`
    /// (loaded on first use), as arriving on the underlay.
    pub fn run_xdp(&mut self, frame: &[u8]) -> Result<RunOutcome> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_XDP_UNDERLAY)
            .ok_or_else(|| anyhow!("program {PROG_XDP_UNDERLAY} missing"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("the verifier rejected {PROG_XDP_UNDERLAY}"))?;
        }
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok(RunOutcome {
            action: result.return_value,
            output: out,
            duration: result.duration,
        })
    }

    /// Writes this node's overlay settings (`WEFT_OVERLAY` entry 0).
    pub fn set_overlay(&mut self, overlay: OverlayConfig) -> Result<()> {
        Array::<_, OverlayConfig>::try_from(self.map(MAP_OVERLAY)?)?.set(0, overlay, 0)?;
        Ok(())
    }

    /// Adds an overlay route for `prefix/len`.
    pub fn add_route(&mut self, prefix: Ipv4Addr, len: u32, route: OverlayRoute) -> Result<()> {
        LpmTrie::<_, u32, OverlayRoute>::try_from(self.map(MAP_ROUTES)?)?.insert(
            &Key::new(len, u32::from_ne_bytes(prefix.octets())),
            route,
            0,
        )?;
        Ok(())
    }

    /// Maps VXLAN network identifier `vni` to network `network_id`.
    pub fn add_vni(&mut self, vni: u32, network_id: u32) -> Result<()> {
        HashMap::<_, u32, u32>::try_from(self.map(MAP_VNIS)?)?.insert(vni, network_id, 0)?;
        Ok(())
    }

    /// The conntrack entry at `key`, if there is one: an open connection's
    /// (`WEFT_CT`) or a closed one's (`WEFT_CT_CLOSING`).
    pub fn ct_get(&mut self, key: &CtKey) -> Result<Option<CtEntry>> {
        for table in [MAP_CT, MAP_CT_CLOSING] {
            let map = HashMap::<_, CtKey, CtEntry>::try_from(self.map(table)?)?;
            match map.get(key, 0) {
                Ok(entry) => return Ok(Some(entry)),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Removes `key` from the closed connections' table, as its LRU does
    /// under churn.
    pub fn ct_evict_closing(&mut self, key: &CtKey) -> Result<()> {
        HashMap::<_, CtKey, CtEntry>::try_from(self.map(MAP_CT_CLOSING)?)?.remove(key)?;
        Ok(())
    }

    /// Whether `key` is in the open connections' table.
    pub fn ct_open(&mut self, key: &CtKey) -> Result<bool> {
        let map = HashMap::<_, CtKey, CtEntry>::try_from(self.map(MAP_CT)?)?;
        Ok(map.get(key, 0).is_ok())
    }

    /// Whether `key` is in the closed connections' table.
    pub fn ct_closing(&mut self, key: &CtKey) -> Result<bool> {
        let map = HashMap::<_, CtKey, CtEntry>::try_from(self.map(MAP_CT_CLOSING)?)?;
        Ok(map.get(key, 0).is_ok())
    }

    /// Every conntrack entry, open connections' and closed ones'.
    pub fn ct_entries(&mut self) -> Result<Vec<(CtKey, CtEntry)>> {
        let mut all = Vec::new();
        for table in [MAP_CT, MAP_CT_CLOSING] {
            let map = HashMap::<_, CtKey, CtEntry>::try_from(self.map(table)?)?;
            all.extend(map.iter().collect::<Result<Vec<_>, _>>()?);
        }
        Ok(all)
    }

    /// Connections the datapath counted as created in the conntrack
    /// budget, all CPUs together.
    pub fn ct_created(&mut self) -> Result<u64> {
        let map = PerCpuArray::<_, u64>::try_from(self.map(MAP_CT_BUDGET)?)?;
        Ok(map.get(&CT_BUDGET_CREATED, 0)?.iter().sum())
    }

    /// Writes the conntrack budget's `removed`, `refreshed` and `limit`
    /// slots on every CPU, as a GC does.
    pub fn set_ct_budget(&mut self, removed: u64, refreshed_ns: u64, limit: u64) -> Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        let mut map = PerCpuArray::<_, u64>::try_from(self.map(MAP_CT_BUDGET)?)?;
        for (slot, value) in [
            (CT_BUDGET_REMOVED, removed),
            (CT_BUDGET_REFRESHED, refreshed_ns),
            (CT_BUDGET_LIMIT, limit),
        ] {
            map.set(slot, PerCpuValues::try_from(vec![value; cpus])?, 0)?;
        }
        Ok(())
    }

    /// Writes a conntrack entry, e.g. to age one.
    pub fn ct_put(&mut self, key: CtKey, entry: CtEntry) -> Result<()> {
        HashMap::<_, CtKey, CtEntry>::try_from(self.map(MAP_CT)?)?.insert(key, entry, 0)?;
        Ok(())
    }

    /// Publishes `host_port` of `proto` to `ip:port` (`WEFT_PUBLISH`) and,
    /// as `weft publish` does, sets `NODE_FLAG_PUBLISHES` on a configured
    /// node.
    pub fn publish(&mut self, proto: u8, host_port: u16, ip: Ipv4Addr, port: u16) -> Result<()> {
        let mut node = Array::<_, NodeConfig>::try_from(self.map(MAP_NODE)?)?;
        let config = node.get(&0, 0)?;
        if config.flags & NODE_FLAG_CONFIGURED != 0 {
            node.set(
                0,
                NodeConfig {
                    flags: config.flags | NODE_FLAG_PUBLISHES,
                    ..config
                },
                0,
            )?;
        }
        let key = PublishKey {
            port_be: host_port.to_be_bytes(),
            proto,
            _pad: 0,
        };
        let target = PublishTarget {
            ip_be: u32::from_ne_bytes(ip.octets()),
            port_be: port.to_be_bytes(),
            _pad: [0; 2],
        };
        HashMap::<_, PublishKey, PublishTarget>::try_from(self.map(MAP_PUBLISH)?)?
            .insert(key, target, 0)?;
        Ok(())
    }

    /// Runs `frame` through `weft_from_uplink` once, as arriving on the
    /// uplink.
    pub fn run_uplink(&mut self, frame: &[u8]) -> Result<RunOutcome> {
        self.run_prog(PROG_FROM_UPLINK, frame, 1)
    }

    /// Runs `frame` through `weft_from_uplink` `repeat` times.
    pub fn run_uplink_repeat(&mut self, frame: &[u8], repeat: u32) -> Result<RunOutcome> {
        self.run_prog(PROG_FROM_UPLINK, frame, repeat)
    }

    /// Runs `frame` through the program `repeat` times, as sent by the
    /// endpoint at [`TEST_RUN_IFINDEX`].
    pub fn run_repeat(&mut self, frame: &[u8], repeat: u32) -> Result<RunOutcome> {
        self.run_prog(PROG_FROM_CONTAINER, frame, repeat)
    }

    fn run_prog(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<RunOutcome> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok(RunOutcome {
            action: result.return_value,
            output: out,
            duration: result.duration,
        })
    }

    /// Mean ns per run of the no-op program over `repeat` runs of `frame`:
    /// the harness's own overhead, to subtract from per-path figures.
    pub fn calibration_ns(&mut self, frame: &[u8], repeat: u32) -> Result<f64> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_CALIBRATE)
            .ok_or_else(|| anyhow!("program {PROG_CALIBRATE} missing from the object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        let result = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok(result.duration.as_nanos() as f64)
    }

    pub fn run(&mut self, frame: &[u8]) -> Result<RunOutcome> {
        self.run_repeat(frame, 1)
    }

    /// Drops of `reason`, all directions.
    pub fn drops(&mut self, reason: Drop) -> Result<Counter> {
        self.total(MAP_DROPS, reason.code())
    }

    /// Forwards of `kind`, all directions.
    pub fn forwards(&mut self, kind: Forward) -> Result<Counter> {
        self.total(MAP_FORWARDS, kind.code())
    }

    fn total(&mut self, map: &str, code: u32) -> Result<Counter> {
        let mut sum = Counter::default();
        for direction in 0..DIRECTIONS.len() as u32 {
            let c = self.counter(map, counter_slot(direction, code))?;
            sum.packets += c.packets;
            sum.bytes += c.bytes;
        }
        Ok(sum)
    }

    /// Every drop and forward counter's packet count, named
    /// `<direction> drop:<reason>` / `<direction> forward:<kind>`, for
    /// before/after diffs.
    pub fn all_counters(&mut self) -> Result<Vec<(String, u64)>> {
        let mut all = Vec::new();
        for (direction, dir_name) in (0u32..).zip(DIRECTIONS) {
            for reason in Drop::ALL {
                let slot = counter_slot(direction, reason.code());
                all.push((
                    format!("{dir_name} drop:{}", reason.name()),
                    self.counter(MAP_DROPS, slot)?.packets,
                ));
            }
            for kind in Forward::ALL {
                let slot = counter_slot(direction, kind.code());
                all.push((
                    format!("{dir_name} forward:{}", kind.name()),
                    self.counter(MAP_FORWARDS, slot)?.packets,
                ));
            }
        }
        Ok(all)
    }

    fn counter(&mut self, map: &str, index: u32) -> Result<Counter> {
        let array = PerCpuArray::<_, Counter>::try_from(self.map(map)?)?;
        let values = array.get(&index, 0)?;
        Ok(values.iter().fold(Counter::default(), |sum, c| Counter {
            packets: sum.packets + c.packets,
            bytes: sum.bytes + c.bytes,
        }))
    }

    /// The counters of the endpoint added with `ifindex`.
    pub fn endpoint_stats(&mut self, ifindex: u32) -> Result<EndpointStats> {
        let slot = *self
            .slots
            .get(&ifindex)
            .ok_or_else(|| anyhow!("no endpoint with ifindex {ifindex} was added"))?;
        let map = PerCpuArray::<_, EndpointStats>::try_from(self.map(MAP_EP_STATS)?)?;
        let values = map.get(&slot, 0)?;
        Ok(values
            .iter()
            .fold(EndpointStats::default(), |sum, s| EndpointStats {
                rx_packets: sum.rx_packets + s.rx_packets,
                rx_bytes: sum.rx_bytes + s.rx_bytes,
                tx_packets: sum.tx_packets + s.tx_packets,
                tx_bytes: sum.tx_bytes + s.tx_bytes,
            }))
    }
}

fn per_cpu<T: aya::Pod + Copy>(value: T) -> Result<PerCpuValues<T>> {
    let cpus = nr_cpus().map_err(|(_, e)| anyhow!("counting possible CPUs: {e}"))?;
    Ok(PerCpuValues::try_from(vec![value; cpus])?)
}

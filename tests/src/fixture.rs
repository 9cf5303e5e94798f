//! The real datapath object, loaded with its own pinned maps, programmed
//! per test, and driven through `BPF_PROG_TEST_RUN`.
//!
//! What a table's maps hold comes from a `weft::model::Model` (networks,
//! endpoints, network links, the node's uplink and overlay, remote nodes,
//! publications): the fixture renders it with weft's own
//! `render::maps::render` and writes the difference from the previous
//! render with `apply::maps::{write_changes, remove_stale}`, as the
//! engine does, so the tables run against the entries weft really writes
//! (flood lists, caches, gateway MACs and node flags included). Only what
//! no model describes is written here directly: the tail-call targets,
//! conntrack entries and budget, and a forced cache collision.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
};
use ipnet::Ipv4Net;
use weft::{
    apply::{
        Steps,
        maps::{remove_stale, write_changes},
    },
    model::{Endpoint, Mac, Model, Network, Proto},
    render::maps::{DesiredMaps, Synthetic, render},
};
use weft_api::requests::Publish;
use weft_common::{
    maps::{
        CT_BUDGET_CREATED, CT_BUDGET_LIMIT, CT_BUDGET_REFRESHED, CT_BUDGET_REMOVED, Counter,
        CtEntry, CtKey, DIRECTIONS, EndpointInfo, EndpointStats, MAP_CT, MAP_CT_BUDGET,
        MAP_CT_CLOSING, MAP_DROPS, MAP_EP_IF_CACHE, MAP_EP_IP_CACHE, MAP_EP_STATS, MAP_FORWARDS,
        MAP_MAGLEV, MAP_TAILS, MaglevChunk, MaglevKey, PROG_CALIBRATE, PROG_FROM_CONTAINER,
        PROG_FROM_UPLINK, PROG_NAT_EGRESS, PROG_OVERLAY_ENCAP, PROG_SERVICE, PROG_XDP_UNDERLAY,
        TAIL_NAT_EGRESS, TAIL_OVERLAY_ENCAP, TAIL_SERVICE, counter_slot,
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

/// A network as a test declares it; [`Net::record`] is its model record.
/// Its gateway MAC is weft's, derived from the id ([`Net::gateway_mac`]).
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub id: u32,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub flood: bool,
    /// SNAT traffic to outside weft through the node's uplink.
    pub masquerade: bool,
}

impl Net {
    /// Its name in the model.
    pub fn name(&self) -> String {
        network_name(self.id)
    }

    /// The gateway MAC weft gives the network (`Mac::gateway`).
    pub fn gateway_mac(&self) -> [u8; 6] {
        Mac::gateway(self.id).octets()
    }

    /// The network as the model records it (connected to nothing; VNI the
    /// id).
    pub fn record(&self) -> Result<Network> {
        Ok(Network {
            name: self.name(),
            id: self.id,
            subnet: Ipv4Net::new(self.subnet, self.prefix_len)
                .with_context(|| format!("subnet of network {}", self.id))?,
            gateway: self.gateway,
            flood: self.flood,
            masquerade: self.masquerade,
            connected: Vec::new(),
            vni: 0,
        })
    }
}

fn network_name(id: u32) -> String {
    format!("net{id}")
}

/// An endpoint as a test declares it, with a synthetic host ifindex, MAC
/// and counter slot; [`Ep::record`] is its model record.
#[derive(Clone, Copy, Debug)]
pub struct Ep {
    pub ifindex: u32,
    pub network_id: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub stats_slot: u32,
}

impl Ep {
    /// Its name in the model.
    pub fn name(&self) -> String {
        format!("ep{}", self.ifindex)
    }

    /// The endpoint as the model records it. Names of devices and
    /// namespaces are placeholders: no map entry is rendered from them.
    pub fn record(&self) -> Endpoint {
        Endpoint {
            name: self.name(),
            network: network_name(self.network_id),
            netns: format!("ns{}", self.ifindex),
            ip: self.ip,
            mac: Mac(self.mac),
            ifname: "eth0".into(),
            host_ifname: format!("wt{}", self.ifindex),
            host_ifindex: self.ifindex,
            mtu: 1500,
            stats_slot: self.stats_slot,
            labels: Default::default(),
            terminating: false,
            container_id: None,
            cni_network: None,
            aliases: Vec::new(),
        }
    }
}

/// A model of networks `nets` and endpoints `eps` (in that order: a
/// direct-mapped cache slot goes to the first endpoint mapping to it),
/// each pair of `links` connected by weft's own rule.
pub fn model(nets: &[Net], eps: &[Ep], links: &[(Net, Net)]) -> Result<Model> {
    let mut m = Model {
        networks: nets.iter().map(Net::record).collect::<Result<_>>()?,
        endpoints: eps.iter().map(Ep::record).collect(),
        next_network_id: nets.iter().map(|n| n.id + 1).max().unwrap_or(1),
        ..Model::default()
    };
    for (a, b) in links {
        m = weft::model::network::connect(&m, &a.name(), &b.name())
            .with_context(|| format!("connecting networks {} and {}", a.id, b.id))?;
    }
    Ok(m)
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
    /// What the maps were programmed from.
    model: Model,
    /// `model`'s render as applied: the next change writes only what
    /// differs from it.
    applied: DesiredMaps,
    // Dropped after `ebpf`, so the pins go once nothing else uses the maps.
    _pins: PinDir,
}

impl Datapath {
    /// Loads the object `weft` embeds and its `weft_from_container` and
    /// `weft_from_uplink` programs, with every map the model describes
    /// empty.
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
            PROG_SERVICE,
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the verifier rejected {name}"))?;
        }
        // Written directly: the tail-call targets are the loader's, not
        // the model's (the engine installs them when it loads the object).
        for (slot, name) in [
            (TAIL_NAT_EGRESS, PROG_NAT_EGRESS),
            (TAIL_OVERLAY_ENCAP, PROG_OVERLAY_ENCAP),
            (TAIL_SERVICE, PROG_SERVICE),
        ] {
            let prog: &SchedClassifier = ebpf
                .program(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            let fd = prog.fd()?.try_clone()?;
            let mut tails = aya::maps::ProgramArray::try_from(
                ebpf.map_mut(MAP_TAILS)
                    .ok_or_else(|| anyhow!("map {MAP_TAILS} missing"))?,
            )?;
            tails.set(slot, &fd, 0)?;
        }
        Ok(Self {
            ebpf,
            model: Model::default(),
            applied: DesiredMaps::default(),
            _pins: pins,
        })
    }

    /// Loads the object and programs what `model` describes.
    pub fn with_model(model: Model) -> Result<Self> {
        let mut dp = Self::load()?;
        dp.set_model(model)?;
        Ok(dp)
    }

    /// The model the maps were last programmed from.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Programs what `model` describes, through weft's own render and map
    /// apply: entries it adds or changes written, entries only the
    /// previous model had removed, counter slots changing hands zeroed.
    pub fn set_model(&mut self, model: Model) -> Result<()> {
        let to = render(&model, &Synthetic::default());
        let mut steps = Steps::default();
        write_changes(&mut self.ebpf, &self.applied, &to, &mut steps)
            .context("writing the model's map entries")?;
        remove_stale(&mut self.ebpf, &self.applied, &to, &mut steps)
            .context("removing map entries the model no longer has")?;
        self.applied = to;
        self.model = model;
        Ok(())
    }

    /// Changes the model with `edit` and programs the result.
    pub fn change(&mut self, edit: impl FnOnce(&mut Model)) -> Result<()> {
        let mut model = self.model.clone();
        edit(&mut model);
        self.set_model(model)
    }

    /// Publishes `host_port` of `proto` to port `port` of the endpoint at
    /// `ip`, by weft's own rule (`weft publish`: the node must be set, a
    /// port is published once), and programs the result.
    pub fn publish(&mut self, proto: Proto, host_port: u16, ip: Ipv4Addr, port: u16) -> Result<()> {
        let endpoint = self
            .model
            .ip_holder(ip)
            .ok_or_else(|| anyhow!("no endpoint has address {ip}"))?
            .to_owned();
        let req = Publish {
            endpoint,
            spec: format!("{host_port}:{port}/{proto}"),
        };
        let (model, _) = weft::model::publish::publish(&self.model, &req)
            .with_context(|| format!("publishing {}", req.spec))?;
        self.set_model(model)
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))
    }

    /// Writes `info` into slot `slot` of the by-ifindex cache directly,
    /// e.g. to make a stranger own a sender's slot: no model renders a
    /// slot whose owner the hash table lacks.
    pub fn put_ifcache(&mut self, slot: u32, info: EndpointInfo) -> Result<()> {
        Array::<_, EndpointInfo>::try_from(self.map(MAP_EP_IF_CACHE)?)?.set(slot, info, 0)?;
        Ok(())
    }

    /// Writes `info` into slot `slot` of the by-IP cache directly (see
    /// [`Self::put_ifcache`]).
    pub fn put_ipcache(&mut self, slot: u32, info: EndpointInfo) -> Result<()> {
        Array::<_, EndpointInfo>::try_from(self.map(MAP_EP_IP_CACHE)?)?.set(slot, info, 0)?;
        Ok(())
    }

    /// The content ids of the Maglev tables `WEFT_MAGLEV` holds.
    pub fn maglev_tables(&mut self) -> Result<Vec<u64>> {
        let map = HashMap::<_, MaglevKey, MaglevChunk>::try_from(self.map(MAP_MAGLEV)?)?;
        let mut ids: Vec<u64> = map
            .keys()
            .map(|k| k.map(|k| k.table))
            .collect::<Result<_, _>>()?;
        ids.sort();
        ids.dedup();
        Ok(ids)
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

    // Conntrack is the datapath's own state, which no model describes:
    // read and written directly.

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

    /// The counters of the model's endpoint with host ifindex `ifindex`.
    pub fn endpoint_stats(&mut self, ifindex: u32) -> Result<EndpointStats> {
        let slot = self
            .model
            .endpoints
            .iter()
            .find(|e| e.host_ifindex == ifindex)
            .map(|e| e.stats_slot)
            .ok_or_else(|| anyhow!("the model has no endpoint with ifindex {ifindex}"))?;
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

//! The datapath's counters: drops and forwards per reason and direction,
//! and per-endpoint counters, summed over CPUs.

use aya::{
    maps::{Map, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use weft_common::{
    maps::{
        Counter, DIRECTIONS, EndpointStats, MAP_DROPS, MAP_EP_STATS, MAP_FORWARDS, counter_slot,
    },
    reason::{Drop, Forward},
};

use crate::{
    datapath::{
        maps::{is_absent, open_pinned},
        paths::Paths,
    },
    error::{Error, Result},
};

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

fn total(counters: impl Iterator<Item = Counter>) -> Counter {
    counters.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// Reads every drop and forward counter and the counters of `slots` from
/// the pinned maps, without loading anything. Absent maps read as zero
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
                .map(|v| total(v.iter().copied()))
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
            let all = out.directed_drops.iter().filter(|d| d.1 == r).map(|d| d.2);
            (r, total(all))
        })
        .collect();
    out.forwards = Forward::ALL
        .into_iter()
        .map(|r| {
            let all = out.directed_forwards.iter().filter(|d| d.1 == r);
            (r, total(all.map(|d| d.2)))
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

/// Zeroes counter slot `slot` of `WEFT_EP_STATS` (`map`), for an endpoint
/// that takes it or leaves it (array slots cannot be deleted, only reset).
pub fn zero_endpoint_stats(map: &mut Map, slot: u32) -> Result<()> {
    let cpus = nr_cpus().map_err(|(what, e)| Error::io(format!("cannot read {what}"), e))?;
    let zeros = PerCpuValues::try_from(vec![EndpointStats::default(); cpus])
        .map_err(|e| Error::io("cannot size per-CPU endpoint counters", e))?;
    PerCpuArray::<_, EndpointStats>::try_from(map)
        .map_err(|e| Error::map(format!("map {MAP_EP_STATS} has an unexpected type"), e))?
        .set(slot, zeros, 0)
        .map_err(|e| Error::map(format!("cannot write slot {slot} of {MAP_EP_STATS}"), e))
}

/// New service connections per member (`WEFT_SVC_COUNTS`, summed over
/// CPUs): `(service id, backend address)`, address 0 counting the ones
/// refused for want of a backend. Empty when the map is not pinned.
pub fn service_counts(
    paths: &Paths,
) -> Result<std::collections::HashMap<(u32, std::net::Ipv4Addr), u64>> {
    use weft_common::maps::{MAP_SVC_COUNTS, MemberKey};
    let mut out = std::collections::HashMap::new();
    let Some(map) = super::maps::open_pinned(paths, MAP_SVC_COUNTS)? else {
        return Ok(out);
    };
    let counts = aya::maps::PerCpuHashMap::<_, MemberKey, u64>::try_from(map)
        .map_err(|e| Error::map(format!("map {MAP_SVC_COUNTS} has an unexpected type"), e))?;
    for item in counts.iter() {
        let Ok((k, per_cpu)) = item else { continue };
        let total: u64 = per_cpu.iter().sum();
        out.insert((k.svc_id, super::ip_of(k.ip_be)), total);
    }
    Ok(out)
}

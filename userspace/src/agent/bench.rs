//! Synthetic endpoints, for benchmarking map programming only
//! (`cargo xtask bench`): `POST /v1/bench/endpoints {"count": N}` writes N
//! endpoints into the maps exactly as `endpoint add` does after creating the
//! veth (by-IP and by-ifindex hashes, both direct-mapped caches, the
//! forwarding table, a zeroed counter slot; one flood list), and
//! `DELETE /v1/bench/endpoints` removes them. No veth, no link, no state:
//! nothing in `state.json` refers to them.
//!
//! They cannot meet real traffic: their ifindexes start at
//! [`SYNTHETIC_IFINDEX`] (no interface has one that high), their addresses
//! are in 100.64.0.0/10 (carrier-grade NAT space, never a weft subnet here)
//! and they belong to network [`SYNTHETIC_NETWORK`], which is not in
//! `WEFT_NETWORKS`. A real endpoint keeps its cache slots (a cache slot is
//! never taken from a live endpoint). Counter slots are those no real
//! endpoint had when they were programmed.
//!
//! aya 0.14 has no batched map updates (`BPF_MAP_UPDATE_BATCH`), so each
//! entry is one `bpf()` call in a tight loop.

use std::{net::Ipv4Addr, time::Instant};

use aya::maps::{HashMap, MapData};
use weft_common::maps::{
    EndpointInfo, FdbEntry, FloodList, MAP_EP_BY_IF, MAX_ENDPOINTS, MAX_FLOOD,
};

use crate::{
    datapath::{Datapath, ip_be},
    error::{Error, Result},
    mac::Mac,
    paths::Paths,
    state::Locked,
};

/// ifindex of synthetic endpoint 0; endpoint `i` has `SYNTHETIC_IFINDEX + i`.
pub const SYNTHETIC_IFINDEX: u32 = 0x4000_0000;
/// The network id synthetic endpoints belong to (never a real network's).
pub const SYNTHETIC_NETWORK: u32 = 0xfffe_0000;
/// Address of synthetic endpoint 0 (100.64.0.1).
const SYNTHETIC_IP: u32 = 0x6440_0001;

/// `POST /v1/bench/endpoints`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub count: u32,
}

/// What programming or removing synthetic endpoints took.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub endpoints: u32,
    /// Wall time of the map updates alone.
    pub map_update_seconds: f64,
    /// `bpf()` map calls made in that time (at least; see [`program`]).
    pub map_calls: u64,
    /// Loading the datapath object and opening its maps, before that.
    pub open_seconds: f64,
}

fn synthetic(i: u32, slot: u32) -> EndpointInfo {
    let ip = Ipv4Addr::from(SYNTHETIC_IP + i);
    EndpointInfo {
        ifindex: SYNTHETIC_IFINDEX + i,
        network_id: SYNTHETIC_NETWORK,
        ip_be: ip_be(ip),
        stats_slot: slot,
        mac: Mac::container(ip).octets(),
        gateway_mac: [0x02, 0, 0, 0, 0, 1],
    }
}

/// Programs `count` synthetic endpoints (after removing any left over).
pub fn program(paths: &Paths, count: u32) -> Result<Timing> {
    let locked = Locked::acquire(paths)?;
    let used: std::collections::HashSet<u32> = locked
        .state
        .endpoints
        .iter()
        .map(|e| e.stats_slot)
        .collect();
    let slots: Vec<u32> = (0..MAX_ENDPOINTS)
        .filter(|s| !used.contains(s))
        .take(count as usize)
        .collect();
    if slots.len() < count as usize {
        return Err(Error::Invalid(format!(
            "{count} synthetic endpoints do not fit: {} counter slots are free \
             (at most {MAX_ENDPOINTS} endpoints per node)",
            slots.len()
        )));
    }
    remove_locked(paths)?;
    let opened = Instant::now();
    let mut dp = Datapath::open(paths)?;
    let open_seconds = opened.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut flood = FloodList::default();
    for (i, &slot) in (0..count).zip(&slots) {
        let ep = synthetic(i, slot);
        dp.zero_endpoint_stats(slot)?;
        dp.put_endpoint(&ep)?;
        let target = FdbEntry {
            ifindex: ep.ifindex,
            stats_slot: slot,
        };
        dp.put_fdb(
            SYNTHETIC_NETWORK,
            Mac::container(Ipv4Addr::from(SYNTHETIC_IP + i)),
            target,
        )?;
        if (flood.count as usize) < MAX_FLOOD {
            flood.members[flood.count as usize] = target;
            flood.count += 1;
        }
    }
    dp.put_flood_list(SYNTHETIC_NETWORK, &flood)?;
    // Per endpoint: counters, two hashes, two caches (read, write), the
    // forwarding table; plus the flood list. A cache slot another live
    // endpoint holds costs one more (the holder's liveness check).
    let calls = u64::from(count) * 8 + 1;
    Ok(Timing {
        endpoints: count,
        map_update_seconds: started.elapsed().as_secs_f64(),
        map_calls: calls,
        open_seconds,
    })
}

/// Removes every synthetic endpoint.
pub fn remove(paths: &Paths) -> Result<Timing> {
    let _locked = Locked::acquire(paths)?;
    remove_locked(paths)
}

fn remove_locked(paths: &Paths) -> Result<Timing> {
    let pin = paths.maps_dir().join(MAP_EP_BY_IF);
    if !pin.exists() {
        return Ok(Timing {
            endpoints: 0,
            map_update_seconds: 0.0,
            map_calls: 0,
            open_seconds: 0.0,
        });
    }
    let opened = Instant::now();
    let mut dp = Datapath::open(paths)?;
    let by_if: HashMap<MapData, u32, EndpointInfo> = MapData::from_pin(&pin)
        .and_then(aya::maps::Map::from_map_data)
        .and_then(HashMap::try_from)
        .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
    let open_seconds = opened.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut n = 0;
    let mut calls = 0;
    for i in 0..MAX_ENDPOINTS {
        calls += 1;
        let Ok(ep) = by_if.get(&(SYNTHETIC_IFINDEX + i), 0) else {
            continue;
        };
        let ip = Ipv4Addr::from(ep.ip_be.to_ne_bytes());
        dp.del_endpoint(ep.ifindex, ip)?;
        dp.del_fdb(SYNTHETIC_NETWORK, Mac::container(ip))?;
        dp.zero_endpoint_stats(ep.stats_slot)?;
        calls += 7;
        n += 1;
    }
    dp.del_flood_list(SYNTHETIC_NETWORK)?;
    Ok(Timing {
        endpoints: n,
        map_update_seconds: started.elapsed().as_secs_f64(),
        map_calls: calls + 1,
        open_seconds,
    })
}

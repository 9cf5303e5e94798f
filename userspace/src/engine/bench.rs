//! Synthetic endpoints, for benchmarking map programming only (`cargo
//! xtask bench`): `POST /v1/bench/endpoints {"count": N}` has the engine
//! render and apply N endpoints exactly as real ones (by-IP and by-ifindex
//! hashes, both direct-mapped caches, the forwarding table, a zeroed
//! counter slot, a flood list), and `DELETE /v1/bench/endpoints` removes
//! them. No veth, no link, nothing in the store: they live in the
//! engine's memory beside the model, so drift repair keeps them.
//!
//! They cannot meet real traffic: their ifindexes start at
//! [`SYNTHETIC_IFINDEX`] (no interface has one that high), their addresses
//! are in 100.64.0.0/10 (carrier-grade NAT space, never a weft subnet here)
//! and they belong to network [`SYNTHETIC_NETWORK`], which is not in
//! `WEFT_NETWORKS`. Counter slots are those no real endpoint has.

use std::{collections::HashSet, net::Ipv4Addr, time::Instant};

use weft_api::views::Timing;
use weft_common::maps::MAX_ENDPOINTS;

use super::Engine;
use crate::{
    error::{Error, Result},
    model::{Endpoint, Mac},
    render::maps::Synthetic,
};

/// ifindex of synthetic endpoint 0; endpoint `i` has `SYNTHETIC_IFINDEX + i`.
pub const SYNTHETIC_IFINDEX: u32 = 0x4000_0000;
/// The network id synthetic endpoints belong to (never a real network's).
pub const SYNTHETIC_NETWORK: u32 = 0xfffe_0000;
/// Address of synthetic endpoint 0 (100.64.0.1).
const SYNTHETIC_IP: u32 = 0x6440_0001;

fn synthetic(i: u32, slot: u32) -> Endpoint {
    let ip = Ipv4Addr::from(SYNTHETIC_IP + i);
    Endpoint {
        name: format!(":bench{i}"),
        network: String::new(),
        netns: String::new(),
        ip,
        mac: Mac::container(ip),
        ifname: String::new(),
        host_ifname: String::new(),
        host_ifindex: SYNTHETIC_IFINDEX + i,
        mtu: 0,
        stats_slot: slot,
        labels: Default::default(),
        terminating: false,
        container_id: None,
        cni_network: None,
        aliases: Vec::new(),
    }
}

/// Programs `count` synthetic endpoints (replacing any programmed before).
pub async fn program(engine: &mut Engine, count: u32) -> Result<Timing> {
    let used: HashSet<u32> = engine
        .model()
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
    let wanted = Synthetic {
        network_id: SYNTHETIC_NETWORK,
        endpoints: (0..count)
            .zip(slots)
            .map(|(i, s)| synthetic(i, s))
            .collect(),
    };
    if !engine.synthetic.endpoints.is_empty() {
        remove(engine).await?;
    }
    timed(engine, wanted, count).await
}

/// Removes every synthetic endpoint.
pub async fn remove(engine: &mut Engine) -> Result<Timing> {
    let count = engine.synthetic.endpoints.len() as u32;
    timed(engine, Synthetic::default(), count).await
}

async fn timed(engine: &mut Engine, synthetic: Synthetic, endpoints: u32) -> Result<Timing> {
    engine.plan(|_| Ok(())).await?;
    let open = engine.open_kernel().map(drop);
    open?;
    let model = engine.model().clone();
    let started = Instant::now();
    engine.transact(model, synthetic).await?;
    Ok(Timing {
        endpoints,
        map_update_seconds: started.elapsed().as_secs_f64(),
        map_calls: u64::from(engine.last_steps),
        open_seconds: engine.open_seconds,
    })
}

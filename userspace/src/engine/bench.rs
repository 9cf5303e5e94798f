//! Synthetic endpoints, for benchmarking map programming only (`cargo
//! xtask bench`): `POST /v1/bench/endpoints {"count": N}` has the engine
//! render and apply N endpoints exactly as real ones (by-IP and by-ifindex
//! hashes, both direct-mapped caches, the forwarding table, a zeroed
//! counter slot, a flood list), and `DELETE /v1/bench/endpoints` removes
//! them. No veth, no link, nothing in the store: they live in the
//! engine's memory beside the model, so drift repair keeps them.
//!
//! Synthetic services likewise (`POST /v1/bench/services {"count": N,
//! "backends": B}`): N services of one TCP port, each with B backends of
//! its own, rendered by the code that renders real services (service
//! entry, Maglev table of the configured size, members), so every change
//! the engine makes afterwards renders and diffs them too. Their VIPs are
//! the highest free addresses of the service range (real services are
//! given the lowest), their backends addresses in 100.80.0.0/12 that no
//! endpoint has, their ids from [`SYNTHETIC_SERVICE_ID`].
//!
//! They cannot meet real traffic: their ifindexes start at
//! [`SYNTHETIC_IFINDEX`] (no interface has one that high), their addresses
//! are in 100.64.0.0/10 (carrier-grade NAT space, never a weft subnet here)
//! and they belong to network [`SYNTHETIC_NETWORK`], which is not in
//! `WEFT_NETWORKS`. Counter slots are those no real endpoint has.

use std::{collections::HashSet, net::Ipv4Addr, time::Instant};

use weft_api::views::Timing;
use weft_common::maps::{
    MAGLEV_CHUNK, MAX_ENDPOINTS, MAX_MAGLEV_CHUNKS, MAX_SERVICE_PORTS, MAX_SVC_MEMBERS,
    SVC_MEMBER_ACTIVE,
};

use super::Engine;
use crate::{
    datapath::ip_be,
    error::{Error, Result},
    model::{Endpoint, Mac, Model},
    render::maps::{Members, Synthetic, SyntheticService},
};

/// Id of synthetic service 0 (real ids count up from 1 and stay far below).
pub const SYNTHETIC_SERVICE_ID: u32 = 0x8000_0000;
/// Address of synthetic service 0's first backend (100.80.0.1).
const SYNTHETIC_BACKEND_IP: u32 = 0x6450_0001;
/// Backends a synthetic service may have.
const MAX_SYNTHETIC_BACKENDS: u32 = 64;
/// The port synthetic services listen on and forward to.
const SYNTHETIC_PORT: u16 = 80;

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
        services: engine.synthetic.services.clone(),
    };
    if !engine.synthetic.endpoints.is_empty() {
        remove(engine).await?;
    }
    timed(engine, wanted, count).await
}

/// Removes every synthetic endpoint.
pub async fn remove(engine: &mut Engine) -> Result<Timing> {
    let count = engine.synthetic.endpoints.len() as u32;
    let wanted = Synthetic {
        services: engine.synthetic.services.clone(),
        ..Synthetic::default()
    };
    timed(engine, wanted, count).await
}

/// Programs `count` synthetic services of `backends` backends each in
/// place of those programmed before (`count` 0 removes them).
pub async fn program_services(engine: &mut Engine, count: u32, backends: u32) -> Result<Timing> {
    let services = synthetic_services(engine.model(), count, backends)?;
    let wanted = Synthetic {
        services: services.into(),
        ..engine.synthetic.clone()
    };
    let endpoints = wanted.endpoints.len() as u32;
    timed(engine, wanted, endpoints).await
}

/// The synthetic services for `model`, or why they do not fit the maps.
fn synthetic_services(model: &Model, count: u32, backends: u32) -> Result<Vec<SyntheticService>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if !(1..=MAX_SYNTHETIC_BACKENDS).contains(&backends) {
        return Err(Error::Invalid(format!(
            "synthetic services have 1 to {MAX_SYNTHETIC_BACKENDS} backends, not {backends}"
        )));
    }
    let config = model.service_config();
    let m = config.maglev_size;
    let per_table = m.div_ceil(MAGLEV_CHUNK);
    let tables = count + model.services.len() as u32;
    if u64::from(tables) * u64::from(per_table) > u64::from(MAX_MAGLEV_CHUNKS) {
        return Err(Error::Invalid(format!(
            "{tables} Maglev tables of {m} slots need {} chunks of {MAGLEV_CHUNK} slots; the \
             table map holds {MAX_MAGLEV_CHUNKS}: lower the table size (`weft service config \
             --maglev-size 1021`) or make fewer services",
            u64::from(tables) * u64::from(per_table)
        )));
    }
    let ports: usize = model.services.iter().map(|s| s.ports.len()).sum();
    let members = u64::from(count) * u64::from(backends);
    if ports + count as usize > MAX_SERVICE_PORTS as usize
        || members + model.endpoints.len() as u64 > u64::from(MAX_SVC_MEMBERS)
    {
        return Err(Error::Invalid(format!(
            "{count} services of {backends} backends do not fit: at most {MAX_SERVICE_PORTS} \
             service ports and {MAX_SVC_MEMBERS} members per node"
        )));
    }
    let held: HashSet<Ipv4Addr> = model.services.iter().map(|s| s.vip).collect();
    let hosts: Vec<Ipv4Addr> = config.range.hosts().collect();
    let vips: Vec<Ipv4Addr> = hosts
        .into_iter()
        .rev()
        .filter(|ip| !held.contains(ip))
        .take(count as usize)
        .collect();
    if vips.len() < count as usize {
        return Err(Error::Invalid(format!(
            "the service range {} has {} free addresses, not {count}",
            config.range,
            vips.len()
        )));
    }
    Ok(vips
        .into_iter()
        .zip(0..)
        .map(|(vip, i)| {
            let backends: Vec<Ipv4Addr> = (0..backends)
                .map(|j| Ipv4Addr::from(SYNTHETIC_BACKEND_IP + i * backends + j))
                .collect();
            let members = backends
                .iter()
                .map(|ip| (ip_be(*ip), SVC_MEMBER_ACTIVE))
                .collect::<Members>();
            SyntheticService {
                id: SYNTHETIC_SERVICE_ID + i,
                vip,
                port: SYNTHETIC_PORT,
                target: SYNTHETIC_PORT,
                backends,
                members: members.into(),
            }
        })
        .collect())
}

async fn timed(engine: &mut Engine, synthetic: Synthetic, endpoints: u32) -> Result<Timing> {
    engine.plan(|_| Ok(())).await?;
    let open = engine.open_kernel().map(drop);
    open?;
    let model = engine.model().clone();
    let services = synthetic.services.len() as u32;
    let started = Instant::now();
    engine.transact(model, synthetic).await?;
    Ok(Timing {
        endpoints,
        services,
        map_update_seconds: started.elapsed().as_secs_f64(),
        map_calls: u64::from(engine.last_steps),
        open_seconds: engine.open_seconds,
    })
}

#[cfg(test)]
mod tests {
    use weft_api::requests::{CreateService, SetServiceConfig};

    use super::*;
    use crate::model::service;

    fn one_service() -> Model {
        let req = CreateService {
            name: "real".into(),
            ports: vec!["80/tcp".into()],
            ..CreateService::default()
        };
        service::create(&Model::default(), &req).unwrap().0
    }

    #[test]
    fn synthetic_services_take_the_top_of_the_range_and_addresses_of_their_own() {
        let m = one_service();
        let s = synthetic_services(&m, 3, 10).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].vip, Ipv4Addr::new(10, 96, 255, 254));
        assert_eq!(s[2].vip, Ipv4Addr::new(10, 96, 255, 252));
        assert_eq!(s[1].backends[0], Ipv4Addr::new(100, 80, 0, 11));
        let all: HashSet<Ipv4Addr> = s.iter().flat_map(|s| s.backends.clone()).collect();
        assert_eq!(all.len(), 30, "every backend address is a service's own");
        assert!(s.iter().all(|s| s.vip != m.services[0].vip));
        assert!(synthetic_services(&m, 0, 0).unwrap().is_empty());
    }

    #[test]
    fn synthetic_services_that_do_not_fit_the_table_map_are_refused() {
        // 10,000 tables of 16381 slots are 160,000 chunks: too many.
        let err = synthetic_services(&one_service(), 10_000, 10).unwrap_err();
        assert!(err.to_string().contains("--maglev-size"), "{err}");
        let small = service::configure(
            &one_service(),
            &SetServiceConfig {
                maglev_size: Some(1021),
                ..SetServiceConfig::default()
            },
        )
        .unwrap();
        assert_eq!(
            synthetic_services(&small, 10_000, 10).unwrap().len(),
            10_000
        );
        assert!(synthetic_services(&small, 1, 0).is_err());
        assert!(synthetic_services(&small, 1, 65).is_err());
    }
}

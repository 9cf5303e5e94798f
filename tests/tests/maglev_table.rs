//! Maglev measured on the live datapath: 1,000 flows from A1 to a
//! service of 10 backends, each run as a new connection through
//! `weft_service` (BPF_PROG_TEST_RUN) on a freshly loaded datapath per
//! member set, so each pick is the datapath's own, read from the output
//! packet's destination. Removing one backend moves only its flows plus
//! at most 2% of the others; adding one moves at most 1/N + 2%; the
//! spread is even within 25%.

use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::Result;
use weft::model::Model;
use weft_api::requests::{CreateService, SetServiceConfig};
use weft_tests::{
    fixture::{Datapath, Ep, TC_ACT_REDIRECT, model},
    frames::{ETH_HLEN, TcpFlags, tcp},
    topology::{A1, NET_A},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const FLOWS: u16 = 1000;

/// Backend `i` of net A (synthetic ifindexes: a test run never delivers).
fn backend(i: u8) -> Ep {
    Ep {
        ifindex: 500 + u32::from(i),
        network_id: NET_A.id,
        ip: Ipv4Addr::new(10, 1, 0, 100 + i),
        mac: [0x02, 0x57, 10, 1, 0, 100 + i],
        stats_slot: 10 + u32::from(i),
    }
}

fn service_model(members: &[Ep]) -> Result<Model> {
    let mut eps = vec![A1];
    eps.extend_from_slice(members);
    let mut m = model(&[NET_A], &eps, &[])?;
    for ep in members {
        let rec = m.endpoint_mut(&ep.name()).expect("in the model");
        rec.labels.insert("app".into(), "web".into());
    }
    // The default table size, as a cluster would run it.
    m = weft::model::service::configure(
        &m,
        &SetServiceConfig {
            range: None,
            maglev_size: None,
            dns: None,
        },
    )?;
    let req = CreateService {
        name: "web".into(),
        ports: vec!["80/tcp:8080".into()],
        selector: vec!["app=web".into()],
        ..CreateService::default()
    };
    Ok(weft::model::service::create(&m, &req)?.0)
}

/// The backend the datapath picks for each flow, as new connections.
fn picks(members: &[Ep]) -> Result<Vec<Ipv4Addr>> {
    let mut dp = Datapath::with_model(service_model(members)?)?;
    let syn = TcpFlags {
        syn: true,
        ..TcpFlags::default()
    };
    (0..FLOWS)
        .map(|i| {
            // Clients on several addresses would need several senders; one
            // client's ephemeral ports are what varies in practice.
            let frame = tcp(
                (NET_A.gateway_mac(), A1.mac),
                (A1.ip, 20_000 + i * 7),
                (VIP, 80),
                syn,
                64,
            );
            let got = dp.run(&frame)?;
            assert_eq!(got.action, TC_ACT_REDIRECT, "flow {i} was not forwarded");
            let dst: [u8; 4] = got.output[ETH_HLEN + 16..ETH_HLEN + 20].try_into()?;
            Ok(Ipv4Addr::from(dst))
        })
        .collect()
}

#[test]
fn removing_or_adding_a_backend_moves_few_live_flows() -> Result<()> {
    let ten: Vec<Ep> = (0..10).map(backend).collect();
    let before = picks(&ten)?;

    let mut spread: HashMap<Ipv4Addr, u32> = HashMap::new();
    for ip in &before {
        *spread.entry(*ip).or_default() += 1;
    }
    assert_eq!(spread.len(), 10, "every backend gets flows: {spread:?}");
    assert!(
        spread.values().all(|&n| (75..=125).contains(&n)),
        "100 flows each +-25%: {spread:?}"
    );

    let gone = ten[3].ip;
    let after = picks(&[&ten[..3], &ten[4..]].concat())?;
    let own = before.iter().filter(|ip| **ip == gone).count();
    let others = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != gone && a != b)
        .count();
    assert!(
        after.iter().all(|ip| *ip != gone),
        "no flow on the removed backend"
    );
    let share = others as f64 / (usize::from(FLOWS) - own) as f64;
    println!(
        "removing 1 of 10: {own} own flows moved, {others} others ({:.2}%)",
        share * 100.0
    );
    assert!(share <= 0.02, "{others} of the other flows moved");

    let eleven: Vec<Ep> = (0..11).map(backend).collect();
    let grown = picks(&eleven)?;
    let moved = before.iter().zip(&grown).filter(|(b, a)| a != b).count();
    let bound = (f64::from(FLOWS) * (1.0 / 11.0 + 0.02)) as usize;
    println!("adding an 11th: {moved} flows moved (bound {bound})");
    assert!(moved <= bound, "{moved} flows moved, bound {bound}");
    Ok(())
}

//! Services through BPF_PROG_TEST_RUN: a container's packet to a VIP and
//! port DNATed to the backend Maglev picks (the same pick userspace
//! computes with the datapath's flow hash), pinned in conntrack so a
//! table swap mid-flow and a draining backend keep the flow where it is;
//! a backend's reply translated back to the VIP; hairpin (a backend
//! reaching its own service sees the VIP as its peer both ways); a
//! service without backends answering TCP with a reset and UDP with an
//! ICMP port unreachable and counting `service_no_backend`; unknown ports dropped; client-IP
//! affinity. Exact bytes with checksums recomputed from scratch.

use std::net::Ipv4Addr;

use anyhow::Result;
use weft::{model::Model, render::maglev};
use weft_api::requests::{CreateService, SetServiceConfig};
use weft_common::{
    maps::{
        CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_FLAG_SERVICE,
        CT_TCP_ESTABLISHED, CtEntry, CtKey, IPPROTO_TCP, IPPROTO_UDP,
    },
    reason::{Drop, Forward},
};
use weft_tests::{
    fixture::{Datapath, Ep, TC_ACT_REDIRECT, model},
    frames::{
        ETH_HLEN, TcpFlags, internet_checksum, refresh_ipv4_checksum, refresh_l4_checksum, tcp,
        udp_ports,
    },
    nat_frames::translated,
    table::{self, Expect, Hook},
    topology::{A1, A2, B1, NET_A, NET_B, NET_C},
};

const M: u32 = 251;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn key(proto: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> CtKey {
    CtKey::new(
        proto,
        be(src.0),
        be(dst.0),
        src.1.to_be_bytes(),
        dst.1.to_be_bytes(),
    )
}

fn syn() -> TcpFlags {
    TcpFlags {
        syn: true,
        ..TcpFlags::default()
    }
}

fn ack() -> TcpFlags {
    TcpFlags {
        ack: true,
        ..TcpFlags::default()
    }
}

/// Networks A and B connected, endpoints A1, A2, B1 labelled by
/// `labels`, and service `web` (VIP 10.96.0.1, 80/tcp -> 8080, 53/udp)
/// selecting `app=web`, with a Maglev table of 251 slots.
fn services_model(labelled: &[Ep], affinity: bool) -> Result<Model> {
    let mut m = model(&[NET_A, NET_B, NET_C], &[A1, A2, B1], &[(NET_A, NET_B)])?;
    for ep in labelled {
        let name = ep.name();
        let rec = m.endpoint_mut(&name).expect("endpoint in the model");
        rec.labels.insert("app".into(), "web".into());
    }
    let config = SetServiceConfig {
        range: None,
        maglev_size: Some(M),
        dns: None,
    };
    m = weft::model::service::configure(&m, &config)?;
    let req = CreateService {
        name: "web".into(),
        ports: vec!["80/tcp:8080".into(), "53/udp".into()],
        selector: vec!["app=web".into()],
        affinity: affinity.then(|| "client-ip:60".into()),
        ..CreateService::default()
    };
    Ok(weft::model::service::create(&m, &req)?.0)
}

/// The backend the datapath must pick for `sport` -> VIP:`dport`, computed
/// in userspace from the same table and flow hash.
fn expected_backend(backends: &[Ep], sport: u16, dport: u16, proto: u8) -> Ep {
    let ips: Vec<Ipv4Addr> = backends.iter().map(|e| e.ip).collect();
    let table = maglev::build(M, &ips).unwrap();
    let slot = maglev::flow_slot(A1.ip, sport, dport, proto, M);
    let ip = table.backend(slot as usize);
    *backends.iter().find(|e| e.ip == ip).unwrap()
}

fn gateway_mac_of(ep: &Ep) -> [u8; 6] {
    if ep.network_id == NET_B.id {
        NET_B.gateway_mac()
    } else {
        NET_A.gateway_mac()
    }
}

fn to_gateway() -> ([u8; 6], [u8; 6]) {
    (NET_A.gateway_mac(), A1.mac)
}

fn into(ep: &Ep) -> Option<([u8; 6], [u8; 6])> {
    Some((ep.mac, gateway_mac_of(ep)))
}

fn dnat(output: Vec<u8>, to: &Ep) -> Expect {
    Expect::Forward {
        action: TC_ACT_REDIRECT,
        kind: Forward::ServiceDnat,
        output,
        delivered_to: Some(to.ifindex),
    }
}

fn check(dp: &mut Datapath, what: &str, frame: &[u8], expect: Expect) -> Vec<u8> {
    table::check(dp, what, Hook::Container, frame, &expect).unwrap()
}

/// A SYN from A1:`sport` to VIP:80 and the backend it must reach.
fn syn_to_vip(dp: &mut Datapath, backends: &[Ep], sport: u16, what: &str) -> Ep {
    let b = expected_backend(backends, sport, 80, IPPROTO_TCP);
    let frame = tcp(to_gateway(), (A1.ip, sport), (VIP, 80), syn(), 64);
    let want = translated(&frame, false, b.ip, 8080, into(&b));
    check(dp, what, &frame, dnat(want, &b));
    b
}

#[test]
fn vip_dnat_is_pinned_in_conntrack_across_a_table_swap() -> Result<()> {
    let mut dp = Datapath::with_model(services_model(&[A2, B1], false)?)?;
    let backends = [A2, B1];
    let chosen = syn_to_vip(&mut dp, &backends, 40_000, "SYN to the VIP");

    // Both entries, read back: the client's (VIP -> backend) and the
    // backend's (its replies -> the VIP).
    let client = dp
        .ct_get(&key(IPPROTO_TCP, (A1.ip, 40_000), (VIP, 80)))?
        .expect("client-side entry");
    assert_eq!(
        (client.xlate_ip_be, u16::from_be_bytes(client.xlate_port_be)),
        (be(chosen.ip), 8080)
    );
    assert_eq!(client.direction, CT_DIR_REPLY);
    assert_eq!(client.flags, CT_FLAG_DNAT | CT_FLAG_SERVICE);
    let back = dp
        .ct_get(&key(IPPROTO_TCP, (chosen.ip, 8080), (A1.ip, 40_000)))?
        .expect("backend-side entry");
    assert_eq!(
        (back.xlate_ip_be, u16::from_be_bytes(back.xlate_port_be)),
        (be(VIP), 80)
    );
    assert_eq!(
        (back.direction, back.ifindex),
        (CT_DIR_ORIGINAL, A1.ifindex)
    );

    // The chosen backend drains: a new table (the other backend alone) is
    // swapped in. The established flow stays; new flows avoid it.
    let before = dp.maglev_tables()?;
    dp.change(|m| m.endpoint_mut(&chosen.name()).unwrap().terminating = true)?;
    let after = dp.maglev_tables()?;
    assert!(
        before.iter().all(|k| !after.contains(k)),
        "a changed member set is a new table, written beside the old one"
    );
    let frame = tcp(to_gateway(), (A1.ip, 40_000), (VIP, 80), ack(), 64);
    let want = translated(&frame, false, chosen.ip, 8080, into(&chosen));
    check(
        &mut dp,
        "established flow after the swap",
        &frame,
        dnat(want, &chosen),
    );
    let other = if chosen.ip == A2.ip { B1 } else { A2 };
    for sport in 40_001..40_011 {
        let frame = tcp(to_gateway(), (A1.ip, sport), (VIP, 80), syn(), 64);
        let want = translated(&frame, false, other.ip, 8080, into(&other));
        check(
            &mut dp,
            "new flow avoids the draining backend",
            &frame,
            dnat(want, &other),
        );
    }
    Ok(())
}

#[test]
fn maglev_picks_in_bpf_match_userspace_and_spread() -> Result<()> {
    let mut dp = Datapath::with_model(services_model(&[A2, B1], false)?)?;
    let mut hits = [0u32; 2];
    for sport in 41_000..41_100 {
        let b = syn_to_vip(&mut dp, &[A2, B1], sport, "new flow");
        hits[usize::from(b.ip == B1.ip)] += 1;
    }
    assert!(hits.iter().all(|&h| h >= 30), "flows per backend: {hits:?}");
    // UDP to the other port keeps its port (53 -> 53).
    let frame = udp_ports(to_gateway(), (A1.ip, 5300), (VIP, 53), 64, b"q");
    let b = expected_backend(&[A2, B1], 5300, 53, IPPROTO_UDP);
    let want = translated(&frame, false, b.ip, 53, into(&b));
    check(&mut dp, "UDP to the VIP", &frame, dnat(want, &b));
    Ok(())
}

/// `frame` with its source rewritten to `ip`:`port` (no TTL change: a
/// bridged reply), checksums recomputed.
fn source_rewritten(frame: &[u8], ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&ip.octets());
    out[ETH_HLEN + 20..ETH_HLEN + 22].copy_from_slice(&port.to_be_bytes());
    refresh_ipv4_checksum(&mut out);
    refresh_l4_checksum(&mut out);
    out
}

#[test]
fn backend_replies_leave_with_the_vip_as_source() -> Result<()> {
    // A1 is the backend; A2 the client, whose connection is written as
    // the datapath would have made it (test runs only send from A1).
    let mut dp = Datapath::with_model(services_model(&[A1], false)?)?;
    let entry = CtEntry {
        xlate_ip_be: be(VIP),
        xlate_port_be: 80u16.to_be_bytes(),
        ifindex: A2.ifindex,
        stats_slot: A2.stats_slot,
        direction: CT_DIR_ORIGINAL,
        flags: CT_FLAG_DNAT | CT_FLAG_SERVICE,
        tcp_state: CT_TCP_ESTABLISHED,
        last_seen_ns: weft::datapath::conntrack::now_ns(),
        ..CtEntry::default()
    };
    dp.ct_put(key(IPPROTO_TCP, (A1.ip, 8080), (A2.ip, 50_000)), entry)?;
    // Same network: the reply is bridged to A2's MAC.
    let reply = tcp((A2.mac, A1.mac), (A1.ip, 8080), (A2.ip, 50_000), ack(), 64);
    let want = source_rewritten(&reply, VIP, 80);
    table::check(
        &mut dp,
        "backend reply, bridged",
        Hook::Container,
        &reply,
        &Expect::Forward {
            action: TC_ACT_REDIRECT,
            kind: Forward::Bridged,
            output: want,
            delivered_to: Some(A2.ifindex),
        },
    )?;
    // The backend's other traffic is untouched.
    let other = tcp((A2.mac, A1.mac), (A1.ip, 9999), (A2.ip, 50_000), ack(), 64);
    table::check(
        &mut dp,
        "backend traffic outside the service",
        Hook::Container,
        &other,
        &Expect::Forward {
            action: TC_ACT_REDIRECT,
            kind: Forward::Bridged,
            output: other.clone(),
            delivered_to: Some(A2.ifindex),
        },
    )?;
    Ok(())
}

#[test]
fn hairpin_sees_the_vip_both_ways() -> Result<()> {
    let mut dp = Datapath::with_model(services_model(&[A1], false)?)?;
    let syn_out = tcp(to_gateway(), (A1.ip, 42_000), (VIP, 80), syn(), 64);
    // In: from VIP:42000 to A1:8080.
    let mut want = translated(&syn_out, false, A1.ip, 8080, into(&A1));
    want[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&VIP.octets());
    refresh_ipv4_checksum(&mut want);
    refresh_l4_checksum(&mut want);
    check(&mut dp, "hairpin SYN", &syn_out, dnat(want, &A1));
    let e = dp
        .ct_get(&key(IPPROTO_TCP, (A1.ip, 42_000), (VIP, 80)))?
        .expect("hairpin entry");
    assert_eq!(e.flags, CT_FLAG_DNAT | CT_FLAG_SERVICE | CT_FLAG_HAIRPIN);

    // A1 answers its peer, the VIP: back to A1 from VIP:80.
    let reply = tcp(to_gateway(), (A1.ip, 8080), (VIP, 42_000), ack(), 64);
    let mut want = translated(&reply, false, A1.ip, 42_000, into(&A1));
    want[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&VIP.octets());
    want[ETH_HLEN + 20..ETH_HLEN + 22].copy_from_slice(&80u16.to_be_bytes());
    refresh_ipv4_checksum(&mut want);
    refresh_l4_checksum(&mut want);
    check(&mut dp, "hairpin reply", &reply, dnat(want, &A1));
    Ok(())
}

/// The ICMP port unreachable from the VIP to A1 quoting `frame`.
fn port_unreachable(frame: &[u8]) -> Vec<u8> {
    let quote = &frame[ETH_HLEN..ETH_HLEN + 20 + 8];
    let mut f = Vec::new();
    f.extend_from_slice(&A1.mac);
    f.extend_from_slice(&NET_A.gateway_mac());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + quote.len()) as u16;
    f.extend_from_slice(&[0x45, 0xc0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&VIP.octets());
    f.extend_from_slice(&A1.ip.octets());
    refresh_ipv4_checksum(&mut f);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

/// The reset a closed port answers TCP `frame` (from A1 to the VIP,
/// no payload) with (RFC 9293 3.10.7.1): without ACK, `SEQ=0
/// ACK=SEG.SEQ+SEG.LEN` with RST+ACK; with ACK, `SEQ=SEG.ACK` and RST.
/// IPv4 as Linux sends resets: TOS 0, id 0, DF, TTL 64.
fn reset(frame: &[u8]) -> Vec<u8> {
    let seg = &frame[ETH_HLEN + 20..];
    let flags = seg[13];
    let seq = u32::from_be_bytes(seg[4..8].try_into().unwrap());
    let seg_len = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
    let mut f = Vec::new();
    f.extend_from_slice(&A1.mac);
    f.extend_from_slice(&NET_A.gateway_mac());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&VIP.octets());
    f.extend_from_slice(&A1.ip.octets());
    refresh_ipv4_checksum(&mut f);
    f.extend_from_slice(&seg[2..4]);
    f.extend_from_slice(&seg[0..2]);
    if flags & 0x10 != 0 {
        f.extend_from_slice(&seg[8..12]);
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&[0x50, 0x04]);
    } else {
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&(seq + seg_len).to_be_bytes());
        f.extend_from_slice(&[0x50, 0x14]);
    }
    f.extend_from_slice(&[0; 6]);
    refresh_l4_checksum(&mut f);
    f
}

#[test]
fn no_backend_answers_tcp_with_a_reset_udp_with_port_unreachable() -> Result<()> {
    let mut dp = Datapath::with_model(services_model(&[], false)?)?;
    let fin_ack = TcpFlags {
        fin: true,
        ack: true,
        ..TcpFlags::default()
    };
    for (what, frame, want) in [
        {
            let f = tcp(to_gateway(), (A1.ip, 43_000), (VIP, 80), syn(), 64);
            ("SYN: RST+ACK acking it", f.clone(), reset(&f))
        },
        {
            let f = tcp(to_gateway(), (A1.ip, 43_003), (VIP, 80), ack(), 64);
            ("ACK: RST at its ack", f.clone(), reset(&f))
        },
        {
            let f = tcp(to_gateway(), (A1.ip, 43_004), (VIP, 80), fin_ack, 64);
            ("FIN+ACK: RST at its ack", f.clone(), reset(&f))
        },
        {
            let f = udp_ports(to_gateway(), (A1.ip, 43_001), (VIP, 53), 64, b"query");
            ("UDP: port unreachable", f.clone(), port_unreachable(&f))
        },
    ] {
        let drops = dp.drops(Drop::ServiceNoBackend)?.packets;
        let rejected = dp.forwards(Forward::ServiceRejected)?.packets;
        let got = dp.run(&frame)?;
        assert_eq!(got.action, TC_ACT_REDIRECT, "{what}: goes back to A1");
        assert_eq!(got.output, want, "{what}: bytes");
        assert_eq!(
            dp.drops(Drop::ServiceNoBackend)?.packets,
            drops + 1,
            "{what}"
        );
        assert_eq!(
            dp.forwards(Forward::ServiceRejected)?.packets,
            rejected + 1,
            "{what}"
        );
    }
    // Cross-checks of the expected reset against the spec's numbers: the
    // SYN's seq is 1000, so the reset acks 1001; the ACK's ack is 2000.
    let syn_rst = reset(&tcp(to_gateway(), (A1.ip, 1), (VIP, 80), syn(), 64));
    assert_eq!(
        &syn_rst[ETH_HLEN + 28..ETH_HLEN + 34],
        &[0, 0, 0x03, 0xe9, 0x50, 0x14]
    );
    let ack_rst = reset(&tcp(to_gateway(), (A1.ip, 1), (VIP, 80), ack(), 64));
    assert_eq!(
        &ack_rst[ETH_HLEN + 24..ETH_HLEN + 28],
        &2000u32.to_be_bytes()
    );
    // A reset is never answered; it is dropped and counted.
    let rst = TcpFlags {
        rst: true,
        ..TcpFlags::default()
    };
    let frame = tcp(to_gateway(), (A1.ip, 43_005), (VIP, 80), rst, 64);
    table::check(
        &mut dp,
        "RST to a service without backends",
        Hook::Container,
        &frame,
        &Expect::Drop(Drop::ServiceNoBackend),
    )?;
    // A port the service does not have is a plain drop.
    let frame = tcp(to_gateway(), (A1.ip, 43_002), (VIP, 81), syn(), 64);
    table::check(
        &mut dp,
        "unknown service port",
        Hook::Container,
        &frame,
        &Expect::Drop(Drop::ServiceUnknownPort),
    )?;
    Ok(())
}

#[test]
fn affinity_keeps_a_client_on_one_backend_while_it_stays_a_member() -> Result<()> {
    let mut dp = Datapath::with_model(services_model(&[A2, B1], true)?)?;
    let mut seen = Vec::new();
    for sport in 44_000..44_020 {
        let frame = tcp(to_gateway(), (A1.ip, sport), (VIP, 80), syn(), 64);
        let got = dp.run(&frame)?;
        assert_eq!(got.action, TC_ACT_REDIRECT);
        seen.push(Ipv4Addr::from(<[u8; 4]>::try_from(
            &got.output[ETH_HLEN + 16..ETH_HLEN + 20],
        )?));
    }
    seen.dedup();
    assert_eq!(
        seen.len(),
        1,
        "one backend for every connection of the client: {seen:?}"
    );
    // That backend leaves the service: the client moves, and stays.
    let first = seen[0];
    let name = if first == A2.ip { A2.name() } else { B1.name() };
    dp.change(|m| {
        m.endpoint_mut(&name).unwrap().labels.clear();
    })?;
    let mut after = Vec::new();
    for sport in 44_100..44_110 {
        let frame = tcp(to_gateway(), (A1.ip, sport), (VIP, 80), syn(), 64);
        let got = dp.run(&frame)?;
        after.push(Ipv4Addr::from(<[u8; 4]>::try_from(
            &got.output[ETH_HLEN + 16..ETH_HLEN + 20],
        )?));
    }
    assert!(
        after.iter().all(|ip| *ip != first),
        "never on a backend that left: {after:?}"
    );
    Ok(())
}

/// One client port to two services with the same backend and port makes
/// one backend-side tuple: the second connection is refused
/// (`service_tuple_taken`) rather than taking over the first, live one's
/// entry (which would hand its replies the other VIP); once the first has
/// expired, its tuple is free again.
#[test]
fn a_live_backend_side_tuple_is_never_overwritten() -> Result<()> {
    const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 2);
    let mut m = services_model(&[A2], false)?;
    let req = CreateService {
        name: "web2".into(),
        ports: vec!["80/tcp:8080".into()],
        selector: vec!["app=web".into()],
        ..CreateService::default()
    };
    m = weft::model::service::create(&m, &req)?.0;
    let mut dp = Datapath::with_model(m)?;
    let sport = 43_100;
    syn_to_vip(&mut dp, &[A2], sport, "first connection, to web");
    let back_key = key(IPPROTO_TCP, (A2.ip, 8080), (A1.ip, sport));
    let held = dp.ct_get(&back_key)?.expect("the backend-side entry");
    assert_eq!(held.xlate_ip_be, be(VIP), "replies leave as web's VIP");

    let second = tcp(to_gateway(), (A1.ip, sport), (VIP2, 80), syn(), 64);
    check(
        &mut dp,
        "same client port to web2, same backend and port",
        &second,
        Expect::Drop(Drop::ServiceTupleTaken),
    );
    let after = dp.ct_get(&back_key)?.expect("the backend-side entry");
    assert_eq!(
        after.xlate_ip_be,
        be(VIP),
        "the live connection keeps its entry: {after:?}"
    );

    // Expired, both halves: the tuple is the new connection's.
    let client_key = key(IPPROTO_TCP, (A1.ip, sport), (VIP, 80));
    for k in [back_key, client_key] {
        let mut e = dp.ct_get(&k)?.expect("entry");
        e.last_seen_ns = 1;
        dp.ct_put(k, e)?;
    }
    let want = translated(&second, false, A2.ip, 8080, into(&A2));
    check(
        &mut dp,
        "web2 once the first expired",
        &second,
        dnat(want, &A2),
    );
    let now = dp.ct_get(&back_key)?.expect("the backend-side entry");
    assert_eq!(now.xlate_ip_be, be(VIP2), "replies now leave as web2's VIP");
    Ok(())
}

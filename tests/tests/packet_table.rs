//! Packet tables through BPF_PROG_TEST_RUN: the real verifier, the real JIT,
//! exact bytes in and out, and exactly one counter moving per packet.

use std::net::Ipv4Addr;

use anyhow::Result;
use weft_common::reason::{Drop, Forward};
use weft_tests::{
    fixture::{Datapath, Net, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_STOLEN, model},
    frames::{
        self, BROADCAST, ETH_HLEN, arp, arp_request, ipv4_checksum_valid, mac_str,
        refresh_ipv4_checksum, tcp_syn, udp, with_ipv4_options,
    },
    table::{self, Expect, Hook},
    topology::{A1, A2, B1, C1, NET_A, NET_B, NET_C, topology},
};

struct Row {
    what: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

/// Runs one row through `weft_from_container` (see `weft_tests::table`).
fn check(dp: &mut Datapath, row: &Row) -> Result<()> {
    table::check(dp, row.what, Hook::Container, &row.frame, &row.expect).map(|_| ())
}

/// `frame` with its Ethernet addresses replaced, TTL decremented and the
/// IPv4 checksum recomputed from scratch: what routing must produce.
fn routed(frame: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst_mac);
    out[6..12].copy_from_slice(&src_mac);
    out[ETH_HLEN + 8] -= 1;
    refresh_ipv4_checksum(&mut out);
    out
}

fn table() -> Vec<Row> {
    let to_gw = (NET_A.gateway_mac(), A1.mac);
    let payload = b"weft packet table";
    let same_net = udp((A2.mac, A1.mac), A1.ip, A2.ip, 64, payload);
    let cross_net = udp(to_gw, A1.ip, B1.ip, 64, payload);
    let with_options = with_ipv4_options(&cross_net, &[0x01, 0x01, 0x01, 0x00]);
    let mut bad_ihl = same_net.clone();
    bad_ihl[ETH_HLEN] = 0x44;
    let mut ihl_past_end = tcp_syn((A2.mac, A1.mac), A1.ip, A2.ip, 64);
    ihl_past_end[ETH_HLEN] = 0x4f;
    let mut version6_in_ipv4 = same_net.clone();
    version6_in_ipv4[ETH_HLEN] = 0x65;
    let mut total_len_short = same_net.clone();
    total_len_short[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&10u16.to_be_bytes());
    let mut ipv6 = same_net.clone();
    ipv6[12..14].copy_from_slice(&frames::ETH_P_IPV6.to_be_bytes());
    let mut lldp = same_net.clone();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    let mut arp_for_ipv6 = arp_request(A1.mac, A1.ip, A2.ip);
    arp_for_ipv6[16..18].copy_from_slice(&frames::ETH_P_IPV6.to_be_bytes());
    let mut arp_bad_op = arp_request(A1.mac, A1.ip, A2.ip);
    arp_bad_op[20..22].copy_from_slice(&9u16.to_be_bytes());
    let arp_reply_from_container = arp(
        NET_A.gateway_mac(),
        A1.mac,
        2,
        (A1.mac, A1.ip),
        (NET_A.gateway_mac(), NET_A.gateway),
    );

    vec![
        Row {
            what: "ARP request for the gateway is answered with the gateway MAC",
            frame: arp_request(A1.mac, A1.ip, NET_A.gateway),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::ArpReplied,
                output: arp(
                    A1.mac,
                    NET_A.gateway_mac(),
                    2,
                    (NET_A.gateway_mac(), NET_A.gateway),
                    (A1.mac, A1.ip),
                ),
                delivered_to: None,
            },
        },
        Row {
            what: "ARP request for a peer is answered with the peer's MAC",
            frame: arp_request(A1.mac, A1.ip, A2.ip),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::ArpReplied,
                output: arp(A1.mac, A2.mac, 2, (A2.mac, A2.ip), (A1.mac, A1.ip)),
                delivered_to: None,
            },
        },
        Row {
            what: "ARP request for an unknown address is dropped",
            frame: arp_request(A1.mac, A1.ip, Ipv4Addr::new(10, 1, 0, 77)),
            expect: Expect::Drop(Drop::ArpUnknownTarget),
        },
        Row {
            what: "ARP request for another network's endpoint is not answered",
            frame: arp_request(A1.mac, A1.ip, B1.ip),
            expect: Expect::Drop(Drop::ArpUnknownTarget),
        },
        Row {
            what: "gratuitous ARP is consumed",
            frame: arp_request(A1.mac, A1.ip, A1.ip),
            expect: Expect::Drop(Drop::ArpAnnouncement),
        },
        Row {
            what: "ARP reply (to the node's own request) goes to the stack unchanged",
            frame: arp_reply_from_container.clone(),
            expect: Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: arp_reply_from_container,
                delivered_to: None,
            },
        },
        Row {
            what: "ARP for a non-IPv4 protocol is refused",
            frame: arp_for_ipv6,
            expect: Expect::Drop(Drop::UnsupportedArp),
        },
        Row {
            what: "ARP with an unknown opcode is refused",
            frame: arp_bad_op,
            expect: Expect::Drop(Drop::UnsupportedArp),
        },
        Row {
            what: "truncated ARP body",
            frame: arp_request(A1.mac, A1.ip, A2.ip)[..30].to_vec(),
            expect: Expect::Drop(Drop::TruncatedArp),
        },
        Row {
            what: "same-network unicast is redirected unchanged",
            frame: same_net.clone(),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Bridged,
                output: same_net.clone(),
                delivered_to: Some(A2.ifindex),
            },
        },
        Row {
            what: "routed unicast: gateway MAC as source, peer MAC, TTL-1, checksum",
            frame: cross_net.clone(),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Routed,
                output: routed(&cross_net, B1.mac, NET_B.gateway_mac()),
                delivered_to: Some(B1.ifindex),
            },
        },
        Row {
            what: "routed IPv4 with options honours IHL and keeps the options",
            frame: with_options.clone(),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Routed,
                output: routed(&with_options, B1.mac, NET_B.gateway_mac()),
                delivered_to: Some(B1.ifindex),
            },
        },
        Row {
            what: "routed packet with TTL 1 expires",
            frame: udp(to_gw, A1.ip, B1.ip, 1, payload),
            expect: Expect::Drop(Drop::TtlExceeded),
        },
        Row {
            what: "routed packet with TTL 0 expires",
            frame: udp(to_gw, A1.ip, B1.ip, 0, payload),
            expect: Expect::Drop(Drop::TtlExceeded),
        },
        Row {
            what: "isolated network: endpoint of a network not connected",
            frame: udp(to_gw, A1.ip, C1.ip, 64, payload),
            expect: Expect::Drop(Drop::NetworkIsolated),
        },
        Row {
            what: "isolated network: unused address of a network not connected",
            frame: udp(to_gw, A1.ip, Ipv4Addr::new(10, 3, 0, 99), 64, payload),
            expect: Expect::Drop(Drop::NetworkIsolated),
        },
        Row {
            what: "connected network, address nobody has",
            frame: udp(to_gw, A1.ip, Ipv4Addr::new(10, 2, 0, 99), 64, payload),
            expect: Expect::Drop(Drop::NoSuchEndpoint),
        },
        Row {
            what: "own network via the gateway, address nobody has",
            frame: udp(to_gw, A1.ip, Ipv4Addr::new(10, 1, 0, 99), 64, payload),
            expect: Expect::Drop(Drop::NoSuchEndpoint),
        },
        Row {
            what: "to the gateway address (the node) goes to the stack",
            frame: udp(to_gw, A1.ip, NET_A.gateway, 64, payload),
            expect: Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: udp(to_gw, A1.ip, NET_A.gateway, 64, payload),
                delivered_to: None,
            },
        },
        Row {
            what: "outside weft's networks goes to the stack",
            frame: udp(to_gw, A1.ip, Ipv4Addr::new(192, 0, 2, 1), 64, payload),
            expect: Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: udp(to_gw, A1.ip, Ipv4Addr::new(192, 0, 2, 1), 64, payload),
                delivered_to: None,
            },
        },
        Row {
            what: "unicast to a MAC not in the network's table",
            frame: udp(
                ([0x02, 0, 0, 0, 0, 0x99], A1.mac),
                A1.ip,
                A2.ip,
                64,
                payload,
            ),
            expect: Expect::Drop(Drop::UnknownDestinationMac),
        },
        Row {
            what: "unicast to another network's endpoint MAC is not bridged",
            frame: udp((B1.mac, A1.mac), A1.ip, B1.ip, 64, payload),
            expect: Expect::Drop(Drop::UnknownDestinationMac),
        },
        Row {
            what: "broadcast is dropped on a network that does not flood",
            frame: udp(
                (BROADCAST, A1.mac),
                A1.ip,
                Ipv4Addr::new(10, 1, 0, 255),
                64,
                payload,
            ),
            expect: Expect::Drop(Drop::BroadcastNotFlooded),
        },
        Row {
            what: "IPv4 multicast is dropped on a network that does not flood",
            frame: udp(
                ([0x01, 0x00, 0x5e, 0, 0, 0xfb], A1.mac),
                A1.ip,
                Ipv4Addr::new(224, 0, 0, 251),
                255,
                payload,
            ),
            expect: Expect::Drop(Drop::BroadcastNotFlooded),
        },
        Row {
            what: "spoofed source MAC",
            frame: udp(
                (A2.mac, [0x02, 0, 0, 0, 0, 0x66]),
                A1.ip,
                A2.ip,
                64,
                payload,
            ),
            expect: Expect::Drop(Drop::SpoofedSource),
        },
        Row {
            what: "spoofed source IPv4 address",
            frame: udp(
                (A2.mac, A1.mac),
                Ipv4Addr::new(10, 1, 0, 66),
                A2.ip,
                64,
                payload,
            ),
            expect: Expect::Drop(Drop::SpoofedSource),
        },
        Row {
            what: "IHL below 5 words",
            frame: bad_ihl,
            expect: Expect::Drop(Drop::BadIpv4Header),
        },
        Row {
            what: "IHL pointing past the end of the packet",
            frame: ihl_past_end,
            expect: Expect::Drop(Drop::BadIpv4Header),
        },
        Row {
            what: "version 6 inside an IPv4 ethertype",
            frame: version6_in_ipv4,
            expect: Expect::Drop(Drop::BadIpv4Header),
        },
        Row {
            what: "IPv4 total length shorter than its header",
            frame: total_len_short,
            expect: Expect::Drop(Drop::BadIpv4Length),
        },
        Row {
            what: "IPv6 is not supported on weft networks",
            frame: ipv6,
            expect: Expect::Drop(Drop::Ipv6Unsupported),
        },
        Row {
            what: "unknown ethertype (LLDP)",
            frame: lldp,
            expect: Expect::Drop(Drop::UnsupportedEthertype),
        },
    ]
}

#[test]
fn packet_table() -> Result<()> {
    let mut dp = topology()?;
    for row in table() {
        check(&mut dp, &row)?;
    }
    Ok(())
}

/// Every prefix of a TCP SYN, from 0 bytes to the full 54. The kernel's
/// BPF_PROG_TEST_RUN refuses (EINVAL) a frame shorter than Ethernet, and an
/// IPv4-ethertype frame shorter than Ethernet + IPv4 header, so the program
/// never sees those here (real veths can deliver them: the end-to-end raw
/// socket test covers `truncated_ipv4`). From 34 bytes on, each length gets
/// the named drop its missing part implies and only the whole frame is
/// forwarded. Nothing crashes; the verifier accepted the program.
#[test]
fn every_truncated_length() -> Result<()> {
    let mut dp = topology()?;
    let full = tcp_syn((A2.mac, A1.mac), A1.ip, A2.ip, 64);
    assert_eq!(full.len(), 54);
    for len in 0..=full.len() {
        let frame = full[..len].to_vec();
        if len < ETH_HLEN + 20 {
            let before = dp.all_counters()?;
            assert!(
                dp.run(&frame).is_err(),
                "{len} bytes: the kernel should refuse to run an IPv4 frame this short"
            );
            assert_eq!(
                before,
                dp.all_counters()?,
                "{len} bytes: nothing may be counted"
            );
            continue;
        }
        let expect = if len < full.len() {
            Expect::Drop(Drop::BadIpv4Length)
        } else {
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Bridged,
                output: frame.clone(),
                delivered_to: Some(A2.ifindex),
            }
        };
        let what = format!("TCP SYN truncated to {len} bytes");
        check(
            &mut dp,
            &Row {
                what: Box::leak(what.into_boxed_str()),
                frame,
                expect,
            },
        )?;
    }
    Ok(())
}

/// Every prefix of an ARP request from an Ethernet header on reaches the
/// program: each is a counted `truncated_arp` drop until the body is whole.
#[test]
fn every_truncated_arp_length() -> Result<()> {
    let mut dp = topology()?;
    let full = arp_request(A1.mac, A1.ip, NET_A.gateway);
    assert_eq!(full.len(), 42);
    for len in ETH_HLEN..full.len() {
        let what = format!("ARP request truncated to {len} bytes");
        check(
            &mut dp,
            &Row {
                what: Box::leak(what.into_boxed_str()),
                frame: full[..len].to_vec(),
                expect: Expect::Drop(Drop::TruncatedArp),
            },
        )?;
    }
    Ok(())
}

/// The incremental checksum update agrees with a from-scratch checksum for
/// every TTL and many header checksums, including the end-around carry.
#[test]
fn routed_checksum_always_verifies() -> Result<()> {
    let mut dp = topology()?;
    let mut carries = 0;
    for ttl in 2..=255u8 {
        for id in [
            0u16,
            1,
            0x00ff,
            0x7fff,
            0xfeff,
            0xff00,
            0xffff,
            u16::from(ttl) * 257,
        ] {
            let mut frame = udp(
                (NET_A.gateway_mac(), A1.mac),
                A1.ip,
                B1.ip,
                ttl,
                b"checksum",
            );
            frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&id.to_be_bytes());
            refresh_ipv4_checksum(&mut frame);
            let check_in = u16::from_be_bytes([frame[ETH_HLEN + 10], frame[ETH_HLEN + 11]]);
            if check_in >= 0xff00 {
                carries += 1;
            }
            let got = dp.run(&frame)?;
            assert_eq!(got.action, TC_ACT_REDIRECT, "ttl {ttl} id {id:#x}");
            assert!(
                ipv4_checksum_valid(&got.output),
                "ttl {ttl} id {id:#x}: checksum {:02x}{:02x} does not verify",
                got.output[ETH_HLEN + 10],
                got.output[ETH_HLEN + 11]
            );
            assert_eq!(
                got.output,
                routed(&frame, B1.mac, NET_B.gateway_mac()),
                "ttl {ttl} id {id:#x}"
            );
        }
    }
    assert!(carries > 0, "the sweep must exercise the end-around carry");
    Ok(())
}

/// A network with flooding on clones broadcast to its other endpoints and
/// consumes the original; the sender itself is skipped.
#[test]
fn flooding_network_consumes_broadcast() -> Result<()> {
    let flooding = Net {
        flood: true,
        ..NET_A
    };
    let mut dp = Datapath::with_model(model(&[flooding], &[A1], &[])?)?;
    let frame = udp(
        (BROADCAST, A1.mac),
        A1.ip,
        Ipv4Addr::new(10, 1, 0, 255),
        64,
        b"hello all",
    );
    check(
        &mut dp,
        &Row {
            what: "broadcast on a flooding network",
            frame: frame.clone(),
            expect: Expect::Forward {
                action: TC_ACT_STOLEN,
                kind: Forward::Flooded,
                output: frame,
                delivered_to: None,
            },
        },
    )?;
    assert_eq!(
        dp.endpoint_stats(A1.ifindex)?.rx_packets,
        0,
        "the sender must not receive its own broadcast"
    );
    Ok(())
}

/// A packet from an interface weft does not know is dropped and counted.
#[test]
fn unknown_ingress_interface_is_dropped() -> Result<()> {
    let mut dp = Datapath::with_model(model(&[NET_A], &[A2], &[])?)?;
    let frame = udp((A2.mac, A1.mac), A1.ip, A2.ip, 64, b"who am i");
    check(
        &mut dp,
        &Row {
            what: "sender is not an endpoint",
            frame,
            expect: Expect::Drop(Drop::UnknownEndpoint),
        },
    )
}

/// The sender's tx counter counts every packet it sent, dropped or not.
#[test]
fn endpoint_tx_counts_everything_sent() -> Result<()> {
    let mut dp = topology()?;
    let frames = [
        udp((A2.mac, A1.mac), A1.ip, A2.ip, 64, b"one"),
        udp((NET_A.gateway_mac(), A1.mac), A1.ip, C1.ip, 64, b"two"),
        arp_request(A1.mac, A1.ip, NET_A.gateway),
    ];
    let mut bytes = 0;
    for frame in &frames {
        dp.run(frame)?;
        bytes += frame.len() as u64;
    }
    let stats = dp.endpoint_stats(A1.ifindex)?;
    assert_eq!(
        (stats.tx_packets, stats.tx_bytes),
        (3, bytes),
        "tx of {}",
        mac_str(&A1.mac)
    );
    Ok(())
}

/// When another endpoint owns the sender's slot in the direct-mapped
/// by-ifindex cache, the sender is still found (through the hash) and its
/// packets are forwarded, not mistaken for the slot's owner.
#[test]
fn ifindex_cache_collision_falls_back_to_the_hash() -> Result<()> {
    let mut dp = topology()?;
    let colliding_ifindex = A1.ifindex + weft_common::maps::EP_CACHE_SLOTS;
    // A slot owner the hash lacks: no model renders one, so written directly.
    dp.put_ifcache(
        weft_common::maps::ifcache_slot(A1.ifindex),
        weft_common::maps::EndpointInfo {
            ifindex: colliding_ifindex,
            network_id: NET_C.id,
            ip_be: u32::from_ne_bytes(C1.ip.octets()),
            stats_slot: C1.stats_slot,
            mac: C1.mac,
            gateway_mac: NET_C.gateway_mac(),
        },
    )?;
    let frame = udp((A2.mac, A1.mac), A1.ip, A2.ip, 64, b"collide");
    check(
        &mut dp,
        &Row {
            what: "sender whose cache slot belongs to another ifindex",
            frame: frame.clone(),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Bridged,
                output: frame,
                delivered_to: Some(A2.ifindex),
            },
        },
    )
}

/// When another endpoint owns the destination's slot in the by-IP cache,
/// routing still finds the destination through the hash.
#[test]
fn ip_cache_collision_falls_back_to_the_hash() -> Result<()> {
    let mut dp = topology()?;
    let b1_ip_be = u32::from_ne_bytes(B1.ip.octets());
    // A slot owner the hash lacks: no model renders one, so written directly.
    dp.put_ipcache(
        weft_common::maps::ipcache_slot(b1_ip_be),
        weft_common::maps::EndpointInfo {
            ifindex: 999,
            network_id: NET_C.id,
            ip_be: u32::from_ne_bytes(C1.ip.octets()),
            stats_slot: C1.stats_slot,
            mac: C1.mac,
            gateway_mac: NET_C.gateway_mac(),
        },
    )?;
    let frame = udp((NET_A.gateway_mac(), A1.mac), A1.ip, B1.ip, 64, b"collide");
    check(
        &mut dp,
        &Row {
            what: "destination whose cache slot belongs to another address",
            frame: frame.clone(),
            expect: Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Routed,
                output: routed(&frame, B1.mac, NET_B.gateway_mac()),
                delivered_to: Some(B1.ifindex),
            },
        },
    )
}

/// The by-IP cache's fold keeps the same host address of different
/// networks apart.
#[test]
fn ip_cache_slots_differ_across_networks() {
    use weft_common::maps::ipcache_slot;
    let slot = |ip: std::net::Ipv4Addr| ipcache_slot(u32::from_ne_bytes(ip.octets()));
    assert_ne!(slot(A1.ip), slot(B1.ip));
    assert_ne!(slot(A2.ip), slot(A1.ip));
}

//! Published ports (DNAT) through BPF_PROG_TEST_RUN: in from the uplink
//! and the container's reply out, hairpin (a container to the node's
//! address and a published port), ICMP errors about masqueraded and
//! published connections with their quoted headers translated, malformed
//! quotes dropped by name, and unpublished ports left to the stack. Exact
//! bytes with checksums recomputed from scratch (`weft_tests::nat_frames`),
//! one counter per packet, conntrack entries read back.
//!
//! As in `nat_table`, each test runs inside its own namespace with an
//! uplink ([`NatNode`]) so `bpf_fib_lookup` is deterministic.

use std::net::Ipv4Addr;

use anyhow::Result;
use weft::model::Proto;
use weft_common::{
    maps::{
        CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_TCP_SYN_SENT, CtKey,
        IPPROTO_TCP,
    },
    reason::{Drop, Forward},
};
use weft_tests::{
    fixture::{Datapath, TC_ACT_OK, TC_ACT_REDIRECT},
    frames::{
        ETH_HLEN, TcpFlags, icmp_error, ipv4_checksum_valid, l4_checksum_valid, tcp, udp_ports,
    },
    nat_frames::{
        hairpinned, icmp_error_translated, icmp_error_translated_out, l4_start, quoted_start,
        translated,
    },
    table::{self, Expect, Hook},
    topology::{A1, NET_A, NODE_IP, NatNode, OUTSIDE, ROUTER_MAC, UPLINK_MAC, nat_topology},
};

const PORT_MIN: u16 = 40_000;
const PORT_MAX: u16 = 40_999;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_TIME_EXCEEDED: u8 = 11;

fn check(dp: &mut Datapath, what: &str, hook: Hook, frame: &[u8], expect: Expect) -> Vec<u8> {
    table::check(dp, what, hook, frame, &expect).unwrap()
}

/// Ethernet addresses of a frame arriving on the uplink.
fn from_router() -> ([u8; 6], [u8; 6]) {
    (UPLINK_MAC, ROUTER_MAC)
}

/// Ethernet addresses of A1's frames to its gateway.
fn to_gateway() -> ([u8; 6], [u8; 6]) {
    (NET_A.gateway_mac(), A1.mac)
}

/// Ethernet addresses of a frame delivered into A1.
fn into_a1() -> ([u8; 6], [u8; 6]) {
    (A1.mac, NET_A.gateway_mac())
}

fn key(proto: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> CtKey {
    CtKey::new(
        proto,
        u32::from_ne_bytes(src.0.octets()),
        u32::from_ne_bytes(dst.0.octets()),
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

fn syn_ack() -> TcpFlags {
    TcpFlags {
        syn: true,
        ack: true,
        ..TcpFlags::default()
    }
}

/// The first bytes of the IPv4 packet in `frame` an ICMP error quotes:
/// its header and 8 bytes of L4.
fn quote(frame: &[u8]) -> Vec<u8> {
    frame[ETH_HLEN..l4_start(frame) + 8].to_vec()
}

fn forward(kind: Forward, output: Vec<u8>, delivered_to: Option<u32>) -> Expect {
    Expect::Forward {
        action: TC_ACT_REDIRECT,
        kind,
        output,
        delivered_to,
    }
}

#[test]
fn dnat_in_and_reply_out() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        dp.publish(Proto::Udp, 5353, A1.ip, 53)?;
        let client = (OUTSIDE, 50_001);

        let syn_in = tcp(from_router(), client, (NODE_IP, 8080), syn(), 60);
        let want = translated(&syn_in, false, A1.ip, 80, Some(into_a1()));
        let got = check(
            &mut dp,
            "TCP SYN in",
            Hook::Uplink,
            &syn_in,
            forward(Forward::Dnat, want, Some(A1.ifindex)),
        );
        assert!(
            ipv4_checksum_valid(&got) && l4_checksum_valid(&got),
            "TCP in checksums"
        );

        let reply = tcp(to_gateway(), (A1.ip, 80), client, syn_ack(), 64);
        let want = translated(&reply, true, NODE_IP, 8080, None);
        let got = check(
            &mut dp,
            "TCP SYN-ACK out",
            Hook::Container,
            &reply,
            forward(Forward::ReverseDnat, want, None),
        );
        assert!(
            ipv4_checksum_valid(&got) && l4_checksum_valid(&got),
            "TCP out checksums"
        );

        let inbound = dp
            .ct_get(&key(IPPROTO_TCP, client, (NODE_IP, 8080)))?
            .expect("inbound entry");
        let outbound = dp
            .ct_get(&key(IPPROTO_TCP, (A1.ip, 80), client))?
            .expect("container-side entry");
        assert_eq!(
            (
                inbound.direction,
                inbound.flags,
                inbound.xlate_port_be,
                inbound.ifindex
            ),
            (CT_DIR_REPLY, CT_FLAG_DNAT, 80u16.to_be_bytes(), A1.ifindex)
        );
        assert_eq!(
            (
                outbound.direction,
                outbound.flags,
                outbound.xlate_ip_be,
                outbound.xlate_port_be
            ),
            (
                CT_DIR_ORIGINAL,
                CT_FLAG_DNAT,
                u32::from_ne_bytes(NODE_IP.octets()),
                8080u16.to_be_bytes()
            )
        );
        assert!(
            inbound.created_ns > 0 && inbound.created_ns == outbound.created_ns,
            "creation time set on both"
        );
        assert!(outbound.last_seen_ns >= outbound.created_ns);

        let udp_in = udp_ports(from_router(), client, (NODE_IP, 5353), 60, b"query");
        let want = translated(&udp_in, false, A1.ip, 53, Some(into_a1()));
        check(
            &mut dp,
            "UDP in",
            Hook::Uplink,
            &udp_in,
            forward(Forward::Dnat, want, Some(A1.ifindex)),
        );
        let udp_out = udp_ports(to_gateway(), (A1.ip, 53), client, 64, b"answer");
        let want = translated(&udp_out, true, NODE_IP, 5353, None);
        check(
            &mut dp,
            "UDP out",
            Hook::Container,
            &udp_out,
            forward(Forward::ReverseDnat, want, None),
        );

        // UDP without checksum: stays without one.
        let client2 = (OUTSIDE, 50_002);
        let mut bare = udp_ports(from_router(), client2, (NODE_IP, 5353), 60, b"bare");
        let csum = l4_start(&bare) + 6;
        bare[csum..csum + 2].fill(0);
        let want = translated(&bare, false, A1.ip, 53, Some(into_a1()));
        let got = check(
            &mut dp,
            "UDP without checksum in",
            Hook::Uplink,
            &bare,
            forward(Forward::Dnat, want, Some(A1.ifindex)),
        );
        assert_eq!(got[csum..csum + 2], [0, 0], "a UDP checksum of 0 stays 0");
        Ok(())
    })
}

/// A published port's connection that closed moves to the closing table
/// and still translates its last packets; a client reusing its port
/// reopens it (its SYN comes from outside, the reply direction of a DNAT
/// connection), back among the open ones, and the container's SYN-ACK is
/// translated back; half a closed pair (the LRU evicted the other half)
/// counts as nothing, so a new connection on the tuple gets both halves
/// anew instead of replying untranslated.
#[test]
fn closed_published_connections_reopen_whole() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        let flags = |syn, ack, fin| TcpFlags {
            syn,
            ack,
            fin,
            rst: false,
        };
        for (client, evict) in [((OUTSIDE, 50_101), false), ((OUTSIDE, 50_102), true)] {
            let inbound = key(IPPROTO_TCP, client, (NODE_IP, 8080));
            let outbound = key(IPPROTO_TCP, (A1.ip, 80), client);
            let open = |dp: &mut Datapath, what: &str| {
                let syn_in = tcp(from_router(), client, (NODE_IP, 8080), syn(), 60);
                let want = translated(&syn_in, false, A1.ip, 80, Some(into_a1()));
                check(
                    dp,
                    &format!("{what}: SYN in"),
                    Hook::Uplink,
                    &syn_in,
                    forward(Forward::Dnat, want, Some(A1.ifindex)),
                );
                let reply = tcp(to_gateway(), (A1.ip, 80), client, syn_ack(), 64);
                let want = translated(&reply, true, NODE_IP, 8080, None);
                check(
                    dp,
                    &format!("{what}: SYN-ACK out"),
                    Hook::Container,
                    &reply,
                    forward(Forward::ReverseDnat, want, None),
                );
            };
            open(&mut dp, "first connection");
            dp.run_uplink(&tcp(
                from_router(),
                client,
                (NODE_IP, 8080),
                flags(false, true, true),
                60,
            ))?;
            dp.run(&tcp(
                to_gateway(),
                (A1.ip, 80),
                client,
                flags(false, true, true),
                64,
            ))?;
            assert!(
                dp.ct_closing(&inbound)? && dp.ct_closing(&outbound)?,
                "closed: both halves in the closing table"
            );
            let last_ack = tcp(
                from_router(),
                client,
                (NODE_IP, 8080),
                flags(false, true, false),
                60,
            );
            let want = translated(&last_ack, false, A1.ip, 80, Some(into_a1()));
            check(
                &mut dp,
                "the last ACK of a closed connection",
                Hook::Uplink,
                &last_ack,
                forward(Forward::Dnat, want, Some(A1.ifindex)),
            );
            if evict {
                dp.ct_evict_closing(&outbound)?;
            }
            open(
                &mut dp,
                if evict {
                    "half a pair left: a new connection"
                } else {
                    "the client reuses its port"
                },
            );
            assert!(
                dp.ct_open(&inbound)? && dp.ct_open(&outbound)?,
                "open again: both halves among the open connections"
            );
            if !evict {
                assert!(
                    !dp.ct_closing(&inbound)? && !dp.ct_closing(&outbound)?,
                    "reopened: moved, not copied"
                );
            }
            assert_eq!(
                dp.ct_get(&outbound)?.map(|e| e.tcp_state),
                Some(CT_TCP_SYN_SENT),
                "a new connection's state"
            );
        }
        Ok(())
    })
}

#[test]
fn unpublished_port_goes_to_the_stack_untouched() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        for (what, frame) in [
            (
                "UDP to a TCP-published port",
                udp_ports(from_router(), (OUTSIDE, 50_003), (NODE_IP, 8080), 60, b"x"),
            ),
            (
                "TCP to an unpublished port",
                tcp(from_router(), (OUTSIDE, 50_004), (NODE_IP, 22), syn(), 60),
            ),
        ] {
            check(
                &mut dp,
                what,
                Hook::Uplink,
                &frame,
                Expect::Forward {
                    action: TC_ACT_OK,
                    kind: Forward::PassedToStack,
                    output: frame.clone(),
                    delivered_to: None,
                },
            );
        }
        assert!(
            dp.ct_entries()?.is_empty(),
            "no conntrack entry for the stack's traffic"
        );
        Ok(())
    })
}

/// A1 reaches its own published port through the node's address: source
/// and destination both translated, so A1's reply comes back through the
/// same path and is translated back.
#[test]
fn hairpin() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        // The client port is in the NAT range and free: it is kept.
        let client = (A1.ip, 40_020);
        let syn_out = tcp(to_gateway(), client, (NODE_IP, 8080), syn(), 64);
        let want = hairpinned(&syn_out, (NODE_IP, 40_020), (A1.ip, 80), into_a1());
        let got = check(
            &mut dp,
            "hairpin SYN",
            Hook::Container,
            &syn_out,
            forward(Forward::Dnat, want, Some(A1.ifindex)),
        );
        assert!(
            ipv4_checksum_valid(&got) && l4_checksum_valid(&got),
            "hairpin checksums"
        );

        let reply = tcp(to_gateway(), (A1.ip, 80), (NODE_IP, 40_020), syn_ack(), 64);
        let want = hairpinned(&reply, (NODE_IP, 8080), client, into_a1());
        check(
            &mut dp,
            "hairpin SYN-ACK",
            Hook::Container,
            &reply,
            forward(Forward::ReverseDnat, want, Some(A1.ifindex)),
        );

        let forth = dp
            .ct_get(&key(IPPROTO_TCP, client, (NODE_IP, 8080)))?
            .expect("hairpin entry");
        let back = dp
            .ct_get(&key(IPPROTO_TCP, (A1.ip, 80), (NODE_IP, 40_020)))?
            .expect("hairpin reply entry");
        assert_eq!(forth.flags, CT_FLAG_DNAT | CT_FLAG_HAIRPIN);
        assert_eq!(back.flags, CT_FLAG_DNAT | CT_FLAG_HAIRPIN);

        // A client port outside the NAT range gets one of the range.
        let low = tcp(to_gateway(), (A1.ip, 1234), (NODE_IP, 8080), syn(), 64);
        let got = dp.run(&low)?;
        assert_eq!(got.action, TC_ACT_REDIRECT);
        let port = u16::from_be_bytes([
            got.output[l4_start(&got.output)],
            got.output[l4_start(&got.output) + 1],
        ]);
        assert!(
            (PORT_MIN..=PORT_MAX).contains(&port),
            "source port {port} from the NAT range"
        );
        assert_eq!(
            got.output,
            hairpinned(&low, (NODE_IP, port), (A1.ip, 80), into_a1())
        );
        Ok(())
    })
}

/// An ICMP error from outside about a masqueraded UDP flow (source port
/// remapped) and about a connection to a published port: the container
/// gets it for its own tuple.
#[test]
fn icmp_errors_translated() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        // SNAT: A1:1234 leaves as NODE_IP:<port of the range>.
        let query = udp_ports(to_gateway(), (A1.ip, 1234), (OUTSIDE, 53), 64, b"query");
        let out = dp.run(&query)?;
        assert_eq!(out.action, TC_ACT_REDIRECT);
        for (what, ty, code) in [
            ("port unreachable", ICMP_DEST_UNREACH, ICMP_PORT_UNREACH),
            ("fragmentation needed", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED),
            ("time exceeded", ICMP_TIME_EXCEEDED, 0),
        ] {
            let err = icmp_error(
                from_router(),
                OUTSIDE,
                NODE_IP,
                ty,
                code,
                &quote(&out.output),
            );
            let want = icmp_error_translated(&err, A1.ip, A1.ip, 1234, into_a1());
            let got = check(
                &mut dp,
                &format!("SNAT {what}"),
                Hook::Uplink,
                &err,
                forward(Forward::IcmpErrorTranslated, want, Some(A1.ifindex)),
            );
            assert!(
                ipv4_checksum_valid(&got) && l4_checksum_valid(&got),
                "{what}: outer checksums"
            );
            let q = quoted_start(&got);
            assert_eq!(
                weft_tests::frames::internet_checksum(&got[q..q + 20]),
                0,
                "{what}: quoted IPv4 checksum"
            );
        }

        // DNAT: A1's answer from its published port could not be delivered.
        dp.publish(Proto::Udp, 5353, A1.ip, 53)?;
        let client = (OUTSIDE, 50_010);
        let q_in = udp_ports(from_router(), client, (NODE_IP, 5353), 60, b"q");
        dp.run_uplink(&q_in)?;
        let answer = udp_ports(to_gateway(), (A1.ip, 53), client, 64, b"a");
        let left = dp.run(&answer)?;
        assert_eq!(left.action, TC_ACT_REDIRECT);
        let err = icmp_error(
            from_router(),
            OUTSIDE,
            NODE_IP,
            ICMP_DEST_UNREACH,
            ICMP_PORT_UNREACH,
            &quote(&left.output),
        );
        let want = icmp_error_translated(&err, A1.ip, A1.ip, 53, into_a1());
        check(
            &mut dp,
            "DNAT port unreachable",
            Hook::Uplink,
            &err,
            forward(Forward::IcmpErrorTranslated, want, Some(A1.ifindex)),
        );

        // A1 answers a datagram to its published port with an error of its
        // own: it leaves as the node's, about the node's published port.
        let err = icmp_error(
            to_gateway(),
            A1.ip,
            OUTSIDE,
            ICMP_DEST_UNREACH,
            ICMP_PORT_UNREACH,
            &quote(&translated(&q_in, false, A1.ip, 53, Some(into_a1()))),
        );
        let want = icmp_error_translated_out(&err, NODE_IP, 5353);
        let got = check(
            &mut dp,
            "A1's port unreachable about the DNAT flow",
            Hook::Container,
            &err,
            forward(Forward::IcmpErrorTranslated, want, None),
        );
        assert!(ipv4_checksum_valid(&got) && l4_checksum_valid(&got));

        // About a connection weft does not know: the node's own.
        let own = udp_ports(to_gateway(), (NODE_IP, 33_000), (OUTSIDE, 53), 64, b"own");
        let err = icmp_error(
            from_router(),
            OUTSIDE,
            NODE_IP,
            ICMP_DEST_UNREACH,
            ICMP_PORT_UNREACH,
            &quote(&own),
        );
        check(
            &mut dp,
            "error about the node's own flow",
            Hook::Uplink,
            &err,
            Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: err.clone(),
                delivered_to: None,
            },
        );
        Ok(())
    })
}

/// Quoted headers cut short or malformed: dropped as `bad_icmp_embedded`.
#[test]
fn malformed_quotes_dropped() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let sent = udp_ports(to_gateway(), (NODE_IP, 40_100), (OUTSIDE, 53), 64, b"x");
        let full = quote(&sent);
        let mut bad_version = full.clone();
        bad_version[0] = 0x65;
        let mut long_ihl = full.clone();
        long_ihl[0] = 0x4f;
        let mut short_ihl = full.clone();
        short_ihl[0] = 0x44;
        for (what, quoted) in [
            ("quote cut inside the IPv4 header", full[..12].to_vec()),
            ("quote without its 8 L4 bytes", full[..24].to_vec()),
            ("quoted version 6", bad_version),
            ("quoted IHL past the quote", long_ihl),
            ("quoted IHL below 5", short_ihl),
        ] {
            let err = icmp_error(
                from_router(),
                OUTSIDE,
                NODE_IP,
                ICMP_DEST_UNREACH,
                ICMP_PORT_UNREACH,
                &quoted,
            );
            check(
                &mut dp,
                what,
                Hook::Uplink,
                &err,
                Expect::Drop(Drop::BadIcmpEmbedded),
            );
        }
        Ok(())
    })
}

/// Pressure: a hairpin connection needs a source port of the NAT range; with
/// a one-port range the second new connection to the same target is dropped
/// as `nat_ports_exhausted`, the first keeps working both ways.
#[test]
fn hairpin_port_exhaustion_is_a_named_drop() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MIN);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        let first = tcp(to_gateway(), (A1.ip, 1111), (NODE_IP, 8080), syn(), 64);
        let want = hairpinned(&first, (NODE_IP, PORT_MIN), (A1.ip, 80), into_a1());
        check(
            &mut dp,
            "first hairpin SYN",
            Hook::Container,
            &first,
            forward(Forward::Dnat, want, Some(A1.ifindex)),
        );
        let second = tcp(to_gateway(), (A1.ip, 2222), (NODE_IP, 8080), syn(), 64);
        check(
            &mut dp,
            "second hairpin SYN",
            Hook::Container,
            &second,
            Expect::Drop(Drop::NatPortsExhausted),
        );
        assert!(
            dp.ct_get(&key(IPPROTO_TCP, (A1.ip, 2222), (NODE_IP, 8080)))?
                .is_none(),
            "a refused connection leaves no entry"
        );
        let reply = tcp(
            to_gateway(),
            (A1.ip, 80),
            (NODE_IP, PORT_MIN),
            syn_ack(),
            64,
        );
        let want = hairpinned(&reply, (NODE_IP, 8080), (A1.ip, 1111), into_a1());
        check(
            &mut dp,
            "first connection's reply",
            Hook::Container,
            &reply,
            forward(Forward::ReverseDnat, want, Some(A1.ifindex)),
        );
        let again = tcp(
            to_gateway(),
            (A1.ip, 1111),
            (NODE_IP, 8080),
            TcpFlags {
                ack: true,
                ..TcpFlags::default()
            },
            64,
        );
        let want = hairpinned(&again, (NODE_IP, PORT_MIN), (A1.ip, 80), into_a1());
        check(
            &mut dp,
            "first connection goes on",
            Hook::Container,
            &again,
            forward(Forward::Dnat, want, Some(A1.ifindex)),
        );
        Ok(())
    })
}

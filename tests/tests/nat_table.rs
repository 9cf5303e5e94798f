//! Masquerade packet tables through BPF_PROG_TEST_RUN: SNAT out of
//! `weft_from_container`, the reverse translation in `weft_from_uplink`,
//! exact bytes, checksums verified from scratch (`frames::l4_checksum`,
//! never the datapath's math), exactly one counter moving per packet, and
//! the conntrack entries read back from the map.
//!
//! Each test runs on a thread inside its own namespace ([`NatNode`]), where
//! `bpf_fib_lookup` finds the uplink; `bpf_redirect_neigh` returns
//! TC_ACT_REDIRECT in a test run without transmitting.

use std::net::Ipv4Addr;

use anyhow::Result;
use weft::model::Proto;
use weft_common::{
    maps::{
        CT_BUDGET_FRESH_NS, CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FIN_ORIGINAL, CT_FIN_REPLY,
        CT_TCP_CLOSED, CT_TCP_ESTABLISHED, CT_TCP_FIN_WAIT, CT_TCP_NONE, CT_TCP_SYN_SENT, CtEntry,
        CtKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    },
    reason::{Drop, Forward},
};
use weft_tests::{
    fixture::{Datapath, TC_ACT_OK, TC_ACT_REDIRECT},
    frames::{
        ETH_HLEN, TcpFlags, arp_request, icmp_echo, ipv4_checksum_valid, l4_checksum_field,
        l4_checksum_valid, refresh_ipv4_checksum, tcp, udp_ports,
    },
    nat_frames::{l4_start, port_at, translated},
    table::{self, Expect, Hook},
    topology::{
        A1, A2, NET_A, NODE_IP, NatNode, OUTSIDE, ROUTER_MAC, UPLINK_MAC, nat_model, nat_topology,
        topology,
    },
};

const PORT_MIN: u16 = 40_000;
const PORT_MAX: u16 = 40_999;

/// Runs `frame` through `hook` and checks it (see `weft_tests::table`);
/// returns the output.
fn check(dp: &mut Datapath, what: &str, hook: Hook, frame: &[u8], expect: Expect) -> Vec<u8> {
    table::check(dp, what, hook, frame, &expect).unwrap()
}

/// The reply an outside host sends to a translated packet `out`.
fn reply_to(out: &[u8]) -> Vec<u8> {
    let sport = port_at(out, true);
    let dport = port_at(out, false);
    let peer = (OUTSIDE, dport);
    let node = (NODE_IP, sport);
    let eth = (UPLINK_MAC, ROUTER_MAC);
    match out[ETH_HLEN + 9] {
        6 => tcp(
            eth,
            peer,
            node,
            TcpFlags {
                syn: true,
                ack: true,
                ..TcpFlags::default()
            },
            60,
        ),
        17 => udp_ports(eth, peer, node, 60, b"reply"),
        _ => icmp_echo(eth, OUTSIDE, NODE_IP, false, sport, 60, b"pong"),
    }
}

fn to_outside() -> ([u8; 6], [u8; 6]) {
    (NET_A.gateway_mac(), A1.mac)
}

/// Ethernet addresses of a frame arriving on the uplink.
fn from_router() -> ([u8; 6], [u8; 6]) {
    (UPLINK_MAC, ROUTER_MAC)
}

fn flags(syn: bool, ack: bool, fin: bool, rst: bool) -> TcpFlags {
    TcpFlags { syn, ack, fin, rst }
}

fn syn() -> TcpFlags {
    TcpFlags {
        syn: true,
        ..TcpFlags::default()
    }
}

fn ct_key(proto: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> CtKey {
    CtKey {
        src_ip_be: u32::from_ne_bytes(src.0.octets()),
        dst_ip_be: u32::from_ne_bytes(dst.0.octets()),
        src_port_be: src.1.to_be_bytes(),
        dst_port_be: dst.1.to_be_bytes(),
        proto,
        _pad: [0; 3],
    }
}

/// SNAT out for `frame` (port expected kept), then the reply back in.
fn out_and_back(dp: &mut Datapath, what: &str, frame: &[u8]) -> Vec<u8> {
    let kept = port_at(frame, true);
    let want = translated(frame, true, NODE_IP, kept, None);
    let out = check(
        dp,
        &format!("{what}: out"),
        Hook::Container,
        frame,
        Expect::Forward {
            action: TC_ACT_REDIRECT,
            kind: Forward::Snat,
            output: want,
            delivered_to: None,
        },
    );
    assert!(
        ipv4_checksum_valid(&out),
        "{what}: IPv4 checksum of the output"
    );
    assert!(l4_checksum_valid(&out), "{what}: L4 checksum of the output");
    back_in(dp, what, &out, frame);
    out
}

/// The reply to `out` arrives on the uplink and goes back to A1 as the
/// reply to `original`.
fn back_in(dp: &mut Datapath, what: &str, out: &[u8], original: &[u8]) {
    let reply = reply_to(out);
    let want = translated(
        &reply,
        false,
        A1.ip,
        port_at(original, true),
        Some((A1.mac, NET_A.gateway_mac())),
    );
    let back = check(
        dp,
        &format!("{what}: reply in"),
        Hook::Uplink,
        &reply,
        Expect::Forward {
            action: TC_ACT_REDIRECT,
            kind: Forward::ReverseSnat,
            output: want,
            delivered_to: Some(A1.ifindex),
        },
    );
    assert!(ipv4_checksum_valid(&back), "{what}: IPv4 checksum back in");
    assert!(l4_checksum_valid(&back), "{what}: L4 checksum back in");
}

#[test]
fn snat_out_and_reverse_in() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let tcp_syn = tcp(to_outside(), (A1.ip, 40_001), (OUTSIDE, 443), syn(), 64);
        out_and_back(&mut dp, "TCP SYN", &tcp_syn);

        let udp = udp_ports(to_outside(), (A1.ip, 40_002), (OUTSIDE, 53), 64, b"query");
        assert_ne!(l4_checksum_field(&udp), 0);
        out_and_back(&mut dp, "UDP", &udp);

        let mut udp_no_csum =
            udp_ports(to_outside(), (A1.ip, 40_003), (OUTSIDE, 514), 64, b"no sum");
        let csum = l4_start(&udp_no_csum) + 6;
        udp_no_csum[csum..csum + 2].fill(0);
        let out = out_and_back(&mut dp, "UDP without checksum", &udp_no_csum);
        assert_eq!(
            l4_checksum_field(&out),
            0,
            "a UDP checksum of 0 must stay 0"
        );

        let ping = icmp_echo(to_outside(), A1.ip, OUTSIDE, true, 40_004, 64, b"ping");
        out_and_back(&mut dp, "ICMP echo", &ping);

        let ping_low_id = icmp_echo(to_outside(), A1.ip, OUTSIDE, true, 7, 64, b"ping");
        let out = dp.run(&ping_low_id)?;
        assert_eq!(out.action, TC_ACT_REDIRECT);
        let id = port_at(&out.output, true);
        assert!(
            (PORT_MIN..=PORT_MAX).contains(&id),
            "an echo id outside the range is remapped into it, got {id}"
        );
        assert_eq!(
            out.output,
            translated(&ping_low_id, true, NODE_IP, id, None),
            "remapped echo id"
        );
        back_in(&mut dp, "ICMP echo, remapped id", &out.output, &ping_low_id);

        // An established flow's next packet uses the same entry.
        let again = dp.run(&tcp_syn)?;
        assert_eq!(port_at(&again.output, true), 40_001);
        let entry = dp
            .ct_get(&ct_key(IPPROTO_TCP, (A1.ip, 40_001), (OUTSIDE, 443)))?
            .expect("original TCP entry");
        assert_eq!((entry.packets_orig, entry.direction), (2, CT_DIR_ORIGINAL));
        let reply = dp
            .ct_get(&ct_key(IPPROTO_UDP, (OUTSIDE, 53), (NODE_IP, 40_002)))?
            .expect("reply UDP entry");
        assert_eq!(
            (
                reply.direction,
                reply.xlate_ip_be,
                reply.xlate_port_be,
                reply.ifindex,
                reply.stats_slot,
                reply.packets_reply,
                reply.tcp_state,
            ),
            (
                CT_DIR_REPLY,
                u32::from_ne_bytes(A1.ip.octets()),
                40_002u16.to_be_bytes(),
                A1.ifindex,
                A1.stats_slot,
                1,
                CT_TCP_NONE
            )
        );
        let icmp_reply = dp.ct_get(&ct_key(IPPROTO_ICMP, (OUTSIDE, 40_004), (NODE_IP, 0)))?;
        assert!(
            icmp_reply.is_some(),
            "ICMP reply entry keyed by the echo id"
        );
        Ok(())
    })
}

/// A port another container's connection holds for the same destination
/// is not reused: A1's flow gets another port of the range.
#[test]
fn port_kept_or_reallocated() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        // A2's connection 10.1.0.3:40010 -> OUTSIDE:80 left as node:40010;
        // its reply entry holds the port for OUTSIDE:80.
        dp.ct_put(
            ct_key(IPPROTO_TCP, (OUTSIDE, 80), (NODE_IP, 40_010)),
            CtEntry {
                last_seen_ns: u64::MAX / 2,
                xlate_ip_be: u32::from_ne_bytes(A2.ip.octets()),
                xlate_port_be: 40_010u16.to_be_bytes(),
                ifindex: A2.ifindex,
                stats_slot: A2.stats_slot,
                tcp_state: CT_TCP_ESTABLISHED,
                direction: CT_DIR_REPLY,
                ..CtEntry::default()
            },
        )?;
        let frame = tcp(to_outside(), (A1.ip, 40_010), (OUTSIDE, 80), syn(), 64);
        let got = dp.run(&frame)?;
        assert_eq!(got.action, TC_ACT_REDIRECT);
        let port = port_at(&got.output, true);
        assert!(
            port != 40_010 && (PORT_MIN..=PORT_MAX).contains(&port),
            "expected a new port of the range, got {port}"
        );
        assert_eq!(
            got.output,
            translated(&frame, true, NODE_IP, port, None),
            "reallocated port"
        );
        assert!(l4_checksum_valid(&got.output));
        back_in(&mut dp, "reallocated port", &got.output, &frame);
        let held = dp
            .ct_get(&ct_key(IPPROTO_TCP, (OUTSIDE, 80), (NODE_IP, 40_010)))?
            .expect("A2's entry");
        assert_eq!(held.ifindex, A2.ifindex, "A2's entry must be untouched");

        // The same source port to another destination port is free: kept.
        let other = tcp(to_outside(), (A1.ip, 40_010), (OUTSIDE, 81), syn(), 64);
        let got = dp.run(&other)?;
        assert_eq!(port_at(&got.output, true), 40_010, "free port is kept");
        // A source port outside the range is remapped into it.
        let low = tcp(to_outside(), (A1.ip, 1234), (OUTSIDE, 80), syn(), 64);
        let got = dp.run(&low)?;
        assert!((PORT_MIN..=PORT_MAX).contains(&port_at(&got.output, true)));
        Ok(())
    })
}

/// A range of one port: the first flow takes it, a second flow to the same
/// destination is dropped, the first keeps working both ways.
#[test]
fn exhausted_range() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MIN);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let first = udp_ports(to_outside(), (A1.ip, PORT_MIN), (OUTSIDE, 53), 64, b"one");
        let out = out_and_back(&mut dp, "first flow", &first);
        let second = udp_ports(to_outside(), (A1.ip, 40_500), (OUTSIDE, 53), 64, b"two");
        check(
            &mut dp,
            "second flow, no port left",
            Hook::Container,
            &second,
            Expect::Drop(Drop::NatPortsExhausted),
        );
        let again = dp.run(&first)?;
        assert_eq!(again.output, out, "first flow still translated");
        back_in(&mut dp, "first flow again", &out, &first);
        // Another destination has its own port space.
        let elsewhere = udp_ports(to_outside(), (A1.ip, 40_500), (OUTSIDE, 54), 64, b"x");
        let got = dp.run(&elsewhere)?;
        assert_eq!(got.action, TC_ACT_REDIRECT);
        assert_eq!(port_at(&got.output, true), PORT_MIN);
        Ok(())
    })
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The conntrack budget: every connection made is counted; with a fresh
/// GC count at the limit a new connection (masqueraded or to a published
/// port) is dropped as `conntrack_full` with no entry made, while an
/// established one keeps being translated both ways; below the limit, or
/// with a count older than `CT_BUDGET_FRESH_NS` (no GC running), new
/// connections go through.
#[test]
fn conntrack_budget_refuses_only_new_connections() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let first = udp_ports(to_outside(), (A1.ip, 40_001), (OUTSIDE, 53), 64, b"one");
        let out = out_and_back(&mut dp, "first flow", &first);
        assert_eq!(dp.ct_created()?, 1, "counted");

        // A GC just counted one live connection; the limit is one.
        dp.set_ct_budget(0, monotonic_ns(), 1)?;
        let second = udp_ports(to_outside(), (A1.ip, 40_002), (OUTSIDE, 53), 64, b"two");
        check(
            &mut dp,
            "a new flow at the limit",
            Hook::Container,
            &second,
            Expect::Drop(Drop::ConntrackFull),
        );
        let key = CtKey::new(
            IPPROTO_UDP,
            u32::from_ne_bytes(A1.ip.octets()),
            u32::from_ne_bytes(OUTSIDE.octets()),
            40_002u16.to_be_bytes(),
            53u16.to_be_bytes(),
        );
        assert!(dp.ct_get(&key)?.is_none(), "no entry for the refused flow");
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        check(
            &mut dp,
            "a new connection to a published port at the limit",
            Hook::Uplink,
            &tcp(
                (UPLINK_MAC, ROUTER_MAC),
                (OUTSIDE, 50_000),
                (NODE_IP, 8080),
                syn(),
                64,
            ),
            Expect::Drop(Drop::ConntrackFull),
        );
        let again = dp.run(&first)?;
        assert_eq!(
            again.output, out,
            "the established flow is still translated"
        );
        back_in(&mut dp, "established flow at the limit", &out, &first);

        // Below the limit again (a GC counted it out, or the limit grew).
        dp.set_ct_budget(0, monotonic_ns(), 2)?;
        assert_eq!(
            dp.run(&second)?.action,
            TC_ACT_REDIRECT,
            "room for one more"
        );
        assert_eq!(dp.ct_created()?, 2);

        // A count from over a minute ago: no GC is running, the limit is off.
        let third = udp_ports(to_outside(), (A1.ip, 40_003), (OUTSIDE, 53), 64, b"three");
        let stale = monotonic_ns().saturating_sub(CT_BUDGET_FRESH_NS + 1_000_000_000);
        dp.set_ct_budget(0, stale.max(1), 2)?;
        assert_eq!(
            dp.run(&third)?.action,
            TC_ACT_REDIRECT,
            "stale count: LRU rules"
        );
        assert_eq!(dp.ct_created()?, 3);
        Ok(())
    })
}

/// A TCP connection stops counting against the budget as soon as it
/// closes (both FINs, or an RST), with no GC in between: with the limit
/// at one open connection, a second connection is refused while the first
/// is open and goes through once it closed; a new SYN reopening a closed
/// tuple counts again.
#[test]
fn closed_tcp_connections_free_the_budget() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.set_ct_budget(0, monotonic_ns(), 1)?;
        let (c, o, n) = ((A1.ip, 40_100), (OUTSIDE, 80), (NODE_IP, 40_100));
        let up = from_router();
        let second = tcp(to_outside(), (A1.ip, 40_200), o, syn(), 64);

        assert_eq!(
            dp.run(&tcp(to_outside(), c, o, syn(), 64))?.action,
            TC_ACT_REDIRECT
        );
        dp.run_uplink(&tcp(up, o, n, flags(true, true, false, false), 60))?;
        check(
            &mut dp,
            "a second connection while the first is open",
            Hook::Container,
            &second,
            Expect::Drop(Drop::ConntrackFull),
        );
        dp.run(&tcp(
            to_outside(),
            c,
            o,
            flags(false, true, true, false),
            64,
        ))?;
        dp.run_uplink(&tcp(up, o, n, flags(false, true, true, false), 60))?;
        assert_eq!(
            dp.run(&second)?.action,
            TC_ACT_REDIRECT,
            "the first closed: room for the second"
        );
        dp.run_uplink(&tcp(
            up,
            o,
            (NODE_IP, 40_200),
            flags(false, true, false, true),
            60,
        ))?;
        // Both closed; a SYN reopening the first tuple is a connection again.
        assert_eq!(
            dp.run(&tcp(to_outside(), c, o, syn(), 64))?.action,
            TC_ACT_REDIRECT
        );
        check(
            &mut dp,
            "a third while the reopened one is open",
            Hook::Container,
            &tcp(to_outside(), (A1.ip, 40_300), o, syn(), 64),
            Expect::Drop(Drop::ConntrackFull),
        );
        Ok(())
    })
}

fn states(dp: &mut Datapath, orig: &CtKey, reply: &CtKey) -> ((u8, u8), (u8, u8)) {
    let o = dp.ct_get(orig).unwrap().expect("original entry");
    let r = dp.ct_get(reply).unwrap().expect("reply entry");
    ((o.tcp_state, o.fin_seen), (r.tcp_state, r.fin_seen))
}

/// TCP state in both entries: SYN, SYN-ACK, FIN each way; and RST.
#[test]
fn tcp_state_tracking() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let orig = ct_key(IPPROTO_TCP, (A1.ip, 40_100), (OUTSIDE, 80));
        let reply = ct_key(IPPROTO_TCP, (OUTSIDE, 80), (NODE_IP, 40_100));
        let c = (A1.ip, 40_100);
        let o = (OUTSIDE, 80);
        let n = (NODE_IP, 40_100);
        let up = from_router();

        dp.run(&tcp(to_outside(), c, o, syn(), 64))?;
        assert_eq!(
            states(&mut dp, &orig, &reply),
            ((CT_TCP_SYN_SENT, 0), (CT_TCP_SYN_SENT, 0))
        );
        let r = dp.run_uplink(&tcp(up, o, n, flags(true, true, false, false), 60))?;
        assert_eq!(r.action, TC_ACT_REDIRECT);
        assert_eq!(
            states(&mut dp, &orig, &reply),
            ((CT_TCP_ESTABLISHED, 0), (CT_TCP_ESTABLISHED, 0))
        );
        dp.run(&tcp(
            to_outside(),
            c,
            o,
            flags(false, true, true, false),
            64,
        ))?;
        let fin_wait = (CT_TCP_FIN_WAIT, CT_FIN_ORIGINAL);
        assert_eq!(states(&mut dp, &orig, &reply), (fin_wait, fin_wait));
        dp.run_uplink(&tcp(up, o, n, flags(false, true, true, false), 60))?;
        let closed = (CT_TCP_CLOSED, CT_FIN_ORIGINAL | CT_FIN_REPLY);
        assert_eq!(states(&mut dp, &orig, &reply), (closed, closed));
        assert!(
            dp.ct_closing(&orig)? && dp.ct_closing(&reply)?,
            "a closed connection moves to the closing table"
        );
        // The last ACK still goes through while the entry is closing.
        let ack = dp.run(&tcp(
            to_outside(),
            c,
            o,
            flags(false, true, false, false),
            64,
        ))?;
        assert_eq!(ack.action, TC_ACT_REDIRECT);

        let orig2 = ct_key(IPPROTO_TCP, (A1.ip, 40_200), (OUTSIDE, 80));
        let reply2 = ct_key(IPPROTO_TCP, (OUTSIDE, 80), (NODE_IP, 40_200));
        dp.run(&tcp(to_outside(), (A1.ip, 40_200), o, syn(), 64))?;
        dp.run_uplink(&tcp(
            up,
            o,
            (NODE_IP, 40_200),
            flags(false, true, false, true),
            60,
        ))?;
        assert_eq!(
            states(&mut dp, &orig2, &reply2),
            ((CT_TCP_CLOSED, 0), (CT_TCP_CLOSED, 0)),
            "RST from outside closes both entries"
        );
        Ok(())
    })
}

/// Truncated L4 headers behind valid IPv4 headers, and later fragments.
#[test]
fn malformed_l4() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        /// `frame` cut to `l4_len` bytes of L4 header, lengths and IPv4
        /// checksum fixed (a valid IPv4 packet with a short L4 header).
        fn cut(frame: &[u8], l4_len: usize) -> Vec<u8> {
            let mut f = frame[..ETH_HLEN + 20 + l4_len].to_vec();
            f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            refresh_ipv4_checksum(&mut f);
            f
        }
        let up = from_router();
        let rows = [
            (
                "TCP header of 19 bytes",
                Hook::Container,
                cut(
                    &tcp(to_outside(), (A1.ip, 40_001), (OUTSIDE, 80), syn(), 64),
                    19,
                ),
            ),
            (
                "UDP header of 7 bytes",
                Hook::Container,
                cut(
                    &udp_ports(to_outside(), (A1.ip, 40_001), (OUTSIDE, 53), 64, b""),
                    7,
                ),
            ),
            (
                "ICMP header of 4 bytes",
                Hook::Container,
                cut(
                    &icmp_echo(to_outside(), A1.ip, OUTSIDE, true, 1, 64, b""),
                    4,
                ),
            ),
            (
                "uplink: TCP header of 12 bytes to the node",
                Hook::Uplink,
                cut(&tcp(up, (OUTSIDE, 80), (NODE_IP, 40_001), syn(), 64), 12),
            ),
            (
                "uplink: UDP header of 6 bytes to the node",
                Hook::Uplink,
                cut(&udp_ports(up, (OUTSIDE, 53), (NODE_IP, 40_001), 64, b""), 6),
            ),
        ];
        for (what, hook, frame) in rows {
            check(&mut dp, what, hook, &frame, Expect::Drop(Drop::TruncatedL4));
        }

        let mut fragment = udp_ports(
            to_outside(),
            (A1.ip, 40_001),
            (OUTSIDE, 53),
            64,
            b"fragment",
        );
        fragment[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&0x0003u16.to_be_bytes());
        refresh_ipv4_checksum(&mut fragment);
        check(
            &mut dp,
            "later fragment on the NAT path",
            Hook::Container,
            &fragment,
            Expect::Drop(Drop::Ipv4Fragment),
        );
        let mut uplink_fragment = udp_ports(up, (OUTSIDE, 53), (NODE_IP, 40_001), 64, b"frag");
        uplink_fragment[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&0x0003u16.to_be_bytes());
        refresh_ipv4_checksum(&mut uplink_fragment);
        check(
            &mut dp,
            "later fragment on the uplink is the stack's",
            Hook::Uplink,
            &uplink_fragment,
            Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: uplink_fragment.clone(),
                delivered_to: None,
            },
        );
        Ok(())
    })
}

/// Uplink traffic that matches no connection is the node's own.
#[test]
fn uplink_unmatched_passes_to_stack() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let up = from_router();
        let rows = [
            (
                "UDP to the node, no connection",
                udp_ports(up, (OUTSIDE, 53), (NODE_IP, 40_001), 64, b"dns"),
            ),
            (
                "TCP to the node's ssh",
                tcp(up, (OUTSIDE, 50_000), (NODE_IP, 22), syn(), 64),
            ),
            (
                "ICMP echo request to the node",
                icmp_echo(up, OUTSIDE, NODE_IP, true, 40_001, 64, b"ping"),
            ),
            (
                "UDP to another address",
                udp_ports(
                    up,
                    (OUTSIDE, 53),
                    (Ipv4Addr::new(192, 168, 77, 9), 40_001),
                    64,
                    b"x",
                ),
            ),
            ("ARP", arp_request(ROUTER_MAC, OUTSIDE, NODE_IP)),
        ];
        for (what, frame) in rows {
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
        Ok(())
    })
}

/// Without the network's masquerade flag, or before the node is
/// configured, traffic to outside goes to the stack unchanged.
#[test]
fn without_masquerade_passes_to_stack() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(PORT_MIN, PORT_MAX);
    node.run(move || {
        let frame = udp_ports(to_outside(), (A1.ip, 40_001), (OUTSIDE, 53), 64, b"q");
        let expect = || Expect::Forward {
            action: TC_ACT_OK,
            kind: Forward::PassedToStack,
            output: frame.clone(),
            delivered_to: None,
        };
        let mut plain = topology()?;
        plain.change(|m| m.node = Some(config))?;
        check(
            &mut plain,
            "network without masquerade",
            Hook::Container,
            &frame,
            expect(),
        );
        // Expiring TTL and later fragments are the stack's too: only a
        // masquerading network's traffic is NAT's to drop.
        let ttl_1 = udp_ports(to_outside(), (A1.ip, 40_002), (OUTSIDE, 53), 1, b"q");
        let mut fragment = udp_ports(to_outside(), (A1.ip, 40_003), (OUTSIDE, 53), 64, b"q");
        fragment[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&0x0003u16.to_be_bytes());
        refresh_ipv4_checksum(&mut fragment);
        for (what, frame) in [
            ("TTL 1 without masquerade", ttl_1),
            ("later fragment without masquerade", fragment),
        ] {
            let expect = Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: frame.clone(),
                delivered_to: None,
            };
            check(&mut plain, what, Hook::Container, &frame, expect);
        }
        assert!(plain.ct_entries()?.is_empty(), "no conntrack entry");

        let mut unconfigured = Datapath::with_model(nat_model(None)?)?;
        check(
            &mut unconfigured,
            "node not configured",
            Hook::Container,
            &frame,
            expect(),
        );
        Ok(())
    })
}

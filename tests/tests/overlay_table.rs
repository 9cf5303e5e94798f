//! VXLAN packet tables through BPF_PROG_TEST_RUN: encapsulation out of
//! `weft_from_container` (the `weft_overlay_encap` tail call) in both
//! modes, and decapsulation in `weft_from_uplink`, with exact bytes (outer
//! headers built here byte by byte, the IPv4 checksum from scratch), the
//! outer UDP source port stable per flow and different across flows, zero
//! UDP checksum, and every malformed or misaddressed outer header dropped
//! with its named reason, one counter moving per packet.
//!
//! Runs in a namespace with an uplink ([`NatNode`]), where
//! `bpf_fib_lookup` finds the underlay; `bpf_redirect_neigh` returns
//! TC_ACT_REDIRECT in a test run without transmitting.

use std::net::Ipv4Addr;

use anyhow::Result;
use weft::model::Proto;
use weft_common::{
    maps::{ENCAP_BPF, ENCAP_TUNNEL},
    overlay::VXLAN_SPORT_MIN,
    reason::{Drop, Forward},
};
use weft_tests::{
    fixture::{Datapath, TC_ACT_OK, TC_ACT_REDIRECT},
    frames::{
        ETH_HLEN, TcpFlags, arp, arp_request, frag_needed, internet_checksum, l4_checksum_valid,
        tcp, tcp_syn, tcp_with_options, udp, udp_ports, with_ipv4_options, without_df,
    },
    overlay_frames::{
        EMPTY_LOCAL_A, LOCAL_VTEP, REMOTE_A, REMOTE_B, REMOTE_UNDERLAY, REMOTE_VTEP, UNROUTED_A,
        VNI_A, VNI_B, arriving, encapsulated, overlay_topology, sport_of, vtep_to_vtep,
    },
    table::{self, Expect, Hook},
    topology::{A1, A2, NET_A, NODE_IP, NatNode, ROUTER_MAC, UPLINK_MAC},
};

fn check(dp: &mut Datapath, what: &str, hook: Hook, frame: &[u8], expect: Expect) -> Vec<u8> {
    table::check(dp, what, hook, frame, &expect).unwrap()
}

/// `frame` with its IPv4 TTL one lower and the header checksum redone.
fn ttl_decremented(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[ETH_HLEN + 8] -= 1;
    f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&f[ETH_HLEN..ETH_HLEN + 20]);
    f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
    f
}

fn to_gateway() -> ([u8; 6], [u8; 6]) {
    (NET_A.gateway_mac(), A1.mac)
}

#[test]
fn bpf_encapsulation() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let frame = udp_ports(to_gateway(), (A1.ip, 40_000), (REMOTE_A, 53), 64, b"hi");
        let sport = sport_of(&frame);
        assert!(sport >= VXLAN_SPORT_MIN);
        let want = encapsulated(&frame, (NODE_IP, REMOTE_UNDERLAY), sport, VNI_A, 0x08);
        let out = check(
            &mut dp,
            "UDP to a remote peer of the same network: outer headers, VNI, zero UDP checksum, \
             TTL kept (bridged)",
            Hook::Container,
            &frame,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: want.clone(),
                delivered_to: None,
            },
        );
        assert_eq!(&out[40..42], &[0, 0], "IPv4 VXLAN: UDP checksum zero");
        let again = check(
            &mut dp,
            "the same flow again: the same source port",
            Hook::Container,
            &frame,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: want,
                delivered_to: None,
            },
        );
        assert_eq!(&again[34..36], &sport.to_be_bytes());

        let mut ports = std::collections::BTreeSet::new();
        for client_port in 40_000..40_016u16 {
            let f = udp_ports(
                to_gateway(),
                (A1.ip, client_port),
                (REMOTE_A, 53),
                64,
                b"hi",
            );
            let out = dp.run(&f)?.output;
            ports.insert(u16::from_be_bytes([out[34], out[35]]));
        }
        assert!(
            ports.len() >= 12,
            "16 flows should spread over source ports, got {ports:?}"
        );

        let syn = tcp_syn(to_gateway(), A1.ip, REMOTE_B, 64);
        check(
            &mut dp,
            "TCP SYN to a remote peer of a connected network: TTL decremented, VNI of the \
             destination network",
            Hook::Container,
            &syn,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: encapsulated(
                    &ttl_decremented(&syn),
                    (NODE_IP, REMOTE_UNDERLAY),
                    sport_of(&syn),
                    VNI_B,
                    0x08,
                ),
                delivered_to: None,
            },
        );

        check(
            &mut dp,
            "a network-A address no node announced: no route",
            Hook::Container,
            &udp(to_gateway(), A1.ip, UNROUTED_A, 64, b"x"),
            Expect::Drop(Drop::OverlayNoRoute),
        );
        check(
            &mut dp,
            "an empty address of this node's own pod CIDR: no such endpoint",
            Hook::Container,
            &udp(to_gateway(), A1.ip, EMPTY_LOCAL_A, 64, b"x"),
            Expect::Drop(Drop::NoSuchEndpoint),
        );
        check(
            &mut dp,
            "TTL 1 across networks",
            Hook::Container,
            &tcp_syn(to_gateway(), A1.ip, REMOTE_B, 1),
            Expect::Drop(Drop::TtlExceeded),
        );

        check(
            &mut dp,
            "ARP for a remote peer of the same network: answered with the gateway MAC \
             (proxy ARP), nothing flooded",
            Hook::Container,
            &arp_request(A1.mac, A1.ip, REMOTE_A),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::ArpReplied,
                output: arp(
                    A1.mac,
                    NET_A.gateway_mac(),
                    2,
                    (NET_A.gateway_mac(), REMOTE_A),
                    (A1.mac, A1.ip),
                ),
                delivered_to: None,
            },
        );
        check(
            &mut dp,
            "ARP for a remote address of another network is not answered",
            Hook::Container,
            &arp_request(A1.mac, A1.ip, REMOTE_B),
            Expect::Drop(Drop::ArpUnknownTarget),
        );
        Ok(())
    })
}

#[test]
fn tunnel_encapsulation() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_TUNNEL)?;
        let frame = udp_ports(to_gateway(), (A1.ip, 40_000), (REMOTE_A, 53), 64, b"hi");
        // The vxlan device adds the outer headers; the program hands it the
        // inner frame addressed VTEP to VTEP.
        let mut want = frame.clone();
        want[..6].copy_from_slice(&REMOTE_VTEP);
        want[6..12].copy_from_slice(&LOCAL_VTEP);
        check(
            &mut dp,
            "tunnel mode: inner frame VTEP to VTEP, redirected to the vxlan device",
            Hook::Container,
            &frame,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapTunnel,
                output: want,
                delivered_to: None,
            },
        );
        let valid = arriving(
            &udp(vtep_to_vtep(), REMOTE_A, A2.ip, 63, b"in"),
            VNI_A,
            0x08,
        );
        check(
            &mut dp,
            "tunnel mode: valid VXLAN is left to the kernel's vxlan device",
            Hook::Uplink,
            &valid,
            Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::VxlanToKernel,
                output: valid.clone(),
                delivered_to: None,
            },
        );
        check(
            &mut dp,
            "tunnel mode: an unknown VNI is still dropped before the kernel sees it",
            Hook::Uplink,
            &arriving(&udp(vtep_to_vtep(), REMOTE_A, A2.ip, 63, b"in"), 999, 0x08),
            Expect::Drop(Drop::VxlanUnknownVni),
        );
        Ok(())
    })
}

#[test]
fn bpf_decapsulation() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let inner = udp(vtep_to_vtep(), REMOTE_A, A2.ip, 64, b"from afar");
        let mut want = vec![];
        want.extend_from_slice(&A2.mac);
        want.extend_from_slice(&NET_A.gateway_mac());
        want.extend_from_slice(&inner[12..]);
        check(
            &mut dp,
            "VXLAN for A2 with A's VNI: outer headers stripped, delivered with A's MACs",
            Hook::Uplink,
            &arriving(&inner, VNI_A, 0x08),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::DecapDelivered,
                output: want,
                delivered_to: Some(A2.ifindex),
            },
        );
        check(
            &mut dp,
            "unknown VNI",
            Hook::Uplink,
            &arriving(&inner, 999, 0x08),
            Expect::Drop(Drop::VxlanUnknownVni),
        );
        check(
            &mut dp,
            "B's VNI carrying a packet for A's endpoint: a VNI only delivers into its network",
            Hook::Uplink,
            &arriving(&inner, VNI_B, 0x08),
            Expect::Drop(Drop::VxlanWrongNetwork),
        );
        check(
            &mut dp,
            "VXLAN flags without the I bit",
            Hook::Uplink,
            &arriving(&inner, VNI_A, 0x00),
            Expect::Drop(Drop::VxlanBadFlags),
        );

        let mut bad_len = arriving(&inner, VNI_A, 0x08);
        let longer = u16::from_be_bytes([bad_len[38], bad_len[39]]) + 4;
        bad_len[38..40].copy_from_slice(&longer.to_be_bytes());
        check(
            &mut dp,
            "UDP length longer than the IPv4 packet",
            Hook::Uplink,
            &bad_len,
            Expect::Drop(Drop::VxlanBadUdpLength),
        );

        // Outer IPv4 + UDP + 4 bytes of VXLAN: the header is cut short.
        let mut cut = arriving(&inner, VNI_A, 0x08);
        cut.truncate(14 + 20 + 8 + 4);
        cut[16..18].copy_from_slice(&32u16.to_be_bytes());
        cut[24..26].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&cut[14..34]);
        cut[24..26].copy_from_slice(&sum.to_be_bytes());
        cut[38..40].copy_from_slice(&12u16.to_be_bytes());
        check(
            &mut dp,
            "VXLAN header cut short",
            Hook::Uplink,
            &cut,
            Expect::Drop(Drop::VxlanTruncated),
        );

        let arp_inside = arp(
            REMOTE_VTEP,
            LOCAL_VTEP,
            1,
            (LOCAL_VTEP, REMOTE_A),
            ([0; 6], A2.ip),
        );
        let mut padded = arp_inside.clone();
        padded.resize(60, 0);
        check(
            &mut dp,
            "inner frame that is not IPv4",
            Hook::Uplink,
            &arriving(&padded, VNI_A, 0x08),
            Expect::Drop(Drop::VxlanBadInner),
        );

        let mut to_other = arriving(&inner, VNI_A, 0x08);
        to_other[30..34].copy_from_slice(&[192, 168, 77, 9]);
        to_other[24..26].copy_from_slice(&[0, 0]);
        let sum = internet_checksum(&to_other[14..34]);
        to_other[24..26].copy_from_slice(&sum.to_be_bytes());
        check(
            &mut dp,
            "VXLAN to another underlay address is not decapsulated (left to the stack)",
            Hook::Uplink,
            &to_other,
            Expect::Forward {
                action: TC_ACT_OK,
                kind: Forward::PassedToStack,
                output: to_other.clone(),
                delivered_to: None,
            },
        );
        Ok(())
    })
}

/// The overlay's inner MTU in [`overlay_topology`].
const OVERLAY_MTU: usize = 1450;
/// The MSS that fits it: the MTU less IPv4 and TCP headers.
const CLAMPED_MSS: u16 = 1410;

/// A UDP frame from A1 to `dst` whose IPv4 packet is `ip_len` bytes.
fn udp_of_ip_len(dst: Ipv4Addr, ip_len: usize) -> Vec<u8> {
    udp_ports(
        to_gateway(),
        (A1.ip, 40_000),
        (dst, 53),
        64,
        &vec![0x5a; ip_len - 28],
    )
}

/// The MSS option bytes for `mss`.
fn mss(mss: u16) -> [u8; 4] {
    let v = mss.to_be_bytes();
    [2, 4, v[0], v[1]]
}

/// TCP options: `before`, then the MSS option, then `after`.
fn options(before: &[u8], value: u16, after: &[u8]) -> Vec<u8> {
    [before, &mss(value), after].concat()
}

/// Packets too big for the overlay: with DF an ICMP fragmentation-needed
/// goes back to the sender from its gateway (exact bytes: the builder in
/// `frames` follows RFC 792/1191 and Linux's TOS/TTL, checksums computed
/// here from scratch), quoting the packet as it was sent (IPv4 options
/// included, TTL not yet decremented when routed); without DF a named
/// drop; a packet of exactly the MTU is encapsulated.
#[test]
fn oversized_packets_get_frag_needed_or_a_named_drop() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        for mode in [ENCAP_BPF, ENCAP_TUNNEL] {
            let mut dp = overlay_topology(config.clone(), mode)?;
            let fits = udp_of_ip_len(REMOTE_A, OVERLAY_MTU);
            let out = dp.run(&fits)?;
            assert_eq!(
                out.action, TC_ACT_REDIRECT,
                "mode {mode}: a packet of exactly the overlay MTU is encapsulated"
            );

            let rows = [
                (
                    "one byte over the MTU, DF set",
                    udp_of_ip_len(REMOTE_A, OVERLAY_MTU + 1),
                ),
                (
                    "over the MTU with IPv4 options: the quote keeps them",
                    with_ipv4_options(
                        &udp_of_ip_len(REMOTE_A, OVERLAY_MTU - 7),
                        &[0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00],
                    ),
                ),
                (
                    "routed to a connected network: quoted with its TTL as sent",
                    udp_of_ip_len(REMOTE_B, 1500),
                ),
                ("a TCP segment over the MTU", {
                    let mut f =
                        tcp_with_options(to_gateway(), A1.ip, REMOTE_A, true, &[1, 1, 1, 1]);
                    f.extend_from_slice(&vec![0; 1500 - (f.len() - ETH_HLEN)]);
                    let len = (f.len() - ETH_HLEN) as u16;
                    f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&len.to_be_bytes());
                    weft_tests::frames::refresh_ipv4_checksum(&mut f);
                    f
                }),
            ];
            for (what, frame) in rows {
                let want = frag_needed(
                    &frame,
                    NET_A.gateway,
                    NET_A.gateway_mac(),
                    OVERLAY_MTU as u16,
                );
                assert!(l4_checksum_valid(&want), "the expected ICMP is well formed");
                check(
                    &mut dp,
                    &format!("mode {mode}: {what}"),
                    Hook::Container,
                    &frame,
                    Expect::Forward {
                        action: TC_ACT_REDIRECT,
                        kind: Forward::FragNeededSent,
                        output: want,
                        delivered_to: None,
                    },
                );
            }
            check(
                &mut dp,
                &format!("mode {mode}: one byte over the MTU without DF"),
                Hook::Container,
                &without_df(&udp_of_ip_len(REMOTE_A, OVERLAY_MTU + 1)),
                Expect::Drop(Drop::OverlayMtuExceeded),
            );
        }
        Ok(())
    })
}

/// TCP MSS clamping: a SYN (or SYN-ACK) entering the overlay from a
/// container, or leaving it into one, has an MSS option above the overlay
/// MTU less 40 lowered to it, wherever the option sits (an odd offset
/// included: the checksum update is checked by etherparse's checksum of
/// the expected frame); smaller values, non-SYN segments and malformed
/// option lists are left alone.
#[test]
fn tcp_mss_is_clamped_to_the_overlay() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let syn = |opts: &[u8]| tcp_with_options(to_gateway(), A1.ip, REMOTE_A, false, opts);
        let syn_ack = |opts: &[u8]| tcp_with_options(to_gateway(), A1.ip, REMOTE_A, true, opts);
        // Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale.
        let linux_tail = [4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let rows: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            (
                "SYN with MSS 1460 first, as Linux sends it",
                syn(&options(&[], 1460, &linux_tail)),
                syn(&options(&[], CLAMPED_MSS, &linux_tail)),
            ),
            (
                "SYN-ACK with MSS 65495 (a loopback-sized MTU)",
                syn_ack(&options(&[], 65495, &[])),
                syn_ack(&options(&[], CLAMPED_MSS, &[])),
            ),
            (
                "MSS value at an odd offset (after one NOP)",
                syn(&options(&[1], 1460, &[1, 1, 1])),
                syn(&options(&[1], CLAMPED_MSS, &[1, 1, 1])),
            ),
            (
                "MSS after window scale and SACK permitted",
                syn(&options(&[1, 3, 3, 7, 4, 2], 9000, &[1, 1])),
                syn(&options(&[1, 3, 3, 7, 4, 2], CLAMPED_MSS, &[1, 1])),
            ),
            (
                "MSS below the clamp is kept",
                syn(&options(&[], 1200, &[])),
                syn(&options(&[], 1200, &[])),
            ),
            (
                "MSS equal to the clamp is kept",
                syn(&options(&[], CLAMPED_MSS, &[])),
                syn(&options(&[], CLAMPED_MSS, &[])),
            ),
            (
                "an option of length 0 ends the walk: nothing changed",
                syn(&[3, 0, 2, 4, 5, 0xb4, 1, 1]),
                syn(&[3, 0, 2, 4, 5, 0xb4, 1, 1]),
            ),
            (
                "end-of-options before the MSS: nothing changed",
                syn(&[0, 0, 0, 0, 2, 4, 5, 0xb4]),
                syn(&[0, 0, 0, 0, 2, 4, 5, 0xb4]),
            ),
            (
                "SYN without options",
                tcp_syn(to_gateway(), A1.ip, REMOTE_A, 64),
                tcp_syn(to_gateway(), A1.ip, REMOTE_A, 64),
            ),
        ];
        for (what, frame, clamped) in rows {
            assert!(
                l4_checksum_valid(&clamped),
                "{what}: expected frame is valid"
            );
            check(
                &mut dp,
                &format!("into the overlay: {what}"),
                Hook::Container,
                &frame,
                Expect::Forward {
                    action: TC_ACT_REDIRECT,
                    kind: Forward::EncapBpf,
                    output: encapsulated(
                        &clamped,
                        (NODE_IP, REMOTE_UNDERLAY),
                        sport_of(&frame),
                        VNI_A,
                        0x08,
                    ),
                    delivered_to: None,
                },
            );
        }

        // A segment that is not a SYN keeps even an oversized MSS option.
        let mut ack = tcp_with_options(to_gateway(), A1.ip, REMOTE_A, true, &mss(1460));
        ack[ETH_HLEN + 20 + 13] = 0x10;
        weft_tests::frames::refresh_l4_checksum(&mut ack);
        check(
            &mut dp,
            "into the overlay: an ACK with an MSS option is not touched",
            Hook::Container,
            &ack,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: encapsulated(
                    &ack,
                    (NODE_IP, REMOTE_UNDERLAY),
                    sport_of(&ack),
                    VNI_A,
                    0x08,
                ),
                delivered_to: None,
            },
        );

        // Out of the overlay: a SYN-ACK from a peer that did not clamp
        // (e.g. a kernel VXLAN node) is clamped before delivery.
        let from_peer = |opts: &[u8]| tcp_with_options(vtep_to_vtep(), REMOTE_A, A2.ip, true, opts);
        let delivered = |frame: Vec<u8>| {
            let mut want = vec![];
            want.extend_from_slice(&A2.mac);
            want.extend_from_slice(&NET_A.gateway_mac());
            want.extend_from_slice(&frame[12..]);
            want
        };
        check(
            &mut dp,
            "out of the overlay: SYN-ACK with MSS 1460 is clamped",
            Hook::Uplink,
            &arriving(&from_peer(&options(&[], 1460, &[1, 1, 1, 1])), VNI_A, 0x08),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::DecapDelivered,
                output: delivered(from_peer(&options(&[], CLAMPED_MSS, &[1, 1, 1, 1]))),
                delivered_to: Some(A2.ifindex),
            },
        );
        Ok(())
    })
}

/// Tunnel mode clamps too: the inner frame handed to the vxlan device
/// carries the lowered MSS.
#[test]
fn tunnel_mode_clamps_mss() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_TUNNEL)?;
        let syn = |v| tcp_with_options(to_gateway(), A1.ip, REMOTE_A, false, &options(&[], v, &[]));
        let mut want = syn(CLAMPED_MSS);
        want[..6].copy_from_slice(&REMOTE_VTEP);
        want[6..12].copy_from_slice(&LOCAL_VTEP);
        check(
            &mut dp,
            "tunnel mode: SYN with MSS 1460 handed to the vxlan device with 1410",
            Hook::Container,
            &syn(1460),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapTunnel,
                output: want,
                delivered_to: None,
            },
        );
        Ok(())
    })
}

/// A published port's client that is a pod on the remote node and did
/// not masquerade: its SYN arrives on the uplink from its pod address and
/// is DNATed into A1; A1's SYN-ACK to that pod address goes into the
/// overlay, so it is translated (source: the node's address and published
/// port, TTL - 1, checksums as etherparse computes them) and then
/// encapsulated toward the client's node.
#[test]
fn reply_to_a_remote_pod_client_of_a_published_port() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        dp.publish(Proto::Tcp, 8080, A1.ip, 80)?;
        let client = (REMOTE_A, 50_001);
        let syn = TcpFlags {
            syn: true,
            ..TcpFlags::default()
        };
        let syn_ack = TcpFlags { ack: true, ..syn };
        check(
            &mut dp,
            "SYN from a remote pod to the published port, over the underlay",
            Hook::Uplink,
            &tcp((UPLINK_MAC, ROUTER_MAC), client, (NODE_IP, 8080), syn, 64),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Dnat,
                output: tcp((A1.mac, NET_A.gateway_mac()), client, (A1.ip, 80), syn, 63),
                delivered_to: Some(A1.ifindex),
            },
        );
        let translated = tcp(to_gateway(), (NODE_IP, 8080), client, syn_ack, 63);
        check(
            &mut dp,
            "A1's SYN-ACK: translated back, then encapsulated to the client's node",
            Hook::Container,
            &tcp(to_gateway(), (A1.ip, 80), client, syn_ack, 64),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: encapsulated(
                    &translated,
                    (NODE_IP, REMOTE_UNDERLAY),
                    sport_of(&translated),
                    VNI_A,
                    0x08,
                ),
                delivered_to: None,
            },
        );
        // Another flow to the same remote pod is not a published port's
        // reply: encapsulated unchanged.
        let plain = tcp(to_gateway(), (A1.ip, 81), client, syn_ack, 64);
        check(
            &mut dp,
            "A1's unrelated segment to the same pod: encapsulated untranslated",
            Hook::Container,
            &plain,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: encapsulated(
                    &plain,
                    (NODE_IP, REMOTE_UNDERLAY),
                    sport_of(&plain),
                    VNI_A,
                    0x08,
                ),
                delivered_to: None,
            },
        );
        Ok(())
    })
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[test]
fn xdp_early_drop() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let inner = udp(vtep_to_vtep(), REMOTE_A, A2.ip, 64, b"in");
        let mut to_other = arriving(&inner, VNI_A, 0x08);
        to_other[30..34].copy_from_slice(&[192, 168, 77, 9]);
        let rows: [(&str, Vec<u8>, u32, Option<&str>); 5] = [
            (
                "VXLAN with a known VNI to this node passes (TC decapsulates)",
                arriving(&inner, VNI_A, 0x08),
                XDP_PASS,
                None,
            ),
            (
                "unknown VNI is dropped in XDP",
                arriving(&inner, 999, 0x08),
                XDP_DROP,
                Some("from_uplink drop:vxlan_unknown_vni"),
            ),
            (
                "VXLAN to another underlay address is dropped in XDP",
                to_other,
                XDP_DROP,
                Some("from_uplink drop:vxlan_not_for_node"),
            ),
            (
                "malformed VXLAN (no I flag) is left to TC, which names it",
                arriving(&inner, VNI_A, 0x00),
                XDP_PASS,
                None,
            ),
            (
                "plain UDP to the node is not XDP's business",
                udp_ports(
                    ([0x02, 0x77, 0, 0, 0, 2], [0x02, 0x77, 0, 0, 0, 3]),
                    (REMOTE_UNDERLAY, 5000),
                    (NODE_IP, 53),
                    64,
                    b"q",
                ),
                XDP_PASS,
                None,
            ),
        ];
        for (what, frame, action, counter) in rows {
            let before = dp.all_counters()?;
            let got = dp.run_xdp(&frame)?;
            let after = dp.all_counters()?;
            let moved: Vec<String> = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| a.1 != b.1)
                .map(|(b, a)| format!("{} +{}", b.0, a.1 - b.1))
                .collect();
            assert_eq!(got.action, action, "{what}: XDP verdict");
            let want: Vec<String> = counter.iter().map(|c| format!("{c} +1")).collect();
            assert_eq!(moved, want, "{what}: counters");
            assert_eq!(got.output, frame, "{what}: XDP never changes the frame");
        }
        Ok(())
    })
}

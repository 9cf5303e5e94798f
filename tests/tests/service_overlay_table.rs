//! Services with a backend on another node, through BPF_PROG_TEST_RUN
//! with exact bytes: a container's SYN to the VIP that Maglev gives the
//! remote backend is DNATed and encapsulated to that backend's node (bpf
//! mode), while one the table gives the local backend is delivered here;
//! the remote backend's reply, arriving over VXLAN untranslated (its node
//! has no conntrack entry for it), gets the VIP and service port back
//! after decapsulation, before delivery into the client; a segment of no
//! service connection is delivered as it came; and a backend that left
//! the service keeps its established connection translated. A service
//! published on the node's port (`weft publish SERVICE PORT`) spreads
//! outside clients over this node's backends only, by the Maglev table
//! of those (a flow the cluster table gives the remote backend goes to a
//! local one), with the usual DNAT and reverse DNAT; with no local
//! backend left it drops as `service_no_backend`.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use weft::{model::Model, render::maglev};
use weft_api::{
    records::RemoteEndpoint,
    requests::{CreateService, Publish},
};
use weft_common::{
    maps::{CT_DIR_ORIGINAL, CT_FLAG_SERVICE, CtKey, ENCAP_BPF, IPPROTO_TCP},
    reason::{Drop, Forward},
};
use weft_tests::{
    fixture::{Datapath, TC_ACT_REDIRECT},
    frames::{TcpFlags, tcp},
    nat_frames::translated,
    overlay_frames::{
        REMOTE_A, REMOTE_UNDERLAY, VNI_A, arriving, encapsulated, overlay_topology, sport_of,
        vtep_to_vtep,
    },
    table::{self, Expect, Hook},
    topology::{A1, A2, NET_A, NODE_IP, NatNode, OUTSIDE, ROUTER_MAC, UPLINK_MAC},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const SIZE: u32 = weft_api::records::DEFAULT_MAGLEV_SIZE;

const SYN: TcpFlags = TcpFlags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
const SYN_ACK: TcpFlags = TcpFlags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};

fn check(dp: &mut Datapath, what: &str, hook: Hook, frame: &[u8], expect: Expect) -> Vec<u8> {
    table::check(dp, what, hook, frame, &expect).unwrap()
}

fn to_gateway() -> ([u8; 6], [u8; 6]) {
    (NET_A.gateway_mac(), A1.mac)
}

/// The remote node's endpoint at [`REMOTE_A`], labelled `app=web` (or
/// not), as the cluster store lists it.
fn remote_backend(labelled: bool) -> RemoteEndpoint {
    RemoteEndpoint {
        name: "far".into(),
        network: NET_A.name(),
        ip: REMOTE_A,
        mac: weft::model::Mac([0x02, 0x57, 10, 1, 0, 130]),
        node: "remote".into(),
        labels: if labelled {
            [("app".to_string(), "web".to_string())].into()
        } else {
            Default::default()
        },
        terminating: false,
    }
}

/// `m` with service `web` (80/tcp -> 8080) selecting `app=web`: A2 here
/// and [`remote_backend`] on the remote node.
fn with_service(mut m: Model) -> Result<Model> {
    m.endpoint_mut(&A2.name())
        .context("A2 in the model")?
        .labels
        .insert("app".into(), "web".into());
    m.remote_endpoints = vec![remote_backend(true)];
    let req = CreateService {
        name: "web".into(),
        ports: vec!["80/tcp:8080".into()],
        selector: vec!["app=web".into()],
        ..CreateService::default()
    };
    Ok(weft::model::service::create(&m, &req)?.0)
}

/// A1's first source port from 41000 whose flow the Maglev table of {A2,
/// remote} gives to `backend`.
fn port_for(backend: Ipv4Addr) -> u16 {
    let table = maglev::build(SIZE, &[A2.ip, REMOTE_A]).expect("two backends");
    (41_000..)
        .find(|&p| {
            table.backend(maglev::flow_slot(A1.ip, p, 80, IPPROTO_TCP, SIZE) as usize) == backend
        })
        .expect("some port maps to each backend")
}

#[test]
fn remote_backend_is_reached_over_the_overlay_and_its_reply_translated_after_decap() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let m = with_service(dp.model().clone())?;
        dp.set_model(m)?;

        let far = port_for(REMOTE_A);
        let syn = tcp(to_gateway(), (A1.ip, far), (VIP, 80), SYN, 64);
        let inner = translated(&syn, false, REMOTE_A, 8080, None);
        check(
            &mut dp,
            "SYN to the VIP, Maglev picks the remote backend: DNATed (TTL - 1) and encapsulated \
             to its node",
            Hook::Container,
            &syn,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::EncapBpf,
                output: encapsulated(
                    &inner,
                    (NODE_IP, REMOTE_UNDERLAY),
                    sport_of(&inner),
                    VNI_A,
                    0x08,
                ),
                delivered_to: None,
            },
        );
        let back = CtKey::new(
            IPPROTO_TCP,
            u32::from_ne_bytes(REMOTE_A.octets()),
            u32::from_ne_bytes(A1.ip.octets()),
            8080u16.to_be_bytes(),
            far.to_be_bytes(),
        );
        let entry = dp.ct_get(&back)?.context("the backend-side entry")?;
        assert!(
            entry.flags & CT_FLAG_SERVICE != 0 && entry.direction == CT_DIR_ORIGINAL,
            "the backend side of a service connection: {entry:?}"
        );

        let reply = tcp(vtep_to_vtep(), (REMOTE_A, 8080), (A1.ip, far), SYN_ACK, 63);
        let delivered = tcp(
            (A1.mac, NET_A.gateway_mac()),
            (VIP, 80),
            (A1.ip, far),
            SYN_ACK,
            63,
        );
        check(
            &mut dp,
            "the remote backend's SYN-ACK over VXLAN: decapsulated, source VIP:80 again, \
             delivered into A1",
            Hook::Uplink,
            &arriving(&reply, VNI_A, 0x08),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::DecapDelivered,
                output: delivered,
                delivered_to: Some(A1.ifindex),
            },
        );

        let other = tcp(
            vtep_to_vtep(),
            (REMOTE_A, 8080),
            (A1.ip, far + 1),
            SYN_ACK,
            63,
        );
        let mut as_sent = vec![];
        as_sent.extend_from_slice(&A1.mac);
        as_sent.extend_from_slice(&NET_A.gateway_mac());
        as_sent.extend_from_slice(&other[12..]);
        check(
            &mut dp,
            "a segment from the same pod on no service connection: delivered as it came",
            Hook::Uplink,
            &arriving(&other, VNI_A, 0x08),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::DecapDelivered,
                output: as_sent,
                delivered_to: Some(A1.ifindex),
            },
        );

        let near = port_for(A2.ip);
        let syn = tcp(to_gateway(), (A1.ip, near), (VIP, 80), SYN, 64);
        check(
            &mut dp,
            "SYN the table gives the local backend: DNATed and delivered into A2",
            Hook::Container,
            &syn,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::ServiceDnat,
                output: translated(
                    &syn,
                    false,
                    A2.ip,
                    8080,
                    Some((A2.mac, NET_A.gateway_mac())),
                ),
                delivered_to: Some(A2.ifindex),
            },
        );

        // The remote backend leaves the service (its labels changed on its
        // node): the new table is A2's alone, the established connection
        // stays on the remote backend and its replies still get the VIP.
        let mut m = dp.model().clone();
        m.remote_endpoints = vec![remote_backend(false)];
        dp.set_model(m)?;
        let ack = TcpFlags {
            ack: true,
            ..TcpFlags::default()
        };
        let data = tcp(vtep_to_vtep(), (REMOTE_A, 8080), (A1.ip, far), ack, 63);
        check(
            &mut dp,
            "after the remote backend left the service: its established connection's reply is \
             still translated",
            Hook::Uplink,
            &arriving(&data, VNI_A, 0x08),
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::DecapDelivered,
                output: tcp(
                    (A1.mac, NET_A.gateway_mac()),
                    (VIP, 80),
                    (A1.ip, far),
                    ack,
                    63,
                ),
                delivered_to: Some(A1.ifindex),
            },
        );
        let syn = tcp(to_gateway(), (A1.ip, far + 7), (VIP, 80), SYN, 64);
        check(
            &mut dp,
            "a new connection after it left goes to the local backend",
            Hook::Container,
            &syn,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::ServiceDnat,
                output: translated(
                    &syn,
                    false,
                    A2.ip,
                    8080,
                    Some((A2.mac, NET_A.gateway_mac())),
                ),
                delivered_to: Some(A2.ifindex),
            },
        );
        Ok(())
    })
}

/// The backend `table` gives an outside client's flow from `sport` to
/// the node's port 8080.
fn outside_pick(table: &maglev::Table, sport: u16) -> Ipv4Addr {
    table.backend(maglev::flow_slot(OUTSIDE, sport, 8080, IPPROTO_TCP, SIZE) as usize)
}

#[test]
fn a_published_service_spreads_outside_clients_over_local_backends() -> Result<()> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let mut m = with_service(dp.model().clone())?;
        m.endpoint_mut(&A1.name())
            .context("A1 in the model")?
            .labels
            .insert("app".into(), "web".into());
        let req = Publish {
            endpoint: "web".into(),
            spec: "8080".into(),
        };
        let (m, added) = weft::model::publish::publish(&m, &req)?;
        assert!(
            added[0].service && added[0].container_port == 80,
            "{added:?}"
        );
        dp.set_model(m)?;

        let local = maglev::build(SIZE, &[A1.ip, A2.ip]).expect("two local backends");
        let cluster = maglev::build(SIZE, &[A1.ip, A2.ip, REMOTE_A]).expect("three backends");
        let to_a1 = (50_000..)
            .find(|&p| outside_pick(&local, p) == A1.ip)
            .expect("a port for A1");
        let syn = tcp(
            (UPLINK_MAC, ROUTER_MAC),
            (OUTSIDE, to_a1),
            (NODE_IP, 8080),
            SYN,
            60,
        );
        check(
            &mut dp,
            "outside SYN to the published service: DNATed to the local backend Maglev picks",
            Hook::Uplink,
            &syn,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Dnat,
                output: translated(
                    &syn,
                    false,
                    A1.ip,
                    8080,
                    Some((A1.mac, NET_A.gateway_mac())),
                ),
                delivered_to: Some(A1.ifindex),
            },
        );
        let reply = tcp(to_gateway(), (A1.ip, 8080), (OUTSIDE, to_a1), SYN_ACK, 64);
        check(
            &mut dp,
            "the backend's SYN-ACK leaves as the node's address and published port",
            Hook::Container,
            &reply,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::ReverseDnat,
                output: translated(&reply, true, NODE_IP, 8080, None),
                delivered_to: None,
            },
        );

        let remote_flow = (50_000..)
            .find(|&p| outside_pick(&cluster, p) == REMOTE_A)
            .expect("a port the cluster table gives the remote backend");
        let backend = outside_pick(&local, remote_flow);
        let (mac, ifindex) = if backend == A1.ip {
            (A1.mac, A1.ifindex)
        } else {
            (A2.mac, A2.ifindex)
        };
        let syn = tcp(
            (UPLINK_MAC, ROUTER_MAC),
            (OUTSIDE, remote_flow),
            (NODE_IP, 8080),
            SYN,
            60,
        );
        check(
            &mut dp,
            "a flow the cluster table gives the remote backend: a local one takes it",
            Hook::Uplink,
            &syn,
            Expect::Forward {
                action: TC_ACT_REDIRECT,
                kind: Forward::Dnat,
                output: translated(&syn, false, backend, 8080, Some((mac, NET_A.gateway_mac()))),
                delivered_to: Some(ifindex),
            },
        );

        // No local backend left: refused by name; the remote one is no
        // help to an outside client here.
        let mut m = dp.model().clone();
        for ep in [A1, A2] {
            m.endpoint_mut(&ep.name())
                .context("endpoint")?
                .labels
                .clear();
        }
        dp.set_model(m)?;
        let syn = tcp(
            (UPLINK_MAC, ROUTER_MAC),
            (OUTSIDE, remote_flow + 1),
            (NODE_IP, 8080),
            SYN,
            60,
        );
        check(
            &mut dp,
            "no local backend: service_no_backend",
            Hook::Uplink,
            &syn,
            Expect::Drop(Drop::ServiceNoBackend),
        );
        Ok(())
    })
}

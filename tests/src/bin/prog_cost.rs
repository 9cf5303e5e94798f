//! Per-packet cost of each datapath path, measured by the kernel with
//! BPF_PROG_TEST_RUN on the real JIT-compiled program.
//!
//! A test run with `repeat` runs the program again and again on the same
//! skb, and the kernel reports the mean per run: a path that rewrites the
//! frame meets its own output on the next run. So each path is measured by
//! one of three methods:
//!
//! - **repeat**: paths that leave the frame as it was (bridging, drops,
//!   pass to stack), the mean of `--repeat` runs (default 1,000,000).
//! - **mirrored**: rewriting paths set up so that their output takes the
//!   same path again, median over many calls of the mean of a few hundred
//!   runs each:
//!   - `route`: each network's gateway MAC is the other side's endpoint
//!     MAC, so the routed frame routes again; TTL drops by one per run.
//!   - `snat`, `reverse_snat`, `dnat`, `reverse_dnat`: an established UDP
//!     connection (masqueraded, and one to a published port) on a node
//!     whose address is the container's own, with ports kept, so a
//!     translated packet is again the container's (out) or for the node's
//!     address (in); TTL drops by one per run. Inside a namespace with an
//!     uplink, so `bpf_fib_lookup` finds a route.
//!   - `encap_tunnel`: the sender's MAC is this node's VTEP MAC and its
//!     gateway's the remote VTEP's, so the frame with its inner MACs
//!     written is the sender's again.
//!   - `decap_bpf`: a frame of [`DECAP_LAYERS`] nested VXLAN layers whose
//!     every inner packet is for one local endpoint: each run strips one
//!     layer and delivers, as many runs per call as there are layers.
//! - **single**: the median of single runs on a fresh frame, for `arp_reply`,
//!   `route_single` and `encap_bpf` (bpf-mode encapsulation grows the skb
//!   by 50 bytes per run, past the 64 bytes of headroom (`NET_SKB_PAD`)
//!   a test-run skb has: repeats would measure head reallocations, not the
//!   path). That method
//!   includes the kernel's timer reads; `bridge_single` is printed as its
//!   baseline.
//!
//! Every figure includes the test-run loop's own per-run overhead. A no-op
//! program (`weft_calibrate`), measured by the same method in the same
//! run, gives `program_ns` (the figure less the no-op's: the cost of
//! weft's code itself) and `noop_ratio` (the figure over the no-op's: the
//! path in units of this machine's test-run overhead, for comparing
//! machines; the overhead grows under load, so compare quiet runs).
//!
//! `prog_cost [--json] [--repeat N]`

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Result, bail};
use weft::model::{Mac, NodeUplink, Proto};
use weft_common::{
    maps::{ENCAP_BPF, ENCAP_TUNNEL},
    reason::Forward,
};
use weft_tests::{
    fixture::{Datapath, Ep, RunOutcome, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, model},
    frames::{arp_request, udp, udp_ports},
    overlay_frames::{REMOTE_A, VNI_A, arriving, overlay_model, overlay_topology, vtep_to_vtep},
    topology::{
        A1, A2, B1, C1, NET_A, NET_B, NODE_IP, NatNode, OUTSIDE, ROUTER_MAC, UPLINK_MAC,
        nat_topology, topology,
    },
};

/// Runs per call of a mirrored path that decrements TTL: the frame starts
/// at TTL 255 and must not expire.
const MIRRORED_REPEAT: u32 = 200;
/// Calls per mirrored path (the median of their means is reported).
const MIRRORED_CALLS: usize = 5_001;
/// Single runs per path measured by single runs.
const SINGLE_RUNS: usize = 20_001;
/// VXLAN layers of the mirrored decapsulation frame: as many as fit a
/// test-run skb (a page less headroom and shared info) at 50 bytes each.
const DECAP_LAYERS: u32 = 64;

/// A path that leaves the frame as it was or is measured by single runs.
struct Path {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    rewrites: bool,
}

struct Measured {
    name: &'static str,
    ns_per_packet: f64,
    /// The no-op program's figure by the same method, in the same run.
    noop_ns: f64,
    method: String,
}

impl Measured {
    /// `ns_per_packet` less the test-run loop's own overhead.
    fn program_ns(&self) -> f64 {
        self.ns_per_packet - self.noop_ns
    }

    /// `ns_per_packet` in units of the no-op program's figure.
    fn noop_ratio(&self) -> f64 {
        self.ns_per_packet / self.noop_ns
    }
}

/// A mirrored path's figure and the no-op program's, by the same method.
struct Mirrored {
    ns: f64,
    noop: f64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let repeat = match args.iter().position(|a| a == "--repeat") {
        Some(i) => match args.get(i + 1).map(|v| v.parse::<u32>()) {
            Some(Ok(n)) if n > 0 => n,
            _ => bail!("--repeat needs a positive whole number"),
        },
        None => 1_000_000,
    };
    let mirrored_method = |repeat: u32| {
        format!("mirrored, median over {MIRRORED_CALLS} calls of the mean of repeat={repeat}")
    };
    let single_method = format!("median of {SINGLE_RUNS} single runs");

    let route = mirrored_route()?;
    let to_gw = (NET_A.gateway_mac(), A1.mac);
    let payload = [0u8; 18];
    let paths = [
        Path {
            name: "bridge",
            frame: udp((A2.mac, A1.mac), A1.ip, A2.ip, 64, &payload),
            action: TC_ACT_REDIRECT,
            rewrites: false,
        },
        Path {
            name: "route_single",
            frame: udp(to_gw, A1.ip, B1.ip, 64, &payload),
            action: TC_ACT_REDIRECT,
            rewrites: true,
        },
        Path {
            name: "arp_reply",
            frame: arp_request(A1.mac, A1.ip, NET_A.gateway),
            action: TC_ACT_REDIRECT,
            rewrites: true,
        },
        Path {
            name: "drop_isolated",
            frame: udp(to_gw, A1.ip, C1.ip, 64, &payload),
            action: TC_ACT_SHOT,
            rewrites: false,
        },
        Path {
            name: "pass_to_stack",
            frame: udp(to_gw, A1.ip, Ipv4Addr::new(192, 0, 2, 1), 64, &payload),
            action: TC_ACT_OK,
            rewrites: false,
        },
    ];

    let mut dp = topology()?;
    let noop_repeat = dp.calibration_ns(&paths[0].frame, repeat)?;
    let noop_single = median_f64(SINGLE_RUNS, || dp.calibration_ns(&paths[0].frame, 1))?;
    let mut results = vec![Measured {
        name: "route",
        ns_per_packet: route.ns,
        noop_ns: route.noop,
        method: mirrored_method(MIRRORED_REPEAT),
    }];
    for path in &paths {
        let first = dp.run(&path.frame)?;
        if first.action != path.action {
            bail!(
                "path {}: expected action {}, got {}",
                path.name,
                path.action,
                first.action
            );
        }
        if path.rewrites {
            results.push(Measured {
                name: path.name,
                ns_per_packet: median_single(&mut dp, &path.frame)?,
                noop_ns: noop_single,
                method: single_method.clone(),
            });
        } else {
            let run = dp.run_repeat(&path.frame, repeat)?;
            results.push(Measured {
                name: path.name,
                ns_per_packet: run.duration.as_nanos() as f64,
                noop_ns: noop_repeat,
                method: format!("mean of repeat={repeat}"),
            });
        }
    }
    for (name, m) in mirrored_nat()? {
        results.push(Measured {
            name,
            ns_per_packet: m.ns,
            noop_ns: m.noop,
            method: format!(
                "{}, established connection, in a namespace with an uplink",
                mirrored_method(MIRRORED_REPEAT)
            ),
        });
    }
    let overlay = overlay()?;
    results.push(Measured {
        name: "encap_bpf",
        ns_per_packet: overlay.encap_bpf,
        noop_ns: overlay.noop_single,
        method: format!(
            "{single_method} (each run grows the skb), in a namespace whose uplink is the underlay"
        ),
    });
    for (name, m, repeat) in [
        ("encap_tunnel", overlay.encap_tunnel, MIRRORED_REPEAT),
        ("decap_bpf", overlay.decap_bpf, DECAP_LAYERS),
    ] {
        results.push(Measured {
            name,
            ns_per_packet: m.ns,
            noop_ns: m.noop,
            method: format!(
                "{}, in a namespace whose uplink is the underlay",
                mirrored_method(repeat)
            ),
        });
    }
    results.push(Measured {
        name: "bridge_single",
        ns_per_packet: median_single(&mut dp, &paths[0].frame)?,
        noop_ns: noop_single,
        method: format!("{single_method} (the bridge path, by the other method)"),
    });
    results.push(Measured {
        name: "noop",
        ns_per_packet: noop_repeat,
        noop_ns: noop_repeat,
        method: format!("no-op program, mean of repeat={repeat} (single runs: {noop_single} ns)"),
    });
    print(&results, json);
    Ok(())
}

/// `calls` test runs of `repeat` runs each through `run`, every one ending
/// in `action`, and as many of the no-op program on `frame`: the medians
/// of their means.
fn mirrored(
    dp: &mut Datapath,
    what: &str,
    frame: &[u8],
    repeat: u32,
    action: u32,
    run: fn(&mut Datapath, &[u8], u32) -> Result<RunOutcome>,
) -> Result<Mirrored> {
    let ns = median_of(MIRRORED_CALLS, || {
        let out = run(dp, frame, repeat)?;
        if out.action != action {
            bail!(
                "{what}: expected action {action} after {repeat} runs, got {}",
                out.action
            );
        }
        Ok(out.duration)
    })?;
    let noop = median_f64(MIRRORED_CALLS, || dp.calibration_ns(frame, repeat))?;
    Ok(Mirrored { ns, noop })
}

/// Fails unless forward counter `kind` moved from `before` by every run of
/// the [`MIRRORED_CALLS`] calls of `repeat`: no run took another path.
fn check_all_took(
    dp: &mut Datapath,
    what: &str,
    kind: Forward,
    before: u64,
    repeat: u32,
) -> Result<()> {
    let moved = dp.forwards(kind)?.packets - before;
    let expected = MIRRORED_CALLS as u64 * u64::from(repeat);
    if moved != expected {
        bail!(
            "{what}: {moved} of {expected} runs counted as {}",
            kind.name()
        );
    }
    Ok(())
}

/// The routed path: networks whose gateway MACs are the endpoints' MACs
/// crossed over, so each run's output routes again.
fn mirrored_route() -> Result<Mirrored> {
    let sender = Ep {
        mac: NET_B.gateway_mac(),
        ..A1
    };
    let receiver = Ep {
        mac: NET_A.gateway_mac(),
        ..B1
    };
    let mut dp = Datapath::with_model(model(
        &[NET_A, NET_B],
        &[sender, receiver],
        &[(NET_A, NET_B)],
    )?)?;
    let frame = udp(
        (NET_A.gateway_mac(), sender.mac),
        sender.ip,
        receiver.ip,
        255,
        &[0u8; 18],
    );
    let before = dp.forwards(Forward::Routed)?.packets;
    let m = mirrored(
        &mut dp,
        "mirrored route",
        &frame,
        MIRRORED_REPEAT,
        TC_ACT_REDIRECT,
        Datapath::run_repeat,
    )?;
    check_all_took(
        &mut dp,
        "mirrored route",
        Forward::Routed,
        before,
        MIRRORED_REPEAT,
    )?;
    Ok(m)
}

/// The four translations of an established UDP connection, each mirrored:
/// the node's address is A1's own, the masqueraded connection keeps its
/// source port (in the node's range) and the published port is the
/// container's, so every translation writes the values it read. On a
/// thread inside a [`NatNode`] namespace.
fn mirrored_nat() -> Result<Vec<(&'static str, Mirrored)>> {
    const CLIENT_PORT: u16 = 40_001;
    const PUBLISHED: u16 = 8_080;
    const REMOTE_PORT: u16 = 50_000;
    let node = NatNode::new()?;
    let config = NodeUplink {
        ip: A1.ip,
        ..node.config(40_000, 40_999)
    };
    node.run(move || {
        let mut dp = nat_topology(config)?;
        dp.publish(Proto::Udp, PUBLISHED, A1.ip, PUBLISHED)?;
        let payload = [0u8; 18];
        let to_gw = (NET_A.gateway_mac(), A1.mac);
        let from_router = (UPLINK_MAC, ROUTER_MAC);
        let paths: [(&'static str, Vec<u8>, Forward, bool); 4] = [
            (
                "snat",
                udp_ports(to_gw, (A1.ip, CLIENT_PORT), (OUTSIDE, 53), 255, &payload),
                Forward::Snat,
                false,
            ),
            (
                "reverse_snat",
                udp_ports(
                    from_router,
                    (OUTSIDE, 53),
                    (A1.ip, CLIENT_PORT),
                    255,
                    &payload,
                ),
                Forward::ReverseSnat,
                true,
            ),
            (
                "dnat",
                udp_ports(
                    from_router,
                    (OUTSIDE, REMOTE_PORT),
                    (A1.ip, PUBLISHED),
                    255,
                    &payload,
                ),
                Forward::Dnat,
                true,
            ),
            (
                "reverse_dnat",
                udp_ports(
                    to_gw,
                    (A1.ip, PUBLISHED),
                    (OUTSIDE, REMOTE_PORT),
                    255,
                    &payload,
                ),
                Forward::ReverseDnat,
                false,
            ),
        ];
        let mut measured = Vec::new();
        for (name, frame, kind, uplink) in paths {
            let run = if uplink {
                Datapath::run_uplink_repeat
            } else {
                Datapath::run_repeat
            };
            // The first packet makes the connection (or is its first reply).
            let first = run(&mut dp, &frame, 1)?;
            if first.action != TC_ACT_REDIRECT {
                bail!("{name}: expected a redirect, got action {}", first.action);
            }
            let before = dp.forwards(kind)?.packets;
            let m = mirrored(&mut dp, name, &frame, MIRRORED_REPEAT, TC_ACT_REDIRECT, run)?;
            check_all_took(&mut dp, name, kind, before, MIRRORED_REPEAT)?;
            measured.push((name, m));
        }
        Ok(measured)
    })
}

/// The overlay paths' figures.
struct OverlayCost {
    encap_bpf: f64,
    /// The no-op program by `encap_bpf`'s method.
    noop_single: f64,
    encap_tunnel: Mirrored,
    decap_bpf: Mirrored,
}

/// A UDP packet from A1 to a remote node's container and VXLAN from that
/// node, on a thread inside a [`NatNode`] namespace whose uplink is the
/// underlay.
fn overlay() -> Result<OverlayCost> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let payload = [0u8; 18];
        let out = udp_ports(
            (NET_A.gateway_mac(), A1.mac),
            (A1.ip, 40_001),
            (REMOTE_A, 53),
            64,
            &payload,
        );
        let mut dp = overlay_topology(config.clone(), ENCAP_BPF)?;
        let encap_bpf = median_of(SINGLE_RUNS, || {
            let run = dp.run(&out)?;
            if run.action != TC_ACT_REDIRECT {
                bail!("encap_bpf: expected a redirect, got {}", run.action);
            }
            Ok(run.duration)
        })?;
        let noop_single = median_f64(SINGLE_RUNS, || dp.calibration_ns(&out, 1))?;

        // Tunnel mode writes the inner MACs (remote VTEP <- this VTEP):
        // the remote's VTEP is A's gateway MAC and this node's A1's MAC, so
        // the output is the input again.
        let mut tunnel = overlay_model(config.clone(), ENCAP_TUNNEL)?;
        for remote in &mut tunnel.remote_nodes {
            remote.vtep_mac = Mac(NET_A.gateway_mac());
        }
        if let Some(o) = tunnel.node.as_mut().and_then(|n| n.overlay.as_mut()) {
            o.vtep_mac = Mac(A1.mac);
        }
        let mut dp = Datapath::with_model(tunnel)?;
        let frame = udp_ports(
            (NET_A.gateway_mac(), A1.mac),
            (A1.ip, 40_001),
            (REMOTE_A, 53),
            64,
            &payload,
        );
        let before = dp.forwards(Forward::EncapTunnel)?.packets;
        let encap_tunnel = mirrored(
            &mut dp,
            "encap_tunnel",
            &frame,
            MIRRORED_REPEAT,
            TC_ACT_REDIRECT,
            Datapath::run_repeat,
        )?;
        check_all_took(
            &mut dp,
            "encap_tunnel",
            Forward::EncapTunnel,
            before,
            MIRRORED_REPEAT,
        )?;

        // Every layer's inner packet is for an endpoint at the node's own
        // address; the innermost is left to the stack after the last run.
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let local = Ep {
            ifindex: 150,
            ip: NODE_IP,
            mac: [0x02, 0x57, 10, 1, 0, 150],
            stats_slot: 5,
            ..A2
        };
        dp.change(|m| m.endpoints.push(local.record()))?;
        let mut frame = udp(vtep_to_vtep(), REMOTE_A, NODE_IP, 64, &payload);
        for _ in 0..DECAP_LAYERS {
            frame = arriving(&frame, VNI_A, 0x08);
        }
        let before = dp.forwards(Forward::DecapDelivered)?.packets;
        let decap_bpf = mirrored(
            &mut dp,
            "decap_bpf",
            &frame,
            DECAP_LAYERS,
            TC_ACT_REDIRECT,
            Datapath::run_uplink_repeat,
        )?;
        check_all_took(
            &mut dp,
            "decap_bpf",
            Forward::DecapDelivered,
            before,
            DECAP_LAYERS,
        )?;
        Ok(OverlayCost {
            encap_bpf,
            noop_single,
            encap_tunnel,
            decap_bpf,
        })
    })
}

fn median_single(dp: &mut Datapath, frame: &[u8]) -> Result<f64> {
    median_of(SINGLE_RUNS, || Ok(dp.run(frame)?.duration))
}

/// The median, in ns, of `runs` durations `one` measures.
fn median_of(runs: usize, mut one: impl FnMut() -> Result<Duration>) -> Result<f64> {
    median_f64(runs, || Ok(one()?.as_nanos() as f64))
}

/// The median of `runs` figures `one` measures.
fn median_f64(runs: usize, mut one: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut figures = Vec::with_capacity(runs);
    for _ in 0..runs {
        figures.push(one()?);
    }
    figures.sort_by(f64::total_cmp);
    Ok(figures[runs / 2])
}

fn print(results: &[Measured], json: bool) {
    if json {
        let paths: Vec<serde_json::Value> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "ns_per_packet": m.ns_per_packet,
                    "program_ns": m.program_ns(),
                    "noop_ns": m.noop_ns,
                    "noop_ratio": m.noop_ratio(),
                    "method": m.method,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "paths": paths }));
    } else {
        println!(
            "{:<16} {:>10} {:>11} {:>9}  method",
            "path", "ns/packet", "program ns", "x no-op"
        );
        for m in results {
            println!(
                "{:<16} {:>10.1} {:>11.1} {:>9.2}  {}",
                m.name,
                m.ns_per_packet,
                m.program_ns(),
                m.noop_ratio(),
                m.method
            );
        }
    }
}

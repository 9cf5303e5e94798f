//! Per-packet cost of each datapath path, measured by the kernel with
//! BPF_PROG_TEST_RUN on the real JIT-compiled program.
//!
//! Paths that leave the frame as it was (bridging, drops, pass to stack)
//! run with a large `repeat`, and the kernel reports the mean per run.
//! Paths that rewrite the frame would see their own output on the next
//! repeat. Routing is measured in a mirrored topology where the rewritten
//! frame routes again the same way (the sender's MAC is the other network's
//! gateway MAC and vice versa), 200 repeats per call before TTL runs out,
//! median over many calls. The ARP reply runs once per call on a fresh
//! frame (median reported); that method includes the kernel's timer reads,
//! so `bridge_single` is printed as its baseline.
//!
//! Masquerade (`snat` out of `weft_from_container`, `reverse_snat` into
//! `weft_from_uplink`) rewrites the frame too and keeps state: both are
//! measured on an established connection (its conntrack entries created by
//! a first run), as the median of single runs of a fresh frame, on a thread
//! inside a namespace with an uplink so `bpf_fib_lookup` finds a route.
//!
//! The overlay (`encap_bpf` and `encap_tunnel` out of `weft_from_container`
//! through the `weft_overlay_encap` tail call, `decap_bpf` into
//! `weft_from_uplink`) is measured the same way: a UDP packet to a remote
//! node's container and one arriving from it, median of single runs, in a
//! namespace whose uplink is the underlay.
//!
//! Every figure includes the test-run loop's own per-run overhead; a no-op
//! program (`weft_calibrate`) measures it, and `program_ns` is the figure
//! with that overhead subtracted: the cost of weft's code itself.
//!
//! `prog_cost [--json] [--repeat N]`

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Result, bail};
use weft_common::maps::{ENCAP_BPF, ENCAP_TUNNEL};
use weft_tests::{
    fixture::{Datapath, Ep, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TEST_RUN_IFINDEX, model},
    frames::{arp_request, udp, udp_ports},
    overlay_frames::{REMOTE_A, VNI_A, arriving, overlay_topology, vtep_to_vtep},
    topology::{
        A1, A2, B1, C1, NET_A, NET_B, NODE_IP, NatNode, OUTSIDE, ROUTER_MAC, UPLINK_MAC,
        nat_topology, topology,
    },
};

/// Repeats per call for the mirrored route: the frame starts at TTL 255
/// and must not expire.
const ROUTE_REPEAT: u32 = 200;
const ROUTE_CALLS: usize = 5_001;

struct Path {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    rewrites: bool,
}

struct Measured {
    name: &'static str,
    ns_per_packet: f64,
    /// `ns_per_packet` less the no-op program's figure for the same method.
    program_ns: f64,
    method: String,
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
    let single_runs = 20_001;
    let route_repeat = mirrored_route_ns()?;

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
    let noop_single = {
        let mut runs: Vec<f64> = (0..single_runs)
            .map(|_| dp.calibration_ns(&paths[0].frame, 1))
            .collect::<Result<_>>()?;
        runs.sort_by(f64::total_cmp);
        runs[single_runs / 2]
    };
    let mut results = vec![Measured {
        name: "route",
        ns_per_packet: route_repeat,
        program_ns: route_repeat - noop_repeat,
        method: format!(
            "mirrored topology, median over {ROUTE_CALLS} calls of the mean of repeat={ROUTE_REPEAT}"
        ),
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
            let ns = median_single(&mut dp, &path.frame, single_runs)?;
            results.push(Measured {
                name: path.name,
                ns_per_packet: ns,
                program_ns: ns - noop_single,
                method: format!("median of {single_runs} single runs"),
            });
        } else {
            let run = dp.run_repeat(&path.frame, repeat)?;
            let ns = run.duration.as_nanos() as f64;
            results.push(Measured {
                name: path.name,
                ns_per_packet: ns,
                program_ns: ns - noop_repeat,
                method: format!("mean of repeat={repeat}"),
            });
        }
    }
    let (snat, reverse_snat, nat_noop) = nat_ns(single_runs)?;
    let nat_method = format!(
        "established connection, median of {single_runs} single runs, in a namespace with an uplink"
    );
    results.push(Measured {
        name: "snat",
        ns_per_packet: snat,
        program_ns: snat - nat_noop,
        method: nat_method.clone(),
    });
    results.push(Measured {
        name: "reverse_snat",
        ns_per_packet: reverse_snat,
        program_ns: reverse_snat - nat_noop,
        method: nat_method,
    });
    let overlay = overlay_ns(single_runs)?;
    for (name, ns) in [
        ("encap_bpf", overlay.encap_bpf),
        ("encap_tunnel", overlay.encap_tunnel),
        ("decap_bpf", overlay.decap_bpf),
    ] {
        results.push(Measured {
            name,
            ns_per_packet: ns,
            program_ns: ns - overlay.noop,
            method: format!(
                "median of {single_runs} single runs, in a namespace whose uplink is the underlay"
            ),
        });
    }
    let bridge_single = median_single(&mut dp, &paths[0].frame, single_runs)?;
    results.push(Measured {
        name: "bridge_single",
        ns_per_packet: bridge_single,
        program_ns: bridge_single - noop_single,
        method: format!(
            "median of {single_runs} single runs (the bridge path, by the other method)"
        ),
    });
    results.push(Measured {
        name: "noop",
        ns_per_packet: noop_repeat,
        program_ns: 0.0,
        method: format!("no-op program, mean of repeat={repeat} (single runs: {noop_single} ns)"),
    });
    print(&results, json);
    Ok(())
}

/// The routed path measured with `repeat`: networks whose gateway MACs are
/// the endpoints' MACs crossed over, so each run's output routes again.
fn mirrored_route_ns() -> Result<f64> {
    let sender = Ep {
        ifindex: TEST_RUN_IFINDEX,
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
    let mut means = Vec::with_capacity(ROUTE_CALLS);
    for _ in 0..ROUTE_CALLS {
        let run = dp.run_repeat(&frame, ROUTE_REPEAT)?;
        if run.action != TC_ACT_REDIRECT {
            bail!(
                "mirrored route: expected a redirect, got action {}",
                run.action
            );
        }
        means.push(run.duration.as_nanos() as f64);
    }
    let routed = dp.forwards(weft_common::reason::Forward::Routed)?.packets;
    let expected = (ROUTE_CALLS as u64) * u64::from(ROUTE_REPEAT);
    if routed != expected {
        bail!("mirrored route: {routed} of {expected} runs were routed");
    }
    means.sort_by(f64::total_cmp);
    Ok(means[ROUTE_CALLS / 2])
}

/// Masquerade out and back on an established UDP connection: medians of
/// single runs of SNAT, of the reverse translation and of the no-op
/// program, all on a thread inside a [`NatNode`] namespace.
fn nat_ns(runs: usize) -> Result<(f64, f64, f64)> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let mut dp = nat_topology(config)?;
        let out = udp_ports(
            (NET_A.gateway_mac(), A1.mac),
            (A1.ip, 40_001),
            (OUTSIDE, 53),
            64,
            &[0u8; 18],
        );
        let back = udp_ports(
            (UPLINK_MAC, ROUTER_MAC),
            (OUTSIDE, 53),
            (NODE_IP, 40_001),
            64,
            &[0u8; 18],
        );
        let first = dp.run(&out)?;
        if first.action != TC_ACT_REDIRECT {
            bail!("snat: expected a redirect, got action {}", first.action);
        }
        let reply = dp.run_uplink(&back)?;
        if reply.action != TC_ACT_REDIRECT {
            bail!(
                "reverse_snat: expected a redirect, got action {}",
                reply.action
            );
        }
        let snat = median_single(&mut dp, &out, runs)?;
        let reverse = median_of(runs, || Ok(dp.run_uplink(&back)?.duration))?;
        let translated = dp.forwards(weft_common::reason::Forward::Snat)?.packets;
        let reversed = dp
            .forwards(weft_common::reason::Forward::ReverseSnat)?
            .packets;
        if translated != runs as u64 + 1 || reversed != runs as u64 + 1 {
            bail!(
                "nat: {translated} and {reversed} of {} runs were translated",
                runs + 1
            );
        }
        let mut noop: Vec<f64> = (0..runs)
            .map(|_| dp.calibration_ns(&out, 1))
            .collect::<Result<_>>()?;
        noop.sort_by(f64::total_cmp);
        Ok((snat, reverse, noop[runs / 2]))
    })
}

/// Medians of single runs of the overlay paths and of the no-op program.
struct OverlayCost {
    encap_bpf: f64,
    encap_tunnel: f64,
    decap_bpf: f64,
    noop: f64,
}

/// A 64-byte-payload UDP packet from A1 to a remote node's container, in
/// each encapsulation mode, and one from there to A2 arriving over VXLAN
/// (bpf mode decapsulates it), on a thread inside a [`NatNode`] namespace.
fn overlay_ns(runs: usize) -> Result<OverlayCost> {
    let node = NatNode::new()?;
    let config = node.config(40_000, 40_999);
    node.run(move || {
        let out = udp_ports(
            (NET_A.gateway_mac(), A1.mac),
            (A1.ip, 40_001),
            (REMOTE_A, 53),
            64,
            &[0u8; 18],
        );
        let inner = udp(vtep_to_vtep(), REMOTE_A, A2.ip, 64, &[0u8; 18]);
        let arriving = arriving(&inner, VNI_A, 0x08);
        let cost = |mode: u8, hook_uplink: bool, frame: &[u8]| -> Result<f64> {
            let mut dp = overlay_topology(config.clone(), mode)?;
            median_of(runs, || {
                let run = if hook_uplink {
                    dp.run_uplink(frame)?
                } else {
                    dp.run(frame)?
                };
                if run.action != TC_ACT_REDIRECT {
                    bail!(
                        "overlay mode {mode}: expected a redirect, got {}",
                        run.action
                    );
                }
                Ok(run.duration)
            })
        };
        let encap_bpf = cost(ENCAP_BPF, false, &out)?;
        let encap_tunnel = cost(ENCAP_TUNNEL, false, &out)?;
        let decap_bpf = cost(ENCAP_BPF, true, &arriving)?;
        let mut dp = overlay_topology(config, ENCAP_BPF)?;
        let mut noop: Vec<f64> = (0..runs)
            .map(|_| dp.calibration_ns(&out, 1))
            .collect::<Result<_>>()?;
        noop.sort_by(f64::total_cmp);
        Ok(OverlayCost {
            encap_bpf,
            encap_tunnel,
            decap_bpf,
            noop: noop[runs / 2],
        })
    })
}

fn median_single(dp: &mut Datapath, frame: &[u8], runs: usize) -> Result<f64> {
    median_of(runs, || Ok(dp.run(frame)?.duration))
}

/// The median, in ns, of `runs` durations `one` measures.
fn median_of(runs: usize, mut one: impl FnMut() -> Result<Duration>) -> Result<f64> {
    let mut durations: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        durations.push(one()?);
    }
    durations.sort();
    Ok(durations[runs / 2].as_nanos() as f64)
}

fn print(results: &[Measured], json: bool) {
    if json {
        let paths: Vec<serde_json::Value> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "ns_per_packet": m.ns_per_packet,
                    "program_ns": m.program_ns,
                    "method": m.method,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "paths": paths }));
    } else {
        println!(
            "{:<16} {:>10} {:>11}  method",
            "path", "ns/packet", "program ns"
        );
        for m in results {
            println!(
                "{:<16} {:>10.1} {:>11.1}  {}",
                m.name, m.ns_per_packet, m.program_ns, m.method
            );
        }
    }
}

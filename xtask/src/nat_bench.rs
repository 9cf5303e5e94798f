//! The NAT share of `cargo xtask bench` (issue 3): weft's masquerade and
//! published ports against the kernel's own way, as Docker sets it up.
//!
//! Two topologies of the same shape, each in fresh namespaces named after
//! this run's pid: a node namespace with an `uplink` veth (198.18.0.1/24)
//! to an `out` namespace (198.18.0.2/24, the node's default gateway, no
//! route back to any container subnet) and one container `c`:
//! - `weft`: the container on a weft network (masquerade on), `weft node
//!   set` on the uplink, ports published with `weft publish`;
//! - `iptables`: the container on a Linux bridge, kernel forwarding,
//!   iptables MASQUERADE, and one DNAT rule per published port in a
//!   `DOCKER` nat chain plus one ACCEPT per port in a `DOCKER` filter chain
//!   (Docker's layout: a new connection walks the per-port rules).
//!
//! Measured with `cargo xtask loadgen` (64-byte request/response over TCP):
//! container to outside, new connections per second (connect, exchange,
//! close) and transactions per second on one kept-open connection; outside
//! to a published port, new connections per second with 1 published port
//! and with 10,000 (spread round-robin over all of them). Every loadgen
//! process is pinned to the last CPU. Repetitions are
//! interleaved across the two topologies; medians are reported.
//!
//! Clients and the outside use the whole port range with `tcp_tw_reuse`, so
//! TIME_WAIT never runs them out of ports. weft's NAT range is widened to
//! 10240-65535 (the node's own ephemeral range narrowed below it, as `node
//! set` requires) and `weft ct gc` runs before each connection-rate run
//! (besides the agent's periodic GC): closed connections keep their NAT
//! port until collected. weft's agent runs throughout, and ports are
//! published through its API. The kernel's MASQUERADE keeps the source port when it
//! can, and its conntrack recycles closed entries by itself.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_api::{Client, requests::Publish};
use weft_harness::{
    links::plug_container,
    netns::NetNs,
    node::{Agent, AgentLog, Node},
    outside::{NODE_UPLINK_IP as NODE_IP, OUTSIDE_IP, Outside, UPLINK},
    proc,
};

use crate::bench::{Target, median};

const T: Duration = Duration::from_secs(30);
const OUTSIDE_PORT: u16 = 9000;
const CONTAINER_PORT: u16 = 8080;
/// Published host ports: `FIRST_HOST_PORT`, and up to
/// `FIRST_HOST_PORT + MANY_PORTS - 1` in the second phase.
const FIRST_HOST_PORT: u16 = 20000;
pub const MANY_PORTS: u16 = 10_000;
const CRR_THREADS: &str = "4";
/// weft's NAT ports, above the node's (narrowed) ephemeral range.
const WEFT_NAT_PORTS: &str = "10240-65535";
const NODE_LOCAL_PORTS: &str = "1024 10239";
/// Longest publishing 10,000 ports may take.
const PUBLISH_BUDGET: Duration = Duration::from_secs(300);

/// One side of the comparison. Fields drop in declaration order: the node
/// (weft's agent, then its teardown) before the namespaces it plugged in.
struct Side {
    name: &'static str,
    node: SideNode,
    container: NetNs,
    outside: Outside,
    container_ip: &'static str,
    /// Why published ports cannot be measured on this side, if so.
    no_publish: Option<String>,
    /// Drops last: the servers die with their namespaces anyway.
    _servers: Vec<proc::Background>,
}

/// What translates the side's traffic.
enum SideNode {
    /// weft, with its agent (killed before the node's teardown).
    Weft { _agent: Agent, node: Node },
    /// The kernel: a node namespace with a bridge and iptables rules.
    Kernel(NetNs),
}

/// Rates (per second) collected for one side.
#[derive(Default)]
struct Rates {
    out_crr: Vec<f64>,
    out_rr: Vec<f64>,
    in_crr_one: Vec<f64>,
    in_crr_many: Vec<f64>,
    errors: Vec<String>,
    /// Every measurement's failed connections (also when 0), as
    /// `{"rep","what","failed","kinds"}`.
    failed: Vec<Value>,
}

impl Rates {
    fn failed_total(&self) -> u64 {
        self.failed
            .iter()
            .filter_map(|f| f["failed"].as_u64())
            .sum()
    }
}

/// Figures and targets of the NAT section.
pub struct NatResults {
    pub json: Value,
    pub targets: Vec<Target>,
    pub lines: Vec<String>,
}

/// Builds both sides under `prefix`, measures, tears down.
pub fn run(weft_built: bool, reps: u32, secs: u32) -> Result<NatResults> {
    let exe = std::env::current_exe().context("locating the xtask binary for loadgen")?;
    let mut sides = Vec::new();
    let mut unavailable = Vec::new();
    match weft_built {
        true => match weft_side(&exe) {
            Ok(s) => sides.push(s),
            Err(e) => {
                proc::check_interrupted()?;
                eprintln!("xtask bench: NAT weft side unavailable: {e:#}");
                unavailable.push(("weft", format!("{e:#}")));
            }
        },
        false => unavailable.push(("weft", "weft could not be built".to_owned())),
    }
    let rules = PathBuf::from(format!("/tmp/weft-bench-{}-iptables", std::process::id()));
    let _rules_file = RemoveOnDrop(rules.clone());
    sides.push(iptables_side(&exe, &rules)?);

    let mut rates: Vec<Rates> = sides.iter().map(|_| Rates::default()).collect();
    println!(
        "\n== NAT: {reps} interleaved repetition(s), {secs} s per measurement, 1 published port"
    );
    for rep in 1..=reps {
        for (s, r) in sides.iter().zip(&mut rates) {
            measure(s, r, rep, secs, &exe, false)?;
        }
    }
    println!("\n== NAT: publishing {MANY_PORTS} ports");
    for s in &mut sides {
        if s.no_publish.is_some() {
            continue;
        }
        let started = Instant::now();
        let published = match &s.node {
            SideNode::Weft { node, .. } => {
                weft_publish_range(&node.agent_socket(), FIRST_HOST_PORT + 1, MANY_PORTS - 1)
            }
            SideNode::Kernel(ns) => iptables_publish(ns, &rules, s.container_ip, MANY_PORTS),
        };
        match published {
            Ok(()) => println!(
                "{:<8} {MANY_PORTS} ports published in {:.1} s",
                s.name,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                proc::check_interrupted()?;
                println!("{:<8} publishing {MANY_PORTS} ports failed: {e:#}", s.name);
                s.no_publish = Some(format!("publishing {MANY_PORTS} ports: {e:#}"));
            }
        }
    }
    for rep in 1..=reps {
        for (s, r) in sides.iter().zip(&mut rates) {
            measure(s, r, rep, secs, &exe, true)?;
        }
    }
    println!("\n== NAT: cleaning up namespaces");
    let notes: Vec<(&str, Option<String>)> = sides
        .iter()
        .map(|s| (s.name, s.no_publish.clone()))
        .collect();
    drop(sides);
    Ok(results(&notes, &rates, &unavailable))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Clients and the outside may use every port and reuse TIME_WAIT ones.
fn widen_ports(ns: &NetNs) -> Result<()> {
    ns.sysctl(&[
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
    ])
}

/// The servers: one in the container, one outside.
fn servers(exe: &Path, container: &NetNs, outside: &NetNs) -> Result<Vec<proc::Background>> {
    let mut v = Vec::new();
    for (ns, listen, port) in [
        (
            container,
            format!("0.0.0.0:{CONTAINER_PORT}"),
            CONTAINER_PORT,
        ),
        (
            outside,
            format!("{OUTSIDE_IP}:{OUTSIDE_PORT}"),
            OUTSIDE_PORT,
        ),
    ] {
        let exe = exe.to_string_lossy();
        v.push(proc::Background::spawn(&mut ns.command_on(
            Some(pinned_cpu()),
            &[&exe, "loadgen", "serve", "--listen", &listen],
        ))?);
        ns.wait_listening(false, port, Duration::from_secs(5))?;
    }
    Ok(v)
}

fn weft_side(exe: &Path) -> Result<Side> {
    let node = Node::new()?;
    let outside = Outside::beyond(&node.ns)?;
    println!(
        "== NAT topology weft: {} (weft, uplink {NODE_IP}) + a container + {}",
        node.ns.name(),
        outside.ns.name()
    );
    widen_ports(&outside.ns)?;
    node.ns
        .sysctl(&[&format!("net.ipv4.ip_local_port_range={NODE_LOCAL_PORTS}")])?;
    let container_ip = "10.220.0.2";
    node.weft(&["network", "create", "natb", "--subnet", "10.220.0.0/24"])?;
    let (container, _) =
        node.container_with("natb", "c", &["--ip", container_ip, "--mtu", "1500"])?;
    widen_ports(&container)?;
    crate::bench::check_eth0(&container, container_ip)?;
    node.weft(&[
        "node",
        "set",
        "--uplink",
        UPLINK,
        "--ip",
        NODE_IP,
        "--ports",
        WEFT_NAT_PORTS,
    ])?;
    // Through the agent, as a runtime would: each `weft publish` is a
    // process that loads the pinned maps and state (tens of ms per call).
    let agent = node.start_agent_logging(&[], AgentLog::Discarded)?;
    let no_publish = if proc::succeeds(&mut node.weft_command(&["publish", "--help"]), T) {
        weft_publish_range(&node.agent_socket(), FIRST_HOST_PORT, 1)
            .err()
            .map(|e| format!("{e:#}"))
    } else {
        Some("this weft has no `weft publish` yet".to_owned())
    };
    let servers = servers(exe, &container, &outside.ns)?;
    Ok(Side {
        name: "weft",
        node: SideNode::Weft {
            _agent: agent,
            node,
        },
        container,
        outside,
        container_ip,
        no_publish,
        _servers: servers,
    })
}

/// Publishes host ports `first`.. (`count` of them) to `c:CONTAINER_PORT/tcp`
/// through the agent in one request (`POST /v1/publish` with the range
/// `FIRST-LAST:CONTAINER/tcp`), held to `PUBLISH_BUDGET`.
fn weft_publish_range(socket: &Path, first: u16, count: u16) -> Result<()> {
    let last = first + (count - 1);
    let spec = if count == 1 {
        format!("{first}:{CONTAINER_PORT}/tcp")
    } else {
        format!("{first}-{last}:{CONTAINER_PORT}/tcp")
    };
    let started = Instant::now();
    Client::new(socket).call_blocking(Publish {
        endpoint: "c".into(),
        spec,
    })?;
    if started.elapsed() > PUBLISH_BUDGET {
        bail!(
            "publishing {count} ports took {:.0} s, budget {} s",
            started.elapsed().as_secs_f64(),
            PUBLISH_BUDGET.as_secs()
        );
    }
    Ok(())
}

fn iptables_side(exe: &Path, rules: &Path) -> Result<Side> {
    let node = NetNs::new("nat-node")?;
    let container = NetNs::new("nat-c")?;
    let outside = Outside::beyond(&node)?;
    println!(
        "== NAT topology iptables: {} (bridge, MASQUERADE, DNAT) + {} + {}",
        node.name(),
        container.name(),
        outside.ns.name()
    );
    widen_ports(&container)?;
    widen_ports(&outside.ns)?;
    node.add_bridge("br0", None)?;
    node.exec(&["ip", "addr", "add", "10.221.0.1/24", "dev", "br0"])?;
    plug_container(
        &node,
        "br0",
        "veth0",
        &container,
        ("10.221.0.2/24", Some("10.221.0.1")),
        Some(1500),
    )?;
    node.sysctl(&["net.ipv4.ip_forward=1"])?;
    let container_ip = "10.221.0.2";
    iptables_publish(&node, rules, container_ip, 1)?;
    let servers = servers(exe, &container, &outside.ns)?;
    Ok(Side {
        name: "iptables",
        node: SideNode::Kernel(node),
        container,
        outside,
        container_ip,
        no_publish: None,
        _servers: servers,
    })
}

/// Docker's rules for a bridge `br0` with `ports` host ports from
/// `FIRST_HOST_PORT` published to `container_ip:CONTAINER_PORT`.
fn docker_rules(container_ip: &str, ports: u16) -> String {
    let mut r = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 10.221.0.0/24 ! -o br0 -j MASQUERADE\n\
         -A DOCKER -i br0 -j RETURN\n",
    );
    for i in 0..ports {
        let _ = writeln!(
            r,
            "-A DOCKER ! -i br0 -p tcp -m tcp --dport {} -j DNAT --to-destination {container_ip}:{CONTAINER_PORT}",
            FIRST_HOST_PORT + i
        );
    }
    r.push_str(
        "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n\
         -A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o br0 -j DOCKER\n\
         -A FORWARD -i br0 ! -o br0 -j ACCEPT\n\
         -A FORWARD -i br0 -o br0 -j ACCEPT\n",
    );
    for _ in 0..ports {
        let _ = writeln!(
            r,
            "-A DOCKER -d {container_ip}/32 ! -i br0 -o br0 -p tcp -m tcp --dport {CONTAINER_PORT} -j ACCEPT"
        );
    }
    r.push_str("COMMIT\n");
    r
}

/// Replaces the node's nat and filter tables with Docker's rules for `ports`
/// published ports (`iptables-restore`: one transaction, not 20,000 calls).
fn iptables_publish(node: &NetNs, rules: &Path, container_ip: &str, ports: u16) -> Result<()> {
    fs::write(rules, docker_rules(container_ip, ports))
        .with_context(|| format!("writing {}", rules.display()))?;
    proc::stdout(
        &mut node.command(&["iptables-restore", &rules.to_string_lossy()]),
        Duration::from_secs(120),
    )?;
    let listed = proc::stdout(
        &mut node.command(&["iptables", "-t", "nat", "-S", "DOCKER"]),
        T,
    )?;
    let dnat = listed.lines().filter(|l| l.contains("-j DNAT")).count();
    if dnat != usize::from(ports) {
        bail!("iptables-restore left {dnat} DNAT rules, expected {ports}");
    }
    Ok(())
}

/// The CPU every loadgen process runs on (the last one): client, server
/// and the datapath's softirq work share it, so a rate is one CPU's worth
/// of work per connection or transaction, free of cross-CPU wakeups (tens
/// of microseconds on this kind of VM, as with the sockperf pinning).
fn pinned_cpu() -> usize {
    crate::bench::cpus().saturating_sub(1)
}

/// What one `loadgen` client run measured.
struct Run {
    rate: f64,
    /// Connections that failed (connect, exchange or close).
    failed: u64,
    /// `failed` by `std::io::ErrorKind`.
    kinds: Value,
}

/// One `loadgen` client run in `ns`.
fn client(ns: &NetNs, exe: &Path, args: &[&str], secs: u32) -> Result<Run> {
    let exe = exe.to_string_lossy();
    let mut all = vec![exe.as_ref(), "loadgen"];
    all.extend(args);
    let secs_s = secs.to_string();
    all.extend(["--secs", &secs_s]);
    let out = proc::stdout(
        &mut ns.command_on(Some(pinned_cpu()), &all),
        Duration::from_secs(u64::from(secs) + 20),
    )?;
    let v: Value = serde_json::from_str(out.trim())
        .with_context(|| format!("loadgen printed no JSON: {out}"))?;
    let rate = v["per_second"].as_f64().context("loadgen: no per_second")?;
    let failed = v["errors"].as_u64().unwrap_or(0);
    if v["ops"].as_u64() == Some(0) {
        bail!("no request completed ({failed} errors)");
    }
    Ok(Run {
        rate,
        failed,
        kinds: v["error_kinds"].clone(),
    })
}

fn measure(s: &Side, r: &mut Rates, rep: u32, secs: u32, exe: &Path, many: bool) -> Result<()> {
    let gc = || {
        if let SideNode::Weft { node, .. } = &s.node {
            let _ = node.weft(&["ct", "gc"]);
        }
    };
    let mut line = format!("rep {rep} {:<8}", s.name);
    let mut record = |what: &str,
                      res: Result<Run>,
                      into: &mut Vec<f64>,
                      errs: &mut Vec<String>,
                      failed: &mut Vec<Value>| {
        match res {
            Ok(run) => {
                let _ = write!(line, "  {what} {:8.0}/s", run.rate);
                if run.failed > 0 {
                    let _ = write!(line, " ({} FAILED CONNECTIONS {})", run.failed, run.kinds);
                    errs.push(format!(
                        "rep {rep} {what}: {} failed connections {}",
                        run.failed, run.kinds
                    ));
                }
                failed.push(json!({
                    "rep": rep, "what": what, "failed": run.failed, "kinds": run.kinds,
                }));
                into.push(run.rate);
            }
            Err(e) => {
                let _ = write!(line, "  {what} FAILED");
                errs.push(format!("rep {rep} {what}: {e:#}"));
            }
        }
    };
    let out_port = OUTSIDE_PORT.to_string();
    let out_addr = format!("{OUTSIDE_IP}:{OUTSIDE_PORT}");
    if !many {
        gc();
        let crr = client(
            &s.container,
            exe,
            &[
                "crr",
                "--to",
                OUTSIDE_IP,
                "--ports",
                &out_port,
                "--threads",
                CRR_THREADS,
            ],
            secs,
        );
        record(
            "out conn",
            crr,
            &mut r.out_crr,
            &mut r.errors,
            &mut r.failed,
        );
        let rr = client(&s.container, exe, &["rr", "--to", &out_addr], secs);
        record("out rr", rr, &mut r.out_rr, &mut r.errors, &mut r.failed);
    }
    if s.no_publish.is_none() {
        gc();
        let (ports, into, what) = if many {
            (
                format!("{FIRST_HOST_PORT}-{}", FIRST_HOST_PORT + MANY_PORTS - 1),
                &mut r.in_crr_many,
                "in conn (10k ports)",
            )
        } else {
            (
                FIRST_HOST_PORT.to_string(),
                &mut r.in_crr_one,
                "in conn (1 port)",
            )
        };
        let crr = client(
            &s.outside.ns,
            exe,
            &[
                "crr",
                "--to",
                NODE_IP,
                "--ports",
                &ports,
                "--threads",
                CRR_THREADS,
            ],
            secs,
        );
        record(what, crr, into, &mut r.errors, &mut r.failed);
    }
    proc::check_interrupted()?;
    println!("{line}");
    Ok(())
}

fn results(
    sides: &[(&str, Option<String>)],
    rates: &[Rates],
    unavailable: &[(&str, String)],
) -> NatResults {
    let get = |name: &str, f: fn(&Rates) -> &Vec<f64>| {
        sides
            .iter()
            .zip(rates)
            .find(|((n, _), _)| *n == name)
            .and_then(|(_, r)| median(f(r).clone()))
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let target = |what: &str, value, at_least, goal| Target {
        what: what.to_owned(),
        value,
        unit: "x",
        at_least,
        goal,
    };
    let out_crr = |n| get(n, |r| &r.out_crr);
    let out_rr = |n| get(n, |r| &r.out_rr);
    let one = |n| get(n, |r| &r.in_crr_one);
    let many = |n| get(n, |r| &r.in_crr_many);
    let targets = vec![
        target(
            "NAT out RR weft/iptables",
            ratio(out_rr("weft"), out_rr("iptables")),
            true,
            1.25,
        ),
        target(
            "NAT out conn/s weft/iptables",
            ratio(out_crr("weft"), out_crr("iptables")),
            true,
            1.3,
        ),
        target(
            "published conn/s weft/iptables @10k",
            ratio(many("weft"), many("iptables")),
            true,
            1.5,
        ),
        target(
            "published conn/s weft 10k/1 port",
            ratio(many("weft"), one("weft")),
            true,
            0.95,
        ),
    ];
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    // Failed connections first and always, 0 too: a rate says nothing of
    // the connections a NAT lost.
    let mut lines: Vec<String> = sides
        .iter()
        .zip(rates)
        .map(|((name, _), r)| {
            let runs = r.failed.len();
            let bad: Vec<String> = r
                .failed
                .iter()
                .filter(|f| f["failed"].as_u64().unwrap_or(0) > 0)
                .map(|f| {
                    format!(
                        "rep {} {}: {} {}",
                        f["rep"], f["what"], f["failed"], f["kinds"]
                    )
                })
                .collect();
            if bad.is_empty() {
                format!("FAILED CONNECTIONS {name:<9} 0 (in every one of {runs} runs)")
            } else {
                format!(
                    "FAILED CONNECTIONS {name:<9} {} !!! ({})",
                    r.failed_total(),
                    bad.join("; ")
                )
            }
        })
        .collect();
    lines.push(format!(
        "{:<9} {:>14} {:>14} {:>18} {:>20}",
        "NAT", "out conn/s", "out RR/s", "in conn/s 1 port", "in conn/s 10k ports"
    ));
    let mut per_side = serde_json::Map::new();
    for ((name, note), r) in sides.iter().zip(rates) {
        lines.push(format!(
            "{:<9} {:>14} {:>14} {:>18} {:>20}{}",
            name,
            fmt(out_crr(name)),
            fmt(out_rr(name)),
            fmt(one(name)),
            fmt(many(name)),
            note.as_ref().map_or(String::new(), |n| format!(
                "  (published ports: {})",
                first_line(n)
            ))
        ));
        per_side.insert(
            (*name).to_owned(),
            json!({
                "out_conn_per_s_median": out_crr(name),
                "out_rr_per_s_median": out_rr(name),
                "in_conn_per_s_1_port_median": one(name),
                "in_conn_per_s_10k_ports_median": many(name),
                "samples": {
                    "out_conn_per_s": r.out_crr,
                    "out_rr_per_s": r.out_rr,
                    "in_conn_per_s_1_port": r.in_crr_one,
                    "in_conn_per_s_10k_ports": r.in_crr_many,
                },
                "errors": r.errors,
                "failed_connections": r.failed_total(),
                "failed_connections_per_run": r.failed,
                "published_ports_unavailable": note,
            }),
        );
    }
    for (name, why) in unavailable {
        lines.push(format!("{name:<9} (unavailable: {})", first_line(why)));
        per_side.insert((*name).to_owned(), json!({ "unavailable": why }));
    }
    if let Some(ratio) = ratio(many("iptables"), one("iptables")) {
        lines.push(format!(
            "(iptables: 10k ports / 1 port conn/s = {ratio:.3}x)"
        ));
    }
    let failed: serde_json::Map<String, Value> = sides
        .iter()
        .zip(rates)
        .map(|((name, _), r)| ((*name).to_owned(), json!(r.failed_total())))
        .collect();
    NatResults {
        json: json!({
            "failed_connections": failed,
            "method": "cargo xtask loadgen pinned to the last CPU (clients and servers), 64-byte TCP request/response; conn = connect, one exchange, close (4 client threads); RR = one kept-open connection; in conn spread round-robin over the published ports; weft NAT ports 10240-65535 with `weft ct gc` before each conn run; iptables = Docker's MASQUERADE/DNAT/filter layout on a Linux bridge",
            "sides": Value::Object(per_side),
        }),
        targets,
        lines,
    }
}

/// The NAT targets, judged `n/a` when the section could not run.
pub fn targets(nat: &Result<NatResults, String>) -> Vec<Target> {
    match nat {
        Ok(n) => n.targets.clone(),
        Err(_) => results(&[], &[], &[]).targets,
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules_have_one_dnat_and_one_accept_per_port() {
        let r = docker_rules("10.221.0.2", 3);
        assert_eq!(r.matches("-j DNAT").count(), 3);
        assert_eq!(r.matches("--dport 8080 -j ACCEPT").count(), 3);
        assert!(r.contains("--dport 20002 -j DNAT --to-destination 10.221.0.2:8080"));
        assert_eq!(r.matches("COMMIT").count(), 2);
    }
}

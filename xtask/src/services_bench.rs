//! `cargo xtask bench`, services section (issue 12): a service VIP in
//! weft's datapath against kube-proxy's two kernel modes, side by side in
//! one run, at 1, 1,000 and 10,000 services of [`BACKENDS`] backends.
//!
//! Three sides of one shape, each in fresh namespaces named after this
//! run's pid: a node namespace, a client container and [`BACKENDS`]
//! backend containers, each backend running `loadgen serve` on
//! [`TARGET`]:
//! - `weft`: the containers on a weft network, the measured service made
//!   with `weft service create --select`, the other services synthetic
//!   (`POST /v1/bench/services`: real service entries, Maglev tables and
//!   members whose backend addresses exist only in the tables);
//! - `iptables`: containers on routed veths (each its own /24 via the
//!   node), kube-proxy's iptables layout: `KUBE-SERVICES` with one rule
//!   per service, a `KUBE-SVC` chain of `statistic --mode random
//!   --probability 1/k` rules per service, a `KUBE-SEP` chain (mark for
//!   masquerade, DNAT) per backend; the measured service in the middle
//!   of `KUBE-SERVICES`;
//! - `nftables`: the same veths, kube-proxy's nftables layout: one
//!   verdict map `VIP . proto . port : goto service-chain`, per service
//!   `numgen random mod N vmap`, per backend a chain with the DNAT
//!   (loaded in batches of [`NFT_BATCH`] services: see there).
//!
//! Every service beside the measured one points at the same synthetic
//! addresses on all three sides. Measured with `cargo xtask loadgen`
//! (every process pinned to the last CPU, as in the NAT section): new
//! connections per second to VIP:80 and request/response transactions per
//! second on one kept-open connection. Then the time one backend change
//! takes with that many services present: weft through its API (the
//! backend's label removed, then put back: the agent's answer, render,
//! apply and store commit included), iptables `iptables-restore
//! --noflush` of the service's chain, nftables one `nft` command line
//! rewriting it. Last, DNS: the agent's server against dnsmasq serving
//! the same names, in the same node namespace, asked from the client.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_api::{
    Client,
    requests::{BenchServices, LabelEndpoint},
};
use weft_harness::{
    netns::NetNs,
    node::{Agent, AgentLog, Node},
    proc,
};

use crate::bench::{Target, median};

/// Service counts measured.
pub const SCALES: [u32; 3] = [1, 1_000, 10_000];
/// Backends per service.
const BACKENDS: u32 = 10;
/// The Maglev table size weft uses here: 10,000 distinct tables of the
/// default 16381 slots would be 655 MB and do not fit `WEFT_MAGLEV`;
/// 1021 is the smallest prime above Cilium's rule of thumb M > 100 N.
pub const MAGLEV_SIZE: u32 = 1021;
const PORT: u16 = 80;
const TARGET: u16 = 8080;
/// The measured service's VIP on every side (weft gives it the range's
/// first address).
const VIP: &str = "10.96.0.1";
/// Backend changes timed per side and scale (removals and re-adds).
const CHANGES: usize = 20;
const CRR_THREADS: &str = "4";
const WEFT_SUBNET: &str = "10.230.0.0/24";
const T: Duration = Duration::from_secs(30);
/// Loading 10,000 services' rules may take long on a loaded machine.
const LOAD_BUDGET: Duration = Duration::from_secs(600);
/// The nftables table (kube-proxy's is `ip kube-proxy`).
const NFT_TABLE: &str = "kube-proxy";

/// The section's figures, targets and the lines it printed.
pub struct ServicesBench {
    pub json: Value,
    pub targets: Vec<Target>,
}

/// What steers a side's service traffic.
enum Steering {
    /// weft with its agent (killed before the node's teardown).
    Weft {
        _agent: Agent,
        node: Node,
    },
    Iptables(NetNs),
    Nftables(NetNs),
}

/// One side. Fields drop in declaration order: the node first.
struct Side {
    name: &'static str,
    steering: Steering,
    client: NetNs,
    /// Backend containers and their addresses, in name order.
    backends: Vec<(NetNs, String)>,
    _servers: Vec<proc::Background>,
}

/// Figures of one side at one scale.
#[derive(Default)]
struct Figures {
    crr: Vec<f64>,
    rr: Vec<f64>,
    /// Backend change times, ms.
    change_ms: Vec<f64>,
    /// Time to load all services (ms).
    load_ms: Option<f64>,
    errors: Vec<String>,
    failed: u64,
    /// weft: the agent's account of the last changes' time.
    breakdown: Vec<String>,
}

pub fn run(reps: u32, secs: u32) -> Result<ServicesBench> {
    let exe = std::env::current_exe().context("locating the xtask binary for loadgen")?;
    let secs = secs.min(3);
    let files = Files::new();
    let mut sides = Vec::new();
    let mut unavailable = Vec::new();
    for (name, build) in [
        ("weft", weft_side as fn(&Path) -> Result<Side>),
        ("iptables", |exe| kernel_side("iptables", exe)),
        ("nftables", |exe| kernel_side("nftables", exe)),
    ] {
        match build(&exe) {
            Ok(s) => sides.push(s),
            Err(e) => {
                proc::check_interrupted()?;
                eprintln!("xtask bench: services {name} side unavailable: {e:#}");
                unavailable.push((name, format!("{e:#}")));
            }
        }
    }
    let mut figures: Vec<Vec<Figures>> = SCALES
        .iter()
        .map(|_| sides.iter().map(|_| Figures::default()).collect())
        .collect();
    for (scale_no, &n) in SCALES.iter().enumerate() {
        println!("\n== services: {n} service(s) of {BACKENDS} backends");
        for (s, f) in sides.iter().zip(&mut figures[scale_no]) {
            match load(s, n, &files) {
                Ok(ms) => {
                    println!("{:<9} {n} services loaded in {ms:.0} ms", s.name);
                    f.load_ms = Some(ms);
                }
                Err(e) => {
                    proc::check_interrupted()?;
                    println!("{:<9} loading {n} services FAILED: {e:#}", s.name);
                    f.errors.push(format!("loading {n} services: {e:#}"));
                }
            }
        }
        for rep in 1..=reps {
            for (s, f) in sides.iter().zip(&mut figures[scale_no]) {
                if f.load_ms.is_some() {
                    measure(s, f, rep, secs, &exe)?;
                }
            }
        }
        for (s, f) in sides.iter().zip(&mut figures[scale_no]) {
            if f.load_ms.is_none() {
                continue;
            }
            match changes(s, n, &files) {
                Ok(ms) => {
                    let p50 = median(ms.clone()).unwrap_or(f64::NAN);
                    println!(
                        "{:<9} one backend change with {n} services: p50 {p50:.2} ms (max {:.2})",
                        s.name,
                        ms.iter().copied().fold(0.0, f64::max)
                    );
                    if s.name == "weft" {
                        f.breakdown = change_breakdown(4);
                        for l in &f.breakdown {
                            println!("    agent: {l}");
                        }
                    }
                    f.change_ms = ms;
                }
                Err(e) => {
                    proc::check_interrupted()?;
                    println!("{:<9} backend changes FAILED: {e:#}", s.name);
                    f.errors.push(format!("backend changes at {n}: {e:#}"));
                }
            }
        }
    }
    let dns = match sides.iter().find(|s| s.name == "weft") {
        Some(s) => dns(s, secs.max(2), &exe, &files).unwrap_or_else(|e| {
            println!("DNS measurement FAILED: {e:#}");
            json!({"unavailable": format!("{e:#}")})
        }),
        None => json!({"unavailable": "no weft side"}),
    };
    println!("\n== services: cleaning up namespaces");
    let _ = fs::remove_file(agent_log());
    let names: Vec<&str> = sides.iter().map(|s| s.name).collect();
    drop(sides);
    Ok(results(&names, &figures, &unavailable, dns))
}

/// Scratch files of the run (rules, hosts), removed at the end.
struct Files(PathBuf);

impl Files {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("weft-bench-{}-services", std::process::id())))
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        fs::create_dir_all(&self.0).with_context(|| format!("creating {}", self.0.display()))?;
        Ok(self.0.join(name))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Clients may use every port and reuse TIME_WAIT ones.
fn widen_ports(ns: &NetNs) -> Result<()> {
    ns.sysctl(&[
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
    ])
}

fn pinned_cpu() -> usize {
    crate::bench::cpus().saturating_sub(1)
}

/// `loadgen serve` in every backend.
fn servers(exe: &Path, backends: &[(NetNs, String)]) -> Result<Vec<proc::Background>> {
    let exe = exe.to_string_lossy();
    let listen = format!("0.0.0.0:{TARGET}");
    let mut v = Vec::new();
    for (ns, _) in backends {
        v.push(proc::Background::spawn(&mut ns.command_on(
            Some(pinned_cpu()),
            &[&exe, "loadgen", "serve", "--listen", &listen],
        ))?);
        ns.wait_listening(false, TARGET, Duration::from_secs(5))?;
    }
    Ok(v)
}

fn weft_side(exe: &Path) -> Result<Side> {
    let node = Node::new()?;
    println!(
        "== services topology weft: {} (weft, Maglev M={MAGLEV_SIZE}), a client, {BACKENDS} backends",
        node.ns.name()
    );
    node.weft(&["network", "create", "svcb", "--subnet", WEFT_SUBNET])?;
    node.weft(&[
        "service",
        "config",
        "--maglev-size",
        &MAGLEV_SIZE.to_string(),
    ])?;
    let (client, _) = node.container_with("svcb", "cl", &["--mtu", "1500"])?;
    widen_ports(&client)?;
    let mut backends = Vec::new();
    for i in 0..BACKENDS {
        let name = format!("b{i}");
        backends.push(node.container_with(
            "svcb",
            &name,
            &["--mtu", "1500", "--label", "app=svcb"],
        )?);
    }
    // Debug: the agent logs how long each change's steps took.
    let agent = node.start_agent_env(&[], &[("WEFT_LOG", "debug")], AgentLog::File(agent_log()))?;
    let svc = node.weft_json(&[
        "service",
        "create",
        "bench",
        "--port",
        &format!("{PORT}/tcp:{TARGET}"),
        "--select",
        "app=svcb",
        "--vip",
        VIP,
    ])?;
    if svc["vip"].as_str() != Some(VIP) {
        bail!("service create gave {svc}, expected VIP {VIP}");
    }
    let servers = servers(exe, &backends)?;
    Ok(Side {
        name: "weft",
        steering: Steering::Weft {
            _agent: agent,
            node,
        },
        client,
        backends,
        _servers: servers,
    })
}

/// The weft side's agent log.
fn agent_log() -> PathBuf {
    std::env::temp_dir().join(format!(
        "weft-bench-{}-services-agent.log",
        std::process::id()
    ))
}

/// The agent's last `count` lines about where a change's time went.
fn change_breakdown(count: usize) -> Vec<String> {
    let text = fs::read_to_string(agent_log()).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("apply: previous render") || l.contains("change applied in"))
        .map(|l| l.trim().to_owned())
        .collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

/// A node namespace with the client and backends on routed veths (each
/// container its own /24, the node as gateway), forwarding on.
fn kernel_side(name: &'static str, exe: &Path) -> Result<Side> {
    let node = NetNs::new("svc-node")?;
    println!(
        "== services topology {name}: {} (routed veths, kube-proxy's {name} rules), a client, \
         {BACKENDS} backends",
        node.name()
    );
    node.sysctl(&["net.ipv4.ip_forward=1"])?;
    let third = if name == "iptables" { 232 } else { 233 };
    let mut containers = Vec::new();
    for k in 0..=BACKENDS {
        let ns = NetNs::new("svc-c")?;
        let host = format!("s{k}");
        node.add_veth(&host, &ns, "eth0", Some(1500))?;
        node.add_addr(&host, &format!("10.{third}.{k}.1/24"))?;
        ns.add_addr("eth0", &format!("10.{third}.{k}.2/24"))?;
        ns.add_default_route(&format!("10.{third}.{k}.1"))?;
        containers.push((ns, format!("10.{third}.{k}.2")));
    }
    let mut containers = containers.into_iter();
    let (client, _) = containers.next().context("no client container")?;
    widen_ports(&client)?;
    let backends: Vec<(NetNs, String)> = containers.collect();
    let servers = servers(exe, &backends)?;
    let steering = match name {
        "iptables" => Steering::Iptables(node),
        _ => Steering::Nftables(node),
    };
    Ok(Side {
        name,
        steering,
        client,
        backends,
        _servers: servers,
    })
}

/// The `n` services every side holds: (VIP, backend addresses), the
/// measured one (real backends) at index [`measured`]`(n)`, the others
/// with the addresses weft's synthetic services have (VIPs from the top
/// of 10.96.0.0/16 down, backends from 100.80.0.1 up).
fn service_list(n: u32, real: &[String]) -> Vec<(String, Vec<String>)> {
    let synthetic = (0..n.saturating_sub(1)).map(|i| {
        let vip = std::net::Ipv4Addr::from(0x0a60_fffe - i);
        let backends = (0..BACKENDS)
            .map(|j| std::net::Ipv4Addr::from(0x6450_0001 + i * BACKENDS + j).to_string())
            .collect();
        (vip.to_string(), backends)
    });
    let mut all: Vec<(String, Vec<String>)> = synthetic.collect();
    all.insert(measured(n), (VIP.to_owned(), real.to_vec()));
    all
}

/// Where the measured service sits among `n`: the middle, the average
/// place of a service in kube-proxy's linear `KUBE-SERVICES` walk.
fn measured(n: u32) -> usize {
    (n / 2) as usize
}

/// kube-proxy's iptables rules (nat table) for `services`.
fn iptables_rules(services: &[(String, Vec<String>)]) -> String {
    let mut r = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n",
    );
    for (i, (_, backends)) in services.iter().enumerate() {
        let _ = writeln!(r, ":KUBE-SVC-{i} - [0:0]");
        for j in 0..backends.len() {
            let _ = writeln!(r, ":KUBE-SEP-{i}-{j} - [0:0]");
        }
    }
    r.push_str(
        "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n\
         -A POSTROUTING -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -j MASQUERADE\n",
    );
    for (i, (vip, _)) in services.iter().enumerate() {
        let _ = writeln!(
            r,
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m tcp --dport {PORT} -j KUBE-SVC-{i}"
        );
    }
    for (i, (_, backends)) in services.iter().enumerate() {
        r.push_str(&svc_chain_rules(i, backends.len()));
        for (j, ip) in backends.iter().enumerate() {
            let _ = writeln!(r, "-A KUBE-SEP-{i}-{j} -s {ip}/32 -j KUBE-MARK-MASQ");
            let _ = writeln!(
                r,
                "-A KUBE-SEP-{i}-{j} -p tcp -m tcp -j DNAT --to-destination {ip}:{TARGET}"
            );
        }
    }
    r.push_str("COMMIT\n");
    r
}

/// Service `i`'s `KUBE-SVC` rules over its first `k` backends: backend j
/// taken with probability 1/(k-j), the last without a test.
fn svc_chain_rules(i: usize, k: usize) -> String {
    let mut r = String::new();
    for j in 0..k {
        if j + 1 < k {
            let _ = writeln!(
                r,
                "-A KUBE-SVC-{i} -m statistic --mode random --probability {:.11} -j KUBE-SEP-{i}-{j}",
                1.0 / (k - j) as f64
            );
        } else {
            let _ = writeln!(r, "-A KUBE-SVC-{i} -j KUBE-SEP-{i}-{j}");
        }
    }
    r
}

/// Services per `nft -f` transaction: nft 1.0.6 takes time quadratic in
/// one transaction's size (1,000 services 1.2 s, 2,000 4.2 s, 10,000
/// over 3 minutes), so the rules go in as a fresh table and then batches
/// of this many services (about 1.5 s each, whatever the table holds).
const NFT_BATCH: usize = 1000;

/// kube-proxy's nftables table for the services, empty: its service map
/// and the hooks that look it up (replacing any table before).
fn nft_table() -> String {
    format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n\
         \x20 map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n  }}\n\
         \x20 chain nat-prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n\
         \x20   ip daddr . meta l4proto . th dport vmap @service-ips\n  }}\n\
         \x20 chain nat-output {{\n    type nat hook output priority -100; policy accept;\n\
         \x20   ip daddr . meta l4proto . th dport vmap @service-ips\n  }}\n\
         \x20 chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   meta mark & 0x4000 == 0x4000 masquerade\n  }}\n}}\n"
    )
}

/// Services `first..` of `services` as `nft` commands: per backend a
/// chain that marks hairpin traffic for masquerade and DNATs, per service
/// a chain spreading with `numgen`, and the service map's elements.
fn nft_batch(services: &[(String, Vec<String>)], first: usize) -> String {
    let t = NFT_TABLE;
    let mut r = String::new();
    let mut elements = Vec::new();
    for (n, (vip, backends)) in services.iter().enumerate() {
        let i = first + n;
        for (j, ip) in backends.iter().enumerate() {
            let _ = writeln!(
                r,
                "add chain ip {t} sep-{i}-{j}\n\
                 add rule ip {t} sep-{i}-{j} ip saddr {ip} meta mark set meta mark | 0x4000\n\
                 add rule ip {t} sep-{i}-{j} meta l4proto tcp dnat to {ip}:{TARGET}"
            );
        }
        let _ = writeln!(
            r,
            "add chain ip {t} svc-{i}\nadd rule ip {t} svc-{i} {}",
            nft_svc_rule(i, backends.len())
        );
        elements.push(format!("{vip} . tcp . {PORT} : goto svc-{i}"));
    }
    let _ = writeln!(
        r,
        "add element ip {t} service-ips {{ {} }}",
        elements.join(", ")
    );
    r
}

/// Service `i`'s spreading rule over its first `k` backends.
fn nft_svc_rule(i: usize, k: usize) -> String {
    let arms: Vec<String> = (0..k).map(|j| format!("{j} : goto sep-{i}-{j}")).collect();
    format!("numgen random mod {k} vmap {{ {} }}", arms.join(", "))
}

fn real_backends(s: &Side) -> Vec<String> {
    s.backends.iter().map(|(_, ip)| ip.clone()).collect()
}

/// Makes side `s` hold `n` services; the time it took, ms.
fn load(s: &Side, n: u32, files: &Files) -> Result<f64> {
    let started = Instant::now();
    match &s.steering {
        Steering::Weft { node, .. } => {
            let t = Client::new(node.agent_socket()).call_blocking(BenchServices {
                count: n - 1,
                backends: BACKENDS,
            })?;
            if t.services != n - 1 {
                bail!(
                    "the agent programmed {} synthetic services, not {}",
                    t.services,
                    n - 1
                );
            }
        }
        Steering::Iptables(ns) => {
            let file = files.path("iptables.rules")?;
            let services = service_list(n, &real_backends(s));
            fs::write(&file, iptables_rules(&services))?;
            let started = Instant::now();
            proc::stdout(
                &mut ns.command(&["iptables-restore", &file.to_string_lossy()]),
                LOAD_BUDGET,
            )?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let listed = proc::stdout(
                &mut ns.command(&["iptables", "-t", "nat", "-S", "KUBE-SERVICES"]),
                LOAD_BUDGET,
            )?;
            let rules = listed.lines().filter(|l| l.starts_with("-A")).count();
            if rules != n as usize {
                bail!("KUBE-SERVICES holds {rules} rules, expected {n}");
            }
            short_time_wait(ns);
            return Ok(ms);
        }
        Steering::Nftables(ns) => {
            let file = files.path("nft.rules")?;
            let services = service_list(n, &real_backends(s));
            let mut ms = 0.0;
            let batches = std::iter::once(nft_table()).chain(
                services
                    .chunks(NFT_BATCH)
                    .enumerate()
                    .map(|(b, part)| nft_batch(part, b * NFT_BATCH)),
            );
            for text in batches {
                fs::write(&file, text)?;
                let started = Instant::now();
                proc::stdout(
                    &mut ns.command(&["nft", "-f", &file.to_string_lossy()]),
                    LOAD_BUDGET,
                )?;
                ms += started.elapsed().as_secs_f64() * 1e3;
            }
            short_time_wait(ns);
            return Ok(ms);
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// The kernel's conntrack keeps closed connections in TIME_WAIT for 120 s;
/// at tens of thousands of connections per second that fills its table.
/// Only this namespace's setting (per netns since Linux 4.x); best effort.
fn short_time_wait(ns: &NetNs) {
    let _ = ns.sysctl(&["net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"]);
}

/// What one `loadgen` client run measured.
struct Run {
    rate: f64,
    failed: u64,
    raw: Value,
}

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
    if v["ops"].as_u64() == Some(0) {
        bail!("nothing completed: {v}");
    }
    Ok(Run {
        rate: v["per_second"].as_f64().context("loadgen: no per_second")?,
        failed: v["errors"].as_u64().unwrap_or(0),
        raw: v,
    })
}

fn measure(s: &Side, f: &mut Figures, rep: u32, secs: u32, exe: &Path) -> Result<()> {
    if let Steering::Weft { node, .. } = &s.steering {
        let _ = node.weft(&["ct", "gc"]);
    }
    let port = PORT.to_string();
    let addr = format!("{VIP}:{PORT}");
    let crr = client(
        &s.client,
        exe,
        &[
            "crr",
            "--to",
            VIP,
            "--ports",
            &port,
            "--threads",
            CRR_THREADS,
        ],
        secs,
    );
    let rr = client(&s.client, exe, &["rr", "--to", &addr], secs);
    proc::check_interrupted()?;
    let mut line = format!("rep {rep} {:<9}", s.name);
    for (what, res, into) in [("conn", crr, &mut f.crr), ("rr", rr, &mut f.rr)] {
        match res {
            Ok(run) => {
                let _ = write!(line, "  {what} {:8.0}/s", run.rate);
                if run.failed > 0 {
                    let _ = write!(line, " ({} FAILED {})", run.failed, run.raw["error_kinds"]);
                    f.errors.push(format!("rep {rep} {what}: {}", run.raw));
                }
                f.failed += run.failed;
                into.push(run.rate);
            }
            Err(e) => {
                let _ = write!(line, "  {what} FAILED");
                f.errors.push(format!("rep {rep} {what}: {e:#}"));
            }
        }
    }
    println!("{line}");
    Ok(())
}

/// [`CHANGES`] backend changes (the last backend out, then back in, ...);
/// each one's wall time, ms.
fn changes(s: &Side, n: u32, files: &Files) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    let m = measured(n);
    for c in 0..CHANGES {
        let remove = c % 2 == 0;
        let k = if remove { BACKENDS - 1 } else { BACKENDS } as usize;
        let ms = match &s.steering {
            Steering::Weft { node, .. } => {
                let client = Client::new(node.agent_socket());
                let last = format!("b{}", BACKENDS - 1);
                let req = if remove {
                    LabelEndpoint {
                        name: last,
                        set: Vec::new(),
                        remove: vec!["app".into()],
                    }
                } else {
                    LabelEndpoint {
                        name: last,
                        set: vec!["app=svcb".into()],
                        remove: Vec::new(),
                    }
                };
                let started = Instant::now();
                client.call_blocking(req)?;
                started.elapsed().as_secs_f64() * 1e3
            }
            Steering::Iptables(ns) => {
                let file = files.path("iptables.change")?;
                fs::write(
                    &file,
                    format!(
                        "*nat\n:KUBE-SVC-{m} - [0:0]\n{}COMMIT\n",
                        svc_chain_rules(m, k)
                    ),
                )?;
                let started = Instant::now();
                proc::stdout(
                    &mut ns.command(&["iptables-restore", "--noflush", &file.to_string_lossy()]),
                    LOAD_BUDGET,
                )?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let listed = proc::stdout(
                    &mut ns.command(&["iptables", "-t", "nat", "-S", &format!("KUBE-SVC-{m}")]),
                    LOAD_BUDGET,
                )?;
                let rules = listed.lines().filter(|l| l.starts_with("-A")).count();
                if rules != k {
                    bail!("KUBE-SVC-{m} holds {rules} rules after the change, expected {k}");
                }
                ms
            }
            Steering::Nftables(ns) => {
                let line = format!(
                    "flush chain ip {NFT_TABLE} svc-{m}; add rule ip {NFT_TABLE} svc-{m} {}",
                    nft_svc_rule(m, k)
                );
                let started = Instant::now();
                proc::stdout(&mut ns.command(&["nft", &line]), LOAD_BUDGET)?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let listed = proc::stdout(
                    &mut ns.command(&[
                        "nft",
                        "list",
                        "chain",
                        "ip",
                        NFT_TABLE,
                        &format!("svc-{m}"),
                    ]),
                    LOAD_BUDGET,
                )?;
                if !listed.contains(&format!("mod {k} ")) {
                    bail!("svc-{m} does not spread over {k} backends after the change: {listed}");
                }
                ms
            }
        };
        out.push(ms);
    }
    Ok(out)
}

/// DNS: weft's agent and dnsmasq, the same names, asked from the client.
fn dns(s: &Side, secs: u32, exe: &Path, files: &Files) -> Result<Value> {
    let Steering::Weft { node, .. } = &s.steering else {
        bail!("DNS is measured on the weft side");
    };
    let gateway = WEFT_SUBNET.replace(".0/24", ".1");
    // The records weft serves for this topology: every endpoint and the
    // service, answered from the model.
    let mut records: Vec<(String, String)> = s
        .backends
        .iter()
        .enumerate()
        .map(|(i, (_, ip))| (format!("b{i}.weft"), ip.clone()))
        .collect();
    let cl = node.weft_json(&["endpoint", "ls"])?;
    let cl_ip = cl
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "cl"))
        .and_then(|e| e["ip"].as_str())
        .context("endpoint ls has no `cl`")?
        .to_owned();
    records.push(("cl.weft".into(), cl_ip));
    records.push(("bench.weft".into(), VIP.into()));
    let hosts = files.path("dnsmasq.hosts")?;
    let text: String = records
        .iter()
        .map(|(n, ip)| format!("{ip} {n}\n"))
        .collect();
    fs::write(&hosts, text)?;
    let pid_file = files.path("dnsmasq.pid")?;
    const DNSMASQ_PORT: u16 = 5353;
    println!(
        "\n== services: DNS, weft's agent ({gateway}:53) vs dnsmasq ({gateway}:{DNSMASQ_PORT}) in {}, {} names",
        node.ns.name(),
        records.len()
    );
    let _dnsmasq = proc::Background::spawn(&mut node.ns.command(&[
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        &format!("--addn-hosts={}", hosts.display()),
        "--local=/weft/",
        &format!("--listen-address={gateway}"),
        "--bind-interfaces",
        &format!("--port={DNSMASQ_PORT}"),
        "--local-ttl=5",
        &format!("--pid-file={}", pid_file.display()),
        "--user=root",
        "--log-facility=/dev/null",
    ]))?;
    node.ns
        .wait_listening(true, DNSMASQ_PORT, Duration::from_secs(5))?;
    let names: Vec<&str> = records.iter().map(|(n, _)| n.as_str()).collect();
    let names = names.join(",");
    let mut out = serde_json::Map::new();
    let servers = [("weft", 53u16), ("dnsmasq", DNSMASQ_PORT)];
    let mut samples: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    for _rep in 0..2 {
        for ((name, port), into) in servers.iter().zip(&mut samples) {
            let to = format!("{gateway}:{port}");
            let secs_s = secs.to_string();
            let exe_s = exe.to_string_lossy();
            let text = proc::stdout(
                &mut s.client.command_on(
                    Some(pinned_cpu()),
                    &[
                        &exe_s, "loadgen", "dns", "--to", &to, "--names", &names, "--secs", &secs_s,
                    ],
                ),
                Duration::from_secs(u64::from(secs) + 20),
            )?;
            let v: Value = serde_json::from_str(text.trim())
                .with_context(|| format!("loadgen dns printed {text}"))?;
            println!(
                "{name:<8} {:8.0} queries/s  p50 {:7.1} us  p99 {:7.1} us  errors {} {}",
                v["per_second"].as_f64().unwrap_or(0.0),
                v["p50_us"].as_f64().unwrap_or(f64::NAN),
                v["p99_us"].as_f64().unwrap_or(f64::NAN),
                v["errors"],
                v["error_kinds"]
            );
            into.push(v);
        }
    }
    for ((name, _), runs) in servers.iter().zip(samples) {
        let med = |k: &str| median(runs.iter().filter_map(|r| r[k].as_f64()).collect());
        out.insert(
            (*name).into(),
            json!({
                "queries_per_s_median": med("per_second"),
                "p50_us_median": med("p50_us"),
                "p99_us_median": med("p99_us"),
                "runs": runs,
            }),
        );
    }
    out.insert(
        "method".into(),
        json!(format!(
            "cargo xtask loadgen dns in the client container pinned to the last CPU: one UDP socket, 32 A queries outstanding, names in turn ({}), {secs} s per run, 2 interleaved runs; weft's agent on the network gateway :53 (unpinned); dnsmasq {} (dnsmasq-base) in the same node namespace on the gateway :5353, --no-resolv --no-hosts --addn-hosts with the same records, --local=/weft/, unpinned; a query unanswered after 1 s is lost, any answer but NOERROR with a record an error",
            records.len(),
            dnsmasq_version()
        )),
    );
    Ok(Value::Object(out))
}

fn dnsmasq_version() -> String {
    proc::stdout(&mut proc::cmd("dnsmasq", &["--version"]), T)
        .ok()
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

fn results(
    names: &[&str],
    figures: &[Vec<Figures>],
    unavailable: &[(&str, String)],
    dns: Value,
) -> ServicesBench {
    let at = |side: &str, scale: u32, f: fn(&Figures) -> Option<f64>| {
        let s = SCALES.iter().position(|&n| n == scale)?;
        let i = names.iter().position(|n| *n == side)?;
        f(&figures[s][i])
    };
    let crr = |f: &Figures| median(f.crr.clone());
    let rr = |f: &Figures| median(f.rr.clone());
    let change = |f: &Figures| median(f.change_ms.clone());
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let big = SCALES[SCALES.len() - 1];
    let mut targets = Vec::new();
    for (what, f) in [("conn/s", crr as fn(&Figures) -> Option<f64>), ("RR", rr)] {
        targets.push(Target {
            what: format!("services {what} weft/iptables @{big}"),
            value: ratio(at("weft", big, f), at("iptables", big, f)),
            unit: "x",
            at_least: true,
            goal: 1.5,
        });
        targets.push(Target {
            what: format!("services {what} weft {big}/1"),
            value: ratio(at("weft", big, f), at("weft", 1, f)),
            unit: "x",
            at_least: true,
            goal: 0.95,
        });
    }
    targets.push(Target {
        what: format!("services: backend change p50 weft @{big}"),
        value: at("weft", big, change),
        unit: "ms",
        at_least: false,
        goal: 10.0,
    });
    let fmt = |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.p$}"));
    println!(
        "\n{:<9} {:>8} {:>12} {:>12} {:>14} {:>12}",
        "services", "count", "conn/s", "RR/s", "change p50 ms", "load ms"
    );
    let mut per_side = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let mut scales = serde_json::Map::new();
        for (s, &n) in SCALES.iter().enumerate() {
            let f = &figures[s][i];
            println!(
                "{name:<9} {n:>8} {:>12} {:>12} {:>14} {:>12}",
                fmt(crr(f), 0),
                fmt(rr(f), 0),
                fmt(change(f), 2),
                fmt(f.load_ms, 0)
            );
            scales.insert(
                n.to_string(),
                json!({
                    "conn_per_s_median": crr(f),
                    "rr_per_s_median": rr(f),
                    "change_ms_median": change(f),
                    "load_ms": f.load_ms,
                    "samples": {"conn_per_s": f.crr, "rr_per_s": f.rr, "change_ms": f.change_ms},
                    "failed_connections": f.failed,
                    "change_breakdown": f.breakdown,
                    "errors": f.errors,
                }),
            );
        }
        per_side.insert((*name).to_owned(), Value::Object(scales));
    }
    for (name, why) in unavailable {
        println!(
            "{name:<9} (unavailable: {})",
            why.lines().next().unwrap_or("")
        );
        per_side.insert((*name).to_owned(), json!({ "unavailable": why }));
    }
    let mut ratios = serde_json::Map::new();
    for &n in &SCALES {
        let line = format!(
            "@{n}: weft/iptables conn {} RR {}; weft/nftables conn {} RR {}; change ms weft {} iptables {} nftables {}",
            fmt(ratio(at("weft", n, crr), at("iptables", n, crr)), 2),
            fmt(ratio(at("weft", n, rr), at("iptables", n, rr)), 2),
            fmt(ratio(at("weft", n, crr), at("nftables", n, crr)), 2),
            fmt(ratio(at("weft", n, rr), at("nftables", n, rr)), 2),
            fmt(at("weft", n, change), 2),
            fmt(at("iptables", n, change), 2),
            fmt(at("nftables", n, change), 2),
        );
        println!("{line}");
        ratios.insert(
            n.to_string(),
            json!({
                "conn_weft_over_iptables": ratio(at("weft", n, crr), at("iptables", n, crr)),
                "rr_weft_over_iptables": ratio(at("weft", n, rr), at("iptables", n, rr)),
                "conn_weft_over_nftables": ratio(at("weft", n, crr), at("nftables", n, crr)),
                "rr_weft_over_nftables": ratio(at("weft", n, rr), at("nftables", n, rr)),
            }),
        );
    }
    ServicesBench {
        json: json!({
            "scales": SCALES,
            "backends_per_service": BACKENDS,
            "maglev_size": MAGLEV_SIZE,
            "sides": Value::Object(per_side),
            "ratios": Value::Object(ratios),
            "dns": dns,
            "method": format!("one client and {BACKENDS} backend containers (loadgen serve :{TARGET}) per side; the measured service VIP {VIP}:{PORT}; other services point at addresses that exist only in tables/rules (weft: POST /v1/bench/services, synthetic services rendered by the real services' code; kernel sides: the same VIPs and addresses in kube-proxy's rules). cargo xtask loadgen pinned to the last CPU (clients and servers), 64-byte TCP request/response; conn = connect, one exchange, close ({CRR_THREADS} threads); RR = one kept-open connection; weft Maglev M={MAGLEV_SIZE}; kernel sides on routed veths, iptables {} with kube-proxy's KUBE-SERVICES/KUBE-SVC (statistic random)/KUBE-SEP layout, the measured service in the middle of KUBE-SERVICES; nftables with kube-proxy's vmap + numgen layout; conntrack TIME_WAIT timeout 1 s in the kernel node namespaces. Backend change: {CHANGES} changes, alternately the last backend out and back in; weft = client-side wall time of POST /v1/endpoints/b9/labels through the agent (render, apply, store commit); iptables = iptables-restore --noflush of the service's KUBE-SVC chain; nftables = one nft command line flushing and rewriting the service chain", iptables_version()),
        }),
        targets,
    }
}

fn iptables_version() -> String {
    proc::stdout(&mut proc::cmd("iptables", &["-V"]), T)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The section's targets with no figures (it did not run).
pub fn targets_not_run() -> Vec<Target> {
    results(&[], &[], &[], Value::Null).targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_layouts_have_a_chain_per_service_and_backend() {
        let real: Vec<String> = (0..BACKENDS).map(|i| format!("10.232.{i}.2")).collect();
        let services = service_list(3, &real);
        assert_eq!(services[measured(3)].0, VIP);
        assert_eq!(services[0].0, "10.96.255.254");
        assert_eq!(services[0].1[0], "100.80.0.1");
        let ipt = iptables_rules(&services);
        assert_eq!(ipt.matches("-A KUBE-SERVICES -d").count(), 3);
        assert_eq!(ipt.matches("-j DNAT").count(), 30);
        assert_eq!(ipt.matches("--mode random").count(), 27);
        assert!(ipt.contains("--probability 0.10000000000 -j KUBE-SEP-1-0"));
        assert!(ipt.contains(&format!("-j DNAT --to-destination 10.232.9.2:{TARGET}")));
        let nft = nft_batch(&services, 0);
        assert_eq!(nft.matches(" : goto svc-").count(), 3);
        assert_eq!(nft.matches("dnat to").count(), 30);
        assert!(nft.contains("numgen random mod 10 vmap { 0 : goto sep-1-0,"));
        assert!(nft_batch(&services[2..], 2).contains("add chain ip kube-proxy svc-2\n"));
        assert!(nft_table().contains("priority -100"));
        assert!(nft_svc_rule(1, 9).ends_with("8 : goto sep-1-8 }"));
        assert_eq!(svc_chain_rules(0, 9).lines().count(), 9);
    }
}

//! Services and DNS across two nodes in cluster mode (a real etcd and two
//! agents with `--etcd`, one node in tunnel mode and one in bpf mode, so
//! both decapsulation paths translate replies): a service created on one
//! node reaches every node through the store, its selector takes
//! backends on both nodes, and 1,000 connections from clients on both
//! nodes spread evenly over them (±25%), across the overlay both ways;
//! long-lived connections to a backend on the other node survive that
//! backend leaving the service while new connections avoid it; a name
//! registered on one node resolves on the other within 1 s and is gone
//! within its TTL after the endpoint is removed. The service published on
//! one node's port is reached from an outside namespace on the underlay
//! and spread over that node's backends.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_harness::proc;
use weft_tests::{cluster::ClusterNode, etcd::Etcd, netns::NetNs, underlay::Underlay};

const TTL: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(30);
/// The first address of the default service range.
const VIP: &str = "10.96.0.1";
/// The DNS TTL the agent answers with.
const DNS_TTL: Duration = Duration::from_secs(5);

/// Each connection gets the server's name, then an echo of what it sends.
const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1].encode() + b"\n"
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(512)
def serve(c):
    try:
        c.sendall(name)
        while True:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
    except OSError: pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// N connections to VIP:PORT; prints `name count` per backend reached.
const COUNT: &str = r#"
import socket, sys, collections
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = collections.Counter()
for _ in range(n):
    c = socket.create_connection((vip, port), timeout=5)
    seen[c.makefile().readline().strip()] += 1
    c.close()
for k, v in seen.items(): print(k, v)
"#;

/// One connection held open: prints the backend's name, then echoes
/// stdin lines through it.
const HOLD: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = c.makefile("rwb")
print(f.readline().decode().strip(), flush=True)
for line in sys.stdin:
    f.write(line.encode()); f.flush()
    print(f.readline().decode().strip(), flush=True)
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(ns: &NetNs, name: &str) -> Result<Killed> {
    let child = ns
        .command(&["python3", "-c", SERVER, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    ns.wait_listening(false, 8080, TIMEOUT)?;
    Ok(Killed(child))
}

fn count(ns: &NetNs, n: u32) -> Result<HashMap<String, u32>> {
    count_at(ns, VIP, 80, n)
}

/// `n` connections from `ns` to `addr:port`: how many each backend took.
fn count_at(ns: &NetNs, addr: &str, port: u16, n: u32) -> Result<HashMap<String, u32>> {
    let out = proc::stdout(
        &mut ns.command(&[
            "python3",
            "-c",
            COUNT,
            addr,
            &port.to_string(),
            &n.to_string(),
        ]),
        TIMEOUT * 4,
    )?;
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').context("name count")?;
            Ok((k.to_owned(), v.parse()?))
        })
        .collect()
}

struct Held {
    _child: Killed,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    fn open(ns: &NetNs) -> Result<(Self, String)> {
        let mut child = ns
            .command(&["python3", "-c", HOLD, VIP, "80"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut held = Self {
            _child: Killed(child),
            stdin,
            stdout,
        };
        let name = held.line()?;
        Ok((held, name))
    }

    /// A connection from `ns` that landed on one of `backends`.
    fn open_to(ns: &NetNs, backends: &[&str]) -> Result<(Self, String)> {
        for _ in 0..64 {
            let (held, name) = Self::open(ns)?;
            if backends.contains(&name.as_str()) {
                return Ok((held, name));
            }
        }
        bail!("64 connections and none reached any of {backends:?}")
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        self.stdout.read_line(&mut s)?;
        Ok(s.trim().to_owned())
    }

    fn echo(&mut self, msg: &str) -> Result<String> {
        writeln!(self.stdin, "{msg}")?;
        self.line()
    }
}

/// The backends `service inspect` shows on `node`, by name.
fn members(node: &ClusterNode, service: &str) -> Result<Vec<String>> {
    let detail = node.node.node.weft_json(&["service", "inspect", service])?;
    let mut names: Vec<String> = detail["members"]
        .as_array()
        .with_context(|| format!("no members in {detail}"))?
        .iter()
        .filter_map(|m| m["endpoint"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Waits until every node in `nodes` shows exactly `want` as the
/// service's backends.
fn wait_members(nodes: &[&ClusterNode], service: &str, want: &[&str]) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    for n in nodes {
        loop {
            let got = members(n, service).unwrap_or_default();
            if got == want {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {}: service '{service}' has backends {got:?}, expected {want:?}",
                    n.name
                );
            }
            proc::sleep(Duration::from_millis(50))?;
        }
    }
    Ok(())
}

/// `dig @server name TYPE` from `ns`: the status and the answers.
fn dig(ns: &NetNs, server: &str, args: &[&str]) -> Result<(String, Vec<String>)> {
    let at = format!("@{server}");
    let mut argv = vec![
        "dig",
        "+time=1",
        "+tries=1",
        "+noall",
        "+comments",
        "+answer",
        &at,
    ];
    argv.extend(args);
    let out = proc::stdout(&mut ns.command(&argv), TIMEOUT)?;
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_owned();
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    Ok((status, answers))
}

/// Polls `dig` until `done` holds; how long that took.
fn dig_until(
    ns: &NetNs,
    server: &str,
    args: &[&str],
    within: Duration,
    done: impl Fn(&str, &[String]) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let (status, answers) = dig(ns, server, args)?;
        if done(&status, &answers) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!(
                "dig {args:?} still says {status} {answers:?} after {:?}",
                start.elapsed()
            );
        }
        proc::sleep(Duration::from_millis(20))?;
    }
}

#[test]
fn services_and_names_span_two_nodes() -> Result<()> {
    let underlay = Underlay::new(1500)?;
    let etcd = Etcd::single(&underlay)?;
    let urls = etcd.urls();
    let n1 = ClusterNode::start(&underlay, &urls, "n1", TTL, &[])?;
    n1.node
        .node
        .weft(&["network", "create", "blue", "--subnet", "10.61.0.0/16"])?;
    n1.set_overlay("tunnel")?;
    n1.wait_subnet("blue", TIMEOUT)?;
    let n2 = ClusterNode::join(&underlay, &urls, "n2", TTL, "bpf", &["blue"])?;
    for (n, other) in [(&n1, "n2"), (&n2, "n1")] {
        n.wait_nodes("the other node's subnet", TIMEOUT, |ls| {
            ls.iter()
                .any(|e| e["name"] == other && !e["subnets"].as_array().is_none_or(Vec::is_empty))
        })?;
    }
    let gateway = n1.node.node.weft_json(&["network", "inspect", "blue"])?["gateway"]
        .as_str()
        .context("blue's gateway")?
        .to_owned();

    let placement = [("web1", &n1), ("web2", &n1), ("web3", &n2), ("web4", &n2)];
    let mut backends = Vec::new();
    for (name, n) in placement {
        let (ns, _) = n
            .node
            .node
            .container_with("blue", name, &["--label", "app=web"])?;
        backends.push(ns);
    }
    let (c1, _) = n1.node.node.container("blue", "c1")?;
    let (c2, _) = n2.node.node.container("blue", "c2")?;
    let _servers: Vec<Killed> = backends
        .iter()
        .zip(placement)
        .map(|(ns, (name, _))| server(ns, name))
        .collect::<Result<_>>()?;

    // Created on n1, kept in etcd, applied by both.
    let created = n1.node.node.weft_json(&[
        "service",
        "create",
        "web",
        "--port",
        "80/tcp:8080",
        "--select",
        "app=web",
    ])?;
    assert_eq!(created["vip"], VIP, "{created}");
    let stored = etcd.get_prefix("/weft/cluster/services/")?;
    assert_eq!(stored.len(), 1, "the service is in etcd: {stored:?}");
    let all = ["web1", "web2", "web3", "web4"];
    wait_members(&[&n1, &n2], "web", &all)?;
    let on_n1: Value = n1.node.node.weft_json(&["service", "inspect", "web"])?;
    let remote: Vec<&Value> = on_n1["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter(|m| m["node"] == "n2")
        .collect();
    assert_eq!(remote.len(), 2, "n1 shows n2's backends as n2's: {on_n1}");

    // 1,000 connections, half from each node, spread over all four.
    let mut total: HashMap<String, u32> = HashMap::new();
    for (client, what) in [(&c1, "c1 on n1"), (&c2, "c2 on n2")] {
        let seen = count(client, 500)?;
        eprintln!("{what}: {seen:?}");
        for b in all {
            assert!(
                seen.get(b).copied().unwrap_or(0) > 0,
                "{what} reached {b} (Maglev spreads over both nodes): {seen:?}"
            );
            *total.entry(b.to_owned()).or_default() += seen.get(b).copied().unwrap_or(0);
        }
    }
    eprintln!("1,000 connections: {total:?}");
    for b in all {
        let got = total[b];
        assert!(
            (188..=312).contains(&got),
            "{b} got {got} of 1,000 connections (even: 250 +-25%): {total:?}"
        );
    }

    // Published on n1's address: outside clients are spread over n1's
    // own backends (externalTrafficPolicy=Local), with their own address.
    let published = n1.node.node.weft_json(&["publish", "web", "8080"])?;
    assert_eq!(published[0]["service"], true, "{published}");
    let outside = NetNs::new("wtout")?;
    underlay.plug(&outside)?;
    let n1_ip = n1.node.underlay_ip.to_string();
    let seen = count_at(&outside, &n1_ip, 8080, 100)?;
    eprintln!("outside -> n1:8080: {seen:?}");
    assert_eq!(seen.values().sum::<u32>(), 100, "all answered: {seen:?}");
    for b in ["web1", "web2"] {
        assert!(
            seen.get(b).copied().unwrap_or(0) >= 25,
            "{b} (on n1) takes its share of the published service: {seen:?}"
        );
    }
    assert!(
        !seen.contains_key("web3") && !seen.contains_key("web4"),
        "n2's backends are not used for n1's published port: {seen:?}"
    );

    // A long-lived connection from each node to a backend on the other;
    // both backends leave the service (their labels change on their own
    // nodes): established connections go on, new ones avoid them.
    let (mut held1, far1) = Held::open_to(&c1, &["web3", "web4"])?;
    let (mut held2, far2) = Held::open_to(&c2, &["web1", "web2"])?;
    assert_eq!(held1.echo("before")?, "before");
    assert_eq!(held2.echo("before")?, "before");
    n2.node
        .node
        .weft(&["endpoint", "label", &far1, "app=retired"])?;
    n1.node
        .node
        .weft(&["endpoint", "label", &far2, "app=retired"])?;
    let mut left: Vec<&str> = all
        .iter()
        .copied()
        .filter(|b| *b != far1 && *b != far2)
        .collect();
    left.sort();
    wait_members(&[&n1, &n2], "web", &left)?;
    for client in [&c1, &c2] {
        let seen = count(client, 100)?;
        assert_eq!(
            seen.values().sum::<u32>(),
            100,
            "new connections all answered: {seen:?}"
        );
        assert!(
            !seen.contains_key(&far1) && !seen.contains_key(&far2),
            "new connections avoid {far1} and {far2}, which left: {seen:?}"
        );
    }
    assert_eq!(
        held1.echo("after")?,
        "after",
        "c1's connection to {far1} on n2 survived its leaving"
    );
    assert_eq!(
        held2.echo("after")?,
        "after",
        "c2's connection to {far2} on n1 survived its leaving"
    );

    // A name registered on n2 resolves on n1 within 1 s; it is gone
    // within its TTL after the endpoint is.
    let (late, late_ip) = n2.node.node.container("blue", "late")?;
    let registered = Instant::now();
    let took = dig_until(&c1, &gateway, &["late.weft", "A"], TIMEOUT, |s, a| {
        s == "NOERROR" && a.contains(&late_ip)
    })?;
    let since = registered.elapsed();
    eprintln!("late.weft (registered on n2) resolved on n1 after {since:?} (polling {took:?})");
    assert!(
        since <= Duration::from_secs(1),
        "a name registered on another node resolves within 1 s: took {since:?}"
    );
    let reverse = dig(&c1, &gateway, &["-x", &late_ip])?;
    assert!(
        reverse.1.iter().any(|p| p == "late.weft."),
        "PTR of the remote endpoint: {reverse:?}"
    );
    n2.node.node.weft(&["endpoint", "rm", "late"])?;
    drop(late);
    let removed = Instant::now();
    dig_until(&c1, &gateway, &["late.weft", "A"], TIMEOUT, |s, _| {
        s == "NXDOMAIN"
    })?;
    let gone = removed.elapsed();
    eprintln!("late.weft gone on n1 {gone:?} after its removal on n2");
    assert!(
        gone <= DNS_TTL,
        "a removed endpoint's name goes within its TTL ({DNS_TTL:?}): took {gone:?}"
    );

    // The service goes from every node with its key.
    n2.node.node.weft(&["service", "rm", "web"])?;
    for n in [&n1, &n2] {
        let deadline = Instant::now() + TIMEOUT;
        while !n
            .node
            .node
            .weft_json(&["service", "ls"])?
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            if Instant::now() > deadline {
                bail!("service web still listed on {}", n.name);
            }
            proc::sleep(Duration::from_millis(50))?;
        }
    }
    assert!(etcd.get_prefix("/weft/cluster/services/")?.is_empty());
    Ok(())
}

//! Services on a real node with real connections: 300 TCP connections
//! from a client container to a VIP spread over three backends (Maglev
//! over the clients' source ports), a backend reaching its own service
//! (hairpin), a long-lived connection that survives its backend being
//! drained while new connections avoid it (and `service inspect` shows
//! it pinned there), and a service without backends refusing at once
//! (`ECONNREFUSED` from the ICMP port unreachable, `service_no_backend`
//! counted).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use weft_harness::proc;
use weft_tests::{netns::NetNs, node::Node};

const TIMEOUT: Duration = Duration::from_secs(30);
const VIP: &str = "10.96.0.1";

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

fn count(ns: &NetNs, vip: &str, n: u32) -> Result<HashMap<String, u32>> {
    let out = proc::stdout(
        &mut ns.command(&["python3", "-c", COUNT, vip, "80", &n.to_string()]),
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

#[test]
fn connections_spread_survive_a_drain_and_fail_fast_without_backends() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let names = ["web1", "web2", "web3"];
    let mut backends = Vec::new();
    for n in names {
        let (ns, _) = node.container_with("blue", n, &["--label", "app=web"])?;
        backends.push(ns);
    }
    let (client, _) = node.container("blue", "client")?;
    let _servers: Vec<Killed> = backends
        .iter()
        .zip(names)
        .map(|(ns, n)| server(ns, n))
        .collect::<Result<_>>()?;
    node.weft(&[
        "service",
        "create",
        "web",
        "--port",
        "80/tcp:8080",
        "--select",
        "app=web",
    ])?;

    let seen = count(&client, VIP, 300)?;
    for n in names {
        let got = seen.get(n).copied().unwrap_or(0);
        assert!(
            (75..=125).contains(&got),
            "{n} got {got} of 300 connections (even: 100 +-25%): {seen:?}"
        );
    }

    // Hairpin: a backend reaches its own service, whichever backend
    // answers.
    let from_backend = count(&backends[0], VIP, 30)?;
    assert_eq!(from_backend.values().sum::<u32>(), 30, "{from_backend:?}");

    // A long-lived connection keeps its backend through a drain.
    let (mut held, pinned) = Held::open(&client)?;
    assert_eq!(held.echo("before")?, "before");
    let detail = node.weft_json(&["service", "inspect", "web"])?;
    let conns = detail["members"]
        .as_array()
        .and_then(|m| m.iter().find(|b| b["endpoint"] == pinned.as_str()))
        .and_then(|b| b["connections"].as_u64());
    assert!(
        conns.unwrap_or(0) >= 1,
        "inspect pins the connection: {detail}"
    );
    node.weft(&["endpoint", "drain", &pinned])?;
    let after = count(&client, VIP, 60)?;
    assert!(
        !after.contains_key(&pinned),
        "new connections avoid {pinned}: {after:?}"
    );
    assert_eq!(
        held.echo("after")?,
        "after",
        "the established connection survived"
    );

    // No backend: refused at once, counted.
    node.weft(&[
        "service", "create", "empty", "--port", "80/tcp", "--select", "app=none",
    ])?;
    let drops = node.drops("service_no_backend")?;
    let icmp_before = weft_harness::snmp::icmp_dest_unreachs_in(&client)?;
    let started = Instant::now();
    let refused = proc::output(
        &mut client.command(&[
            "python3",
            "-c",
            "import socket; socket.create_connection(('10.96.0.2', 80), timeout=10)",
        ]),
        TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    if refused.status.success() || !stderr.contains("ConnectionRefused") {
        bail!("expected ECONNREFUSED, got {}: {stderr}", refused.status);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused fast: {:?}",
        started.elapsed()
    );
    assert_eq!(
        weft_harness::snmp::icmp_dest_unreachs_in(&client)?,
        icmp_before,
        "TCP is refused by a reset, not an ICMP error"
    );
    assert!(node.drops("service_no_backend")? > drops);
    node.weft(&[
        "service",
        "create",
        "empty-udp",
        "--port",
        "53/udp",
        "--select",
        "app=none",
    ])?;
    let refused = proc::output(
        &mut client.command(&[
            "python3",
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.settimeout(10); s.connect(('10.96.0.3', 53)); s.send(b'q'); s.recv(1)",
        ]),
        TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    if refused.status.success() || !stderr.contains("ConnectionRefused") {
        bail!(
            "UDP: expected ECONNREFUSED, got {}: {stderr}",
            refused.status
        );
    }
    assert!(
        weft_harness::snmp::icmp_dest_unreachs_in(&client)? > icmp_before,
        "UDP is refused by an ICMP port unreachable"
    );

    // Visibility: inspect counts new connections per backend, and the
    // agent's metrics carry them.
    let detail = node.weft_json(&["service", "inspect", "web"])?;
    let total: u64 = detail["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|b| b["new_connections"].as_u64())
        .sum();
    // 300 spread, 60 after the drain, the held one.
    assert!(total > 300 + 60, "new connections counted: {detail}");
    let empty = node.weft_json(&["service", "inspect", "empty"])?;
    assert!(empty["refused"].as_u64() >= Some(1), "{empty}");
    let _agent = node.start_agent()?;
    let text = weft_tests::metrics::scrape(&node)?;
    let web1 = weft_tests::metrics::sample(
        &text,
        "weft_service_connections_total{service=\"web\",backend=\"web1\"}",
    )?;
    assert!(web1 >= 75.0, "{web1}");
    let refused =
        weft_tests::metrics::sample(&text, "weft_service_no_backend_total{service=\"empty\"}")?;
    assert!(refused >= 1.0);
    Ok(())
}

//! TCP health checks on a real node (`service create --health tcp:PORT`,
//! the agent probing from the node namespace): a backend whose health
//! port stops listening is taken out of the table within a few intervals
//! (`unhealthy` in inspect, no new connections, its established one
//! kept) and comes back once it listens again, while connections to the
//! VIP keep succeeding throughout; with no healthy backend left the
//! service refuses at once; metrics count the flips; a restarted agent
//! keeps no verdict but probes again.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_harness::proc;
use weft_tests::{netns::NetNs, node::Node};

const TIMEOUT: Duration = Duration::from_secs(30);
const VIP: &str = "10.96.0.1";
/// Generous: the agent probes every 300 ms and flips after 3 failures
/// (or 2 successes).
const FLIP: Duration = Duration::from_secs(20);

/// The service: each connection gets the server's name, then an echo.
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

/// The health port: accepts and closes.
const HEALTH: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9090)); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
"#;

/// Connects to VIP:80 again and again until killed; one line per try:
/// the backend's name, or `fail` and the error.
const STEADY: &str = r#"
import socket, sys, time
while True:
    try:
        c = socket.create_connection((sys.argv[1], 80), timeout=3)
        print(c.makefile().readline().strip(), flush=True)
        c.close()
    except OSError as e:
        print("fail", e, flush=True)
    time.sleep(0.05)
"#;

/// N connections to VIP:80; prints `name count` per backend reached.
const COUNT: &str = r#"
import socket, sys, collections
seen = collections.Counter()
for _ in range(int(sys.argv[2])):
    c = socket.create_connection((sys.argv[1], 80), timeout=5)
    seen[c.makefile().readline().strip()] += 1
    c.close()
for k, v in seen.items(): print(k, v)
"#;

/// One connection held open: prints the backend's name, then echoes
/// stdin lines through it.
const HOLD: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], 80), timeout=5)
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

fn spawn(ns: &NetNs, script: &str, args: &[&str], port: u16) -> Result<Killed> {
    let mut argv = vec!["python3", "-c", script];
    argv.extend(args);
    let child = ns
        .command(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let child = Killed(child);
    ns.wait_listening(false, port, TIMEOUT)?;
    Ok(child)
}

fn count(ns: &NetNs, n: u32) -> Result<Vec<String>> {
    let out = proc::stdout(
        &mut ns.command(&["python3", "-c", COUNT, VIP, &n.to_string()]),
        TIMEOUT * 2,
    )?;
    Ok(out
        .lines()
        .filter_map(|l| Some(l.split_once(' ')?.0.to_owned()))
        .collect())
}

struct Held {
    _child: Killed,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    fn open(ns: &NetNs) -> Result<(Self, String)> {
        let mut child = ns
            .command(&["python3", "-c", HOLD, VIP])
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

/// Backend `name`'s state in `service inspect web`.
fn state(node: &Node, name: &str) -> Result<String> {
    let detail = node.weft_json(&["service", "inspect", "web"])?;
    member(&detail, name)
        .and_then(|m| m["state"].as_str().map(str::to_owned))
        .with_context(|| format!("no backend {name} in {detail}"))
}

fn member<'a>(detail: &'a Value, name: &str) -> Option<&'a Value> {
    detail["members"]
        .as_array()?
        .iter()
        .find(|m| m["endpoint"] == name)
}

/// Waits until backend `name` is in `wanted` state; returns how long.
fn wait_state(node: &Node, name: &str, wanted: &str) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let now = state(node, name)?;
        if now == wanted {
            return Ok(started.elapsed());
        }
        if started.elapsed() > FLIP {
            bail!("{name} still {now} after {FLIP:?}, expected {wanted}");
        }
        proc::sleep(Duration::from_millis(100))?;
    }
}

#[test]
fn a_failing_backend_leaves_the_table_and_comes_back() -> Result<()> {
    let node = Node::new()?;
    let config = node.state_dir().join("agent.toml");
    std::fs::create_dir_all(node.state_dir())?;
    std::fs::write(&config, "health_interval_milliseconds = 300\n")?;
    let config_arg = config.to_str().context("path")?.to_owned();
    let agent = node.start_agent_with(&["--config", &config_arg])?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let names = ["web1", "web2"];
    let mut backends = Vec::new();
    for n in names {
        let (ns, _) = node.container_with("blue", n, &["--label", "app=web"])?;
        backends.push(ns);
    }
    let (client, _) = node.container("blue", "client")?;
    let _servers: Vec<Killed> = backends
        .iter()
        .zip(names)
        .map(|(ns, n)| spawn(ns, SERVER, &[n], 8080))
        .collect::<Result<_>>()?;
    let mut health: Vec<Option<Killed>> = backends
        .iter()
        .map(|ns| spawn(ns, HEALTH, &[], 9090).map(Some))
        .collect::<Result<_>>()?;
    node.weft(&[
        "service",
        "create",
        "web",
        "--port",
        "80/tcp:8080",
        "--select",
        "app=web",
        "--health",
        "tcp:9090",
    ])?;
    assert_eq!(state(&node, "web1")?, "active");
    assert_eq!(state(&node, "web2")?, "active");

    // A connection pinned to web1, to outlive its health.
    let mut pinned = None;
    for _ in 0..40 {
        let (held, name) = Held::open(&client)?;
        if name == "web1" {
            pinned = Some(held);
            break;
        }
    }
    let mut pinned = pinned.context("no connection of 40 reached web1")?;

    let mut steady = client
        .command(&["python3", "-c", STEADY, VIP])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let steady_out = steady.stdout.take().context("stdout")?;
    let steady = Killed(steady);

    // web1's health port stops listening: out within a few intervals.
    health[0] = None;
    let took = wait_state(&node, "web1", "unhealthy")?;
    eprintln!("web1 marked unhealthy after {took:?}");
    let detail = node.weft_json(&["service", "inspect", "web"])?;
    assert_eq!(detail["unhealthy"], 1, "{detail}");
    assert_eq!(
        member(&detail, "web1").and_then(|m| m["slots"].as_u64()),
        Some(0),
        "web1 holds no Maglev slot: {detail}"
    );
    let seen = count(&client, 40)?;
    assert_eq!(seen, ["web2"], "new connections avoid web1");
    assert_eq!(pinned.echo("still")?, "still", "the established one stays");

    // Listening again: back in.
    health[0] = Some(spawn(&backends[0], HEALTH, &[], 9090)?);
    let took = wait_state(&node, "web1", "active")?;
    eprintln!("web1 active again after {took:?}");
    let mut seen = count(&client, 40)?;
    seen.sort();
    assert_eq!(seen, ["web1", "web2"], "web1 takes new connections again");

    // Every connection of the steady client worked, through both flips.
    drop(steady);
    let mut text = String::new();
    BufReader::new(steady_out).read_to_string(&mut text)?;
    let tries: Vec<&str> = text.lines().collect();
    assert!(tries.len() >= 10, "the steady client ran: {text}");
    let failed: Vec<&&str> = tries.iter().filter(|l| l.starts_with("fail")).collect();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {failed:?}",
        failed.len(),
        tries.len()
    );

    // No healthy backend: refused at once, like a service without any.
    health.clear();
    wait_state(&node, "web1", "unhealthy")?;
    wait_state(&node, "web2", "unhealthy")?;
    let started = Instant::now();
    let refused = proc::output(
        &mut client.command(&[
            "python3",
            "-c",
            "import socket; socket.create_connection(('10.96.0.1', 80), timeout=10)",
        ]),
        TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    if refused.status.success() || !stderr.contains("ConnectionRefused") {
        bail!("expected ECONNREFUSED, got {}: {stderr}", refused.status);
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    let text = weft_tests::metrics::scrape(&node)?;
    weft_tests::metrics::promtool_accepts(&text)?;
    let series = |s: &str| weft_tests::metrics::sample(&text, s);
    assert_eq!(
        series("weft_service_unhealthy_backends{service=\"web\"}")?,
        2.0
    );
    assert!(series("weft_service_health_transitions_total{service=\"web\",to=\"down\"}")? >= 3.0);
    assert!(series("weft_service_health_transitions_total{service=\"web\",to=\"up\"}")? >= 1.0);

    // Health is never saved: the store knows nothing of it, and a
    // restarted agent holds no stale verdict but probes again.
    let saved = std::fs::read_to_string(node.state_file())?;
    assert!(!saved.contains("unhealthy"), "{saved}");
    agent.kill()?;
    let _agent = node.start_agent_with(&["--config", &config_arg])?;
    wait_state(&node, "web1", "unhealthy")?;
    wait_state(&node, "web2", "unhealthy")?;
    // ... by flips of the new agent's own probes, not a kept verdict.
    let text = weft_tests::metrics::scrape(&node)?;
    let downs = weft_tests::metrics::sample(
        &text,
        "weft_service_health_transitions_total{service=\"web\",to=\"down\"}",
    )?;
    assert_eq!(downs, 2.0, "both probed down again after the restart");
    Ok(())
}

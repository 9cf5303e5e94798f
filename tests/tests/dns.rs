//! The agent's DNS server, asked with `dig` from containers: A for
//! endpoints and services, SRV, PTR, NXDOMAIN with SOA, forwarding to an
//! upstream (dnsmasq on the node's loopback), TCP, malformed packets
//! (the server keeps answering), names scoped to reachable networks, the
//! resolv.conf `endpoint add` writes under /etc/netns/NAME, and a name
//! gone once its endpoint is.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use weft_harness::{agent::AgentLog, proc};
use weft_tests::{netns::NetNs, node::Node};

const TIMEOUT: Duration = Duration::from_secs(20);
const UPSTREAM: &str = "127.0.0.2";

/// dnsmasq in `ns`, answering `example.test`, killed on drop.
struct Upstream(Child);

impl Upstream {
    fn start(ns: &NetNs) -> Result<Self> {
        let child = ns
            .command(&[
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={UPSTREAM}"),
                "--port=53",
                "--address=/example.test/192.0.2.7",
                "--pid-file=",
                "--user=root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (cargo xtask setup installs dnsmasq-base)")?;
        ns.wait_listening(true, 53, TIMEOUT)?;
        Ok(Self(child))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dig ARGS` in `ns`, its stdout.
fn dig(ns: &NetNs, args: &[&str]) -> Result<String> {
    let mut argv = vec!["dig", "+time=1", "+tries=3"];
    argv.extend(args);
    proc::stdout(&mut ns.command(&argv), TIMEOUT)
}

fn short(ns: &NetNs, args: &[&str]) -> Result<String> {
    let mut argv = vec!["+short", "@10.1.0.1"];
    argv.extend(args);
    Ok(dig(ns, &argv)?.trim().to_owned())
}

/// Waits until `what` holds (the agent binds as the model changes).
fn eventually(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if check().unwrap_or(false) {
            return Ok(());
        }
        proc::sleep(Duration::from_millis(100))?;
    }
    bail!("timed out waiting for {what}")
}

#[test]
fn dig_finds_endpoints_services_and_upstream_names() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["service", "config", "--dns", "true"])?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["network", "create", "red", "--subnet", "10.2.0.0/24"])?;
    let _upstream = Upstream::start(&node.ns)?;
    let _agent = node.start_agent_env(
        &[],
        &[("WEFT_DNS_UPSTREAMS", UPSTREAM)],
        AgentLog::Discarded,
    )?;
    let (a, ip_a) = node.container_with("blue", "a", &["--label", "app=web"])?;
    let (b, ip_b) = node.container("blue", "b")?;
    let (_r, _) = node.container("red", "hidden")?;
    node.weft(&[
        "service",
        "create",
        "web",
        "--port",
        "http=80/tcp:8080",
        "--select",
        "app=web",
    ])?;
    eventually("the DNS server on the gateway", || {
        Ok(short(&a, &["b.weft"])? == ip_b)
    })?;

    // The resolver file: named namespaces get one, naming the gateway.
    let resolv = Path::new("/etc/netns").join(b.name()).join("resolv.conf");
    let text = std::fs::read_to_string(&resolv).context("endpoint add wrote resolv.conf")?;
    assert!(
        text.contains("nameserver 10.1.0.1") && text.contains("search weft"),
        "{text}"
    );
    // ... which `ip netns exec` bind-mounts: a standard resolver (glibc)
    // finds a plain name through the search domain.
    let hosts = proc::stdout(&mut b.command(&["getent", "ahostsv4", "a"]), TIMEOUT)?;
    assert!(hosts.starts_with(&ip_a), "getent ahostsv4 a: {hosts}");

    assert_eq!(short(&a, &["web.weft"])?, "10.96.0.1");
    assert_eq!(
        short(&a, &["SRV", "_http._tcp.web.weft"])?,
        "0 0 80 web.weft."
    );
    assert_eq!(short(&a, &["-x", &ip_b])?, "b.weft.");
    assert_eq!(short(&a, &["-x", "10.96.0.1"])?, "web.weft.");
    assert_eq!(short(&a, &["+tcp", "b.weft"])?, ip_b, "TCP too");
    let nx = dig(&a, &["@10.1.0.1", "nobody.weft"])?;
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("SOA"),
        "{nx}"
    );
    assert!(nx.contains("flags: qr aa"), "authoritative: {nx}");
    // red is not connected to blue: its endpoint is not a's to see.
    let hidden = dig(&a, &["@10.1.0.1", "hidden.weft"])?;
    assert!(hidden.contains("status: NXDOMAIN"), "{hidden}");
    assert_eq!(
        short(&a, &["example.test"])?,
        "192.0.2.7",
        "forwarded upstream"
    );

    // Garbage on the port: FORMERR or nothing, and the server serves on.
    let junk = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
                [s.sendto(p, ('10.1.0.1', 53)) for p in (b'', b'x', b'\\xab\\xcd\\x01\\x00\\x00\\x01' + b'\\x00' * 6 + b'\\xc8x', bytes(range(256)) * 4)]";
    proc::stdout(&mut a.command(&["python3", "-c", junk]), TIMEOUT)?;
    assert_eq!(short(&a, &["b.weft"])?, ip_b, "still serving after garbage");

    // A removed endpoint's name is gone (nothing caches it here), and so
    // is its resolver file.
    node.weft(&["endpoint", "rm", "b"])?;
    let gone = dig(&a, &["@10.1.0.1", "b.weft"])?;
    assert!(gone.contains("status: NXDOMAIN"), "{gone}");
    assert!(
        !resolv.exists(),
        "{} removed with the endpoint",
        resolv.display()
    );
    assert!(
        !resolv.parent().is_some_and(Path::exists),
        "its directory too"
    );
    Ok(())
}

/// With the agent stopped, a query to the gateway is dropped (counted as
/// `dns_server_down`), not refused: dig's retries (`+time=1`) wait, and
/// one of them is answered within a second of the agent serving again.
#[test]
fn retried_queries_are_answered_across_an_agent_restart() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["service", "config", "--dns", "true"])?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let agent = node.start_agent_logging(&[], AgentLog::Discarded)?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    eventually("the DNS server on the gateway", || {
        Ok(short(&a, &["b.weft"])? == ip_b)
    })?;
    let before = node.drops("dns_server_down")?;

    agent.kill()?;
    let dig = a
        .command(&[
            "dig",
            "+time=1",
            "+tries=5",
            "+short",
            "@10.1.0.1",
            "b.weft",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Its first try meets no server.
    proc::sleep(Duration::from_millis(300))?;
    let restart = Instant::now();
    let _agent = node.start_agent_logging(&[], AgentLog::Discarded)?;
    let serving = restart.elapsed();
    let out = dig.wait_with_output()?;
    let answered = restart.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // dig notes the tries that timed out (not refused) before the answer.
    assert!(
        out.status.success() && stdout.lines().last() == Some(ip_b.as_str()),
        "dig across the restart: {} {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("agent serving after {serving:?}, dig answered after {answered:?}: {stdout}");
    assert!(!stdout.contains("refused"), "no try was refused: {stdout}");
    assert!(
        answered <= serving + Duration::from_millis(1500),
        "answered {answered:?} after the restart, the agent served after {serving:?}"
    );
    assert!(
        node.drops("dns_server_down")? > before,
        "the query that met no server was dropped and counted"
    );
    Ok(())
}

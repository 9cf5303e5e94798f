//! `weft monitor` catches the drops a test causes, with the right reason,
//! endpoint, 5-tuple and eBPF source location, and its pcap opens in
//! tcpdump showing those packets.

use std::{
    io::Read,
    process::Child,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_tests::node::Node;

/// Waits up to `limit` for `child` to exit; kills it if it does not.
fn wait_or_kill(mut child: Child, limit: Duration) -> Result<(bool, String, String)> {
    let deadline = Instant::now() + limit;
    let exited = loop {
        if child.try_wait()?.is_some() {
            break true;
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    Ok((exited, out, err))
}

#[test]
fn monitor_shows_drops_with_reason_location_and_pcap() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["network", "create", "green", "--subnet", "10.2.0.0/24"])?;
    let (c1, ip1) = node.container("blue", "c1")?;
    let (_c3, ip3) = node.container("green", "c3")?;
    let pcap = std::env::temp_dir().join(format!("weft-monitor-{}.pcap", std::process::id()));
    let pcap_arg = pcap.to_str().context("temp path")?.to_owned();

    let monitor =
        node.weft_spawn(&["monitor", "-o", "json", "--count", "3", "--pcap", &pcap_arg])?;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c1.ping(&ip3, 3)?, 0, "the networks are isolated");
    let (exited, out, err) = wait_or_kill(monitor, Duration::from_secs(10))?;
    assert!(
        exited,
        "monitor should stop after 3 events; it printed:\n{out}\n{err}"
    );

    let events: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("monitor printed non-JSON: {out}"))?;
    assert_eq!(events.len(), 3, "{out}");
    for e in &events {
        assert_eq!(e["type"], "drop", "{e}");
        assert_eq!(e["reason"], "network_isolated", "{e}");
        assert_eq!(e["endpoint"], "c1", "{e}");
        assert_eq!(e["program"], "weft_from_container", "{e}");
        assert_eq!(e["src"], ip1.as_str(), "{e}");
        assert_eq!(e["dst"], ip3.as_str(), "{e}");
        assert_eq!(e["proto"], "icmp", "{e}");
        let location = e["location"].as_str().unwrap_or("");
        let line: u32 = location
            .strip_prefix("ebpf/src/helpers/forward.rs:")
            .and_then(|l| l.parse().ok())
            .with_context(|| format!("location should be forward.rs:<line>, got {location}"))?;
        let source = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf/src/helpers/forward.rs"),
        )?;
        let text = source.lines().nth(line as usize - 1).unwrap_or("");
        assert!(
            text.contains("NetworkIsolated"),
            "forward.rs:{line} should be the drop site, it is: {text}"
        );
    }

    let dump = std::process::Command::new("tcpdump")
        .args(["-n", "-r", &pcap_arg])
        .output()
        .context("running tcpdump (cargo xtask setup installs it)")?;
    let _ = std::fs::remove_file(&pcap);
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "tcpdump could not read the pcap: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let echoes = text
        .lines()
        .filter(|l| l.contains(&format!("{ip1} > {ip3}: ICMP echo request")))
        .count();
    assert_eq!(
        echoes, 3,
        "tcpdump should show the 3 dropped pings:\n{text}"
    );
    Ok(())
}

#[test]
fn monitor_filters_by_endpoint_and_refuses_bad_input() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["network", "create", "green", "--subnet", "10.2.0.0/24"])?;
    let (c1, _) = node.container("blue", "c1")?;
    let (c3, _) = node.container("green", "c3")?;
    let (_c2, ip2) = node.container("blue", "c2")?;

    // Only c3's drops: c1's must not show.
    let monitor =
        node.weft_spawn(&["monitor", "--endpoint", "c3", "-o", "json", "--count", "1"])?;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c1.ping("10.2.0.99", 1)?, 0);
    assert_eq!(c3.ping(&ip2, 1)?, 0);
    let (exited, out, _) = wait_or_kill(monitor, Duration::from_secs(10))?;
    assert!(exited, "monitor should stop after c3's event");
    let event: Value = serde_json::from_str(out.trim())?;
    assert_eq!(event["endpoint"], "c3", "{event}");

    for (args, mention) in [
        (vec!["monitor", "--endpoint", "nosuch"], "nosuch"),
        (vec!["monitor", "--type", "bogus"], "bogus"),
        (
            vec!["monitor", "--type", "trace", "--sample", "0"],
            "--sample",
        ),
    ] {
        let out = node.weft_unchecked(&args)?;
        if out.status.success() {
            bail!("weft {args:?} must fail");
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(mention), "weft {args:?}: {err}");
    }
    Ok(())
}

/// Forwarded packets show as trace events only while a monitor asks, with
/// how they were forwarded; the monitor turns tracing off when it exits.
#[test]
fn monitor_traces_forwarded_packets_while_it_runs() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (c1, ip1) = node.container("blue", "c1")?;
    let (_c2, ip2) = node.container("blue", "c2")?;

    let monitor = node.weft_spawn(&[
        "monitor",
        "--type",
        "trace",
        "--endpoint",
        "c1",
        "-o",
        "json",
        "--count",
        "4",
    ])?;
    std::thread::sleep(Duration::from_millis(400));
    // Four packets from c1: its ARP request (answered in BPF) and pings,
    // or four pings when it has the neighbour already.
    assert_eq!(c1.ping(&ip2, 4)?, 4);
    let (exited, out, err) = wait_or_kill(monitor, Duration::from_secs(10))?;
    assert!(exited, "monitor should stop after 4 events:\n{out}\n{err}");
    let events: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("monitor printed non-JSON: {out}"))?;
    assert_eq!(events.len(), 4, "{out}");
    let mut bridged = 0;
    for e in &events {
        assert_eq!(e["type"], "trace", "{e}");
        assert_eq!(e["verdict"], "forwarded", "{e}");
        assert_eq!(e["endpoint"], "c1", "{e}");
        match e["reason"].as_str() {
            Some("bridged") => {
                assert_eq!(e["src"], ip1.as_str(), "{e}");
                assert_eq!(e["dst"], ip2.as_str(), "{e}");
                assert_eq!(e["proto"], "icmp", "{e}");
                bridged += 1;
            }
            Some("arp_replied") => {}
            _ => bail!("unexpected trace event {e}"),
        }
    }
    assert!(bridged >= 3, "the pings must show as bridged: {out}");

    // The switch is off again: the config entry reads all zero.
    let pin = node.pin_dir().join("maps").join("WEFT_TRACE");
    let dump = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned", pin.to_str().context("path")?, "-j"])
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    let entries: Value = serde_json::from_slice(&dump.stdout)
        .with_context(|| String::from_utf8_lossy(&dump.stderr).into_owned())?;
    let value = &entries[0]["value"];
    let bytes: Vec<&str> = value
        .as_array()
        .with_context(|| format!("unexpected dump: {entries}"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !bytes.is_empty() && bytes.iter().all(|b| *b == "0x00"),
        "tracing must be off after the monitor exits: {value}"
    );
    Ok(())
}

/// A new connection to a service shows, while traces are on, as a
/// `service_pick` naming the service and the backend it was given (the
/// packet as DNATed to it); its later packets are plain traces.
#[test]
fn monitor_traces_show_the_backend_a_service_picked() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (web1, ip_web1) = node.container_with("blue", "web1", &["--label", "app=web"])?;
    let (client, ip_client) = node.container("blue", "client")?;
    let server = web1
        .command(&[
            "python3",
            "-c",
            "import socket\ns = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen(8)\n\
             while True:\n    c, _ = s.accept(); c.close()",
        ])
        .spawn()?;
    let _server = Killed(server);
    web1.wait_listening(false, 8080, Duration::from_secs(30))?;
    node.weft(&[
        "service",
        "create",
        "web",
        "--port",
        "80/tcp:8080",
        "--select",
        "app=web",
    ])?;

    let monitor = node.weft_spawn(&[
        "monitor",
        "--type",
        "trace",
        "--endpoint",
        "client",
        "-o",
        "json",
        "--count",
        "100",
    ])?;
    std::thread::sleep(Duration::from_millis(400));
    for _ in 0..2 {
        client.exec(&[
            "python3",
            "-c",
            "import socket; socket.create_connection(('10.96.0.1', 80), timeout=5).close()",
        ])?;
    }
    std::thread::sleep(Duration::from_millis(500));
    // Fewer than 100 events come: the monitor is stopped here.
    let (_, out, err) = wait_or_kill(monitor, Duration::from_millis(500))?;
    let events: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("monitor printed non-JSON: {out}\n{err}"))?;
    let picks: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "service_pick")
        .collect();
    assert_eq!(picks.len(), 2, "one pick per connection:\n{out}");
    for e in &picks {
        assert_eq!(e["type"], "trace", "{e}");
        assert_eq!(e["service"], "web", "{e}");
        assert_eq!(e["backend"], "web1", "{e}");
        assert_eq!(e["endpoint"], "client", "{e}");
        assert_eq!(e["program"], "weft_service", "{e}");
        assert_eq!(e["src"], ip_client.as_str(), "{e}");
        assert_eq!(e["dst"], ip_web1.as_str(), "{e}");
        assert_eq!(e["dport"], 8080, "{e}");
        assert_eq!(e["proto"], "tcp", "{e}");
    }
    let dnat = events
        .iter()
        .filter(|e| e["reason"] == "service_dnat")
        .count();
    assert!(dnat >= 4, "the connections' packets trace too:\n{out}");
    assert!(
        events
            .iter()
            .all(|e| e["reason"] == "service_pick" || e["service"].is_null()),
        "only picks name a service:\n{out}"
    );
    Ok(())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

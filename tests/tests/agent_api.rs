//! The agent's API end to end: with an agent running, every `weft` command
//! goes through its unix socket (each answer names the agent's pid in
//! `x-weft-agent`, which the CLI logs at `WEFT_LOG=debug`), prints what it
//! prints without one, and concurrent mutations queue instead of failing;
//! malformed requests get a clear 4xx and change nothing; without the agent
//! the CLI works directly again.

use std::process::Output;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_tests::{
    netns::NetNs,
    node::{Agent, Node},
};

const DEBUG: &[(&str, &str)] = &[("WEFT_LOG", "debug")];

/// Which agent pid served this CLI run, from its debug log; `None` when it
/// worked directly.
fn served_by(out: &Output) -> Option<u32> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = stderr.lines().find_map(|l| {
        l.split("from the weft agent (pid ")
            .nth(1)?
            .split(')')
            .next()
    })?;
    pid.parse().ok()
}

/// Runs `weft args` and checks that `agent` served it; returns stdout.
fn via_agent(node: &Node, agent: &Agent, args: &[&str]) -> Result<String> {
    let out = node.weft_env(DEBUG, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("weft {args:?} failed: {stderr}");
    }
    assert_eq!(
        served_by(&out),
        Some(agent.pid()),
        "weft {args:?} must be served by the agent (pid {}); its log: {stderr}",
        agent.pid()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `weft args` and checks that it worked directly (no agent answered).
fn direct(node: &Node, args: &[&str]) -> Result<String> {
    let out = node.weft_env(DEBUG, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("weft {args:?} failed: {stderr}");
    }
    assert_eq!(
        served_by(&out),
        None,
        "weft {args:?} must work directly; its log: {stderr}"
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The node namespace's interfaces, one `name` per line, for "the kernel
/// did not change" checks.
fn links(node: &Node) -> Result<String> {
    let out = node.ns.exec(&["ip", "-o", "link", "show"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[test]
fn cli_goes_through_the_agent_and_works_directly_without_it() -> Result<()> {
    let node = Node::new()?;
    let agent = node.start_agent()?;

    let out = via_agent(
        &node,
        &agent,
        &["network", "create", "blue", "--subnet", "10.1.0.0/24"],
    )?;
    assert_eq!(
        out, "network blue: 10.1.0.0/24 gateway 10.1.0.1 (id 1, flood off, masquerade on)\n",
        "the same line as without an agent"
    );
    via_agent(
        &node,
        &agent,
        &[
            "network",
            "create",
            "green",
            "--subnet",
            "10.2.0.0/24",
            "--flood",
        ],
    )?;
    let a = NetNs::new("wtc")?;
    let b = NetNs::new("wtc")?;
    let c = NetNs::new("wtc")?;
    let mut ips = Vec::new();
    for (ns, net, name) in [(&a, "blue", "a"), (&b, "blue", "b"), (&c, "green", "c")] {
        let ep: Value = serde_json::from_str(&via_agent(
            &node,
            &agent,
            &[
                "endpoint",
                "add",
                "--network",
                net,
                "--netns",
                ns.name(),
                "--name",
                name,
                "-o",
                "json",
            ],
        )?)?;
        assert_eq!(ep["name"], name, "{ep}");
        ips.push(ep["ip"].as_str().context("ip")?.to_owned());
    }
    assert_eq!(ips, ["10.1.0.2", "10.1.0.3", "10.2.0.2"]);
    let out = via_agent(&node, &agent, &["network", "connect", "blue", "green"])?;
    assert_eq!(out, "networks blue and green connected\n");
    assert_eq!(a.ping(&ips[1], 2)?, 2, "a -> b (bridged)");
    assert_eq!(a.ping(&ips[2], 2)?, 2, "a -> c (routed after connect)");

    // Every read prints exactly what the direct path prints, both formats.
    for args in [
        &["network", "ls"][..],
        &["network", "inspect", "blue"],
        &["endpoint", "ls"],
    ] {
        for format in ["table", "json"] {
            let all: Vec<&str> = args.iter().copied().chain(["-o", format]).collect();
            let served = via_agent(&node, &agent, &all)?;
            let mut forced = all.clone();
            forced.insert(0, "--direct");
            assert_eq!(
                served,
                direct(&node, &forced)?,
                "weft {all:?} through the agent vs --direct"
            );
        }
    }
    let stats: Value = serde_json::from_str(&via_agent(&node, &agent, &["stats", "-o", "json"])?)?;
    assert!(
        stats["forwards"]["routed"]["packets"].as_u64() > Some(0),
        "{stats}"
    );
    let keys: Vec<&String> = stats["drops"]
        .as_object()
        .context("drops")?
        .keys()
        .collect();
    let direct_stats: Value =
        serde_json::from_str(&direct(&node, &["--direct", "stats", "-o", "json"])?)?;
    let direct_keys: Vec<&String> = direct_stats["drops"]
        .as_object()
        .context("drops")?
        .keys()
        .collect();
    assert_eq!(keys, direct_keys);

    // Refusals keep their message and exit status through the agent.
    for args in [
        &["network", "inspect", "nope"][..],
        &["network", "create", "blue", "--subnet", "10.9.0.0/24"],
        &["network", "rm", "blue"],
        &[
            "endpoint",
            "add",
            "--network",
            "blue",
            "--netns",
            "wt-no-such-ns",
        ],
    ] {
        let served = node.weft_unchecked(args)?;
        let mut forced = args.to_vec();
        forced.insert(0, "--direct");
        let forced = node.weft_unchecked(&forced)?;
        assert!(!served.status.success(), "weft {args:?} must fail");
        assert_eq!(
            String::from_utf8_lossy(&served.stderr),
            String::from_utf8_lossy(&forced.stderr),
            "weft {args:?}: same error through the agent as directly"
        );
    }

    via_agent(&node, &agent, &["network", "disconnect", "blue", "green"])?;
    assert_eq!(a.ping(&ips[2], 1)?, 0, "a -> c blocked after disconnect");
    via_agent(&node, &agent, &["endpoint", "rm", "c"])?;

    // No agent: the CLI works directly again, and so does WEFT_DIRECT.
    agent.kill()?;
    direct(&node, &["network", "connect", "blue", "green"])?;
    direct(&node, &["network", "disconnect", "blue", "green"])?;
    direct(&node, &["network", "rm", "green"])?;
    let out = direct(&node, &["endpoint", "rm", "b"])?;
    assert_eq!(out, "endpoint b removed\n");
    let agent = node.start_agent()?;
    let out = node.weft_env(
        &[("WEFT_LOG", "debug"), ("WEFT_DIRECT", "1")],
        &["network", "ls"],
    )?;
    assert!(
        out.status.success(),
        "WEFT_DIRECT=1 weft network ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(served_by(&out), None, "WEFT_DIRECT=1 bypasses the agent");
    via_agent(&node, &agent, &["endpoint", "rm", "a"])?;
    Ok(())
}

#[test]
fn concurrent_endpoint_adds_through_the_agent_all_succeed() -> Result<()> {
    let node = Node::new()?;
    let agent = node.start_agent()?;
    via_agent(
        &node,
        &agent,
        &["network", "create", "blue", "--subnet", "10.1.0.0/24"],
    )?;
    let namespaces: Vec<NetNs> = (0..8).map(|_| NetNs::new("wtc")).collect::<Result<_>>()?;
    let outputs: Vec<Result<Output>> = std::thread::scope(|scope| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let node = &node;
                let name = format!("c{i}");
                scope.spawn(move || {
                    node.weft_env(
                        DEBUG,
                        &[
                            "endpoint",
                            "add",
                            "--network",
                            "blue",
                            "--netns",
                            ns.name(),
                            "--name",
                            &name,
                            "-o",
                            "json",
                        ],
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("thread panicked")))
            .collect()
    });
    let mut ips = Vec::new();
    for out in outputs {
        let out = out?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "a concurrent endpoint add failed: {stderr}"
        );
        assert_eq!(served_by(&out), Some(agent.pid()), "{stderr}");
        let ep: Value = serde_json::from_slice(&out.stdout)?;
        ips.push(ep["ip"].as_str().context("ip")?.to_owned());
    }
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "8 distinct addresses, got {ips:?}");

    let state: Value = serde_json::from_slice(&std::fs::read(node.state_file())?)?;
    let mut saved: Vec<String> = state["endpoints"]
        .as_array()
        .context("endpoints")?
        .iter()
        .map(|e| e["ip"].as_str().unwrap_or_default().to_owned())
        .collect();
    saved.sort();
    assert_eq!(saved, distinct, "state.json lists all 8");
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    assert_eq!(namespaces[0].ping(&ips[7], 2)?, 2, "first -> last");
    assert_eq!(namespaces[7].ping(&ips[0], 2)?, 2, "last -> first");
    Ok(())
}

fn endpoint_add(node: &Node, network: &str, ns: &NetNs, name: &str) -> Result<Output> {
    node.weft_env(
        DEBUG,
        &[
            "endpoint",
            "add",
            "--network",
            network,
            "--netns",
            ns.name(),
            "--name",
            name,
            "-o",
            "json",
        ],
    )
}

/// Endpoint changes arriving together are taken whole, one at a time, by
/// the agent's engine: adds in two networks both succeed; adds of one name
/// racing in two networks: exactly one wins, the other is refused. An add
/// that fails in the kernel work leaves state and kernel as they were.
#[test]
fn concurrent_endpoint_changes_are_taken_whole() -> Result<()> {
    let node = Node::new()?;
    let agent = node.start_agent()?;
    for (net, subnet) in [("blue", "10.1.0.0/24"), ("red", "10.2.0.0/24")] {
        via_agent(
            &node,
            &agent,
            &["network", "create", net, "--subnet", subnet],
        )?;
    }
    let (ns_blue, ns_red) = (NetNs::new("wtc")?, NetNs::new("wtc")?);

    // Adds in two networks at once: the engine takes them in turn, each
    // whole (the store never holds a half-made endpoint), both served by
    // the agent.
    let (blue, red) = std::thread::scope(|scope| {
        let blue = scope.spawn(|| endpoint_add(&node, "blue", &ns_blue, "b1"));
        let red = scope.spawn(|| endpoint_add(&node, "red", &ns_red, "r1"));
        (blue.join(), red.join())
    });
    for out in [blue, red] {
        let out = out.map_err(|_| anyhow::anyhow!("thread panicked"))??;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(served_by(&out), Some(agent.pid()));
    }
    let saved = std::fs::read_to_string(node.state_file())?;
    assert!(
        saved.contains("\"r1\"") && saved.contains("\"b1\""),
        "{saved}"
    );

    // One name, two networks, at once: one add wins.
    let spares: Vec<(NetNs, NetNs)> = (0..4)
        .map(|_| Ok((NetNs::new("wtc")?, NetNs::new("wtc")?)))
        .collect::<Result<_>>()?;
    for (round, (a, b)) in spares.iter().enumerate() {
        let name = format!("dup{round}");
        let (blue, red) = std::thread::scope(|scope| {
            let blue = scope.spawn(|| endpoint_add(&node, "blue", a, &name));
            let red = scope.spawn(|| endpoint_add(&node, "red", b, &name));
            (blue.join(), red.join())
        });
        let blue = blue.map_err(|_| anyhow::anyhow!("thread panicked"))??;
        let red = red.map_err(|_| anyhow::anyhow!("thread panicked"))??;
        let won: Vec<&Output> = [&blue, &red]
            .into_iter()
            .filter(|o| o.status.success())
            .collect();
        assert_eq!(won.len(), 1, "exactly one add of {name} must succeed");
        let lost = if blue.status.success() { &red } else { &blue };
        let err = String::from_utf8_lossy(&lost.stderr);
        assert!(err.contains("already exists"), "{name}: {err}");
    }
    let eps = node.weft_json(&["endpoint", "ls"])?;
    assert_eq!(eps.as_array().map(Vec::len), Some(6), "{eps}");

    // An add that fails in the kernel work, after its reservation (the
    // namespace has a default route), rolls back completely.
    let routed = NetNs::new("wtc")?;
    routed.exec(&["ip", "link", "set", "lo", "up"])?;
    routed.exec(&["ip", "route", "add", "default", "dev", "lo"])?;
    let before = std::fs::read(node.state_file())?;
    let out = endpoint_add(&node, "red", &routed, "routed")?;
    assert!(!out.status.success(), "the add must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("default route"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(node.state_file())?,
        before,
        "a failed add leaves state.json as it was (no reservation left)"
    );
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    assert_eq!(status["endpoints"].as_u64(), Some(6), "{status}");
    assert!(!std::fs::read_to_string(node.state_file())?.contains("reservations"));

    // Removals in two networks at once, then traffic in each.
    let rm = |name: &'static str| {
        let node = &node;
        move || node.weft(&["endpoint", "rm", name])
    };
    std::thread::scope(|scope| {
        let a = scope.spawn(rm("dup0"));
        let b = scope.spawn(rm("dup1"));
        a.join().map_err(|_| anyhow::anyhow!("panicked"))??;
        b.join().map_err(|_| anyhow::anyhow!("panicked"))??;
        Ok::<_, anyhow::Error>(())
    })?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(status["endpoints"].as_u64(), Some(4), "{status}");
    assert_eq!(status["kernel_matches_state"], true, "{status}");
    // Each network's first endpoint reaches the other endpoints of its network.
    let eps = node.weft_json(&["endpoint", "ls"])?;
    for e in eps.as_array().context("endpoints")? {
        let from = match e["network"].as_str() {
            Some("blue") => &ns_blue,
            _ => &ns_red,
        };
        if ["b1", "r1"].contains(&e["name"].as_str().unwrap_or_default()) {
            continue;
        }
        let ip = e["ip"].as_str().context("ip")?;
        assert_eq!(from.ping(ip, 1)?, 1, "ping {e}");
    }
    Ok(())
}

/// One malformed request: method, path, content type, body, the expected
/// status, and words its error must contain.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    u16,
    &'a [&'a str],
);

#[test]
fn malformed_requests_get_clear_errors_and_change_nothing() -> Result<()> {
    let node = Node::new()?;
    let _agent = node.start_agent()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (_c, _) = node.container("blue", "c")?;
    let state = std::fs::read(node.state_file())?;
    let kernel = links(&node)?;
    let json = Some("application/json");

    // (method, path, content type, body, status, words the error must contain)
    let cases: &[Case] = &[
        (
            "POST",
            "/v1/networks",
            json,
            r#"{"name": "x", "subnet": "#,
            400,
            &["EOF"],
        ),
        ("POST", "/v1/networks", json, "not json", 400, &["expected"]),
        (
            "POST",
            "/v1/networks",
            json,
            r#"{"name":"x","subnet":"10.9.0.0/24","colour":"red"}"#,
            422,
            &["unknown field `colour`"],
        ),
        (
            "POST",
            "/v1/networks",
            json,
            r#"{"name":"x"}"#,
            422,
            &["missing field `subnet`"],
        ),
        (
            "POST",
            "/v1/endpoints",
            json,
            r#"{"network":"blue","netns":"x","mtu":"big"}"#,
            422,
            &["mtu", "invalid type"],
        ),
        (
            "POST",
            "/v1/networks",
            json,
            r#"{"name":"x","subnet":"10.9.0.0/33"}"#,
            400,
            &["10.9.0.0/33"],
        ),
        (
            "POST",
            "/v1/networks",
            json,
            r#"{"name":"x","subnet":"10.1.0.0/16"}"#,
            409,
            &["overlaps", "blue"],
        ),
        (
            "POST",
            "/v1/endpoints",
            json,
            r#"{"network":"blue","netns":"wt-no-such-ns"}"#,
            404,
            &["wt-no-such-ns", "does not exist"],
        ),
        (
            "POST",
            "/v1/endpoints",
            json,
            r#"{"network":"red","netns":"x"}"#,
            404,
            &["network 'red' does not exist"],
        ),
        (
            "POST",
            "/v1/networks",
            None,
            r#"{"name":"x","subnet":"10.9.0.0/24"}"#,
            415,
            &["Content-Type"],
        ),
        (
            "DELETE",
            "/v1/networks/blue",
            None,
            "",
            409,
            &["still has 1 endpoint"],
        ),
        (
            "DELETE",
            "/v1/endpoints/nope",
            None,
            "",
            404,
            &["'nope' does not exist"],
        ),
        (
            "POST",
            "/v1/networks/blue/connect/blue",
            None,
            "",
            400,
            &["itself"],
        ),
        (
            "POST",
            "/v1/networks/blue/teardown",
            None,
            "",
            404,
            &["no such route"],
        ),
    ];
    for &(method, path, ct, body, want, words) in cases {
        let (code, answer) = node.api_raw(method, path, ct, body)?;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(
            code, want,
            "{method} {path} {body:?}: expected {want}, got {code} {answer}"
        );
        for w in words {
            assert!(
                error.contains(w),
                "{method} {path} {body:?}: the error must say {w:?}: {answer}"
            );
        }
        assert_eq!(
            std::fs::read(node.state_file())?,
            state,
            "{method} {path} {body:?} changed state.json"
        );
        assert_eq!(
            links(&node)?,
            kernel,
            "{method} {path} {body:?} changed the node's links"
        );
    }

    // The CLI shows the agent's refusal as its own error.
    let out = node.weft_unchecked(&["network", "create", "x", "--subnet", "10.9.0.0/33"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10.9.0.0/33"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(node.state_file())?, state);
    Ok(())
}

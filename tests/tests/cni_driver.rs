//! The plugin driven by hand, as libcni would, for what the Debian
//! clients never call (CHECK, GC, STATUS, VERSION negotiation) and for
//! every malformed input: each answer is the right CNI error code in the
//! spec's JSON, and a refused request changes nothing (the agent's store,
//! the node's interfaces, the container's namespace).

use anyhow::{Context, Result};
use serde_json::{Value, json};
use weft_tests::{
    cni::{Call, CniNode, NETWORK, PluginRun, expect_error, netns_path},
    netns::NetNs,
    outside::{NODE_UPLINK_IP, Outside, UPLINK},
};

/// What a refused request must leave as it was.
fn unchanged(node: &CniNode, before: &(String, String), what: &str) -> Result<()> {
    let after = node.snapshot()?;
    assert_eq!(
        &after, before,
        "{what} changed the store or the node's links"
    );
    Ok(())
}

/// The links of a container namespace (`lo` only until an ADD).
fn links(ns: &NetNs) -> Result<String> {
    let out = ns.exec(&["ip", "-o", "link", "show"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(","))
}

fn add(node: &CniNode, id: &str, ns: &NetNs, version: &str) -> Result<Value> {
    let path = netns_path(ns);
    Call::new("ADD", id, &path)
        .run(&node.conf(NETWORK, version))?
        .ok()
        .with_context(|| format!("ADD {id}"))
}

#[test]
fn version_negotiation() -> Result<()> {
    let call = Call::new("VERSION", "", "");
    let run = call.run(&json!({"cniVersion": "1.0.0"}))?;
    let expected = json!(["0.4.0", "1.0.0", "1.1.0"]);
    assert_eq!(
        (
            run.success,
            &run.stdout["cniVersion"],
            &run.stdout["supportedVersions"]
        ),
        (true, &json!("1.0.0"), &expected),
        "{run:?}"
    );
    // Asked in a version weft does not speak, or with no configuration at
    // all: it still lists what it speaks.
    for stdin in [&b"{\"cniVersion\":\"0.3.1\"}"[..], b""] {
        let run = call.run_raw(stdin)?;
        assert!(run.success, "{run:?}");
        assert_eq!(run.stdout["supportedVersions"], expected);
        assert_eq!(run.stdout["cniVersion"], "1.1.0");
    }
    Ok(())
}

#[test]
fn results_in_each_version_and_check() -> Result<()> {
    let node = CniNode::new()?;
    for (i, version) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let ns = NetNs::new("wtc")?;
        let id = format!("drv{i}");
        let r = add(&node, &id, &ns, version)?;
        assert_eq!(r["cniVersion"], version, "{r}");
        let ifaces = r["interfaces"].as_array().context("interfaces")?;
        assert_eq!(ifaces[1]["name"], "eth0", "{r}");
        assert_eq!(ifaces[1]["sandbox"], netns_path(&ns), "{r}");
        assert!(ifaces[0].get("sandbox").is_none(), "host end: {r}");
        let ip = &r["ips"][0];
        assert!(
            ip["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("10.1.0.") && a.ends_with("/24")),
            "{r}"
        );
        assert_eq!(
            (&ip["gateway"], &ip["interface"]),
            (&json!("10.1.0.1"), &json!(1)),
            "{r}"
        );
        assert_eq!(ip.get("version").is_some(), version == "0.4.0", "{r}");
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]),
            "{r}"
        );
        assert_eq!(
            ifaces[1].get("mtu").is_some(),
            version == "1.1.0",
            "mtu in interfaces is 1.1.0's: {r}"
        );
        // The container really has what the result says.
        let addr = ns.exec(&["ip", "-o", "-4", "addr", "show", "eth0"])?;
        let address = ip["address"].as_str().unwrap_or_default();
        assert!(String::from_utf8_lossy(&addr.stdout).contains(address));
        let ep = node
            .endpoint_of(&id)?
            .context("endpoint ls shows the container")?;
        assert_eq!(ep["ifname"], "eth0");

        // CHECK with the result as prevResult: nothing to say.
        let mut conf = node.conf(NETWORK, version);
        conf["prevResult"] = r.clone();
        let path = netns_path(&ns);
        let check = Call::new("CHECK", &id, &path).run(&conf)?;
        assert!(
            check.success && check.stdout.is_null(),
            "CHECK of a good state: {check:?}"
        );
    }
    Ok(())
}

#[test]
fn check_names_what_is_broken() -> Result<()> {
    let node = CniNode::new()?;
    let ns = NetNs::new("wtc")?;
    let path = netns_path(&ns);
    let r = add(&node, "chk", &ns, "1.0.0")?;
    let mut conf = node.conf(NETWORK, "1.0.0");
    conf["prevResult"] = r.clone();
    let check = |conf: &Value, id: &str| Call::new("CHECK", id, &path).run(conf);

    // A previous result that is not what weft made.
    let mut wrong = conf.clone();
    wrong["prevResult"]["interfaces"][1]["mac"] = json!("02:00:00:00:00:01");
    let msg = expect_error(&check(&wrong, "chk")?, 102, "CHECK with another MAC")?;
    assert!(msg.contains("MAC 02:00:00:00:00:01"), "{msg}");
    // No previous result; a container weft never saw.
    let mut bare = conf.clone();
    bare.as_object_mut().map(|o| o.remove("prevResult"));
    expect_error(&check(&bare, "chk")?, 7, "CHECK without prevResult")?;
    let msg = expect_error(
        &check(&conf, "stranger")?,
        102,
        "CHECK of an unknown container",
    )?;
    assert!(msg.contains("stranger"), "{msg}");

    // The container's address taken away, then its interface down.
    let address = r["ips"][0]["address"].as_str().context("address")?;
    ns.exec(&["ip", "addr", "del", address, "dev", "eth0"])?;
    let msg = expect_error(&check(&conf, "chk")?, 102, "CHECK without the address")?;
    assert!(
        msg.contains(address.split('/').next().unwrap_or_default()),
        "{msg}"
    );
    ns.exec(&["ip", "link", "set", "eth0", "down"])?;
    let msg = expect_error(&check(&conf, "chk")?, 102, "CHECK with eth0 down")?;
    assert!(msg.contains("down"), "{msg}");
    // A namespace other than the one weft attached.
    let other = NetNs::new("wtc")?;
    let other_path = netns_path(&other);
    let run = Call::new("CHECK", "chk", &other_path).run(&conf)?;
    let msg = expect_error(&run, 102, "CHECK naming another namespace")?;
    assert!(msg.contains("namespace"), "{msg}");
    Ok(())
}

#[test]
fn del_is_idempotent() -> Result<()> {
    let node = CniNode::new()?;
    let conf = node.conf(NETWORK, "1.0.0");
    let ns = NetNs::new("wtc")?;
    let path = netns_path(&ns);
    add(&node, "d1", &ns, "1.0.0")?;
    let ok = |run: PluginRun, what: &str| {
        assert!(run.success && run.stdout.is_null(), "{what}: {run:?}");
    };
    ok(Call::new("DEL", "d1", &path).run(&conf)?, "DEL");
    assert!(node.endpoints()?.is_empty(), "DEL removed the endpoint");
    ok(Call::new("DEL", "d1", &path).run(&conf)?, "DEL repeated");
    ok(
        Call::new("DEL", "never-seen", &path).run(&conf)?,
        "DEL of an unknown container",
    );
    // containerd's DEL: no CNI_NETNS at all.
    let ns2 = NetNs::new("wtc")?;
    add(&node, "d2", &ns2, "1.0.0")?;
    ok(
        Call::new("DEL", "d2", "").run(&conf)?,
        "DEL with an empty CNI_NETNS",
    );
    // The namespace already gone.
    let ns3 = NetNs::new("wtc")?;
    let path3 = netns_path(&ns3);
    add(&node, "d3", &ns3, "1.0.0")?;
    drop(ns3);
    ok(
        Call::new("DEL", "d3", &path3).run(&conf)?,
        "DEL after the namespace went",
    );
    assert!(node.endpoints()?.is_empty(), "{:?}", node.endpoints()?);
    Ok(())
}

#[test]
fn gc_keeps_only_the_valid_attachments() -> Result<()> {
    let node = CniNode::new()?;
    let (ns1, ns2) = (NetNs::new("wtc")?, NetNs::new("wtc")?);
    add(&node, "keep", &ns1, "1.1.0")?;
    add(&node, "stale", &ns2, "1.1.0")?;
    // Another CNI network's attachment on the same weft network is not
    // this configuration's to collect.
    let ns3 = NetNs::new("wtc")?;
    let path3 = netns_path(&ns3);
    Call::new("ADD", "other", &path3)
        .run(&node.conf("othernet", "1.1.0"))?
        .ok()?;

    let mut conf = node.conf(NETWORK, "1.1.0");
    let gc = Call::new("GC", "", "");
    let before = node.snapshot()?;
    expect_error(&gc.run(&conf)?, 7, "GC without cni.dev/valid-attachments")?;
    expect_error(
        &gc.run(&node.conf(NETWORK, "1.0.0"))?,
        1,
        "GC in a 1.0.0 configuration",
    )?;
    unchanged(&node, &before, "refused GCs")?;

    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let run = gc.run(&conf)?;
    assert!(run.success, "GC: {run:?}");
    let mut ids: Vec<String> = node
        .endpoints()?
        .iter()
        .map(|e| e["container_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["keep", "other"],
        "GC removed only the stale attachment"
    );
    assert_eq!(links(&ns2)?, "lo", "and its interface");
    assert!(gc.run(&conf)?.success, "GC again: nothing to do");
    Ok(())
}

#[test]
fn status_says_whether_add_can_work() -> Result<()> {
    let mut node = CniNode::new()?;
    let status = Call::new("STATUS", "", "");
    let conf = node.conf(NETWORK, "1.1.0");
    let run = status.run(&conf)?;
    assert!(
        run.success && run.stdout.is_null(),
        "STATUS, all ready: {run:?}"
    );
    expect_error(
        &status.run(&node.conf(NETWORK, "1.0.0"))?,
        1,
        "STATUS in 1.0.0",
    )?;
    let mut missing = conf.clone();
    missing["network"] = json!("nosuchnet");
    let msg = expect_error(&status.run(&missing)?, 50, "STATUS of a missing network")?;
    assert!(msg.contains("nosuchnet"), "{msg}");

    // The datapath drifts from the agent's state: a map entry removed
    // behind its back.
    let ns = NetNs::new("wtc")?;
    add(&node, "st", &ns, "1.1.0")?;
    let map = node.node.pin_dir().join("maps/WEFT_EP_BY_IP");
    let map = map.to_string_lossy();
    let dump = weft_tests::netns::run("bpftool", &["map", "dump", "pinned", &map, "-j"])?;
    let entries: Value = serde_json::from_slice(&dump.stdout)?;
    let key: Vec<String> = entries[0]["key"]
        .as_array()
        .context("a key")?
        .iter()
        .map(|b| b.as_str().unwrap_or_default().to_owned())
        .collect();
    let mut args = vec!["map", "delete", "pinned", &*map, "key", "hex"];
    args.extend(key.iter().map(|b| b.trim_start_matches("0x")));
    weft_tests::netns::run("bpftool", &args)?;
    let msg = expect_error(&status.run(&conf)?, 51, "STATUS with a drifted datapath")?;
    assert!(msg.contains("does not match"), "{msg}");

    // No agent: STATUS and ADD both say so; DEL asks to try again.
    node.agent.take().context("the agent")?.kill()?;
    let msg = expect_error(&status.run(&conf)?, 50, "STATUS without an agent")?;
    assert!(msg.contains("no weft agent answers"), "{msg}");
    let ns2 = NetNs::new("wtc")?;
    let path2 = netns_path(&ns2);
    let msg = expect_error(
        &Call::new("ADD", "na", &path2).run(&conf)?,
        50,
        "ADD without an agent",
    )?;
    assert!(msg.contains("no weft agent answers"), "{msg}");
    assert_eq!(links(&ns2)?, "lo", "ADD without an agent made nothing");
    expect_error(
        &Call::new("DEL", "st", &path2).run(&conf)?,
        11,
        "DEL without an agent",
    )?;
    Ok(())
}

/// ADD of container `bad` with `CNI_ARGS` `args`.
fn bad_add<'a>(path: &'a str, args: &'a str) -> Call<'a> {
    Call {
        args,
        ..Call::new("ADD", "bad", path)
    }
}

/// Every malformed environment and configuration: its code, and nothing
/// changed (the agent's store, the node's links, the container's
/// namespace).
#[test]
fn malformed_input_is_refused_changing_nothing() -> Result<()> {
    let node = CniNode::new()?;
    let ns = NetNs::new("wtc")?;
    let path = netns_path(&ns);
    // One container on port 8080 already, so a clash can be asked for.
    let taken = NetNs::new("wtc")?;
    let mut with_port = node.conf(NETWORK, "1.0.0");
    with_port["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let taken_path = netns_path(&taken);
    let before = node.snapshot()?;
    let run = Call::new("ADD", "first", &taken_path).run(&with_port)?;
    let msg = expect_error(&run, 100, "a port mapping before the node has an uplink")?;
    assert!(msg.contains("node set --uplink"), "{msg}");
    unchanged(&node, &before, "the refused port mapping")?;
    assert_eq!(links(&taken)?, "lo", "a failed ADD leaves nothing behind");
    let _outside = Outside::new(&node.node)?;
    node.node
        .weft(&["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP])?;
    let first = Call::new("ADD", "first", &taken_path)
        .run(&with_port)?
        .ok()?;
    let taken_ip = first["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .context("first's address")?
        .to_owned();

    let good = node.conf(NETWORK, "1.0.0");
    let with = |k: &str, v: Value| {
        // `null`: the key left out.
        let mut c = good.clone();
        match (v, c.as_object_mut()) {
            (Value::Null, Some(o)) => drop(o.remove(k)),
            (v, _) => c[k] = v,
        }
        c.to_string().into_bytes()
    };
    let good_bytes = good.to_string().into_bytes();
    let ip_outside = "IgnoreUnknown=1;IP=10.9.9.9".to_owned();
    let ip_taken = format!("IP={taken_ip}");
    struct Case<'a> {
        what: &'a str,
        call: Call<'a>,
        stdin: Vec<u8>,
        code: u64,
        says: &'a str,
    }
    let cases = [
        Case {
            what: "no CNI_COMMAND",
            call: Call::new("", "bad", &path),
            stdin: good_bytes.clone(),
            code: 4,
            says: "CNI_COMMAND",
        },
        Case {
            what: "unknown CNI_COMMAND",
            call: Call::new("FROB", "bad", &path),
            stdin: good_bytes.clone(),
            code: 4,
            says: "FROB",
        },
        Case {
            what: "ADD without CNI_NETNS",
            call: Call::new("ADD", "bad", ""),
            stdin: good_bytes.clone(),
            code: 4,
            says: "CNI_NETNS",
        },
        Case {
            what: "ADD with a CNI_NETNS that does not exist",
            call: Call::new("ADD", "bad", "/run/netns/weft-no-such-ns"),
            stdin: good_bytes.clone(),
            code: 4,
            says: "does not exist",
        },
        Case {
            what: "ADD without CNI_CONTAINERID",
            call: Call::new("ADD", "", &path),
            stdin: good_bytes.clone(),
            code: 4,
            says: "CNI_CONTAINERID",
        },
        Case {
            what: "ADD with an invalid CNI_CONTAINERID",
            call: Call::new("ADD", "-x/y", &path),
            stdin: good_bytes.clone(),
            code: 4,
            says: "invalid CNI_CONTAINERID",
        },
        Case {
            what: "ADD without CNI_IFNAME",
            call: Call {
                ifname: "",
                ..Call::new("ADD", "bad", &path)
            },
            stdin: good_bytes.clone(),
            code: 4,
            says: "CNI_IFNAME",
        },
        Case {
            what: "ADD with an unknown CNI_ARGS key",
            call: bad_add(&path, "FOO=1"),
            stdin: good_bytes.clone(),
            code: 4,
            says: "FOO",
        },
        Case {
            what: "ADD with a bad IP=",
            call: bad_add(&path, "IP=10.1.0"),
            stdin: good_bytes.clone(),
            code: 4,
            says: "IPv4",
        },
        Case {
            what: "garbage JSON",
            call: bad_add(&path, ""),
            stdin: b"{\"cniVersion\": \"1.0.0\", garbage".to_vec(),
            code: 6,
            says: "not valid",
        },
        Case {
            what: "empty stdin",
            call: bad_add(&path, ""),
            stdin: Vec::new(),
            code: 6,
            says: "no network configuration",
        },
        Case {
            what: "a list instead of an object",
            call: bad_add(&path, ""),
            stdin: b"[1,2]".to_vec(),
            code: 6,
            says: "not valid",
        },
        Case {
            what: "unknown cniVersion",
            call: bad_add(&path, ""),
            stdin: with("cniVersion", json!("9.9.9")),
            code: 1,
            says: "9.9.9",
        },
        Case {
            what: "no cniVersion",
            call: bad_add(&path, ""),
            stdin: with("cniVersion", Value::Null),
            code: 1,
            says: "cniVersion",
        },
        Case {
            what: "no name",
            call: bad_add(&path, ""),
            stdin: with("name", json!("")),
            code: 7,
            says: "name",
        },
        Case {
            what: "an ipam section",
            call: bad_add(&path, ""),
            stdin: with("ipam", json!({"type": "host-local"})),
            code: 2,
            says: "ipam",
        },
        Case {
            what: "a weft network that does not exist",
            call: bad_add(&path, ""),
            stdin: with("network", json!("nosuchnet")),
            code: 7,
            says: "nosuchnet",
        },
        Case {
            what: "IP= outside the subnet",
            call: bad_add(&path, &ip_outside),
            stdin: good_bytes.clone(),
            code: 100,
            says: "10.9.9.9",
        },
        Case {
            what: "IP= already in use",
            call: bad_add(&path, &ip_taken),
            stdin: good_bytes.clone(),
            code: 100,
            says: &taken_ip,
        },
        Case {
            what: "a port another container has",
            call: bad_add(&path, ""),
            stdin: with("runtimeConfig", with_port["runtimeConfig"].clone()),
            code: 100,
            says: "8080",
        },
        Case {
            what: "an sctp port mapping",
            call: bad_add(&path, ""),
            stdin: with(
                "runtimeConfig",
                json!({"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "sctp"}]}),
            ),
            code: 7,
            says: "sctp",
        },
    ];
    for case in cases {
        let before = node.snapshot()?;
        let run = case.call.run_raw(&case.stdin)?;
        let msg = expect_error(&run, case.code, case.what)?;
        assert!(
            msg.contains(case.says),
            "{}: the message should mention {:?}: {msg}",
            case.what,
            case.says
        );
        unchanged(&node, &before, case.what)?;
        assert_eq!(
            links(&ns)?,
            "lo",
            "{}: the container's namespace",
            case.what
        );
    }
    Ok(())
}

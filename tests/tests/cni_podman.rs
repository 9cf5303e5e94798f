//! podman 4.3 with its CNI backend puts containers on a weft network:
//! podman, its storage and its configuration live in a test-owned sandbox
//! (`weft_tests::cni::CniHost`) inside the node's namespace; containers
//! run the machine's static busybox as their root filesystem
//! (`--rootfs`), so no image is pulled.

use anyhow::{Context, Result, bail};
use serde_json::json;
use weft_tests::{
    cni::{CniHost, CniNode, Podman, http_get, machine_paths, root_namespace},
    outside::{NODE_UPLINK_IP, Outside, UPLINK},
};

/// The conflist's (and so podman's) network name; the weft network is
/// [`NETWORK`].
const PODMAN_NET: &str = "weftnet";

fn capabilities() -> serde_json::Value {
    json!({"portMappings": true, "aliases": true, "ips": true, "mac": true})
}

/// A node with an agent, an uplink to an outside namespace, and podman
/// configured with one weft conflist.
struct Setup {
    outside: Outside,
    host: CniHost,
    node: CniNode,
}

impl Setup {
    fn new() -> Result<Self> {
        let node = CniNode::new()?;
        let outside = Outside::new(&node.node)?;
        node.node
            .weft(&["node", "set", "--uplink", UPLINK, "--ip", NODE_UPLINK_IP])?;
        let host = CniHost::new(&node.node)?;
        host.write_conflist(
            "10-weft.conflist",
            &node.conflist(PODMAN_NET, capabilities(), &[]),
        )?;
        Ok(Self {
            outside,
            host,
            node,
        })
    }
}

#[test]
fn podman_containers_talk_publish_and_go_away_with_their_endpoints() -> Result<()> {
    let before = (machine_paths(), root_namespace()?);
    let s = Setup::new()?;
    let podman = Podman::new(&s.host)?;

    let listed = podman.run(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])?;
    assert!(
        listed.lines().any(|l| l == format!("{PODMAN_NET} weft")),
        "podman network ls shows the weft network: {listed}"
    );

    // A web server published on 8080, then a client container that pings
    // it and fetches its page over TCP.
    let web = podman.start(
        "web",
        PODMAN_NET,
        &["-p", "8080:80"],
        "httpd -f -p 80 -h /www",
    )?;
    let web_ip = podman.inspect(
        "web",
        &format!("{{{{.NetworkSettings.Networks.{PODMAN_NET}.IPAddress}}}}"),
    )?;
    let ep = s
        .node
        .endpoint_of(&web)?
        .with_context(|| format!("no weft endpoint for container {web}"))?;
    assert_eq!(
        (ep["ip"].as_str(), ep["cni_network"].as_str()),
        (Some(web_ip.as_str()), Some(PODMAN_NET)),
        "podman inspect shows the address weft gave: {ep}"
    );
    let ls = s.node.node.weft(&["endpoint", "ls"])?;
    assert!(
        ls.contains(&web[..12]),
        "endpoint ls names the container owning each endpoint: {ls}"
    );

    let out = podman.run_once(
        PODMAN_NET,
        &["--cap-add", "NET_RAW"],
        &format!("ping -c 2 -W 2 {web_ip} >/dev/null && wget -q -O - http://{web_ip}/"),
    )?;
    assert_eq!(
        out, "weft says hello",
        "ping and HTTP from a second container"
    );

    // Published through weft: the outside reaches the node's uplink address.
    let page = http_get(&s.outside.ns, &format!("{NODE_UPLINK_IP}:8080"))?;
    assert!(page.ends_with("weft says hello\n"), "outside fetch: {page}");
    let published = s.node.node.weft_json(&["publish", "ls"])?;
    assert!(
        published.as_array().is_some_and(|p| p.iter().any(|p| {
            p["host_port"] == 8080 && p["container_port"] == 80 && p["container_ip"] == web_ip
        })),
        "the mapping is a weft publication: {published}"
    );

    // The run-once client's DEL removed its endpoint already; stop and rm
    // remove the web server's.
    podman.run(&["stop", "--time", "1", "web"])?;
    let left = s.node.endpoints()?;
    assert!(left.is_empty(), "stop DELs the endpoint: {left:?}");
    podman.run(&["rm", "web"])?;
    let left = s.node.endpoints()?;
    assert!(left.is_empty(), "no endpoints after stop and rm: {left:?}");
    let published = s.node.node.weft_json(&["publish", "ls"])?;
    assert_eq!(published, json!([]), "its publication went with it");

    drop(podman);
    drop(s);
    assert_eq!(
        (machine_paths(), root_namespace()?),
        before,
        "/etc/cni, /var/lib/cni, /var/lib/containers, /run's runtime dirs and the root \
         namespace's links, routes and firewall are as they were"
    );
    Ok(())
}

#[test]
fn podman_honours_the_address_and_mac_it_asks_for() -> Result<()> {
    let s = Setup::new()?;
    let podman = Podman::new(&s.host)?;
    let network = format!("{PODMAN_NET}:ip=10.1.0.77,mac=02:aa:bb:cc:dd:ee");
    let out = podman.run_once(
        &network,
        &[],
        "ip -o -4 addr show eth0; cat /sys/class/net/eth0/address",
    )?;
    if !(out.contains("10.1.0.77/24") && out.contains("02:aa:bb:cc:dd:ee")) {
        bail!("the container has not the address and MAC asked for: {out}");
    }
    assert!(s.node.endpoints()?.is_empty(), "DEL after the run");
    Ok(())
}

/// 20 containers at once: every ADD and DEL succeeds, no address is
/// handed out twice, nothing is left.
#[test]
fn twenty_parallel_podman_runs() -> Result<()> {
    let s = Setup::new()?;
    let podman = Podman::new(&s.host)?;
    let (_, links_before) = s.node.snapshot()?;
    let runs: Vec<Result<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let podman = &podman;
                scope.spawn(move || {
                    podman.run(&[
                        "run",
                        "--rm",
                        "--name",
                        &format!("par{i}"),
                        "--network",
                        PODMAN_NET,
                        "--rootfs",
                        &podman.rootfs(),
                        "/bin/sh",
                        "-c",
                        "ip -o -4 addr show eth0 | awk '{print $4}'; sleep 2",
                    ])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a podman thread panicked"))
            })
            .collect()
    });
    let mut addresses = Vec::new();
    for (i, r) in runs.into_iter().enumerate() {
        let addr = r.with_context(|| format!("container par{i}"))?;
        assert!(addr.starts_with("10.1.0."), "par{i} got {addr}");
        addresses.push(addr);
    }
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "20 distinct addresses: {addresses:?}");
    let left = s.node.endpoints()?;
    assert!(left.is_empty(), "nothing left after 20 DELs: {left:?}");
    let (_, links_after) = s.node.snapshot()?;
    assert_eq!(links_after, links_before, "no veth left in the node");
    Ok(())
}

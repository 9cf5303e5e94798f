//! weft first in a chain: the reference `tuning` and `portmap` plugins
//! after it in one conflist, run by podman. Each gets weft's result as
//! `prevResult` and passes it on: tuning sets a sysctl on the interface
//! weft made, portmap publishes a port with iptables in the node
//! namespace (the mapping is portmap's, weft declares no `portMappings`),
//! and podman's final result still carries weft's address.

use anyhow::Result;
use serde_json::json;
use weft_tests::{
    cni::{CniHost, CniNode, Podman, http_get},
    outside::{NODE_UPLINK_IP, Outside},
};

const NET: &str = "chained";

#[test]
fn tuning_and_portmap_chained_after_weft() -> Result<()> {
    let node = CniNode::new()?;
    // Routing only: with no uplink set, weft leaves traffic to the outside
    // to the node's stack, where portmap's DNAT is undone for the replies.
    let outside = Outside::new(&node.node)?;
    // portmap's DNAT hands packets to the kernel's forwarding, which weft's
    // own publications do not need (they are translated in the datapath).
    node.node.ns.sysctl(&["net.ipv4.ip_forward=1"])?;
    let host = CniHost::new(&node.node)?;
    let chain = [
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
    ];
    host.write_conflist(
        "10-chained.conflist",
        &node.conflist(NET, json!(null), &chain),
    )?;
    let podman = Podman::new(&host)?;
    let id = podman.start(
        "web",
        NET,
        &["-p", "8081:80"],
        "httpd -p 80 -h /www; cat /proc/sys/net/ipv4/conf/eth0/accept_local; sleep 600",
    )?;
    let ip = podman.inspect(
        "web",
        &format!("{{{{.NetworkSettings.Networks.{NET}.IPAddress}}}}"),
    )?;
    let ep = node.endpoint_of(&id)?;
    assert_eq!(
        ep.as_ref().and_then(|e| e["ip"].as_str()),
        Some(ip.as_str()),
        "the chain's final result carries weft's address: {ep:?}"
    );
    assert_eq!(
        podman.run(&["logs", "web"])?,
        "1",
        "tuning set the sysctl on weft's interface"
    );
    let nat = node.node.ns.exec(&["iptables", "-t", "nat", "-S"])?;
    let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
    assert!(
        nat.contains(&format!("--to-destination {ip}:80")),
        "portmap's DNAT to weft's address in the node namespace: {nat}"
    );
    let page = http_get(&outside.ns, &format!("{NODE_UPLINK_IP}:8081"))?;
    assert!(
        page.ends_with("weft says hello\n"),
        "through portmap: {page}"
    );
    assert!(
        node.node.weft_json(&["publish", "ls"])? == json!([]),
        "weft published nothing itself"
    );

    podman.run(&["rm", "--force", "--time", "0", "web"])?;
    assert!(node.endpoints()?.is_empty(), "DEL through the chain");
    let nat = node.node.ns.exec(&["iptables", "-t", "nat", "-S"])?;
    let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
    assert!(!nat.contains(&ip), "portmap's DEL removed its rules: {nat}");
    Ok(())
}

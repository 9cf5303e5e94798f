//! ADD's result in the configuration's version, and CHECK's comparison of
//! a previous result with what weft holds.
//!
//! The result lists the host end of the veth (no sandbox) and the
//! container's interface (with its sandbox), the container's address with
//! the gateway, and the default route. `dns` is left out: weft has no DNS
//! yet (the aliases are kept for it).

use serde_json::{Value, json};
use weft_api::attach::Attachment;

/// The result of an attachment for `cni_version`, the container's
/// namespace given as `sandbox`.
pub fn render(a: &Attachment, cni_version: &str, sandbox: &str) -> Value {
    let ep = &a.endpoint;
    let mut host = json!({"name": ep.host_ifname, "mac": a.host_mac.to_string()});
    let mut container = json!({
        "name": ep.ifname,
        "mac": ep.mac.to_string(),
        "sandbox": sandbox,
    });
    // `mtu` in interfaces is new in 1.1.0.
    if cni_version == "1.1.0" {
        host["mtu"] = json!(ep.mtu);
        container["mtu"] = json!(ep.mtu);
    }
    let mut ip = json!({
        "address": format!("{}/{}", ep.ip, a.prefix_len),
        "gateway": a.gateway.to_string(),
        "interface": 1,
    });
    // 0.4.0 names the IP version; 1.0.0 dropped it.
    if cni_version == "0.4.0" {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": [host, container],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": a.gateway.to_string()}],
    })
}

/// How a previous result (what the runtime remembers from ADD, maybe
/// changed by plugins after weft) differs from attachment `a`, for
/// interface `ifname`.
pub fn compare(prev: &Value, a: &Attachment, ifname: &str) -> Vec<String> {
    let ep = &a.endpoint;
    let mut problems = Vec::new();
    let interfaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let index = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i.get("sandbox").is_some_and(|s| s != ""));
    match index {
        None => problems.push(format!(
            "the previous result has no interface {ifname} in a sandbox"
        )),
        Some(i) => {
            let mac = interfaces[i]["mac"].as_str().unwrap_or("");
            if !mac.eq_ignore_ascii_case(&ep.mac.to_string()) {
                problems.push(format!(
                    "the previous result gives {ifname} MAC {mac}, weft gave it {}",
                    ep.mac
                ));
            }
        }
    }
    let address = format!("{}/{}", ep.ip, a.prefix_len);
    let ips = prev["ips"].as_array().cloned().unwrap_or_default();
    match ips.iter().find(|ip| ip["address"] == address.as_str()) {
        None => problems.push(format!(
            "the previous result lacks the address {address} weft gave {ifname}"
        )),
        Some(ip) => {
            if ip["gateway"] != a.gateway.to_string().as_str() {
                problems.push(format!(
                    "the previous result gives {address} gateway {}, weft's is {}",
                    ip["gateway"], a.gateway
                ));
            }
            if let (Some(want), Some(got)) = (index, ip["interface"].as_u64())
                && got != want as u64
            {
                problems.push(format!(
                    "the previous result puts {address} on interface #{got}, not {ifname}"
                ));
            }
        }
    }
    let routes = prev["routes"].as_array().cloned().unwrap_or_default();
    let default = routes.iter().any(|r| {
        r["dst"] == "0.0.0.0/0" && (r["gw"] == a.gateway.to_string().as_str() || r["gw"].is_null())
    });
    if !default {
        problems.push(format!(
            "the previous result has no default route via {}",
            a.gateway
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use weft_api::{Mac, records::Endpoint};

    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            endpoint: Endpoint {
                name: "c1-eth0".into(),
                network: "blue".into(),
                netns: "/run/netns/x".into(),
                ip: "10.1.0.2".parse().unwrap(),
                mac: Mac::container("10.1.0.2".parse().unwrap()),
                ifname: "eth0".into(),
                host_ifname: "wf12345678".into(),
                host_ifindex: 9,
                mtu: 1500,
                stats_slot: 0,
                container_id: Some("c1".into()),
                cni_network: Some("blue".into()),
                aliases: Vec::new(),
                labels: Default::default(),
                terminating: false,
            },
            gateway: "10.1.0.1".parse().unwrap(),
            prefix_len: 24,
            host_mac: Mac::gateway(1),
            published: Vec::new(),
        }
    }

    #[test]
    fn results_follow_the_version() {
        let a = attachment();
        let r = render(&a, "1.0.0", "/run/netns/x");
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(r["ips"][0]["address"], "10.1.0.2/24");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert!(r["ips"][0].get("version").is_none() && r.get("dns").is_none());
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert_eq!(render(&a, "0.4.0", "x")["ips"][0]["version"], "4");
        assert_eq!(render(&a, "1.1.0", "x")["interfaces"][1]["mtu"], 1500);
        assert!(compare(&r, &a, "eth0").is_empty());
    }

    #[test]
    fn compare_names_each_difference() {
        let a = attachment();
        let mut r = render(&a, "1.0.0", "x");
        r["interfaces"][1]["mac"] = json!("02:00:00:00:00:01");
        r["ips"][0]["address"] = json!("10.1.0.3/24");
        r["routes"] = json!([]);
        let p = compare(&r, &a, "eth0");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("MAC 02:00:00:00:00:01"));
        assert!(p[1].contains("lacks the address 10.1.0.2/24"));
        assert!(p[2].contains("no default route"));
        assert!(compare(&json!({}), &a, "eth1")[0].contains("no interface eth1"));
    }
}

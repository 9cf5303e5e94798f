//! The overlay's rules: encapsulation names, VTEP MACs, underlay
//! addresses, and pod CIDRs (`NET=CIDR`) with their checks against the
//! model.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{
    error::{Error, Result},
    model::{Encap, Mac, Model, PodSubnet, require_network},
};

/// Parses `--encap`.
pub fn parse_encap(text: &str) -> Result<Encap> {
    match text {
        "tunnel" => Ok(Encap::Tunnel),
        "bpf" => Ok(Encap::Bpf),
        other => Err(Error::Invalid(format!(
            "invalid encapsulation '{other}': use 'tunnel' (collect-metadata vxlan device) or \
             'bpf' (outer headers written by the program)"
        ))),
    }
}

/// Parses a VTEP MAC given by the user: unicast.
pub fn parse_vtep_mac(text: &str) -> Result<Mac> {
    let mac: Mac = text
        .parse()
        .map_err(|e: String| Error::Invalid(format!("{e}: expected e.g. 0a:56:0a:00:00:02")))?;
    if mac.0[0] & 1 == 1 || mac.0 == [0; 6] {
        return Err(Error::Invalid(format!(
            "VTEP MAC {mac} is not a unicast address; pick one with the lowest bit of the \
             first octet clear"
        )));
    }
    Ok(mac)
}

/// Parses `NET=CIDR` and checks it against `st`: the network exists and
/// the CIDR is a slice of its subnet.
pub fn parse_pod_subnet(st: &Model, text: &str) -> Result<PodSubnet> {
    let (network, cidr) = text.split_once('=').ok_or_else(|| {
        Error::Invalid(format!(
            "invalid pod subnet '{text}': expected NETWORK=CIDR, e.g. blue=10.1.1.0/24"
        ))
    })?;
    let net = require_network(st, network)?;
    let cidr: Ipv4Net = cidr.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid pod subnet '{cidr}': expected an IPv4 network such as 10.1.1.0/24"
        ))
    })?;
    if cidr.addr() != cidr.network() {
        return Err(Error::Invalid(format!(
            "pod subnet '{cidr}' has host bits set: did you mean {}?",
            cidr.trunc()
        )));
    }
    if !net.subnet.contains(&cidr) {
        return Err(Error::Invalid(format!(
            "pod subnet {cidr} is not inside network '{network}''s subnet {}",
            net.subnet
        )));
    }
    Ok(PodSubnet {
        network: network.to_string(),
        cidr,
    })
}

/// Parses a node's `--subnet` list: at most one per network, no overlaps
/// among them.
pub fn parse_pod_subnets(st: &Model, texts: &[String]) -> Result<Vec<PodSubnet>> {
    let mut out: Vec<PodSubnet> = Vec::new();
    for text in texts {
        let subnet = parse_pod_subnet(st, text)?;
        if out.iter().any(|s| s.network == subnet.network) {
            return Err(Error::Invalid(format!(
                "two pod subnets for network '{}': a node has one per network",
                subnet.network
            )));
        }
        out.push(subnet);
    }
    Ok(out)
}

/// Who holds a pod CIDR overlapping `cidr` in `st`: a remote node, or
/// this node when `with_own` is set.
pub fn overlap(st: &Model, cidr: Ipv4Net, with_own: bool) -> Option<String> {
    let overlaps = |c: &Ipv4Net| c.contains(&cidr.network()) || cidr.contains(&c.network());
    if with_own
        && let Some(node) = &st.node
        && let Some(s) = node.subnets.iter().find(|s| overlaps(&s.cidr))
    {
        return Some(format!("this node ({})", s.cidr));
    }
    st.remote_nodes.iter().find_map(|n| {
        n.subnets
            .iter()
            .find(|s| overlaps(&s.cidr))
            .map(|s| format!("node '{}' ({})", n.name, s.cidr))
    })
}

/// The node (this one or a remote one) that has a pod CIDR of `network`.
pub fn subnet_holder(st: &Model, network: &str) -> Option<String> {
    if st
        .node
        .as_ref()
        .is_some_and(|n| n.subnets.iter().any(|s| s.network == network))
    {
        return Some("this node".into());
    }
    st.remote_nodes
        .iter()
        .find(|n| n.subnets.iter().any(|s| s.network == network))
        .map(|n| format!("node '{}'", n.name))
}

/// Checks an underlay address given for a remote node.
pub fn parse_underlay_ip(text: &str) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = text.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid underlay address '{text}': expected the node's IPv4 address on the underlay"
        ))
    })?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return Err(Error::Invalid(format!(
            "underlay address {ip} cannot be a node's: give its unicast address"
        )));
    }
    Ok(ip)
}

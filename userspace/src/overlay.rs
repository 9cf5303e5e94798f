//! The overlay's rules, independent of the kernel: pod CIDRs (`NET=CIDR`)
//! and their checks, and the routes (`WEFT_ROUTES`) a state implies.
//!
//! Every mutating command computes the new state and then makes the route
//! map equal to the routes of that state ([`routes`]), so undoing a failed
//! command is making it equal to the old state's again.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use weft_common::maps::{ENCAP_BPF, ENCAP_TUNNEL, OverlayConfig, OverlayRoute};

use crate::{
    datapath::ip_be,
    error::{Error, Result},
    mac::Mac,
    state::{Encap, NodeUplink, PodSubnet, State},
};

/// Name of the collect-metadata vxlan device weft creates in tunnel mode.
pub const VXLAN_IFNAME: &str = "weft-vxlan";

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
pub fn parse_pod_subnet(st: &State, text: &str) -> Result<PodSubnet> {
    let (network, cidr) = text.split_once('=').ok_or_else(|| {
        Error::Invalid(format!(
            "invalid pod subnet '{text}': expected NETWORK=CIDR, e.g. blue=10.1.1.0/24"
        ))
    })?;
    let net = st.require_network(network)?;
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
pub fn parse_pod_subnets(st: &State, texts: &[String]) -> Result<Vec<PodSubnet>> {
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
pub fn overlap(st: &State, cidr: Ipv4Net, with_own: bool) -> Option<String> {
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
pub fn subnet_holder(st: &State, network: &str) -> Option<String> {
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

/// The route map `st` implies: this node's pod CIDRs as local entries
/// (underlay 0), every remote node's to its underlay address and VTEP MAC.
pub fn routes(st: &State) -> BTreeMap<Ipv4Net, OverlayRoute> {
    let mut out = BTreeMap::new();
    let route = |subnet: &PodSubnet, underlay: u32, vtep: Mac| {
        let net = st.network(&subnet.network)?;
        Some(OverlayRoute {
            underlay_ip_be: underlay,
            vni: net.overlay_vni(),
            network_id: net.id,
            vtep_mac: vtep.octets(),
            _pad: [0; 2],
        })
    };
    if let Some(node) = &st.node {
        for s in &node.subnets {
            if let Some(r) = route(s, 0, Mac::default()) {
                out.insert(s.cidr, r);
            }
        }
    }
    for n in &st.remote_nodes {
        for s in &n.subnets {
            if let Some(r) = route(s, ip_be(n.underlay_ip), n.vtep_mac) {
                out.insert(s.cidr, r);
            }
        }
    }
    out
}

/// The datapath's view of this node's overlay (all zero: off).
pub fn overlay_config(node: Option<&NodeUplink>) -> OverlayConfig {
    let Some((node, overlay)) = node.and_then(|n| n.overlay.as_ref().map(|o| (n, o))) else {
        return OverlayConfig::default();
    };
    OverlayConfig {
        underlay_ip_be: ip_be(node.ip),
        underlay_ifindex: node.uplink_ifindex,
        vxlan_ifindex: overlay.vxlan_ifindex,
        mtu: overlay.mtu,
        vtep_mac: overlay.vtep_mac.octets(),
        mode: match overlay.encap {
            Encap::Tunnel => ENCAP_TUNNEL,
            Encap::Bpf => ENCAP_BPF,
        },
        _pad: 0,
    }
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

//! The node's uplink (where masqueraded traffic leaves, with which address
//! and NAT ports) and its side of the overlay.

use std::net::Ipv4Addr;

use weft_api::requests::SetNode;
use weft_common::maps::{CT_DEFAULT_LIMIT, CT_MAX_ENTRIES};

use crate::{
    error::{Error, Result},
    model::{Encap, Mac, Model, NodeOverlay, NodeUplink, PodSubnet, naming::VXLAN_IFNAME, overlay},
};

/// The NAT port range when `--ports` is not given: above Linux's default
/// ephemeral range (32768-60999), so a stock node's own sockets never
/// collide with masqueraded flows.
pub const DEFAULT_PORTS: (u16, u16) = (61000, 65535);

/// The largest `--conntrack-max`: the default, 90% of the table's pairs.
const MAX_CONNTRACK: u64 = CT_DEFAULT_LIMIT;

/// A `node set` request, parsed.
#[derive(Clone, Debug)]
pub struct NodeRequest {
    pub uplink: String,
    pub ip: Ipv4Addr,
    pub ports: (u16, u16),
    pub encap: Option<Encap>,
    pub vtep_mac: Mac,
    pub xdp: bool,
    pub conntrack_max: Option<u32>,
    pub subnets: Vec<String>,
}

/// What the engine read from the node namespace for a `node set`.
#[derive(Clone, Debug)]
pub struct UplinkFacts {
    pub ifindex: u32,
    pub mtu: u32,
    /// `net.ipv4.ip_local_port_range`.
    pub local_ports: (u16, u16),
    /// `net.ipv4.conf.all.forwarding` now.
    pub forwarding: String,
}

/// Parses `MIN-MAX` (inclusive, 1-65535, MIN <= MAX).
pub fn parse_ports(text: &str) -> Result<(u16, u16)> {
    let bad = || {
        Error::Invalid(format!(
            "invalid port range '{text}': expected MIN-MAX with 1 <= MIN <= MAX <= 65535, \
             e.g. 61000-65535"
        ))
    };
    let (min, max) = text.split_once('-').ok_or_else(bad)?;
    let min: u16 = min.trim().parse().map_err(|_| bad())?;
    let max: u16 = max.trim().parse().map_err(|_| bad())?;
    if min == 0 || min > max {
        return Err(bad());
    }
    Ok((min, max))
}

/// Checks what a `node set` request says on its own.
pub fn parse(req: &SetNode) -> Result<NodeRequest> {
    let ip: Ipv4Addr = req.ip.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid address '{}': expected the uplink's IPv4 address",
            req.ip
        ))
    })?;
    let ports = match &req.ports {
        Some(p) => parse_ports(p)?,
        None => DEFAULT_PORTS,
    };
    let encap = req.encap.as_deref().map(overlay::parse_encap).transpose()?;
    let vtep_mac = match &req.vtep_mac {
        Some(_) if encap.is_none() => {
            return Err(Error::Invalid(
                "--vtep-mac needs --encap: it is the overlay's address".into(),
            ));
        }
        Some(m) => overlay::parse_vtep_mac(m)?,
        None => Mac::vtep(ip),
    };
    if req.xdp && encap.is_none() {
        return Err(Error::Invalid(
            "--xdp needs --encap: it drops VXLAN early on the underlay".into(),
        ));
    }
    if let Some(max) = req.conntrack_max
        && !(1..=MAX_CONNTRACK).contains(&u64::from(max))
    {
        return Err(Error::Invalid(format!(
            "invalid --conntrack-max {max}: use 1 to {MAX_CONNTRACK} connections (the table \
             holds {CT_MAX_ENTRIES} entries, two per connection, with room for the LRU's free \
             lists)"
        )));
    }
    Ok(NodeRequest {
        uplink: req.uplink.clone(),
        ip,
        ports,
        encap,
        vtep_mac,
        xdp: req.xdp,
        conntrack_max: req.conntrack_max,
        subnets: req.subnets.clone(),
    })
}

/// This node's pod CIDRs from `--subnet`, checked against the model: the
/// other nodes' CIDRs, this node's endpoints (which must lie inside), and
/// the other nodes' underlay addresses.
pub fn check(model: &Model, req: &NodeRequest) -> Result<Vec<PodSubnet>> {
    let subnets = overlay::parse_pod_subnets(model, &req.subnets)?;
    for s in &subnets {
        if let Some(holder) = overlay::overlap(model, s.cidr, false) {
            return Err(Error::Conflict(format!(
                "pod subnet {} overlaps {holder}; pick a free slice of the network",
                s.cidr
            )));
        }
        if let Some(ep) = model
            .endpoints_of(&s.network)
            .find(|e| !s.cidr.contains(&e.ip))
        {
            return Err(Error::Conflict(format!(
                "endpoint '{}' ({}) of network '{}' is outside pod subnet {}; remove it first \
                 or pick a pod subnet that contains it",
                ep.name, ep.ip, s.network, s.cidr
            )));
        }
    }
    if let Some(n) = model.remote_nodes.iter().find(|n| n.underlay_ip == req.ip) {
        return Err(Error::Conflict(format!(
            "{} is the underlay address of node '{}'; give this node's own address",
            req.ip, n.name
        )));
    }
    Ok(subnets)
}

/// `model` with the node set as `req` asks, on the uplink `facts`
/// describe.
pub fn set(
    model: &Model,
    req: &NodeRequest,
    subnets: Vec<PodSubnet>,
    facts: &UplinkFacts,
) -> Result<Model> {
    let (port_min, port_max) = req.ports;
    let (local_min, local_max) = facts.local_ports;
    if port_min <= local_max && local_min <= port_max {
        return Err(Error::Invalid(format!(
            "NAT ports {port_min}-{port_max} overlap the node's ephemeral ports \
             {local_min}-{local_max} (/proc/sys/net/ipv4/ip_local_port_range): the datapath \
             cannot see the node's own sockets, so the two must not share ports. Pass a \
             disjoint --ports range, or narrow the ephemeral range in the node namespace (e.g. \
             `sysctl -w net.ipv4.ip_local_port_range=\"40000 60999\"`)"
        )));
    }
    let previous = model.node.as_ref();
    let mtu = facts
        .mtu
        .saturating_sub(weft_common::overlay::VXLAN_OVERHEAD);
    let overlay = req.encap.map(|encap| {
        let tunnel = encap == Encap::Tunnel;
        // The vxlan device stays across `node set`s in tunnel mode.
        let kept = previous
            .and_then(|p| p.overlay.as_ref())
            .filter(|o| o.vxlan_ifname.is_some())
            .map_or(0, |o| o.vxlan_ifindex);
        NodeOverlay {
            encap,
            vtep_mac: req.vtep_mac,
            mtu,
            vxlan_ifname: tunnel.then(|| VXLAN_IFNAME.to_string()),
            vxlan_ifindex: if tunnel { kept } else { 0 },
            xdp: req.xdp,
        }
    });
    let forwarding_before = match previous {
        Some(p) => p.forwarding_before.clone(),
        None if facts.forwarding != "1" => Some(facts.forwarding.clone()),
        None => None,
    };
    let mut new = model.clone();
    new.node = Some(NodeUplink {
        uplink: req.uplink.clone(),
        uplink_ifindex: facts.ifindex,
        ip: req.ip,
        port_min,
        port_max,
        conntrack_max: req.conntrack_max,
        forwarding_before,
        overlay,
        subnets,
    });
    Ok(new)
}

/// `model` without the node's uplink (and with it the overlay and this
/// node's pod CIDRs).
pub fn unset(model: &Model) -> Result<Model> {
    if model.node.is_none() {
        return Err(Error::NotFound(
            "no node uplink is set (see `weft node show`)".into(),
        ));
    }
    let mut new = model.clone();
    new.node = None;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> UplinkFacts {
        UplinkFacts {
            ifindex: 7,
            mtu: 1500,
            local_ports: (32768, 60999),
            forwarding: "0".into(),
        }
    }

    fn req(extra: impl FnOnce(&mut SetNode)) -> Result<NodeRequest> {
        let mut r = SetNode {
            uplink: "up0".into(),
            ip: "192.0.2.1".into(),
            ..SetNode::default()
        };
        extra(&mut r);
        parse(&r)
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("30000-30001").unwrap(), (30000, 30001));
        assert_eq!(parse_ports("5-5").unwrap(), (5, 5));
        for bad in ["", "1", "0-10", "10-5", "1-70000", "a-b", "-5"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_records_forwarding_and_overlay() {
        let r = req(|r| r.encap = Some("tunnel".into())).unwrap();
        let m = set(&Model::default(), &r, Vec::new(), &facts()).unwrap();
        let node = m.node.as_ref().unwrap();
        assert_eq!(node.forwarding_before.as_deref(), Some("0"));
        assert_eq!((node.port_min, node.port_max), DEFAULT_PORTS);
        let o = node.overlay.as_ref().unwrap();
        assert_eq!(
            (o.mtu, o.vxlan_ifname.as_deref()),
            (1450, Some(VXLAN_IFNAME))
        );
        assert_eq!(o.vtep_mac, Mac::vtep(Ipv4Addr::new(192, 0, 2, 1)));
        // Set again: the value before the first set is what unset restores.
        let mut on = facts();
        on.forwarding = "1".into();
        let again = set(&m, &r, Vec::new(), &on).unwrap();
        assert_eq!(again.node.unwrap().forwarding_before.as_deref(), Some("0"));
        assert!(unset(&Model::default()).is_err());
    }

    #[test]
    fn set_refuses_bad_requests() {
        assert!(req(|r| r.ip = "x".into()).is_err());
        assert!(req(|r| r.vtep_mac = Some("0a:00:00:00:00:01".into())).is_err());
        assert!(req(|r| r.xdp = true).is_err());
        assert!(req(|r| r.conntrack_max = Some(0)).is_err());
        let overlapping = req(|r| r.ports = Some("60000-61000".into())).unwrap();
        let e = set(&Model::default(), &overlapping, Vec::new(), &facts()).unwrap_err();
        assert!(e.to_string().contains("overlap the node's ephemeral ports"));
    }
}

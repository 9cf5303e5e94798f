//! Endpoints: a container network namespace plugged into a network, with
//! an address, a MAC, a host-side interface name and a counter slot, all
//! allocated here.

use std::{collections::HashSet, net::Ipv4Addr, path::Path};

use weft_api::requests::{AddEndpoint, LabelEndpoint};
use weft_common::maps::MAX_ENDPOINTS;

use crate::{
    error::{Error, Result},
    model::{
        Endpoint, Mac, Model, ipam,
        naming::{host_ifname, validate_ifname, validate_name},
        require_endpoint, require_network, service,
    },
};

/// Default MTU of both veth ends on a node without an overlay.
pub const DEFAULT_MTU: u32 = 1500;

/// Default interface name inside the container.
pub const DEFAULT_IFNAME: &str = "eth0";

/// The MTU an endpoint gets unless it asks: on a node with an overlay, the
/// largest packet the overlay carries without fragmenting (the underlay's
/// MTU less VXLAN's 50 bytes), as Flannel and Docker's overlay set it, so
/// nothing a container sends needs the datapath's MSS clamp or
/// fragmentation-needed answer.
fn default_mtu(model: &Model) -> u32 {
    model.overlay().map_or(DEFAULT_MTU, |o| o.mtu)
}

/// `model` with the endpoint `req` asks for, and the endpoint (its host
/// ifindex 0 until the engine creates its veth).
pub fn add(model: &Model, req: &AddEndpoint) -> Result<(Model, Endpoint)> {
    let net = require_network(model, &req.network)?;
    let name = match &req.name {
        Some(n) => n.clone(),
        None => Path::new(&req.netns)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&req.netns)
            .to_string(),
    };
    validate_name("endpoint", &name).map_err(|e| match req.name {
        None => Error::Invalid(format!("{e} (it defaults to the netns name; pass --name)")),
        Some(_) => e,
    })?;
    if model.endpoint(&name).is_some() {
        return Err(Error::Conflict(format!(
            "endpoint '{name}' already exists; pass another --name or remove it first"
        )));
    }
    let ifname = req.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.into());
    validate_ifname(&ifname)?;
    let mtu = req.mtu.unwrap_or_else(|| default_mtu(model));
    if !(68..=65535).contains(&mtu) {
        return Err(Error::Invalid(format!(
            "invalid MTU {mtu}: use a value from 68 to 65535"
        )));
    }
    // With an overlay, this node's pod CIDR of the network; else all of it.
    let pool = model.own_subnet(&net.name).unwrap_or(net.subnet);
    let ip = match &req.ip {
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| {
                Error::Invalid(format!("invalid address '{s}': expected an IPv4 address"))
            })?;
            ipam::check_requested(&pool, net.gateway, ip, |ip| {
                model.ip_holder(ip).map(str::to_owned)
            })?;
            ip
        }
        None => ipam::allocate(&pool, net.gateway, |ip| model.ip_holder(ip).is_some())?,
    };
    let host = host_ifname(&name);
    if let Some(other) = model.endpoints.iter().find(|e| e.host_ifname == host) {
        return Err(Error::Conflict(format!(
            "endpoint name '{name}' hashes to the same host interface {host} as endpoint \
             '{}'; pass another --name",
            other.name
        )));
    }
    let mac = match &req.mac {
        Some(s) => requested_mac(s, net)?,
        None => Mac::container(ip),
    };
    if let Some(other) = model.endpoints_of(&net.name).find(|e| e.mac == mac) {
        return Err(Error::Conflict(format!(
            "MAC {mac} is already used by endpoint '{}' of network '{}'; pick another",
            other.name, net.name
        )));
    }
    let ep = Endpoint {
        name,
        network: net.name.clone(),
        netns: req.netns.clone(),
        ip,
        mac,
        ifname,
        host_ifname: host,
        host_ifindex: 0,
        mtu,
        stats_slot: free_stats_slot(model)?,
        labels: service::parse_labels(&req.labels)?,
        terminating: false,
        container_id: None,
        cni_network: None,
        aliases: Vec::new(),
    };
    let mut new = model.clone();
    new.endpoints.push(ep.clone());
    Ok((new, ep))
}

/// A MAC asked for: unicast, not all zeros, and not the network's gateway
/// MAC (frames to that are routed by the datapath, never bridged). The
/// datapath learns it from the endpoint's entries like a derived one.
fn requested_mac(text: &str, net: &crate::model::Network) -> Result<Mac> {
    let mac: Mac = text.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid MAC '{text}': expected six hex octets such as 02:42:ac:11:00:02"
        ))
    })?;
    if mac.0[0] & 1 == 1 {
        return Err(Error::Invalid(format!(
            "MAC {mac} is a multicast address (lowest bit of the first octet set); \
             give a unicast one"
        )));
    }
    if mac == Mac::default() {
        return Err(Error::Invalid("MAC 00:00:00:00:00:00 is not usable".into()));
    }
    if mac == net.gateway_mac() {
        return Err(Error::Invalid(format!(
            "MAC {mac} is network '{}''s gateway MAC; pick another",
            net.name
        )));
    }
    Ok(mac)
}

/// `model` without endpoint `name` and its publications, and the endpoint.
pub fn remove(model: &Model, name: &str) -> Result<(Model, Endpoint)> {
    let ep = require_endpoint(model, name)?.clone();
    let mut new = model.clone();
    new.endpoints.retain(|e| e.name != name);
    new.publications.retain(|p| p.endpoint != name);
    // A later endpoint of the same name is no backend by accident.
    for svc in &mut new.services {
        svc.backends.retain(|b| b != name);
    }
    Ok((new, ep))
}

/// `model` with endpoint `name`'s labels changed as `req` says.
pub fn label(model: &Model, req: &LabelEndpoint) -> Result<(Model, Endpoint)> {
    require_endpoint(model, &req.name)?;
    let set = service::parse_labels(&req.set)?;
    let mut new = model.clone();
    let ep = new
        .endpoint_mut(&req.name)
        .ok_or_else(|| Error::NotFound(format!("endpoint '{}' vanished", req.name)))?;
    for key in &req.remove {
        ep.labels.remove(key);
    }
    ep.labels.extend(set);
    let ep = ep.clone();
    Ok((new, ep))
}

/// `model` with endpoint `name` terminating (or active again).
pub fn drain(model: &Model, name: &str, terminating: bool) -> Result<(Model, Endpoint)> {
    require_endpoint(model, name)?;
    let mut new = model.clone();
    let ep = new
        .endpoint_mut(name)
        .ok_or_else(|| Error::NotFound(format!("endpoint '{name}' vanished")))?;
    ep.terminating = terminating;
    let ep = ep.clone();
    Ok((new, ep))
}

/// The lowest counter slot no endpoint of this node uses.
fn free_stats_slot(model: &Model) -> Result<u32> {
    let used: HashSet<u32> = model.endpoints.iter().map(|e| e.stats_slot).collect();
    (0..MAX_ENDPOINTS)
        .find(|slot| !used.contains(slot))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "this node already has {MAX_ENDPOINTS} endpoints, the most weft supports; \
                 remove one first"
            ))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::network;

    /// A model with one network, `blue` (10.1.0.0/24, masqueraded): the
    /// starting point of the endpoint and attachment tests.
    pub(crate) fn blue() -> Model {
        let req = weft_api::requests::CreateNetwork {
            name: "blue".into(),
            subnet: "10.1.0.0/24".into(),
            gateway: None,
            flood: false,
            masquerade: true,
            vni: None,
        };
        network::create(&Model::default(), &req).unwrap().0
    }

    fn req(netns: &str) -> AddEndpoint {
        AddEndpoint {
            network: "blue".into(),
            netns: netns.into(),
            ip: None,
            name: None,
            ifname: None,
            mtu: None,
            labels: Vec::new(),
            mac: None,
        }
    }

    #[test]
    fn add_allocates_address_mac_slot_and_names() {
        let (m, a) = add(&blue(), &req("/run/netns/ca")).unwrap();
        assert_eq!(a.name, "ca");
        assert_eq!(a.ip, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(a.mac, Mac::container(a.ip));
        assert_eq!((a.ifname.as_str(), a.mtu, a.stats_slot), ("eth0", 1500, 0));
        let (m, b) = add(&m, &req("cb")).unwrap();
        assert_eq!((b.ip, b.stats_slot), (Ipv4Addr::new(10, 1, 0, 3), 1));
        let (gone, _) = remove(&m, "ca").unwrap();
        let (_, c) = add(&gone, &req("cc")).unwrap();
        assert_eq!((c.ip, c.stats_slot), (Ipv4Addr::new(10, 1, 0, 2), 0));
    }

    #[test]
    fn add_refuses_bad_requests() {
        let (m, _) = add(&blue(), &req("ca")).unwrap();
        let err = |r: AddEndpoint| add(&m, &r).unwrap_err().to_string();
        assert!(err(req("ca")).contains("already exists"));
        let mut r = req("x");
        r.network = "red".into();
        assert!(err(r).contains("network 'red' does not exist"));
        let mut r = req("x");
        r.ip = Some("10.1.0.2".into());
        assert!(err(r).contains("already used by endpoint 'ca'"));
        let mut r = req("x");
        r.ip = Some("10.2.0.2".into());
        assert!(err(r).contains("outside"));
        let mut r = req("x");
        r.mtu = Some(10);
        assert!(err(r).contains("invalid MTU"));
        assert!(err(req("bad name")).contains("pass --name"));
    }

    #[test]
    fn add_takes_a_requested_mac_and_refuses_unusable_ones() {
        let mut r = req("ca");
        r.mac = Some("02:42:ac:11:00:09".into());
        let (m, a) = add(&blue(), &r).unwrap();
        assert_eq!(a.mac.to_string(), "02:42:ac:11:00:09");
        let err = |mac: &str| {
            let mut r = req("x");
            r.mac = Some(mac.into());
            add(&m, &r).unwrap_err().to_string()
        };
        assert!(err("02:42:ac:11:00:09").contains("already used by endpoint 'ca'"));
        assert!(err("03:00:00:00:00:01").contains("multicast"));
        assert!(err("00:00:00:00:00:00").contains("not usable"));
        assert!(err("0a:57:46:00:00:01").contains("gateway MAC"));
        assert!(err("02:42").contains("invalid MAC"));
        // The derived MAC of the next address clashes with nothing.
        let (_, b) = add(&m, &req("cb")).unwrap();
        assert_eq!(b.mac, Mac::container(b.ip));
    }
}

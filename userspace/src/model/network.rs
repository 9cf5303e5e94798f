//! Networks: creating, removing, and connecting two so they route to each
//! other.

use std::net::Ipv4Addr;

use weft_api::requests::CreateNetwork;
use weft_common::overlay::VNI_MAX;

use crate::{
    error::{Error, Result},
    model::{Model, Network, ipam, naming::validate_name, overlay, require_network},
};

/// Network ids stay below 2^16: gateway MACs carry them in two bytes.
const MAX_NETWORK_ID: u32 = 0xffff;

/// `model` with network `req` added, and the network.
pub fn create(model: &Model, req: &CreateNetwork) -> Result<(Model, Network)> {
    validate_name("network", &req.name)?;
    let subnet = ipam::parse_subnet(&req.subnet)?;
    let gateway = match &req.gateway {
        Some(g) => {
            let ip: Ipv4Addr = g.parse().map_err(|_| {
                Error::Invalid(format!("invalid gateway '{g}': expected an IPv4 address"))
            })?;
            ipam::check_gateway(&subnet, ip)?;
            ip
        }
        None => ipam::default_gateway(&subnet),
    };
    if model.network(&req.name).is_some() {
        return Err(Error::Conflict(format!(
            "network '{}' already exists; pick another name or remove it first",
            req.name
        )));
    }
    if let Some(other) = model
        .networks
        .iter()
        .find(|n| n.subnet.contains(&subnet.network()) || subnet.contains(&n.subnet.network()))
    {
        return Err(Error::Conflict(format!(
            "subnet {subnet} overlaps network '{}' ({}); pick a subnet that does not overlap",
            other.name, other.subnet
        )));
    }
    let services = model.service_config().range;
    if crate::model::service::overlaps(&services, &subnet) {
        return Err(Error::Conflict(format!(
            "subnet {subnet} overlaps the service range {services}; pick another subnet \
             (or move the range: `weft service config --range`)"
        )));
    }
    let id = model.next_network_id;
    if id > MAX_NETWORK_ID {
        return Err(Error::Conflict(format!(
            "network ids are exhausted in this state file (max {MAX_NETWORK_ID}); run `weft teardown` to start over"
        )));
    }
    let vni = req.vni.unwrap_or(id);
    if vni == 0 || vni > VNI_MAX {
        return Err(Error::Invalid(format!(
            "invalid VNI {vni}: a VXLAN network identifier is 1 to {VNI_MAX}"
        )));
    }
    if let Some(other) = model.networks.iter().find(|n| n.overlay_vni() == vni) {
        return Err(Error::Conflict(format!(
            "VNI {vni} is already network '{}''s; pass another --vni",
            other.name
        )));
    }
    let net = Network {
        name: req.name.clone(),
        id,
        subnet,
        gateway,
        flood: req.flood,
        masquerade: req.masquerade,
        connected: Vec::new(),
        vni,
    };
    let mut new = model.clone();
    new.next_network_id = id + 1;
    new.networks.push(net.clone());
    Ok((new, net))
}

/// `model` without network `name`, which must have no endpoints and no pod
/// CIDR on any node; its links to other networks go with it.
pub fn remove(model: &Model, name: &str) -> Result<Model> {
    require_network(model, name)?;
    let eps: Vec<&str> = model.endpoints_of(name).map(|e| e.name.as_str()).collect();
    if !eps.is_empty() {
        return Err(Error::Conflict(format!(
            "network '{name}' still has {} endpoint(s) ({}); remove them first with `weft endpoint rm`",
            eps.len(),
            eps.join(", ")
        )));
    }
    if let Some(holder) = overlay::subnet_holder(model, name) {
        return Err(Error::Conflict(format!(
            "network '{name}' has a pod CIDR on {holder}; remove it first (`weft node rm`, or \
             `weft node set` without that --subnet)"
        )));
    }
    let mut new = model.clone();
    new.networks.retain(|n| n.name != name);
    for other in &mut new.networks {
        other.connected.retain(|c| c != name);
    }
    Ok(new)
}

fn pair(model: &Model, a: &str, b: &str) -> Result<bool> {
    if a == b {
        return Err(Error::Invalid(format!(
            "cannot connect network '{a}' to itself; name two different networks"
        )));
    }
    let na = require_network(model, a)?;
    require_network(model, b)?;
    Ok(na.connected.iter().any(|c| c == b))
}

/// `model` with networks `a` and `b` routing to each other.
pub fn connect(model: &Model, a: &str, b: &str) -> Result<Model> {
    if pair(model, a, b)? {
        return Err(Error::Conflict(format!(
            "networks '{a}' and '{b}' are already connected"
        )));
    }
    let mut new = model.clone();
    for (from, to) in [(a, b), (b, a)] {
        if let Some(n) = new.network_mut(from) {
            n.connected.push(to.to_string());
        }
    }
    Ok(new)
}

/// `model` with networks `a` and `b` no longer routing to each other.
pub fn disconnect(model: &Model, a: &str, b: &str) -> Result<Model> {
    if !pair(model, a, b)? {
        return Err(Error::Conflict(format!(
            "networks '{a}' and '{b}' are not connected"
        )));
    }
    let mut new = model.clone();
    for (from, to) in [(a, b), (b, a)] {
        if let Some(n) = new.network_mut(from) {
            n.connected.retain(|c| c != to);
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, subnet: &str) -> CreateNetwork {
        CreateNetwork {
            name: name.into(),
            subnet: subnet.into(),
            gateway: None,
            flood: false,
            masquerade: true,
            vni: None,
        }
    }

    #[test]
    fn create_allocates_ids_and_refuses_clashes() {
        let (m, blue) = create(&Model::default(), &req("blue", "10.1.0.0/24")).unwrap();
        assert_eq!((blue.id, blue.vni), (1, 1));
        assert_eq!(blue.gateway, Ipv4Addr::new(10, 1, 0, 1));
        let (m, green) = create(&m, &req("green", "10.2.0.0/24")).unwrap();
        assert_eq!(green.id, 2);
        let err = |r: Result<(Model, Network)>| r.unwrap_err().to_string();
        assert!(err(create(&m, &req("blue", "10.9.0.0/24"))).contains("already exists"));
        assert!(err(create(&m, &req("x", "10.1.0.0/16"))).contains("overlaps network 'blue'"));
        assert!(err(create(&m, &req("x y", "10.9.0.0/24"))).contains("invalid network name"));
        assert!(err(create(&m, &req("x", "10.9.0.0/33"))).contains("10.9.0.0/33"));
        let mut bad_vni = req("x", "10.9.0.0/24");
        bad_vni.vni = Some(1);
        assert!(err(create(&m, &bad_vni)).contains("VNI 1 is already network 'blue'"));
        bad_vni.vni = Some(1 << 24);
        assert!(err(create(&m, &bad_vni)).contains("invalid VNI"));
    }

    #[test]
    fn connect_is_symmetric_and_removal_unlinks() {
        let (m, _) = create(&Model::default(), &req("a", "10.1.0.0/24")).unwrap();
        let (m, _) = create(&m, &req("b", "10.2.0.0/24")).unwrap();
        let m = connect(&m, "a", "b").unwrap();
        assert_eq!(m.network("b").unwrap().connected, ["a"]);
        assert!(connect(&m, "b", "a").is_err());
        assert!(
            connect(&m, "a", "a")
                .unwrap_err()
                .to_string()
                .contains("itself")
        );
        let gone = remove(&m, "a").unwrap();
        assert!(gone.network("b").unwrap().connected.is_empty());
        let m = disconnect(&m, "b", "a").unwrap();
        assert!(m.network("a").unwrap().connected.is_empty());
        assert!(disconnect(&m, "a", "b").is_err());
    }
}

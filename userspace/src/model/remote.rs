//! Other nodes of the overlay (`weft node add|rm`): their underlay
//! addresses, VTEP MACs and pod CIDRs.

use weft_api::requests::AddNode;

use crate::{
    error::{Error, Result},
    model::{Mac, Model, RemoteNode, naming::validate_name, overlay},
};

/// `model` with remote node `req`, and the node.
pub fn add(model: &Model, req: &AddNode) -> Result<(Model, RemoteNode)> {
    validate_name("node", &req.name)?;
    let underlay_ip = overlay::parse_underlay_ip(&req.underlay)?;
    let vtep_mac = match &req.vtep_mac {
        Some(m) => overlay::parse_vtep_mac(m)?,
        None => Mac::vtep(underlay_ip),
    };
    if model.remote_nodes.iter().any(|n| n.name == req.name) {
        return Err(Error::Conflict(format!(
            "node '{}' already exists; remove it first (`weft node rm {}`)",
            req.name, req.name
        )));
    }
    if let Some(other) = model
        .remote_nodes
        .iter()
        .find(|n| n.underlay_ip == underlay_ip)
    {
        return Err(Error::Conflict(format!(
            "underlay address {underlay_ip} is already node '{}''s",
            other.name
        )));
    }
    if model.node.as_ref().is_some_and(|n| n.ip == underlay_ip) {
        return Err(Error::Conflict(format!(
            "underlay address {underlay_ip} is this node's own; give the other node's"
        )));
    }
    let subnets = overlay::parse_pod_subnets(model, &req.subnets)?;
    for s in &subnets {
        if let Some(holder) = overlay::overlap(model, s.cidr, true) {
            return Err(Error::Conflict(format!(
                "pod subnet {} overlaps {holder}; every node needs its own slice",
                s.cidr
            )));
        }
        if let Some(ep) = model
            .endpoints_of(&s.network)
            .find(|e| s.cidr.contains(&e.ip))
        {
            return Err(Error::Conflict(format!(
                "pod subnet {} holds endpoint '{}' ({}) of this node",
                s.cidr, ep.name, ep.ip
            )));
        }
    }
    let node = RemoteNode {
        name: req.name.clone(),
        underlay_ip,
        vtep_mac,
        subnets,
        source: weft_api::records::NodeSource::Static,
    };
    let mut new = model.clone();
    new.remote_nodes.push(node.clone());
    Ok((new, node))
}

/// `model` without remote node `name`.
pub fn remove(model: &Model, name: &str) -> Result<Model> {
    if !model.remote_nodes.iter().any(|n| n.name == name) {
        return Err(Error::NotFound(format!(
            "node '{name}' does not exist (see `weft node ls`)"
        )));
    }
    let mut new = model.clone();
    new.remote_nodes.retain(|n| n.name != name);
    Ok(new)
}

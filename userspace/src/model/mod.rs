//! The model: networks, endpoints, links between networks, the node's
//! uplink and overlay, remote nodes, publications and address management,
//! as pure data and rules. No I/O: every change is a function from the
//! current model (and, where the kernel must be asked, facts the engine
//! read) to a new model or an error saying what was wrong. The engine
//! renders the kernel's state from the result.

pub mod attachment;
pub mod cluster;
pub mod endpoint;
pub mod ipam;
pub mod naming;
pub mod network;
pub mod node;
pub mod overlay;
pub mod publish;
pub mod remote;
pub mod service;

pub use weft_api::{
    Mac,
    records::{
        Encap, Endpoint, Loopback, Model, Network, NodeOverlay, NodeUplink, PodSubnet, Proto,
        Publication, RemoteNode, Service,
    },
};

use crate::error::{Error, Result};

/// Network `name`, or an error saying how to list the existing ones.
pub fn require_network<'a>(model: &'a Model, name: &str) -> Result<&'a Network> {
    model.network(name).ok_or_else(|| {
        Error::NotFound(format!(
            "network '{name}' does not exist (see `weft network ls`)"
        ))
    })
}

/// Endpoint `name`, or an error saying how to list the existing ones.
pub fn require_endpoint<'a>(model: &'a Model, name: &str) -> Result<&'a Endpoint> {
    model.endpoint(name).ok_or_else(|| {
        Error::NotFound(format!(
            "endpoint '{name}' does not exist (see `weft endpoint ls`)"
        ))
    })
}

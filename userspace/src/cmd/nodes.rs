//! `weft node add|rm|ls`: the other nodes of the overlay and their pod
//! CIDRs, which become `WEFT_ROUTES` entries (prefix -> underlay address,
//! VNI, VTEP MAC). Removing a node removes its routes: traffic to it stops
//! and is counted as `overlay_no_route`.

use serde::{Deserialize, Serialize};

use crate::{
    datapath::Datapath,
    error::{Error, Result},
    mac::Mac,
    naming::validate_name,
    output::{Render, table},
    overlay,
    paths::Paths,
    state::{self, Locked, RemoteNode, State},
};

/// What `node add` asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddArgs {
    pub name: String,
    pub underlay: String,
    /// `NET=CIDR`, the node's pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Default: `0a:56:` + the underlay address (a weft node's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// A remote node as shown: its pod CIDRs with their VNIs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    pub underlay_ip: std::net::Ipv4Addr,
    pub vtep_mac: Mac,
    pub subnets: Vec<SubnetEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubnetEntry {
    pub network: String,
    pub cidr: ipnet::Ipv4Net,
    pub vni: u32,
}

impl NodeEntry {
    fn new(node: &RemoteNode, st: &State) -> Self {
        Self {
            name: node.name.clone(),
            underlay_ip: node.underlay_ip,
            vtep_mac: node.vtep_mac,
            subnets: node
                .subnets
                .iter()
                .map(|s| SubnetEntry {
                    network: s.network.clone(),
                    cidr: s.cidr,
                    vni: st.network(&s.network).map_or(0, |n| n.overlay_vni()),
                })
                .collect(),
        }
    }
}

impl Render for NodeEntry {
    fn table(&self) -> String {
        vec![self.clone()].table()
    }
}

impl Render for Vec<NodeEntry> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|n| {
                let subnets: Vec<String> = n
                    .subnets
                    .iter()
                    .map(|s| format!("{}={} (vni {})", s.network, s.cidr, s.vni))
                    .collect();
                vec![
                    n.name.clone(),
                    n.underlay_ip.to_string(),
                    n.vtep_mac.to_string(),
                    if subnets.is_empty() {
                        "-".into()
                    } else {
                        subnets.join(", ")
                    },
                ]
            })
            .collect();
        table(&["NAME", "UNDERLAY", "VTEP MAC", "POD SUBNETS"], &rows)
    }
}

/// Adds a remote node and routes its pod CIDRs to it.
pub fn add(paths: &Paths, args: &AddArgs) -> Result<NodeEntry> {
    validate_name("node", &args.name)?;
    let underlay_ip = overlay::parse_underlay_ip(&args.underlay)?;
    let vtep_mac = match &args.vtep_mac {
        Some(m) => overlay::parse_vtep_mac(m)?,
        None => Mac::vtep(underlay_ip),
    };
    let mut locked = Locked::acquire(paths)?;
    let st = &locked.state;
    if st.remote_nodes.iter().any(|n| n.name == args.name) {
        return Err(Error::Conflict(format!(
            "node '{}' already exists; remove it first (`weft node rm {}`)",
            args.name, args.name
        )));
    }
    if let Some(other) = st
        .remote_nodes
        .iter()
        .find(|n| n.underlay_ip == underlay_ip)
    {
        return Err(Error::Conflict(format!(
            "underlay address {underlay_ip} is already node '{}''s",
            other.name
        )));
    }
    if st.node.as_ref().is_some_and(|n| n.ip == underlay_ip) {
        return Err(Error::Conflict(format!(
            "underlay address {underlay_ip} is this node's own; give the other node's"
        )));
    }
    let subnets = overlay::parse_pod_subnets(st, &args.subnets)?;
    for s in &subnets {
        if let Some(holder) = overlay::overlap(st, s.cidr, true) {
            return Err(Error::Conflict(format!(
                "pod subnet {} overlaps {holder}; every node needs its own slice",
                s.cidr
            )));
        }
        if let Some(ep) = st.endpoints_of(&s.network).find(|e| s.cidr.contains(&e.ip)) {
            return Err(Error::Conflict(format!(
                "pod subnet {} holds endpoint '{}' ({}) of this node",
                s.cidr, ep.name, ep.ip
            )));
        }
    }
    let node = RemoteNode {
        name: args.name.clone(),
        underlay_ip,
        vtep_mac,
        subnets,
    };
    let mut new = st.clone();
    new.remote_nodes.push(node.clone());
    apply(paths, &mut locked, new)?;
    Ok(NodeEntry::new(&node, &locked.state))
}

/// Removes a remote node and its routes.
pub fn remove(paths: &Paths, name: &str) -> Result<()> {
    let mut locked = Locked::acquire(paths)?;
    if !locked.state.remote_nodes.iter().any(|n| n.name == name) {
        return Err(Error::NotFound(format!(
            "node '{name}' does not exist (see `weft node ls`)"
        )));
    }
    let mut new = locked.state.clone();
    new.remote_nodes.retain(|n| n.name != name);
    apply(paths, &mut locked, new)
}

/// Every remote node, from saved state.
pub fn list(paths: &Paths) -> Result<Vec<NodeEntry>> {
    let st = state::read(paths)?;
    Ok(st
        .remote_nodes
        .iter()
        .map(|n| NodeEntry::new(n, &st))
        .collect())
}

/// Makes the route map match `new`, then saves it; on failure the map is
/// put back to the saved state's routes.
fn apply(paths: &Paths, locked: &mut Locked, new: State) -> Result<()> {
    let mut dp = Datapath::open(paths)?;
    let result = dp
        .sync_routes(&overlay::routes(&new))
        .and_then(|()| locked.commit(new));
    if let Err(e) = result {
        if let Err(u) = dp.sync_routes(&overlay::routes(&locked.state)) {
            log::warn!(
                "rollback of the overlay routes: {}",
                crate::error::chain(&u)
            );
        }
        return Err(e);
    }
    Ok(())
}

//! `weft network ...`: create, remove, list, inspect, connect, disconnect.

use std::net::Ipv4Addr;

use weft_common::{maps::FloodList, overlay::VNI_MAX};

use crate::{
    datapath::Datapath,
    error::{Error, Result},
    ipam,
    naming::validate_name,
    output::{NetworkDetail, NetworkView},
    paths::Paths,
    rollback::MapUndo,
    state::{self, Locked, Network},
};

/// Largest network id: the gateway MAC holds 16 bits of it.
const MAX_NETWORK_ID: u32 = 0xffff;

/// What `network create` asks for.
#[derive(Clone, Debug)]
pub struct CreateArgs {
    pub name: String,
    pub subnet: String,
    pub gateway: Option<String>,
    pub flood: bool,
    /// Masquerade traffic to non-weft destinations (Docker's default: on).
    pub masquerade: bool,
    /// VXLAN network identifier on the overlay; default: the network id.
    pub vni: Option<u32>,
}

/// Creates a network and publishes it to the datapath.
pub fn create(paths: &Paths, args: &CreateArgs) -> Result<NetworkView> {
    validate_name("network", &args.name)?;
    let subnet = ipam::parse_subnet(&args.subnet)?;
    let gateway = match &args.gateway {
        Some(g) => {
            let ip: Ipv4Addr = g.parse().map_err(|_| {
                Error::Invalid(format!("invalid gateway '{g}': expected an IPv4 address"))
            })?;
            ipam::check_gateway(&subnet, ip)?;
            ip
        }
        None => ipam::default_gateway(&subnet),
    };

    let mut locked = Locked::acquire(paths)?;
    let st = &locked.state;
    if st.network(&args.name).is_some() {
        return Err(Error::Conflict(format!(
            "network '{}' already exists; pick another name or remove it first",
            args.name
        )));
    }
    if let Some(other) = st
        .networks
        .iter()
        .find(|n| n.subnet.contains(&subnet.network()) || subnet.contains(&n.subnet.network()))
    {
        return Err(Error::Conflict(format!(
            "subnet {subnet} overlaps network '{}' ({}); pick a subnet that does not overlap",
            other.name, other.subnet
        )));
    }
    let id = st.next_network_id;
    if id > MAX_NETWORK_ID {
        return Err(Error::Conflict(format!(
            "network ids are exhausted in this state file (max {MAX_NETWORK_ID}); run `weft teardown` to start over"
        )));
    }
    let vni = args.vni.unwrap_or(id);
    if vni == 0 || vni > VNI_MAX {
        return Err(Error::Invalid(format!(
            "invalid VNI {vni}: a VXLAN network identifier is 1 to {VNI_MAX}"
        )));
    }
    if let Some(other) = st.networks.iter().find(|n| n.overlay_vni() == vni) {
        return Err(Error::Conflict(format!(
            "VNI {vni} is already network '{}''s; pass another --vni",
            other.name
        )));
    }
    let net = Network {
        name: args.name.clone(),
        id,
        subnet,
        gateway,
        flood: args.flood,
        masquerade: args.masquerade,
        connected: Vec::new(),
        vni,
    };
    let mut new = st.clone();
    new.next_network_id = id + 1;
    new.networks.push(net.clone());

    let mut dp = Datapath::open(paths)?;
    let mut undo = MapUndo::default();
    let result = (|| {
        dp.put_network(&net)?;
        undo.push("remove the network entry", move |dp| dp.del_network(id));
        dp.put_subnet(subnet, id)?;
        undo.push("remove the subnet entry", move |dp| dp.del_subnet(subnet));
        dp.put_flood_list(id, &FloodList::default())?;
        undo.push("remove the flood list", move |dp| dp.del_flood_list(id));
        dp.put_vni(vni, id)?;
        undo.push("remove the VNI entry", move |dp| dp.del_vni(vni));
        locked.commit(new)
    })();
    match result {
        Ok(()) => {
            undo.commit();
            Ok(NetworkView::new(&net, &locked.state))
        }
        Err(e) => {
            undo.run(&mut dp);
            Err(e)
        }
    }
}

/// Removes a network that has no endpoints; disconnects it from others.
pub fn remove(paths: &Paths, name: &str) -> Result<()> {
    // Waits for endpoint changes in flight in this network.
    let _network = crate::objlock::network(paths, name)?;
    let mut locked = Locked::acquire(paths)?;
    let net = locked.state.require_network(name)?.clone();
    let eps: Vec<&str> = locked
        .state
        .endpoints_of(name)
        .map(|e| e.name.as_str())
        .collect();
    if !eps.is_empty() {
        return Err(Error::Conflict(format!(
            "network '{name}' still has {} endpoint(s) ({}); remove them first with `weft endpoint rm`",
            eps.len(),
            eps.join(", ")
        )));
    }
    if let Some(holder) = crate::overlay::subnet_holder(&locked.state, name) {
        return Err(Error::Conflict(format!(
            "network '{name}' has a pod CIDR on {holder}; remove it first (`weft node rm`, or \
             `weft node set` without that --subnet)"
        )));
    }
    let mut new = locked.state.clone();
    new.networks.retain(|n| n.name != name);
    let mut peers = Vec::new();
    for other in &mut new.networks {
        if other.connected.iter().any(|c| c == name) {
            other.connected.retain(|c| c != name);
            peers.push(other.id);
        }
    }

    let mut dp = Datapath::open(paths)?;
    let mut undo = MapUndo::default();
    let result = (|| {
        for &peer in &peers {
            dp.unlink_networks(net.id, peer)?;
            undo.push("restore a network link", move |dp| {
                dp.link_networks(net.id, peer)
            });
        }
        let flood = dp.flood_list(net.id)?;
        dp.del_flood_list(net.id)?;
        undo.push("restore the flood list", move |dp| {
            dp.put_flood_list(net.id, &flood)
        });
        dp.del_subnet(net.subnet)?;
        let subnet = net.subnet;
        undo.push("restore the subnet entry", move |dp| {
            dp.put_subnet(subnet, net.id)
        });
        let vni = net.overlay_vni();
        dp.del_vni(vni)?;
        undo.push("restore the VNI entry", move |dp| dp.put_vni(vni, net.id));
        dp.del_network(net.id)?;
        let restore = net.clone();
        undo.push("restore the network entry", move |dp| {
            dp.put_network(&restore)
        });
        locked.commit(new)
    })();
    match result {
        Ok(()) => {
            undo.commit();
            Ok(())
        }
        Err(e) => {
            undo.run(&mut dp);
            Err(e)
        }
    }
}

/// Every network, from saved state (no bpffs needed).
pub fn list(paths: &Paths) -> Result<Vec<NetworkView>> {
    let st = state::read(paths)?;
    Ok(st
        .networks
        .iter()
        .map(|n| NetworkView::new(n, &st))
        .collect())
}

/// One network with its endpoints.
pub fn inspect(paths: &Paths, name: &str) -> Result<NetworkDetail> {
    let st = state::read(paths)?;
    let net = st.require_network(name)?;
    Ok(NetworkDetail {
        network: NetworkView::new(net, &st),
        containers: st.endpoints_of(name).cloned().collect(),
    })
}

fn pair<'a>(st: &'a state::State, a: &str, b: &str) -> Result<(&'a Network, &'a Network)> {
    if a == b {
        return Err(Error::Invalid(format!(
            "cannot connect network '{a}' to itself; name two different networks"
        )));
    }
    Ok((st.require_network(a)?, st.require_network(b)?))
}

/// Lets networks `a` and `b` route to each other.
pub fn connect(paths: &Paths, a: &str, b: &str) -> Result<()> {
    let mut locked = Locked::acquire(paths)?;
    let (na, nb) = pair(&locked.state, a, b)?;
    if na.connected.iter().any(|c| c == b) {
        return Err(Error::Conflict(format!(
            "networks '{a}' and '{b}' are already connected"
        )));
    }
    let (ida, idb) = (na.id, nb.id);
    let mut new = locked.state.clone();
    if let Some(n) = new.network_mut(a) {
        n.connected.push(b.to_string());
    }
    if let Some(n) = new.network_mut(b) {
        n.connected.push(a.to_string());
    }
    let mut dp = Datapath::open(paths)?;
    dp.link_networks(ida, idb)?;
    if let Err(e) = locked.commit(new) {
        if let Err(u) = dp.unlink_networks(ida, idb) {
            log::warn!(
                "rollback: could not unlink the networks: {}",
                crate::error::chain(&u)
            );
        }
        return Err(e);
    }
    Ok(())
}

/// Stops networks `a` and `b` routing to each other.
pub fn disconnect(paths: &Paths, a: &str, b: &str) -> Result<()> {
    let mut locked = Locked::acquire(paths)?;
    let (na, nb) = pair(&locked.state, a, b)?;
    if !na.connected.iter().any(|c| c == b) {
        return Err(Error::Conflict(format!(
            "networks '{a}' and '{b}' are not connected"
        )));
    }
    let (ida, idb) = (na.id, nb.id);
    let mut new = locked.state.clone();
    if let Some(n) = new.network_mut(a) {
        n.connected.retain(|c| c != b);
    }
    if let Some(n) = new.network_mut(b) {
        n.connected.retain(|c| c != a);
    }
    let mut dp = Datapath::open(paths)?;
    dp.unlink_networks(ida, idb)?;
    if let Err(e) = locked.commit(new) {
        if let Err(u) = dp.link_networks(ida, idb) {
            log::warn!(
                "rollback: could not relink the networks: {}",
                crate::error::chain(&u)
            );
        }
        return Err(e);
    }
    Ok(())
}

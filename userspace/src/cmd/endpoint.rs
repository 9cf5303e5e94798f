//! `weft endpoint ...`: plug a container's network namespace into a weft
//! network (veth pair, addresses, routes, maps, TCX link) and unplug it.

use std::{fs::File, net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use weft_common::maps::{EndpointInfo, FdbEntry, FloodList, MAX_ENDPOINTS, MAX_FLOOD};

use crate::{
    cmd::node::NodeFlags,
    datapath::{self, Datapath, ip_be},
    error::{Error, Result, chain},
    ipam,
    mac::Mac,
    naming::{host_ifname, temp_peer_ifname, validate_ifname, validate_name},
    netlink::{LinkSettings, Netlink},
    netns, objlock,
    paths::Paths,
    rollback::MapUndo,
    state::{self, Endpoint, Locked, Network, Reservation, State},
};

/// Default MTU of both veth ends on a node without an overlay; with one,
/// the overlay's inner MTU ([`default_mtu`]).
pub const DEFAULT_MTU: u32 = 1500;

/// The MTU an endpoint gets unless it asks: on a node with an overlay, the
/// largest packet the overlay carries without fragmenting (the underlay's
/// MTU less VXLAN's 50 bytes), as Flannel and Docker's overlay set it, so
/// nothing a container sends needs the datapath's MSS clamp or
/// fragmentation-needed answer.
fn default_mtu(st: &State) -> u32 {
    st.node
        .as_ref()
        .and_then(|n| n.overlay.as_ref())
        .map_or(DEFAULT_MTU, |o| o.mtu)
}
/// Default interface name inside the container.
pub const DEFAULT_IFNAME: &str = "eth0";

/// What `endpoint add` asks for.
#[derive(Clone, Debug)]
pub struct AddArgs {
    pub network: String,
    pub netns: String,
    pub ip: Option<String>,
    pub name: Option<String>,
    pub ifname: Option<String>,
    pub mtu: Option<u32>,
}

/// Everything decided before the first kernel change.
struct Plan {
    ep: Endpoint,
    net: Network,
    temp_peer: String,
    ns: File,
}

fn plan(st: &State, args: &AddArgs) -> Result<Plan> {
    let net = st.require_network(&args.network)?.clone();
    let name = match &args.name {
        Some(n) => n.clone(),
        None => Path::new(&args.netns)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&args.netns)
            .to_string(),
    };
    validate_name("endpoint", &name).map_err(|e| match args.name {
        None => Error::Invalid(format!("{e} (it defaults to the netns name; pass --name)")),
        Some(_) => e,
    })?;
    if st.endpoint_name_taken(&name) {
        return Err(Error::Conflict(format!(
            "endpoint '{name}' already exists; pass another --name or remove it first"
        )));
    }
    let ifname = args.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.into());
    validate_ifname(&ifname)?;
    let mtu = args.mtu.unwrap_or_else(|| default_mtu(st));
    if !(68..=65535).contains(&mtu) {
        return Err(Error::Invalid(format!(
            "invalid MTU {mtu}: use a value from 68 to 65535"
        )));
    }
    // With an overlay, this node's pod CIDR of the network; else all of it.
    let pool = st.own_subnet(&net.name).unwrap_or(net.subnet);
    let ip = match &args.ip {
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| {
                Error::Invalid(format!("invalid address '{s}': expected an IPv4 address"))
            })?;
            ipam::check_requested(&pool, net.gateway, ip, |ip| {
                st.ip_holder(ip).map(str::to_owned)
            })?;
            ip
        }
        None => ipam::allocate(&pool, net.gateway, |ip| st.ip_holder(ip).is_some())?,
    };
    let host = host_ifname(&name);
    let same_host = st
        .endpoints
        .iter()
        .map(|e| (&e.host_ifname, &e.name))
        .chain(
            st.reservations
                .iter()
                .map(|r| (&r.host_ifname, &r.endpoint)),
        )
        .find(|(h, _)| **h == host);
    if let Some((_, other)) = same_host {
        return Err(Error::Conflict(format!(
            "endpoint name '{name}' hashes to the same host interface {host} as endpoint \
             '{other}'; pass another --name"
        )));
    }
    let stats_slot = free_stats_slot(st)?;
    let ns = netns::open(&args.netns)?;
    Ok(Plan {
        ep: Endpoint {
            name: name.clone(),
            network: net.name.clone(),
            netns: args.netns.clone(),
            ip,
            mac: Mac::container(ip),
            ifname,
            host_ifname: host,
            host_ifindex: 0,
            mtu,
            stats_slot,
        },
        net,
        temp_peer: temp_peer_ifname(&name),
        ns,
    })
}

/// Kernel objects created so far, for rollback.
#[derive(Default)]
struct Made {
    veth: Option<String>,
    lo_addr: Option<Ipv4Addr>,
    /// The node's `lo` ifindex if this command brought it up, and whether
    /// it had 127.0.0.1 before (the kernel adds it on up, not removes it on down).
    lo_raised: Option<(u32, bool)>,
    link_pinned: Option<String>,
}

/// How an add or remove holds the state lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// For the whole change (the CLI run directly): every other change
    /// waits.
    Whole,
    /// Only to plan and to commit (the agent): the kernel work runs under
    /// the network's lock alone, so other networks' changes proceed.
    PerNetwork,
}

/// Plugs a container netns into a network, holding the state lock for the
/// whole change. On any failure everything done so far is undone and the
/// original error returned.
pub async fn add(paths: &Paths, args: &AddArgs) -> Result<Endpoint> {
    add_holding(paths, args, Hold::Whole).await
}

/// [`add`], holding the state lock as `hold` says. With
/// [`Hold::PerNetwork`] the endpoint's name, address, host interface and
/// counter slot are reserved in the state while the kernel work runs.
pub async fn add_holding(paths: &Paths, args: &AddArgs, hold: Hold) -> Result<Endpoint> {
    let _network = objlock::network(paths, &args.network)?;
    let mut locked = Locked::acquire(paths)?;
    let Plan {
        mut ep,
        net,
        temp_peer,
        ns,
    } = plan(&locked.state, args)?;
    let mut reserved = None;
    let mut whole = match hold {
        Hold::Whole => Some(locked),
        Hold::PerNetwork => {
            let mut new = locked.state.clone();
            new.reservations.push(Reservation {
                endpoint: ep.name.clone(),
                network: ep.network.clone(),
                ip: ep.ip,
                host_ifname: ep.host_ifname.clone(),
                stats_slot: ep.stats_slot,
            });
            locked.commit(new)?;
            reserved = Some(Reserved {
                paths,
                endpoint: ep.name.clone(),
            });
            drop(locked);
            None
        }
    };

    let nl = Netlink::connect()?;
    for name in [&ep.host_ifname, &temp_peer] {
        if nl.link_index(name).await?.is_some() {
            return Err(Error::Conflict(format!(
                "interface {name} already exists in the node namespace (left over from \
                 endpoint '{}'?); delete it or run `weft teardown`",
                ep.name
            )));
        }
    }
    let (ifname, netns_spec) = (ep.ifname.clone(), ep.netns.clone());
    let taken = netns::run_in(&ns, || async move {
        let nl = Netlink::connect()?;
        nl.link_index(&ifname).await.map(|i| i.is_some())
    })?;
    if taken {
        return Err(Error::Conflict(format!(
            "interface {} already exists in network namespace '{netns_spec}'; pass another --ifname",
            ep.ifname
        )));
    }

    let mut dp = Datapath::open(paths)?;
    let mut made = Made::default();
    let mut undo = MapUndo::default();
    let result = match plug(
        &nl, &mut dp, &mut ep, &net, &temp_peer, &ns, &mut made, &mut undo,
    )
    .await
    {
        Ok(()) => commit_added(paths, whole.as_mut(), &ep, net.id),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            undo.commit();
            if let Some(r) = reserved.as_mut() {
                r.endpoint.clear();
            }
            Ok(ep)
        }
        Err(e) => {
            unplug_partial(paths, &nl, &mut dp, made, undo).await;
            Err(e)
        }
    }
}

/// Saves the plugged endpoint `ep` of network `network_id`: in `whole`'s
/// state (held since the plan), or in the state as it is now, re-read under
/// its lock, where it replaces its reservation. Others may have changed the
/// state meanwhile, but not this network (its lock is held), nor this
/// endpoint's name, address or slot (reserved).
fn commit_added(
    paths: &Paths,
    whole: Option<&mut Locked>,
    ep: &Endpoint,
    network_id: u32,
) -> Result<()> {
    let mut fresh;
    let locked = match whole {
        Some(l) => l,
        None => {
            fresh = Locked::acquire(paths)?;
            &mut fresh
        }
    };
    if locked.state.network(&ep.network).map(|n| n.id) != Some(network_id) {
        return Err(Error::Conflict(format!(
            "network '{}' was removed or replaced while endpoint '{}' was being added",
            ep.network, ep.name
        )));
    }
    let mut new = locked.state.clone();
    new.reservations.retain(|r| r.endpoint != ep.name);
    new.endpoints.push(ep.clone());
    locked.commit(new)
}

/// An endpoint's reservation, dropped from the state when the add fails
/// (an add that commits clears `endpoint` first: its commit replaced the
/// reservation with the endpoint).
struct Reserved<'a> {
    paths: &'a Paths,
    endpoint: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.endpoint.is_empty() {
            return;
        }
        let result = Locked::acquire(self.paths).and_then(|mut locked| {
            let mut new = locked.state.clone();
            new.reservations.retain(|r| r.endpoint != self.endpoint);
            locked.commit(new)
        });
        if let Err(e) = result {
            log::warn!(
                "rollback: cannot drop the reservation of endpoint '{}': {}",
                self.endpoint,
                chain(&e)
            );
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
async fn plug(
    nl: &Netlink,
    dp: &mut Datapath,
    ep: &mut Endpoint,
    net: &Network,
    temp_peer: &str,
    ns: &File,
    made: &mut Made,
    undo: &mut MapUndo,
) -> Result<()> {
    let host = ep.host_ifname.clone();
    nl.add_veth(&host, temp_peer).await?;
    made.veth = Some(host.clone());
    let host_index = nl.require_link(&host).await?;
    let peer_index = nl.require_link(temp_peer).await?;
    ep.host_ifindex = host_index;
    nl.move_to_netns(peer_index, ns.as_raw_fd()).await?;

    // Inside the container: name, MAC, MTU, address, routes.
    let (peer, inner) = (temp_peer.to_string(), ep.clone());
    let (gateway, prefix) = (net.gateway, net.subnet.prefix_len());
    netns::run_in(ns, || async move {
        let nl = Netlink::connect()?;
        let index = nl.require_link(&peer).await?;
        nl.configure_link(
            index,
            &LinkSettings {
                name: Some(&inner.ifname),
                mac: Some(inner.mac),
                mtu: Some(inner.mtu),
            },
        )
        .await?;
        if let Err(e) = netns::disable_ipv6(&inner.ifname) {
            log::info!(
                "cannot disable IPv6 on {} in the container: {e}",
                inner.ifname
            );
        }
        nl.add_address(index, inner.ip, prefix).await?;
        nl.set_up(index).await?;
        nl.add_default_route(gateway, index)
            .await
            .map_err(|e| match e {
                Error::Netlink { source, .. } if source.raw_os_error() == Some(libc::EEXIST) => {
                    Error::Conflict(format!(
                        "network namespace '{}' already has a default route; weft needs its \
                         endpoints to route via the gateway {gateway}, so remove that route first",
                        inner.netns
                    ))
                }
                other => other,
            })?;
        // Last, as it is the one change the veth's deletion would not undo.
        let lo = nl.require_link("lo").await?;
        nl.set_up(lo).await
    })?;

    // Node side: the host veth answers as the gateway.
    if let Err(e) = netns::disable_ipv6(&host) {
        log::info!("cannot disable IPv6 on {host}: {e}");
    }
    nl.configure_link(
        host_index,
        &LinkSettings {
            name: None,
            mac: Some(net.gateway_mac()),
            mtu: Some(ep.mtu),
        },
    )
    .await?;

    // Maps, then the program: the program must find the endpoint.
    let slot = ep.stats_slot;
    let info = endpoint_info(ep, net);
    let target = fdb_entry(ep);
    let ip = ep.ip;
    dp.zero_endpoint_stats(slot)?;
    undo.push("clear endpoint counters", move |dp| {
        dp.zero_endpoint_stats(slot)
    });
    dp.put_endpoint(&info)?;
    undo.push("remove endpoint entries", move |dp| {
        dp.del_endpoint(host_index, ip)
    });
    let (net_id, mac) = (net.id, ep.mac);
    dp.put_fdb(net_id, mac, target)?;
    undo.push("remove the forwarding entry", move |dp| {
        dp.del_fdb(net_id, mac)
    });
    let old: FloodList = dp.flood_list(net_id)?;
    let mut list = old;
    if (list.count as usize) < MAX_FLOOD {
        list.members[list.count as usize] = target;
        list.count += 1;
        dp.put_flood_list(net_id, &list)?;
        undo.push("restore the flood list", move |dp| {
            dp.put_flood_list(net_id, &old)
        });
    } else if net.flood {
        log::warn!(
            "network '{}' already floods to {MAX_FLOOD} endpoints; endpoint '{}' will not \
             receive flooded broadcast/multicast",
            net.name,
            ep.name
        );
    }
    dp.attach(&host)?;
    made.link_pinned = Some(host.clone());

    nl.set_up(host_index).await?;
    // The node answers for the gateway address, so `lo` must be up (fresh
    // namespaces have it down) and carry it before the route can use it as
    // its source.
    let lo = nl.require_link("lo").await?;
    if !nl.is_up(lo).await? {
        let had_loopback = nl.has_address(lo, Ipv4Addr::LOCALHOST).await?;
        nl.set_up(lo).await?;
        made.lo_raised = Some((lo, had_loopback));
    }
    if !nl.has_address(lo, net.gateway).await? {
        nl.add_address(lo, net.gateway, 32).await?;
        made.lo_addr = Some(net.gateway);
    }
    nl.add_host_route(ep.ip, host_index, net.gateway).await
}

/// Undoes a failed `add`, newest step first; failures are logged.
async fn unplug_partial(paths: &Paths, nl: &Netlink, dp: &mut Datapath, made: Made, undo: MapUndo) {
    if let Some(gw) = made.lo_addr
        && let Ok(lo) = nl.require_link("lo").await
        && let Err(e) = nl.del_address(lo, gw, 32).await
    {
        log::warn!("rollback: {}", chain(&e));
    }
    if let Some((lo, had_loopback)) = made.lo_raised {
        if let Err(e) = nl.set_down(lo).await {
            log::warn!("rollback: {}", chain(&e));
        }
        if !had_loopback && let Err(e) = nl.del_address(lo, Ipv4Addr::LOCALHOST, 8).await {
            log::warn!("rollback: {}", chain(&e));
        }
    }
    if let Some(host) = made.link_pinned
        && let Err(e) = datapath::detach(paths, &host)
    {
        log::warn!("rollback: {}", chain(&e));
    }
    if let Err(e) = dp.unpin_new_program() {
        log::warn!("rollback: {}", chain(&e));
    }
    undo.run(dp);
    if let Some(host) = made.veth
        && let Err(e) = nl.delete_link_by_name(&host).await
    {
        log::warn!("rollback: {}", chain(&e));
    }
}

/// Unplugs endpoint `name`. Each step tolerates its object being gone
/// already, so a failed `rm` can simply be run again.
pub async fn remove(paths: &Paths, name: &str) -> Result<()> {
    remove_holding(paths, name, Hold::Whole).await
}

/// [`remove`], holding the state lock as `hold` says.
pub async fn remove_holding(paths: &Paths, name: &str, hold: Hold) -> Result<()> {
    let missing = || {
        Error::NotFound(format!(
            "endpoint '{name}' does not exist (see `weft endpoint ls`)"
        ))
    };
    // The network's lock comes before the state's: learn which network first.
    let network = state::read(paths)?
        .endpoint(name)
        .map(|e| e.network.clone())
        .ok_or_else(missing)?;
    let _network = objlock::network(paths, &network)?;
    let locked = Locked::acquire(paths)?;
    let ep = locked.state.endpoint(name).cloned().ok_or_else(missing)?;
    if ep.network != network {
        return Err(Error::Conflict(format!(
            "endpoint '{name}' was replaced while this request waited; run it again"
        )));
    }
    let net = locked.state.require_network(&ep.network)?.clone();
    let mut new = locked.state.clone();
    new.endpoints.retain(|e| e.name != name);
    new.publications.retain(|p| p.endpoint != name);
    let published: Vec<_> = locked
        .state
        .publications
        .iter()
        .filter(|p| p.endpoint == name)
        .cloned()
        .collect();
    let mut whole = match hold {
        Hold::Whole => Some(locked),
        Hold::PerNetwork => {
            drop(locked);
            None
        }
    };

    let mut dp = Datapath::open(paths)?;
    for p in &published {
        dp.del_publish(crate::cmd::publish::entry(p, ep.ip).0)?;
    }
    dp.del_endpoint(ep.host_ifindex, ep.ip)?;
    dp.del_fdb(net.id, ep.mac)?;
    dp.put_flood_list(net.id, &flood_list(&new, &net.name))?;
    datapath::detach(paths, &ep.host_ifname)?;
    dp.zero_endpoint_stats(ep.stats_slot)?;

    let nl = Netlink::connect()?;
    // Deleting the host end deletes the container end (and the /32 route).
    nl.delete_link_by_name(&ep.host_ifname).await?;
    if new.endpoints_of(&net.name).next().is_none() {
        let lo = nl.require_link("lo").await?;
        nl.del_address(lo, net.gateway, 32).await?;
    }
    match whole.as_mut() {
        Some(locked) => {
            NodeFlags::between(&locked.state, &new).apply(paths)?;
            locked.commit(new)
        }
        // Others' changes since the read stay: only this endpoint goes.
        None => {
            let mut locked = Locked::acquire(paths)?;
            let mut now = locked.state.clone();
            now.endpoints.retain(|e| e.name != name);
            now.publications.retain(|p| p.endpoint != name);
            // Under the state lock: no publish can slip in between.
            NodeFlags::between(&locked.state, &now).apply(paths)?;
            locked.commit(now)
        }
    }
}

/// The flood list of network `network` rebuilt from `st`: its first
/// [`MAX_FLOOD`] endpoints.
pub fn flood_list(st: &State, network: &str) -> FloodList {
    let mut list = FloodList::default();
    for ep in st.endpoints_of(network).take(MAX_FLOOD) {
        list.members[list.count as usize] = fdb_entry(ep);
        list.count += 1;
    }
    list
}

/// The datapath's view of endpoint `ep` of network `net` (by-IP and
/// by-ifindex tables and their caches).
pub fn endpoint_info(ep: &Endpoint, net: &Network) -> EndpointInfo {
    EndpointInfo {
        ifindex: ep.host_ifindex,
        network_id: net.id,
        ip_be: ip_be(ep.ip),
        stats_slot: ep.stats_slot,
        mac: ep.mac.octets(),
        gateway_mac: net.gateway_mac().octets(),
    }
}

/// Where the forwarding table and flood lists deliver to endpoint `ep`.
pub fn fdb_entry(ep: &Endpoint) -> FdbEntry {
    FdbEntry {
        ifindex: ep.host_ifindex,
        stats_slot: ep.stats_slot,
    }
}

/// Every endpoint, from saved state.
pub fn list(paths: &Paths) -> Result<Vec<Endpoint>> {
    Ok(state::read(paths)?.endpoints)
}

/// The lowest counter slot no endpoint of this node uses or reserved.
fn free_stats_slot(st: &State) -> Result<u32> {
    let used: std::collections::HashSet<u32> = st
        .endpoints
        .iter()
        .map(|e| e.stats_slot)
        .chain(st.reservations.iter().map(|r| r.stats_slot))
        .collect();
    (0..MAX_ENDPOINTS)
        .find(|slot| !used.contains(slot))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "this node already has {MAX_ENDPOINTS} endpoints, the most weft supports; \
                 remove one first"
            ))
        })
}

//! `weft node set|show|unset`: the node's uplink for masquerade.
//!
//! `set` writes `WEFT_NODE[0]`, attaches `weft_from_uplink` to TC ingress of
//! the uplink (pinned TCX link) and turns on IPv4 forwarding in the node
//! namespace: masquerade's egress asks `bpf_fib_lookup`, which answers
//! `BPF_FIB_LKUP_RET_FWD_DISABLED` unless the container veth forwards.
//! Writing `net.ipv4.conf.all.forwarding` sets every interface and the
//! default for new ones (`devinet_sysctl_forward`). Only the node
//! namespace's `/proc/sys/net` is touched: it resolves against the
//! namespace weft runs in (`--netns`).

use std::{fs, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use weft_common::maps::{
    CT_DEFAULT_LIMIT, CT_MAX_ENTRIES, NODE_FLAG_CONFIGURED, NODE_FLAG_PUBLISHES, NodeConfig,
};

/// The largest `--conntrack-max`: the default, 90% of the table's pairs.
const MAX_CONNTRACK: u64 = CT_DEFAULT_LIMIT;

use crate::{
    conntrack,
    datapath::{self, Datapath, ip_be},
    error::{Error, Result, chain},
    mac::Mac,
    netlink::{LinkSettings, Netlink},
    output::Render,
    overlay::{self, VXLAN_IFNAME},
    paths::Paths,
    state::{self, Encap, Locked, NodeOverlay, NodeUplink, PodSubnet, Publication, State},
};

/// The NAT port range when `--ports` is not given.
/// Above Linux's default ephemeral range (32768-60999), so a stock node's
/// own sockets never collide with masqueraded flows.
pub const DEFAULT_PORTS: (u16, u16) = (61000, 65535);

const FORWARDING: &str = "/proc/sys/net/ipv4/conf/all/forwarding";
const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// What `node set` asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetArgs {
    pub uplink: String,
    pub ip: String,
    /// `MIN-MAX`; default [`DEFAULT_PORTS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// `tunnel` or `bpf`: turns the overlay on, with the uplink as its
    /// underlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<String>,
    /// This node's pod CIDRs, `NET=CIDR`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Default: `0a:56:` + the node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// Attach the XDP early drop to the underlay.
    #[serde(default)]
    pub xdp: bool,
    /// Connections the conntrack table may hold; default
    /// `weft_common::maps::CT_DEFAULT_LIMIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_max: Option<u32>,
}

/// `node show`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    pub configured: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_max: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_size: Option<u32>,
    /// Connections the conntrack table may hold before new ones are
    /// refused (`conntrack_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_max: Option<u64>,
    /// Whether `weft_from_uplink`'s link is pinned.
    pub attached: bool,
    /// `net.ipv4.conf.all.forwarding` in the node namespace.
    pub forwarding: bool,
    /// The overlay (`--encap`), if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<NodeOverlay>,
    /// This node's pod CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<PodSubnet>,
}

impl NodeView {
    fn new(paths: &Paths, node: Option<&NodeUplink>) -> Self {
        let forwarding = read_sysctl(FORWARDING).is_ok_and(|v| v == "1");
        let attached = paths.uplink_link_pin().exists();
        match node {
            None => Self {
                forwarding,
                attached,
                ..Self::default()
            },
            Some(n) => Self {
                configured: true,
                uplink: Some(n.uplink.clone()),
                uplink_ifindex: Some(n.uplink_ifindex),
                ip: Some(n.ip),
                port_min: Some(n.port_min),
                port_max: Some(n.port_max),
                port_range_size: Some(u32::from(n.port_max - n.port_min) + 1),
                conntrack_max: Some(crate::ct_budget::effective_limit(n.conntrack_max)),
                attached,
                forwarding,
                overlay: n.overlay.clone(),
                subnets: n.subnets.clone(),
            },
        }
    }
}

impl Render for NodeView {
    fn table(&self) -> String {
        match (&self.uplink, self.ip, self.port_min, self.port_max) {
            (Some(uplink), Some(ip), Some(min), Some(max)) => {
                let mut out = format!(
                    "uplink: {uplink} (ifindex {})\nmasquerade address: {ip}\nNAT ports: \
                     {min}-{max} ({} ports)\nuplink program attached: {}\nIPv4 forwarding: {}\n",
                    self.uplink_ifindex.unwrap_or(0),
                    self.port_range_size.unwrap_or(0),
                    if self.attached { "yes" } else { "no" },
                    if self.forwarding { "on" } else { "off" },
                );
                match &self.overlay {
                    Some(o) => out.push_str(&format!(
                        "overlay: {} encapsulation, underlay {uplink} {ip}, VTEP MAC {}, inner \
                         MTU {}, XDP early drop {}\n",
                        match o.encap {
                            Encap::Tunnel => "tunnel",
                            Encap::Bpf => "bpf",
                        },
                        o.vtep_mac,
                        o.mtu,
                        if o.xdp { "on" } else { "off" }
                    )),
                    None => out.push_str("overlay: off\n"),
                }
                for s in &self.subnets {
                    out.push_str(&format!("pod subnet: {} {}\n", s.network, s.cidr));
                }
                out
            }
            _ => "no node uplink set: masquerade is off (`weft node set --uplink IF --ip IP`)\n"
                .to_owned(),
        }
    }
}

fn read_sysctl(path: &str) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io(format!("cannot read {path}"), e))
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::io(format!("cannot write {path}"), e))
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

/// The node namespace's ephemeral port range.
fn local_port_range() -> Result<(u16, u16)> {
    let text = read_sysctl(LOCAL_PORT_RANGE)?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => Err(Error::Invalid(format!(
            "cannot parse {LOCAL_PORT_RANGE}: '{text}'"
        ))),
    }
}

/// Sets (or replaces) the node's uplink. On failure the node is left as
/// it was.
pub async fn set(paths: &Paths, args: &SetArgs) -> Result<NodeView> {
    let ip: Ipv4Addr = args.ip.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid address '{}': expected the uplink's IPv4 address",
            args.ip
        ))
    })?;
    let (port_min, port_max) = match &args.ports {
        Some(p) => parse_ports(p)?,
        None => DEFAULT_PORTS,
    };
    let encap = args
        .encap
        .as_deref()
        .map(overlay::parse_encap)
        .transpose()?;
    let vtep_mac = match &args.vtep_mac {
        Some(_) if encap.is_none() => {
            return Err(Error::Invalid(
                "--vtep-mac needs --encap: it is the overlay's address".into(),
            ));
        }
        Some(m) => overlay::parse_vtep_mac(m)?,
        None => Mac::vtep(ip),
    };
    if args.xdp && encap.is_none() {
        return Err(Error::Invalid(
            "--xdp needs --encap: it drops VXLAN early on the underlay".into(),
        ));
    }
    if let Some(max) = args.conntrack_max
        && !(1..=MAX_CONNTRACK).contains(&u64::from(max))
    {
        return Err(Error::Invalid(format!(
            "invalid --conntrack-max {max}: use 1 to {MAX_CONNTRACK} connections (the table \
             holds {CT_MAX_ENTRIES} entries, two per connection, with room for the LRU's free \
             lists)"
        )));
    }

    let mut locked = Locked::acquire(paths)?;
    let subnets = own_subnets(&locked.state, &args.subnets)?;
    if let Some(n) = locked
        .state
        .remote_nodes
        .iter()
        .find(|n| n.underlay_ip == ip)
    {
        return Err(Error::Conflict(format!(
            "{ip} is the underlay address of node '{}'; give this node's own address",
            n.name
        )));
    }
    let nl = Netlink::connect()?;
    let ifindex = nl.link_index(&args.uplink).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "interface '{}' does not exist in the node namespace (see `ip link`)",
            args.uplink
        ))
    })?;
    if !nl.has_address(ifindex, ip).await? {
        return Err(Error::Invalid(format!(
            "{ip} is not an address of {}; give one of its own (see `ip -4 addr show {}`)",
            args.uplink, args.uplink
        )));
    }

    let (local_min, local_max) = local_port_range()?;
    if port_min <= local_max && local_min <= port_max {
        return Err(Error::Invalid(format!(
            "NAT ports {port_min}-{port_max} overlap the node's ephemeral ports \
             {local_min}-{local_max} ({LOCAL_PORT_RANGE}): the datapath cannot see the node's \
             own sockets, so the two must not share ports. Pass a disjoint --ports range, or \
             narrow the ephemeral range in the node namespace (e.g. \
             `sysctl -w net.ipv4.ip_local_port_range=\"40000 60999\"`)"
        )));
    }

    let previous = locked.state.node.clone();
    let old_vxlan = previous
        .as_ref()
        .and_then(|p| p.overlay.as_ref())
        .and_then(|o| o.vxlan_ifname.clone());
    let mtu = nl
        .link_mtu(ifindex)
        .await?
        .saturating_sub(weft_common::overlay::VXLAN_OVERHEAD);
    let mut created_vxlan = false;
    let overlay = match encap {
        None => None,
        Some(encap) => {
            let vxlan_ifindex = if encap == Encap::Tunnel {
                let (index, created) =
                    vxlan_device(&nl, old_vxlan.is_some(), vtep_mac, mtu).await?;
                created_vxlan = created;
                index
            } else {
                0
            };
            Some(NodeOverlay {
                encap,
                vtep_mac,
                mtu,
                vxlan_ifname: (encap == Encap::Tunnel).then(|| VXLAN_IFNAME.to_string()),
                vxlan_ifindex,
                xdp: args.xdp,
            })
        }
    };
    let forwarding = read_sysctl(FORWARDING)?;
    let forwarding_before = match &previous {
        Some(p) => p.forwarding_before.clone(),
        None if forwarding != "1" => Some(forwarding.clone()),
        None => None,
    };
    let node = NodeUplink {
        uplink: args.uplink.clone(),
        uplink_ifindex: ifindex,
        ip,
        port_min,
        port_max,
        conntrack_max: args.conntrack_max,
        forwarding_before,
        overlay,
        subnets,
    };
    let old_state = locked.state.clone();
    let mut new = locked.state.clone();
    new.node = Some(node.clone());
    let routes = overlay::routes(&new);

    let mut dp = match Datapath::open(paths) {
        Ok(dp) => dp,
        Err(e) => {
            drop_new_vxlan(&nl, created_vxlan).await;
            return Err(e);
        }
    };
    let result = (|| {
        if forwarding != "1" {
            write_sysctl(FORWARDING, "1")?;
        }
        dp.attach_uplink(&node.uplink)?;
        dp.put_node(&node_config(&node, &old_state.publications))?;
        match node.overlay.as_ref().and_then(|o| o.vxlan_ifname.as_ref()) {
            Some(vxlan) => dp.attach_vxlan(vxlan)?,
            None => datapath::detach_vxlan(paths)?,
        }
        dp.put_overlay(&overlay::overlay_config(Some(&node)))?;
        dp.sync_routes(&routes)?;
        if node.overlay.as_ref().is_some_and(|o| o.xdp) {
            dp.attach_xdp(&node.uplink, xdp_was_on(previous.as_ref(), &node.uplink))?;
        } else {
            datapath::detach_xdp(paths)?;
        }
        locked.commit(new)
    })();
    if let Err(e) = result {
        let undo = (|| {
            dp.put_overlay(&overlay::overlay_config(previous.as_ref()))?;
            dp.sync_routes(&overlay::routes(&old_state))?;
            match previous
                .as_ref()
                .filter(|p| p.overlay.as_ref().is_some_and(|o| o.xdp))
            {
                Some(p) => dp.attach_xdp(&p.uplink, xdp_was_on(Some(&node), &p.uplink))?,
                None => datapath::detach_xdp(paths)?,
            }
            match &old_vxlan {
                Some(vxlan) => dp.attach_vxlan(vxlan)?,
                None => datapath::detach_vxlan(paths)?,
            }
            match &previous {
                Some(p) => {
                    dp.attach_uplink(&p.uplink)?;
                    dp.put_node(&node_config(p, &old_state.publications))?;
                }
                None => {
                    dp.put_node(&NodeConfig::default())?;
                    datapath::detach_uplink(paths)?;
                }
            }
            if forwarding != "1" {
                write_sysctl(FORWARDING, &forwarding)?;
            }
            Ok::<_, Error>(())
        })();
        if let Err(u) = undo {
            log::warn!("rollback of node set: {}", chain(&u));
        }
        drop_new_vxlan(&nl, created_vxlan).await;
        return Err(e);
    }
    if old_vxlan.is_some() && !matches!(encap, Some(Encap::Tunnel)) {
        // Left tunnel mode: its device goes (its program was detached).
        nl.delete_link_by_name(VXLAN_IFNAME).await?;
    }
    // The limit counts from now, with the connections that exist.
    crate::conntrack::refresh_budget(paths)?;
    Ok(NodeView::new(paths, locked.state.node.as_ref()))
}

/// Whether `node` (as saved) had the XDP early drop on `uplink`.
fn xdp_was_on(node: Option<&NodeUplink>, uplink: &str) -> bool {
    node.is_some_and(|n| n.uplink == uplink && n.overlay.as_ref().is_some_and(|o| o.xdp))
}

/// This node's pod CIDRs from `--subnet`: checked against the other
/// nodes' and against this node's endpoints, which must lie inside.
fn own_subnets(st: &State, texts: &[String]) -> Result<Vec<PodSubnet>> {
    let subnets = overlay::parse_pod_subnets(st, texts)?;
    for s in &subnets {
        if let Some(holder) = overlay::overlap(st, s.cidr, false) {
            return Err(Error::Conflict(format!(
                "pod subnet {} overlaps {holder}; pick a free slice of the network",
                s.cidr
            )));
        }
        if let Some(ep) = st
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
    Ok(subnets)
}

/// The tunnel mode's collect-metadata vxlan device: kept (MAC and MTU
/// updated) if an earlier `node set` made it, else created. Returns its
/// ifindex and whether this call created it.
async fn vxlan_device(nl: &Netlink, ours: bool, mac: Mac, mtu: u32) -> Result<(u32, bool)> {
    use weft_common::overlay::{VXLAN_PORT, VXLAN_SPORT_MAX, VXLAN_SPORT_MIN};
    match nl.link_index(VXLAN_IFNAME).await? {
        Some(index) if ours => {
            let settings = LinkSettings {
                name: None,
                mac: Some(mac),
                mtu: Some(mtu),
            };
            nl.configure_link(index, &settings).await?;
            Ok((index, false))
        }
        Some(_) => Err(Error::Conflict(format!(
            "interface {VXLAN_IFNAME} exists in the node namespace but weft did not create it; \
             delete it (`ip link del {VXLAN_IFNAME}`) or run `weft teardown`"
        ))),
        None => {
            nl.add_vxlan_external(
                VXLAN_IFNAME,
                VXLAN_PORT,
                (VXLAN_SPORT_MIN, VXLAN_SPORT_MAX),
                mac,
                mtu,
            )
            .await?;
            Ok((nl.require_link(VXLAN_IFNAME).await?, true))
        }
    }
}

/// Rollback: deletes the vxlan device if this command created it.
async fn drop_new_vxlan(nl: &Netlink, created: bool) {
    if created && let Err(e) = nl.delete_link_by_name(VXLAN_IFNAME).await {
        log::warn!("rollback of node set: {}", chain(&e));
    }
}

/// The datapath's view of `node`, which has `publications`.
pub fn node_config(node: &NodeUplink, publications: &[Publication]) -> NodeConfig {
    let publishes = if publications.is_empty() {
        0
    } else {
        NODE_FLAG_PUBLISHES
    };
    NodeConfig {
        uplink_ifindex: node.uplink_ifindex,
        node_ip_be: ip_be(node.ip),
        port_min: node.port_min,
        port_max: node.port_max,
        flags: NODE_FLAG_CONFIGURED | publishes,
    }
}

/// The node's `WEFT_NODE` entry for state `st`, if the node is set.
pub fn node_config_of(st: &State) -> Option<NodeConfig> {
    st.node.as_ref().map(|n| node_config(n, &st.publications))
}

/// The node's `WEFT_NODE` entry before and after a change of the
/// publications: `NODE_FLAG_PUBLISHES` follows whether any port is
/// published (written only when it flips).
pub(crate) struct NodeFlags {
    before: Option<NodeConfig>,
    after: Option<NodeConfig>,
}

impl NodeFlags {
    pub(crate) fn between(old: &State, new: &State) -> Self {
        Self {
            before: node_config_of(old),
            after: node_config_of(new),
        }
    }

    pub(crate) fn apply(&self, paths: &Paths) -> Result<()> {
        match self.after {
            Some(after) if self.before != self.after => datapath::put_node_pinned(paths, &after),
            _ => Ok(()),
        }
    }

    pub(crate) fn undo(&self, paths: &Paths) {
        if let Some(before) = self.before.filter(|_| self.before != self.after)
            && let Err(e) = datapath::put_node_pinned(paths, &before)
        {
            log::warn!("rollback of the node's flags: {}", crate::error::chain(&e));
        }
    }
}

/// The node's uplink as saved, with whether it is attached.
pub fn show(paths: &Paths) -> Result<NodeView> {
    let st = state::read(paths)?;
    Ok(NodeView::new(paths, st.node.as_ref()))
}

/// Stops masquerade: clears `WEFT_NODE`, detaches the uplink program,
/// flushes the connection table and restores IPv4 forwarding if `set`
/// turned it on.
/// The overlay goes with it: this node's pod CIDRs and the vxlan device.
/// Each step tolerates its object being gone, so a failed `unset` can be
/// run again.
pub async fn unset(paths: &Paths) -> Result<NodeView> {
    let mut locked = Locked::acquire(paths)?;
    let Some(node) = locked.state.node.clone() else {
        return Err(Error::NotFound(
            "no node uplink is set (see `weft node show`)".into(),
        ));
    };
    let mut new = locked.state.clone();
    new.node = None;
    let mut dp = Datapath::open(paths)?;
    dp.put_overlay(&overlay::overlay_config(None))?;
    dp.sync_routes(&overlay::routes(&new))?;
    datapath::detach_vxlan(paths)?;
    datapath::detach_xdp(paths)?;
    if node
        .overlay
        .as_ref()
        .is_some_and(|o| o.vxlan_ifname.is_some())
    {
        Netlink::connect()?
            .delete_link_by_name(VXLAN_IFNAME)
            .await?;
    }
    dp.put_node(&NodeConfig::default())?;
    datapath::detach_uplink(paths)?;
    let flushed = conntrack::flush(paths)?;
    log::info!("node unset: {flushed} conntrack entries removed");
    restore_forwarding(&node)?;
    locked.commit(new)?;
    Ok(NodeView::new(paths, None))
}

/// Puts `net.ipv4.conf.all.forwarding` back if weft turned it on.
pub fn restore_forwarding(node: &NodeUplink) -> Result<()> {
    match &node.forwarding_before {
        Some(before) => write_sysctl(FORWARDING, before),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("30000-30001").unwrap(), (30000, 30001));
        assert_eq!(parse_ports("5-5").unwrap(), (5, 5));
        for bad in ["", "1", "0-10", "10-5", "1-70000", "a-b", "-5"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }
}

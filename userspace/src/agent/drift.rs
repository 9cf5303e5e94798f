//! Drift between the saved state and the kernel: what is missing or stale,
//! and the repair the agent makes when it starts.

use aya::programs::ProgramInfo;
use weft_common::maps::PROG_FROM_CONTAINER;

use crate::{
    datapath::{self, Datapath},
    error::Result,
    netlink::Netlink,
    paths::Paths,
    reconcile::{self, MapDiff},
    state::{self, State},
};

/// What does not match the saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// Endpoints whose host veth is gone (their container went away).
    pub missing_veths: Vec<String>,
    /// Endpoints whose veth exists but whose pinned TCX link is gone.
    pub missing_links: Vec<String>,
    /// Pinned links for interfaces no endpoint owns.
    pub stale_links: Vec<String>,
    /// The node's uplink (from `weft node set`) when its link pin is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_uplink_link: Option<String>,
    /// Map entries that differ from what the state describes, per map.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<MapDiff>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// What the agent changed to make the kernel match the state.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Repair {
    pub found: Drift,
    /// Endpoints whose program link was attached again.
    pub reattached: Vec<String>,
    /// Stale link pins removed.
    pub unpinned: Vec<String>,
    /// The uplink whose program link was attached again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reattached_uplink: Option<String>,
    /// Map entries added, rewritten and removed to match the state.
    pub maps: Vec<MapDiff>,
}

/// Compares the saved state with the kernel, changing nothing.
pub async fn check(paths: &Paths) -> Result<Drift> {
    let st = state::read(paths)?;
    let nl = Netlink::connect()?;
    let mut drift = Drift::default();
    for ep in &st.endpoints {
        if nl.link_index(&ep.host_ifname).await?.is_none() {
            drift.missing_veths.push(ep.name.clone());
        } else if !paths.link_pin(&ep.host_ifname).exists() {
            drift.missing_links.push(ep.name.clone());
        }
    }
    drift.stale_links = stale_link_pins(paths, &st);
    if let Some(node) = &st.node
        && !paths.uplink_link_pin().exists()
    {
        drift.missing_uplink_link = Some(node.uplink.clone());
    }
    drift.maps = reconcile::check(paths, &st)?;
    Ok(drift)
}

/// Makes the maps' entries match the state (see [`reconcile`]), then
/// re-attaches the program where a link pin is missing and unpins links
/// nobody owns. Veths that are gone are reported, not recreated: their
/// container namespace went away, which only `endpoint rm` should settle.
pub async fn repair(paths: &Paths) -> Result<Repair> {
    let found = check(paths).await?;
    let mut done = Repair {
        found: found.clone(),
        maps: reconcile::repair(paths)?,
        ..Repair::default()
    };
    if found.missing_links.is_empty()
        && found.stale_links.is_empty()
        && found.missing_uplink_link.is_none()
    {
        return Ok(done);
    }
    let st = state::read(paths)?;
    let mut dp = Datapath::open(paths)?;
    for name in &found.missing_links {
        if let Some(ep) = st.endpoint(name) {
            dp.attach(&ep.host_ifname)?;
            done.reattached.push(name.clone());
        }
    }
    if let (Some(uplink), Some(node)) = (&found.missing_uplink_link, &st.node) {
        dp.attach_uplink(uplink)?;
        dp.put_node(&crate::cmd::node::node_config(node, &st.publications))?;
        done.reattached_uplink = Some(uplink.clone());
    }
    for ifname in &found.stale_links {
        datapath::detach(paths, ifname)?;
        done.unpinned.push(ifname.clone());
    }
    Ok(done)
}

/// The kernel id of the pinned program, if it is pinned.
pub fn program_id(paths: &Paths) -> Option<u32> {
    ProgramInfo::from_pin(paths.prog_pin(PROG_FROM_CONTAINER))
        .ok()
        .map(|info| info.id())
}

fn stale_link_pins(paths: &Paths, st: &State) -> Vec<String> {
    let dir = paths.links_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut stale: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !st.endpoints.iter().any(|ep| &ep.host_ifname == name))
        .filter(|name| !name.starts_with('.') && !name.starts_with(':'))
        .collect();
    stale.sort();
    stale
}

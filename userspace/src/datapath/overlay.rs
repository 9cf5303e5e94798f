//! The overlay's maps (`WEFT_OVERLAY`, `WEFT_ROUTES`, `WEFT_VNIS`) and
//! `weft_from_vxlan` on the tunnel mode's vxlan device (a pinned TCX link
//! under [`VXLAN_LINK_PIN`]).

use std::{collections::BTreeMap, path::PathBuf};

use aya::{
    maps::{Array, LpmTrie, MapData, lpm_trie::Key},
    programs::{Xdp, links::FdLink, xdp::XdpMode},
};
use ipnet::Ipv4Net;
use weft_common::maps::{
    MAP_OVERLAY, MAP_ROUTES, MAP_VNIS, OverlayConfig, OverlayRoute, PROG_FROM_VXLAN,
    PROG_XDP_UNDERLAY,
};

use super::{Datapath, absent_ok, ip_be, remove_pin};
use crate::{
    error::{Error, Result},
    paths::Paths,
};

/// Link pin of `weft_from_vxlan`, a name no interface can have (see
/// [`crate::paths::UPLINK_LINK_PIN`]).
pub const VXLAN_LINK_PIN: &str = ":vxlan";
/// Name of the XDP link pin in the bpffs directory.
const XDP_LINK_PIN: &str = "xdp-underlay";

fn route_key(cidr: Ipv4Net) -> Key<u32> {
    Key::new(u32::from(cidr.prefix_len()), ip_be(cidr.network()))
}

impl Datapath {
    /// Writes this node's overlay settings (all zero: overlay off).
    pub fn put_overlay(&mut self, config: &OverlayConfig) -> Result<()> {
        let mut map: Array<_, OverlayConfig> = Array::try_from(self.map_mut(MAP_OVERLAY)?)
            .map_err(|e| Error::map(format!("map {MAP_OVERLAY} has an unexpected type"), e))?;
        map.set(0, *config, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_OVERLAY}"), e))
    }

    pub fn put_vni(&mut self, vni: u32, network_id: u32) -> Result<()> {
        self.hash::<u32, u32>(MAP_VNIS)?
            .insert(vni, network_id, 0)
            .map_err(|e| Error::map(format!("cannot write VNI {vni} to {MAP_VNIS}"), e))
    }

    pub fn del_vni(&mut self, vni: u32) -> Result<()> {
        absent_ok(self.hash::<u32, u32>(MAP_VNIS)?.remove(&vni))
            .map_err(|e| Error::map(format!("cannot remove VNI {vni} from {MAP_VNIS}"), e))
    }

    fn routes(&mut self) -> Result<LpmTrie<&mut MapData, u32, OverlayRoute>> {
        LpmTrie::try_from(self.map_mut(MAP_ROUTES)?)
            .map_err(|e| Error::map(format!("map {MAP_ROUTES} has an unexpected type"), e))
    }

    /// Makes `WEFT_ROUTES` hold exactly `want`: new and changed routes are
    /// written first, then stale ones removed, so a prefix that stays is
    /// never missing.
    pub fn sync_routes(&mut self, want: &BTreeMap<Ipv4Net, OverlayRoute>) -> Result<()> {
        let mut map = self.routes()?;
        let mut have = Vec::new();
        for key in map.keys() {
            let key = key.map_err(|e| Error::map(format!("cannot list {MAP_ROUTES}"), e))?;
            have.push(key);
        }
        for (cidr, route) in want {
            map.insert(&route_key(*cidr), *route, 0)
                .map_err(|e| Error::map(format!("cannot write route {cidr} to {MAP_ROUTES}"), e))?;
        }
        for key in have {
            let cidr = Ipv4Net::new(
                std::net::Ipv4Addr::from(key.data().to_ne_bytes()),
                key.prefix_len() as u8,
            )
            .map_err(|_| Error::Invalid(format!("{MAP_ROUTES} holds a bad prefix")))?;
            if !want.contains_key(&cidr) {
                absent_ok(map.remove(&key)).map_err(|e| {
                    Error::map(format!("cannot remove route {cidr} from {MAP_ROUTES}"), e)
                })?;
            }
        }
        Ok(())
    }

    /// Attaches the XDP early drop to the underlay NIC `ifname`, unless it
    /// is attached there already (its decisions come from the maps, which
    /// are shared). An interface takes one XDP program: a link on another
    /// interface is replaced.
    /// `attached_here`: the saved state says it is on `ifname` (a link's
    /// interface cannot be read back, and a replaced link is released
    /// asynchronously, so re-attaching there could find it still busy).
    pub fn attach_xdp(&mut self, ifname: &str, attached_here: bool) -> Result<()> {
        let pin = xdp_link_pin(&self.paths);
        if attached_here && pin.exists() {
            return Ok(());
        }
        remove_pin(&pin)?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_XDP_UNDERLAY)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the embedded eBPF object has no program {PROG_XDP_UNDERLAY}; rebuild weft"
                ))
            })?
            .try_into()
            .map_err(|e| Error::program(format!("{PROG_XDP_UNDERLAY} is not an XDP program"), e))?;
        prog.load()
            .map_err(|e| Error::program(format!("the kernel rejected {PROG_XDP_UNDERLAY}"), e))?;
        let id = prog.attach(ifname, XdpMode::Default).map_err(|e| {
            Error::program(format!("cannot attach {PROG_XDP_UNDERLAY} to {ifname}"), e)
        })?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(|e| Error::program(format!("cannot take the XDP link on {ifname}"), e))?
            .try_into()
            .map_err(|e| Error::link(format!("the XDP link on {ifname} is not a bpf_link"), e))?;
        link.pin(&pin).map_err(|e| {
            Error::pin(
                format!("cannot pin the XDP link on {ifname} at {}", pin.display()),
                e,
            )
        })?;
        Ok(())
    }

    /// Attaches `weft_from_vxlan` to TC ingress of the vxlan device `ifname`.
    pub fn attach_vxlan(&mut self, ifname: &str) -> Result<()> {
        let pin = self.paths.link_pin(VXLAN_LINK_PIN);
        self.attach_node_program(PROG_FROM_VXLAN, ifname, &pin)
    }
}

/// Where the XDP link is pinned: outside `links/` and `progs/`, whose
/// contents layout migrations reload and relink as TC programs; `node set`
/// attaches it again.
fn xdp_link_pin(paths: &Paths) -> PathBuf {
    paths.bpffs.join(XDP_LINK_PIN)
}

/// Detaches the XDP early drop by removing its link pin.
pub fn detach_xdp(paths: &Paths) -> Result<()> {
    remove_pin(&xdp_link_pin(paths))
}

/// Detaches `weft_from_vxlan` by removing its link pin.
pub fn detach_vxlan(paths: &Paths) -> Result<()> {
    remove_pin(&paths.link_pin(VXLAN_LINK_PIN))
}

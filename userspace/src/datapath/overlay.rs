//! The overlay's maps (`WEFT_OVERLAY`, `WEFT_ROUTES`, `WEFT_VNIS`) and
//! `weft_from_vxlan` on the tunnel mode's vxlan device (a pinned TCX link
//! under [`VXLAN_LINK_PIN`]).

use std::collections::BTreeMap;

use aya::maps::{Array, LpmTrie, MapData, lpm_trie::Key};
use ipnet::Ipv4Net;
use weft_common::maps::{
    MAP_OVERLAY, MAP_ROUTES, MAP_VNIS, OverlayConfig, OverlayRoute, PROG_FROM_VXLAN,
};

use super::{Datapath, absent_ok, ip_be, remove_pin};
use crate::{
    error::{Error, Result},
    paths::Paths,
};

/// Link pin of `weft_from_vxlan`, a name no interface can have (see
/// [`crate::paths::UPLINK_LINK_PIN`]).
pub const VXLAN_LINK_PIN: &str = ":vxlan";

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

    /// Attaches `weft_from_vxlan` to TC ingress of the vxlan device `ifname`.
    pub fn attach_vxlan(&mut self, ifname: &str) -> Result<()> {
        let pin = self.paths.link_pin(VXLAN_LINK_PIN);
        self.attach_node_program(PROG_FROM_VXLAN, ifname, &pin)
    }
}

/// Detaches `weft_from_vxlan` by removing its link pin.
pub fn detach_vxlan(paths: &Paths) -> Result<()> {
    remove_pin(&paths.link_pin(VXLAN_LINK_PIN))
}

//! Reconcile of map entries: every pinned map that `state.json` fully
//! describes is compared entry by entry with what the state says it must
//! hold; the agent adds what is missing, rewrites what differs and removes
//! what is stale when it starts, and `weft status` runs the same comparison
//! read-only.
//!
//! The engine knows three map shapes (hash, array, LPM trie); each map is a
//! [`Table`] whose only map-specific part is a "desired entries from state"
//! function, listed in [`tables`]. A new map the state describes needs one
//! such function and one line there.

mod tables;

use std::{collections::HashMap as StdHashMap, hash::Hash as StdHash, net::Ipv4Addr};

use aya::{
    Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapError, lpm_trie::Key},
};
use ipnet::Ipv4Net;

pub use self::tables::tables;
use crate::{
    datapath::{Datapath, open_pinned},
    error::{Error, Result},
    paths::Paths,
    state::{Locked, State},
};

/// How one map differs from the state (a check), or what was changed to
/// make it match (a repair). Entries are named by their keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapDiff {
    pub map: String,
    /// Entries the state describes that the map lacks (repair: added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Entries the map holds with another value (repair: rewritten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrong: Vec<String>,
    /// Entries the map holds that the state does not describe (repair:
    /// removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
}

impl MapDiff {
    fn new(map: &str) -> Self {
        Self {
            map: map.to_owned(),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.wrong.is_empty() && self.stale.is_empty()
    }

    fn sorted(mut self) -> Self {
        self.missing.sort();
        self.wrong.sort();
        self.stale.sort();
        self
    }
}

/// One pinned map whose entries the saved state fully describes.
pub trait Table: Sync {
    /// The map's name (its pin under `maps/`).
    fn map(&self) -> &'static str;
    /// Compares `map` with what `st` describes; with `fix`, also makes it
    /// match (writes first, then removals).
    fn sync(&self, map: Map, st: &State, fix: bool) -> Result<MapDiff>;
    /// What `st` describes, as a diff against an absent map.
    fn all_missing(&self, st: &State) -> MapDiff;
}

/// A hash map: `desired` lists its entries; keys are unique.
pub struct Hash<K, V> {
    pub map: &'static str,
    pub desired: fn(&State) -> Vec<(K, V)>,
    pub name: fn(&K) -> String,
}

/// An array: `desired` lists (slot, value); several values for one slot
/// are alternatives, any of which is right (direct-mapped caches, where a
/// slot belongs to whichever colliding endpoint took it first), the first
/// preferred. Other slots must hold `V::default()` (empty).
pub struct Slots<V> {
    pub map: &'static str,
    pub desired: fn(&State) -> Vec<(u32, V)>,
}

/// An LPM trie keyed by an IPv4 prefix (network-order data).
pub struct Prefixes<V> {
    pub map: &'static str,
    pub desired: fn(&State) -> Vec<(Ipv4Net, V)>,
}

fn map_err(name: &str, what: &str, e: MapError) -> Error {
    Error::map(format!("cannot {what} {name}"), e)
}

/// Compares `want` with `have`, keyed alike; with `fix`, calls `put` and
/// `del` to make the map match.
fn diff_keyed<K: Eq + StdHash + Copy, V: PartialEq + Copy>(
    map: &str,
    want: &[(K, V)],
    have: &StdHashMap<K, V>,
    name: impl Fn(&K) -> String,
    fix: bool,
    mut put: impl FnMut(K, V) -> Result<()>,
    mut del: impl FnMut(K) -> Result<()>,
) -> Result<MapDiff> {
    let mut diff = MapDiff::new(map);
    let mut wanted = std::collections::HashSet::new();
    for &(k, v) in want {
        wanted.insert(k);
        match have.get(&k) {
            None => diff.missing.push(name(&k)),
            Some(h) if *h != v => diff.wrong.push(name(&k)),
            Some(_) => continue,
        }
        if fix {
            put(k, v)?;
        }
    }
    for k in have.keys().filter(|k| !wanted.contains(*k)) {
        diff.stale.push(name(k));
        if fix {
            del(*k)?;
        }
    }
    Ok(diff.sorted())
}

impl<K: Pod + Eq + StdHash + Sync, V: Pod + PartialEq + Sync> Table for Hash<K, V> {
    fn map(&self) -> &'static str {
        self.map
    }

    fn sync(&self, map: Map, st: &State, fix: bool) -> Result<MapDiff> {
        let name = self.map;
        let mut m: HashMap<_, K, V> =
            HashMap::try_from(map).map_err(|e| map_err(name, "use", e))?;
        let mut have = StdHashMap::new();
        for item in m.iter() {
            match item {
                Ok((k, v)) => {
                    have.insert(k, v);
                }
                // Deleted between the key walk and the lookup.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name, "read", e)),
            }
        }
        let want = (self.desired)(st);
        let mut removals = Vec::new();
        let diff = diff_keyed(
            name,
            &want,
            &have,
            self.name,
            fix,
            |k, v| m.insert(k, v, 0).map_err(|e| map_err(name, "write", e)),
            |k| {
                removals.push(k);
                Ok(())
            },
        )?;
        for k in removals {
            match m.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name, "remove from", e)),
            }
        }
        Ok(diff)
    }

    fn all_missing(&self, st: &State) -> MapDiff {
        let mut diff = MapDiff::new(self.map);
        diff.missing = (self.desired)(st)
            .iter()
            .map(|(k, _)| (self.name)(k))
            .collect();
        diff.sorted()
    }
}

impl<V: Pod + PartialEq + Default + Sync> Table for Slots<V> {
    fn map(&self) -> &'static str {
        self.map
    }

    fn sync(&self, map: Map, st: &State, fix: bool) -> Result<MapDiff> {
        let name = self.map;
        let mut arr: Array<_, V> = Array::try_from(map).map_err(|e| map_err(name, "use", e))?;
        let mut want: StdHashMap<u32, Vec<V>> = StdHashMap::new();
        for (slot, v) in (self.desired)(st) {
            want.entry(slot).or_default().push(v);
        }
        let empty = V::default();
        let mut diff = MapDiff::new(name);
        for slot in 0..arr.len() {
            let have = arr.get(&slot, 0).map_err(|e| map_err(name, "read", e))?;
            let alternatives = want.get(&slot).map_or(&[][..], Vec::as_slice);
            let fixed = match alternatives.first() {
                _ if alternatives.contains(&have) => continue,
                None if have == empty => continue,
                None => {
                    diff.stale.push(format!("slot {slot}"));
                    empty
                }
                Some(first) if have == empty => {
                    diff.missing.push(format!("slot {slot}"));
                    *first
                }
                Some(first) => {
                    diff.wrong.push(format!("slot {slot}"));
                    *first
                }
            };
            if fix {
                arr.set(slot, fixed, 0)
                    .map_err(|e| map_err(name, "write", e))?;
            }
        }
        Ok(diff.sorted())
    }

    fn all_missing(&self, st: &State) -> MapDiff {
        let mut diff = MapDiff::new(self.map);
        let empty = V::default();
        diff.missing = (self.desired)(st)
            .iter()
            .filter(|(_, v)| *v != empty)
            .map(|(slot, _)| format!("slot {slot}"))
            .collect();
        diff.missing.dedup();
        diff.sorted()
    }
}

fn lpm_key(net: &Ipv4Net) -> Key<u32> {
    Key::new(
        u32::from(net.prefix_len()),
        u32::from_ne_bytes(net.network().octets()),
    )
}

impl<V: Pod + PartialEq + Sync> Table for Prefixes<V> {
    fn map(&self) -> &'static str {
        self.map
    }

    fn sync(&self, map: Map, st: &State, fix: bool) -> Result<MapDiff> {
        let name = self.map;
        let mut trie: LpmTrie<_, u32, V> =
            LpmTrie::try_from(map).map_err(|e| map_err(name, "use", e))?;
        let mut have = StdHashMap::new();
        for item in trie.iter() {
            match item {
                Ok((k, v)) => {
                    let ip = Ipv4Addr::from(k.data().to_ne_bytes());
                    // A prefix length over 32 is no IPv4 prefix: remove it
                    // under the widest name it can carry.
                    let prefix = u8::try_from(k.prefix_len()).unwrap_or(32).min(32);
                    let net = Ipv4Net::new(ip, prefix).unwrap_or_default();
                    have.insert(net, v);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name, "read", e)),
            }
        }
        let want = (self.desired)(st);
        let mut removals = Vec::new();
        let diff = diff_keyed(
            name,
            &want,
            &have,
            Ipv4Net::to_string,
            fix,
            |k, v| {
                trie.insert(&lpm_key(&k), v, 0)
                    .map_err(|e| map_err(name, "write", e))
            },
            |k| {
                removals.push(k);
                Ok(())
            },
        )?;
        for k in removals {
            match trie.remove(&lpm_key(&k)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name, "remove from", e)),
            }
        }
        Ok(diff)
    }

    fn all_missing(&self, st: &State) -> MapDiff {
        let mut diff = MapDiff::new(self.map);
        diff.missing = (self.desired)(st)
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        diff.sorted()
    }
}

/// Compares every state-described map with `st`, changing nothing. Only
/// maps that differ are listed.
pub fn check(paths: &Paths, st: &State) -> Result<Vec<MapDiff>> {
    sync_all(paths, st, false)
}

/// Makes every state-described map match the saved state, holding the
/// state lock so no weft command changes either meanwhile; says what it
/// added, rewrote and removed, map by map (only maps it changed).
pub fn repair(paths: &Paths) -> Result<Vec<MapDiff>> {
    let locked = Locked::acquire(paths)?;
    let st = &locked.state;
    if st.networks.is_empty() && st.node.is_none() && !paths.maps_dir().exists() {
        return Ok(Vec::new());
    }
    // Creates (and pins) any map that is gone, e.g. after bpffs was
    // remounted, so the entries below have somewhere to go.
    drop(Datapath::open(paths)?);
    let repaired = sync_all(paths, st, true)?;
    for d in &repaired {
        log::warn!(
            "reconcile: {}: added {:?}, rewrote {:?}, removed {:?}",
            d.map,
            d.missing,
            d.wrong,
            d.stale
        );
    }
    Ok(repaired)
}

fn sync_all(paths: &Paths, st: &State, fix: bool) -> Result<Vec<MapDiff>> {
    let mut out = Vec::new();
    for table in tables() {
        let diff = match open_pinned(paths, table.map())? {
            Some(map) => table.sync(map, st, fix)?,
            None => table.all_missing(st),
        };
        if !diff.is_empty() {
            out.push(diff);
        }
    }
    Ok(out)
}

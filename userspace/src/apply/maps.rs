//! Map entries: writing the difference between two renders (a change and
//! its rollback), and comparing a render with what the pinned maps hold
//! (drift checks and repairs). Writes come in table order and removals in
//! the reverse order: a lookup table before the cache in front of it, so
//! the program never finds a cached endpoint the table lacks.

use std::{collections::HashMap, hash::Hash};

use aya::{
    Pod,
    maps::{Array, HashMap as BpfHash, LpmTrie, Map, MapError, lpm_trie::Key},
};
use ipnet::Ipv4Net;
use weft_common::maps::{
    IPPROTO_UDP, MAP_EP_BY_IF, MAP_EP_BY_IP, MAP_EP_IF_CACHE, MAP_EP_IP_CACHE, MAP_EP_STATS,
    MAP_FDB, MAP_FLOOD, MAP_MAGLEV, MAP_NET_LINKS, MAP_NETWORKS, MAP_NODE, MAP_OVERLAY,
    MAP_PUBLISH, MAP_ROUTES, MAP_SERVICES, MAP_SUBNETS, MAP_SVC_MEMBERS, MAP_SVC_SLOTS, MAP_VNIS,
};

use super::steps::Steps;
use crate::{
    datapath::{MapSet, counters::zero_endpoint_stats, ip_be, ip_of, maps::absent_ok},
    error::{Error, Result},
    model::Mac,
    render::maps::{DesiredMaps, Members, maglev_key},
};

/// How one map differs from a render (a check), or what was changed to
/// make it match (a repair). Entries are named by their keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapDiff {
    pub map: String,
    /// Entries the render has that the map lacks (repair: added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Entries the map holds with another value (repair: rewritten).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrong: Vec<String>,
    /// Entries the map holds that the render does not (repair: removed).
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

fn map_err(name: &str, what: &str, e: MapError) -> Error {
    Error::map(format!("cannot {what} {name}"), e)
}

/// How entries of one kind of map are written, removed and read.
trait Shape: Sync {
    type K: Copy + Eq + Hash + Send + Sync;
    type V: Copy + PartialEq + Send + Sync;
    fn put(map: &mut Map, k: Self::K, v: Self::V) -> Result<(), MapError>;
    /// Removes `k` (an array slot is reset to empty); absent is fine.
    fn del(map: &mut Map, k: Self::K) -> Result<(), MapError>;
    /// Every entry (an array's non-empty slots).
    fn read(map: &mut Map) -> Result<HashMap<Self::K, Self::V>, MapError>;
}

struct HashShape<K, V>(std::marker::PhantomData<(K, V)>);
struct ArrayShape<V>(std::marker::PhantomData<V>);
struct PrefixShape<V>(std::marker::PhantomData<V>);

impl<K: Pod + Eq + Hash + Send + Sync, V: Pod + PartialEq + Send + Sync> Shape for HashShape<K, V> {
    type K = K;
    type V = V;

    fn put(map: &mut Map, k: K, v: V) -> Result<(), MapError> {
        BpfHash::<_, K, V>::try_from(map)?.insert(k, v, 0)
    }

    fn del(map: &mut Map, k: K) -> Result<(), MapError> {
        absent_ok(BpfHash::<_, K, V>::try_from(map)?.remove(&k))
    }

    fn read(map: &mut Map) -> Result<HashMap<K, V>, MapError> {
        let m = BpfHash::<_, K, V>::try_from(map)?;
        let mut out = HashMap::new();
        for item in m.iter() {
            match item {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                // Deleted between the key walk and the lookup.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

impl<V: Pod + PartialEq + Default + Send + Sync> Shape for ArrayShape<V> {
    type K = u32;
    type V = V;

    fn put(map: &mut Map, k: u32, v: V) -> Result<(), MapError> {
        Array::<_, V>::try_from(map)?.set(k, v, 0)
    }

    fn del(map: &mut Map, k: u32) -> Result<(), MapError> {
        Array::<_, V>::try_from(map)?.set(k, V::default(), 0)
    }

    fn read(map: &mut Map) -> Result<HashMap<u32, V>, MapError> {
        let arr = Array::<_, V>::try_from(map)?;
        let empty = V::default();
        let mut out = HashMap::new();
        for slot in 0..arr.len() {
            let v = arr.get(&slot, 0)?;
            if v != empty {
                out.insert(slot, v);
            }
        }
        Ok(out)
    }
}

fn lpm_key(net: &Ipv4Net) -> Key<u32> {
    Key::new(u32::from(net.prefix_len()), ip_be(net.network()))
}

impl<V: Pod + PartialEq + Send + Sync> Shape for PrefixShape<V> {
    type K = Ipv4Net;
    type V = V;

    fn put(map: &mut Map, k: Ipv4Net, v: V) -> Result<(), MapError> {
        LpmTrie::<_, u32, V>::try_from(map)?.insert(&lpm_key(&k), v, 0)
    }

    fn del(map: &mut Map, k: Ipv4Net) -> Result<(), MapError> {
        absent_ok(LpmTrie::<_, u32, V>::try_from(map)?.remove(&lpm_key(&k)))
    }

    fn read(map: &mut Map) -> Result<HashMap<Ipv4Net, V>, MapError> {
        let trie = LpmTrie::<_, u32, V>::try_from(map)?;
        let mut out = HashMap::new();
        for item in trie.iter() {
            match item {
                Ok((k, v)) => {
                    // A prefix length over 32 is no IPv4 prefix: remove it
                    // under the widest name it can carry.
                    let prefix = u8::try_from(k.prefix_len()).unwrap_or(32).min(32);
                    let net = Ipv4Net::new(ip_of(k.data()), prefix).unwrap_or_default();
                    out.insert(net, v);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// One map the model describes: which part of a render it holds, and how
/// its entries are named in diffs.
struct Table<S: Shape> {
    map: &'static str,
    entries: fn(&DesiredMaps) -> &HashMap<S::K, S::V>,
    name: fn(&S::K) -> String,
}

/// The operations every table offers, whatever its shape.
trait AnyTable: Sync {
    fn map(&self) -> &'static str;
    /// Writes the entries `to` has that `from` lacks or holds otherwise.
    fn upsert(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()>;
    /// Removes the entries `from` has that `to` lacks.
    fn remove(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()>;
    /// Compares the map with `to`; with `fix`, also makes it match.
    fn sync(&self, map: &mut Map, to: &DesiredMaps, fix: bool) -> Result<MapDiff>;
    /// `to` as a diff against an absent map.
    fn all_missing(&self, to: &DesiredMaps) -> MapDiff;
}

impl<S: Shape> AnyTable for Table<S> {
    fn map(&self) -> &'static str {
        self.map
    }

    fn upsert(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()> {
        let (old, new) = ((self.entries)(from), (self.entries)(to));
        for (k, v) in new {
            if old.get(k) == Some(v) {
                continue;
            }
            steps.step(|| format!("write {} {}", self.map, (self.name)(k)))?;
            S::put(maps.map_mut(self.map)?, *k, *v).map_err(|e| map_err(self.map, "write", e))?;
        }
        Ok(())
    }

    fn remove(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()> {
        let (old, new) = ((self.entries)(from), (self.entries)(to));
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            steps.step(|| format!("remove {} {}", self.map, (self.name)(k)))?;
            S::del(maps.map_mut(self.map)?, *k).map_err(|e| map_err(self.map, "remove from", e))?;
        }
        Ok(())
    }

    fn sync(&self, map: &mut Map, to: &DesiredMaps, fix: bool) -> Result<MapDiff> {
        let have = S::read(map).map_err(|e| map_err(self.map, "read", e))?;
        let want = (self.entries)(to);
        let mut diff = MapDiff::new(self.map);
        for (k, v) in want {
            match have.get(k) {
                None => diff.missing.push((self.name)(k)),
                Some(h) if h != v => diff.wrong.push((self.name)(k)),
                Some(_) => continue,
            }
            if fix {
                S::put(map, *k, *v).map_err(|e| map_err(self.map, "write", e))?;
            }
        }
        let stale: Vec<S::K> = have
            .keys()
            .filter(|k| !want.contains_key(*k))
            .copied()
            .collect();
        for k in stale {
            diff.stale.push((self.name)(&k));
            if fix {
                S::del(map, k).map_err(|e| map_err(self.map, "remove from", e))?;
            }
        }
        Ok(diff.sorted())
    }

    fn all_missing(&self, to: &DesiredMaps) -> MapDiff {
        let mut diff = MapDiff::new(self.map);
        diff.missing = (self.entries)(to).keys().map(self.name).collect();
        diff.sorted()
    }
}

fn ip_name(ip_be: &u32) -> String {
    ip_of(*ip_be).to_string()
}

fn slot_name(slot: &u32) -> String {
    format!("slot {slot}")
}

fn network_name(id: &u32) -> String {
    format!("network #{id}")
}

static NETWORKS: Table<HashShape<u32, weft_common::maps::NetworkInfo>> = Table {
    map: MAP_NETWORKS,
    entries: |d| &d.networks,
    name: network_name,
};
static SUBNETS: Table<PrefixShape<u32>> = Table {
    map: MAP_SUBNETS,
    entries: |d| &d.subnets,
    name: Ipv4Net::to_string,
};
static EP_BY_IP: Table<HashShape<u32, weft_common::maps::EndpointInfo>> = Table {
    map: MAP_EP_BY_IP,
    entries: |d| &d.ep_by_ip,
    name: ip_name,
};
static EP_BY_IF: Table<HashShape<u32, weft_common::maps::EndpointInfo>> = Table {
    map: MAP_EP_BY_IF,
    entries: |d| &d.ep_by_if,
    name: |ifindex| format!("ifindex {ifindex}"),
};
static EP_IP_CACHE: Table<ArrayShape<weft_common::maps::EndpointInfo>> = Table {
    map: MAP_EP_IP_CACHE,
    entries: |d| &d.ep_ip_cache,
    name: slot_name,
};
static EP_IF_CACHE: Table<ArrayShape<weft_common::maps::EndpointInfo>> = Table {
    map: MAP_EP_IF_CACHE,
    entries: |d| &d.ep_if_cache,
    name: slot_name,
};
static FDB: Table<HashShape<weft_common::maps::FdbKey, weft_common::maps::FdbEntry>> = Table {
    map: MAP_FDB,
    entries: |d| &d.fdb,
    name: |k| format!("network #{} {}", k.network_id, Mac(k.mac)),
};
static NET_LINKS: Table<HashShape<weft_common::maps::NetPairKey, u32>> = Table {
    map: MAP_NET_LINKS,
    entries: |d| &d.net_links,
    name: |k| format!("network #{} -> #{}", k.from_network, k.to_network),
};
static FLOOD: Table<HashShape<u32, weft_common::maps::FloodList>> = Table {
    map: MAP_FLOOD,
    entries: |d| &d.flood,
    name: network_name,
};
static NODE: Table<ArrayShape<weft_common::maps::NodeConfig>> = Table {
    map: MAP_NODE,
    entries: |d| &d.node,
    name: slot_name,
};
static PUBLISH: Table<HashShape<weft_common::maps::PublishKey, weft_common::maps::PublishTarget>> =
    Table {
        map: MAP_PUBLISH,
        entries: |d| &d.publish,
        name: |k| {
            let proto = if k.proto == IPPROTO_UDP { "udp" } else { "tcp" };
            format!("published port {}/{proto}", u16::from_be_bytes(k.port_be))
        },
    };
static VNIS: Table<HashShape<u32, u32>> = Table {
    map: MAP_VNIS,
    entries: |d| &d.vnis,
    name: |vni| format!("VNI {vni}"),
};
static ROUTES: Table<PrefixShape<weft_common::maps::OverlayRoute>> = Table {
    map: MAP_ROUTES,
    entries: |d| &d.routes,
    name: Ipv4Net::to_string,
};
static OVERLAY: Table<ArrayShape<weft_common::maps::OverlayConfig>> = Table {
    map: MAP_OVERLAY,
    entries: |d| &d.overlay,
    name: slot_name,
};

/// `WEFT_MAGLEV`, written a table at a time: a table's id is its content
/// hash, so a table both renders hold is the same table and is skipped
/// without comparing its chunks (10,000 services' tables are 40 MB).
struct MaglevTables;

type Chunks = HashShape<weft_common::maps::MaglevKey, weft_common::maps::MaglevChunk>;

fn chunk_name(k: &weft_common::maps::MaglevKey) -> String {
    format!("table {:016x} chunk {}", k.table, k.chunk)
}

impl MaglevTables {
    /// Every chunk `d` describes.
    fn entries(
        d: &DesiredMaps,
    ) -> impl Iterator<
        Item = (
            weft_common::maps::MaglevKey,
            &weft_common::maps::MaglevChunk,
        ),
    > {
        d.maglev.iter().flat_map(|(&id, t)| {
            t.chunks
                .iter()
                .enumerate()
                .map(move |(c, v)| (maglev_key(id, c), v))
        })
    }
}

impl AnyTable for MaglevTables {
    fn map(&self) -> &'static str {
        MAP_MAGLEV
    }

    fn upsert(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()> {
        for (&id, t) in to
            .maglev
            .iter()
            .filter(|(id, _)| !from.maglev.contains_key(*id))
        {
            for (c, chunk) in t.chunks.iter().enumerate() {
                let k = maglev_key(id, c);
                steps.step(|| format!("write {MAP_MAGLEV} {}", chunk_name(&k)))?;
                Chunks::put(maps.map_mut(MAP_MAGLEV)?, k, *chunk)
                    .map_err(|e| map_err(MAP_MAGLEV, "write", e))?;
            }
        }
        Ok(())
    }

    fn remove(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()> {
        for (&id, t) in from
            .maglev
            .iter()
            .filter(|(id, _)| !to.maglev.contains_key(*id))
        {
            for c in 0..t.chunks.len() {
                let k = maglev_key(id, c);
                steps.step(|| format!("remove {MAP_MAGLEV} {}", chunk_name(&k)))?;
                Chunks::del(maps.map_mut(MAP_MAGLEV)?, k)
                    .map_err(|e| map_err(MAP_MAGLEV, "remove from", e))?;
            }
        }
        Ok(())
    }

    fn sync(&self, map: &mut Map, to: &DesiredMaps, fix: bool) -> Result<MapDiff> {
        let have = Chunks::read(map).map_err(|e| map_err(MAP_MAGLEV, "read", e))?;
        let mut diff = MapDiff::new(MAP_MAGLEV);
        let mut wanted = std::collections::HashSet::new();
        for (k, v) in Self::entries(to) {
            wanted.insert(k);
            match have.get(&k) {
                None => diff.missing.push(chunk_name(&k)),
                Some(h) if h != v => diff.wrong.push(chunk_name(&k)),
                Some(_) => continue,
            }
            if fix {
                Chunks::put(map, k, *v).map_err(|e| map_err(MAP_MAGLEV, "write", e))?;
            }
        }
        for k in have.keys().filter(|k| !wanted.contains(*k)) {
            diff.stale.push(chunk_name(k));
            if fix {
                Chunks::del(map, *k).map_err(|e| map_err(MAP_MAGLEV, "remove from", e))?;
            }
        }
        Ok(diff.sorted())
    }

    fn all_missing(&self, to: &DesiredMaps) -> MapDiff {
        let mut diff = MapDiff::new(MAP_MAGLEV);
        diff.missing = Self::entries(to).map(|(k, _)| chunk_name(&k)).collect();
        diff.sorted()
    }
}

static MAGLEV: MaglevTables = MaglevTables;
static SERVICES: Table<HashShape<weft_common::maps::SvcKey, weft_common::maps::SvcEntry>> = Table {
    map: MAP_SERVICES,
    entries: |d| &d.services,
    name: |k| {
        let proto = if k.proto == IPPROTO_UDP { "udp" } else { "tcp" };
        format!(
            "{}:{}/{proto}",
            ip_of(k.vip_be),
            u16::from_be_bytes(k.port_be)
        )
    },
};
/// `WEFT_MEMBERS`, compared a service at a time: a service whose member
/// set is the same in both renders (shared, or equal) is skipped whole.
struct MemberTables;

type MemberShape = HashShape<weft_common::maps::MemberKey, u32>;

fn member_name(k: &weft_common::maps::MemberKey) -> String {
    format!("service #{} {}", k.svc_id, ip_of(k.ip_be))
}

fn member_key(svc_id: u32, ip_be: u32) -> weft_common::maps::MemberKey {
    weft_common::maps::MemberKey { svc_id, ip_be }
}

impl MemberTables {
    /// Every member entry `d` describes.
    fn entries(d: &DesiredMaps) -> impl Iterator<Item = (weft_common::maps::MemberKey, u32)> + '_ {
        d.svc_members.iter().flat_map(|(&svc, m)| {
            m.iter()
                .map(move |(&ip, &state)| (member_key(svc, ip), state))
        })
    }

    /// Services whose member sets differ between `a` and `b`, with both sets.
    fn changed<'a>(
        a: &'a DesiredMaps,
        b: &'a DesiredMaps,
    ) -> impl Iterator<Item = (u32, &'a Members, Option<&'a Members>)> {
        a.svc_members.iter().filter_map(move |(&svc, set)| {
            let other = b.svc_members.get(&svc);
            match other {
                Some(o) if std::sync::Arc::ptr_eq(set, o) || set == o => None,
                _ => Some((svc, &**set, other.map(|o| &**o))),
            }
        })
    }
}

impl AnyTable for MemberTables {
    fn map(&self) -> &'static str {
        MAP_SVC_MEMBERS
    }

    fn upsert(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()> {
        for (svc, new, old) in Self::changed(to, from) {
            for (&ip, &state) in new {
                if old.and_then(|o| o.get(&ip)) == Some(&state) {
                    continue;
                }
                let k = member_key(svc, ip);
                steps.step(|| format!("write {MAP_SVC_MEMBERS} {}", member_name(&k)))?;
                MemberShape::put(maps.map_mut(MAP_SVC_MEMBERS)?, k, state)
                    .map_err(|e| map_err(MAP_SVC_MEMBERS, "write", e))?;
            }
        }
        Ok(())
    }

    fn remove(
        &self,
        maps: &mut dyn MapSet,
        from: &DesiredMaps,
        to: &DesiredMaps,
        steps: &mut Steps,
    ) -> Result<()> {
        for (svc, old, new) in Self::changed(from, to) {
            for &ip in old.keys() {
                if new.is_some_and(|n| n.contains_key(&ip)) {
                    continue;
                }
                let k = member_key(svc, ip);
                steps.step(|| format!("remove {MAP_SVC_MEMBERS} {}", member_name(&k)))?;
                MemberShape::del(maps.map_mut(MAP_SVC_MEMBERS)?, k)
                    .map_err(|e| map_err(MAP_SVC_MEMBERS, "remove from", e))?;
            }
        }
        Ok(())
    }

    fn sync(&self, map: &mut Map, to: &DesiredMaps, fix: bool) -> Result<MapDiff> {
        let have = MemberShape::read(map).map_err(|e| map_err(MAP_SVC_MEMBERS, "read", e))?;
        let want: HashMap<_, _> = Self::entries(to).collect();
        let mut diff = MapDiff::new(MAP_SVC_MEMBERS);
        for (k, v) in &want {
            match have.get(k) {
                None => diff.missing.push(member_name(k)),
                Some(h) if h != v => diff.wrong.push(member_name(k)),
                Some(_) => continue,
            }
            if fix {
                MemberShape::put(map, *k, *v).map_err(|e| map_err(MAP_SVC_MEMBERS, "write", e))?;
            }
        }
        for k in have.keys().filter(|k| !want.contains_key(*k)) {
            diff.stale.push(member_name(k));
            if fix {
                MemberShape::del(map, *k)
                    .map_err(|e| map_err(MAP_SVC_MEMBERS, "remove from", e))?;
            }
        }
        Ok(diff.sorted())
    }

    fn all_missing(&self, to: &DesiredMaps) -> MapDiff {
        let mut diff = MapDiff::new(MAP_SVC_MEMBERS);
        diff.missing = Self::entries(to).map(|(k, _)| member_name(&k)).collect();
        diff.sorted()
    }
}

static SVC_MEMBERS: MemberTables = MemberTables;
static SVC_SLOTS: Table<ArrayShape<u32>> = Table {
    map: MAP_SVC_SLOTS,
    entries: |d| &d.svc_slots,
    name: slot_name,
};

/// Every map the model describes, in write order: a service's Maglev
/// table and members before the service entry that points at them, and
/// the service before the backend flags that send replies its way.
static TABLES: [&dyn AnyTable; 18] = [
    &NETWORKS,
    &SUBNETS,
    &EP_BY_IP,
    &EP_BY_IF,
    &EP_IP_CACHE,
    &EP_IF_CACHE,
    &FDB,
    &NET_LINKS,
    &FLOOD,
    &NODE,
    &PUBLISH,
    &VNIS,
    &ROUTES,
    &OVERLAY,
    &MAGLEV,
    &SVC_MEMBERS,
    &SERVICES,
    &SVC_SLOTS,
];

/// The names of the maps the model describes.
pub fn described_maps() -> impl Iterator<Item = &'static str> {
    TABLES.iter().map(|t| t.map())
}

/// Writes every entry `to` adds or changes against `from`, in table order,
/// and zeroes the counter slots that change hands.
pub fn write_changes(
    maps: &mut dyn MapSet,
    from: &DesiredMaps,
    to: &DesiredMaps,
    steps: &mut Steps,
) -> Result<()> {
    for (&slot, owner) in &to.stats_owners {
        if from.stats_owners.get(&slot) != Some(owner) {
            steps.step(|| format!("zero {MAP_EP_STATS} slot {slot}"))?;
            zero_endpoint_stats(maps.map_mut(MAP_EP_STATS)?, slot)?;
        }
    }
    for table in TABLES {
        table.upsert(maps, from, to, steps)?;
    }
    Ok(())
}

/// Removes every entry `from` has and `to` lacks, in reverse table order,
/// and zeroes the counter slots given up.
pub fn remove_stale(
    maps: &mut dyn MapSet,
    from: &DesiredMaps,
    to: &DesiredMaps,
    steps: &mut Steps,
) -> Result<()> {
    for table in TABLES.iter().rev() {
        table.remove(maps, from, to, steps)?;
    }
    for &slot in from.stats_owners.keys() {
        if !to.stats_owners.contains_key(&slot) {
            steps.step(|| format!("zero {MAP_EP_STATS} slot {slot}"))?;
            zero_endpoint_stats(maps.map_mut(MAP_EP_STATS)?, slot)?;
        }
    }
    Ok(())
}

/// Compares every described map with `to` (`open` gives a map by name,
/// `None` when it is not pinned); with `fix`, makes each match. Only maps
/// that differ are listed.
pub fn sync_all(
    mut open: impl FnMut(&'static str) -> Result<Option<Map>>,
    to: &DesiredMaps,
    fix: bool,
) -> Result<Vec<MapDiff>> {
    let mut out = Vec::new();
    for table in TABLES {
        let diff = match open(table.map())? {
            Some(mut map) => table.sync(&mut map, to, fix)?,
            None => table.all_missing(to),
        };
        if !diff.is_empty() {
            out.push(diff);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A map set without maps: any write or removal fails.
    struct NoMaps;

    impl MapSet for NoMaps {
        fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
            Err(Error::Invalid(format!("test: no map {name}")))
        }
    }

    fn services(count: usize, backends: u8) -> DesiredMaps {
        use std::{net::Ipv4Addr, sync::Arc};

        use crate::render::maps::{Synthetic, SyntheticService, render};
        let services = (0..count as u32)
            .map(|i| {
                let backends: Vec<Ipv4Addr> = (0..backends)
                    .map(|j| Ipv4Addr::from(0x6450_0000 + i * 16 + u32::from(j)))
                    .collect();
                let members = backends.iter().map(|ip| (ip_be(*ip), 1)).collect();
                SyntheticService {
                    id: 1000 + i,
                    vip: Ipv4Addr::from(0x0a60_0000 + i + 1),
                    port: 80,
                    target: 80,
                    backends,
                    members: Arc::new(members),
                }
            })
            .collect();
        let synthetic = Synthetic {
            services: Arc::new(services),
            ..Synthetic::default()
        };
        render(&crate::model::Model::default(), &synthetic)
    }

    #[test]
    fn unchanged_maglev_tables_are_neither_written_nor_compared_again() {
        let (from, to) = (services(1000, 10), services(1000, 10));
        // The same content is the same table (the cache shares it).
        let (id, t) = from.maglev.iter().next().unwrap();
        assert!(std::sync::Arc::ptr_eq(t, &to.maglev[id]));
        let mut steps = Steps::default();
        write_changes(&mut NoMaps, &from, &to, &mut steps).unwrap();
        remove_stale(&mut NoMaps, &from, &to, &mut steps).unwrap();
        assert_eq!(steps.count(), 0, "identical renders change nothing");
    }

    #[test]
    fn a_changed_table_is_written_whole_and_the_old_one_removed() {
        let (from, to) = (services(2, 10), services(2, 9));
        let new: Vec<_> = MaglevTables::entries(&to)
            .filter(|(k, _)| !from.maglev.contains_key(&k.table))
            .collect();
        // 2 services' new tables of 16381 slots: 16 chunks each.
        assert_eq!(new.len(), 32);
        let mut steps = Steps::default();
        let err = MAGLEV
            .upsert(&mut NoMaps, &from, &to, &mut steps)
            .unwrap_err();
        assert!(err.to_string().contains(MAP_MAGLEV), "{err}");
        assert_eq!(steps.count(), 1, "the first chunk write was tried");
        let mut steps = Steps::default();
        MAGLEV.upsert(&mut NoMaps, &to, &to, &mut steps).unwrap();
        MAGLEV.remove(&mut NoMaps, &to, &to, &mut steps).unwrap();
        assert_eq!(steps.count(), 0);
        assert!(MAGLEV.remove(&mut NoMaps, &from, &to, &mut steps).is_err());
        assert_eq!(MAGLEV.all_missing(&to).missing.len(), 32);
    }

    #[test]
    fn members_are_diffed_a_service_at_a_time() {
        let (from, to) = (services(3, 10), services(3, 9));
        // Each service lost its last backend: three removals, no writes.
        assert_eq!(MemberTables::changed(&from, &to).count(), 3);
        let mut steps = Steps::default();
        SVC_MEMBERS
            .upsert(&mut NoMaps, &from, &to, &mut steps)
            .unwrap();
        assert_eq!(steps.count(), 0, "nothing to write");
        assert!(
            SVC_MEMBERS
                .remove(&mut NoMaps, &from, &to, &mut steps)
                .is_err()
        );
        assert_eq!(steps.count(), 1, "the first removal was tried");
        let same = services(3, 10);
        assert_eq!(MemberTables::changed(&from, &same).count(), 0);
        assert_eq!(SVC_MEMBERS.all_missing(&to).missing.len(), 27);
    }

    #[test]
    fn every_table_names_a_distinct_map() {
        let names: HashSet<&str> = described_maps().collect();
        assert_eq!(names.len(), TABLES.len());
    }
}

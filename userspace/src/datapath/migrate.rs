//! Map layout versioning and migration: what a new weft does with maps an
//! older (or newer) weft pinned.
//!
//! `EbpfLoader` reuses a pinned map by name without looking at it, so a
//! weft whose map layout changed would read and write a map of another
//! shape. Before the loader runs, [`plan`] compares every pinned map's
//! kernel layout (type, key size, value size, max entries, from
//! `BPF_OBJ_GET_INFO_BY_FD` on the pin) and its layout version (recorded
//! in [`MAP_META`]) with the embedded object's definition of it and the
//! version `weft_common::maps::LAYOUT_VERSIONS` gives it. The version
//! catches what sizes cannot: a change of meaning with every size kept
//! (fields swapped, a unit changed, padding given a meaning):
//!
//! - identical layout and version: reused as before;
//! - different, and [`MIGRATIONS`] knows that (map, from version and
//!   layout, to version and layout) change: a new
//!   map is created from the object's definition, every entry is copied
//!   through the migration's conversion, the new map is pinned under a
//!   temporary name and renamed over the old pin (bpffs supports rename, so
//!   the pin never goes missing);
//! - different otherwise (including any change of a per-CPU counter map
//!   that no migration describes, and any version newer than this weft's):
//!   refused with [`Error::Conflict`] naming each map, both layouts and
//!   versions and what to do, before anything is changed.
//!
//! Programs keep the maps they were loaded with, so after a migration (or
//! whenever a pinned program or attached link refers to maps or programs
//! that are no longer the pinned ones) [`refresh_programs`] loads the
//! programs again against the pinned maps, puts the tail-call targets in
//! `WEFT_TAILS`, atomically swaps each pinned TCX link onto the new program
//! (`BPF_LINK_UPDATE`, kernel >= 6.6: traffic keeps flowing, no detach) and
//! renames the new program pins over the old ones.
//!
//! What was pinned is recorded in `WEFT_META`, an array map pinned next to
//! the maps (bpffs holds only BPF objects, and a record there lives and dies
//! with the pins it describes: `weft teardown` or a reboot removes both,
//! where a file in the state directory would outlive them). Each slot is a
//! [`MetaRecord`]: map name, the map ABI version that pinned it, its
//! layout and its layout version. The kernel's view of each pin's layout is
//! what [`plan`] compares (it is the truth for sizes); the record adds what
//! the kernel cannot know: the layout version, and which ABI version pinned
//! a map, so a newer weft's layout is never "migrated" by an older one, and
//! errors can say which version to run. A record speaks for a pin only if
//! it describes the pin's kernel layout.
//!
//! Map ABI v7 introduced layout versions. Its record has the shape (and
//! size) of v6's: the version sits in what was v6's zeroed padding, next to
//! a flag saying it is there ([`META_FLAG_VERSIONED`]). So a `WEFT_META`
//! pinned by v6 is read as it is, its records (and pins with no record)
//! count as [`UNRECORDED_VERSION`], the version every map had when versions
//! began, and the next write adds the versions; nothing needs migrating.
//! `bpftool map dump pinned <bpffs>/maps/WEFT_META` shows the records.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    fmt, fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray, ProgramArray},
    programs::{
        ProgramInfo, SchedClassifier,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use aya_obj::maps::PinningType;
use bytemuck::{Pod, Zeroable};
use weft_common::{
    ABI_VERSION,
    maps::{
        COUNTER_SLOTS, CT_CLOSING_MAX_ENTRIES, CT_MAX_ENTRIES, Counter, CtEntry, CtKey,
        DIR_FROM_CONTAINER, FdbEntry, FdbKey, FloodList, MAP_CT, MAP_CT_CLOSING, MAP_DROPS,
        MAP_FDB, MAP_FLOOD, MAP_FORWARDS, MAP_TAILS, MAX_ENDPOINTS, MAX_NETWORKS, MAX_REASONS,
        PROG_NAT_EGRESS, PROG_OVERLAY_ENCAP, TAIL_NAT_EGRESS, TAIL_OVERLAY_ENCAP, counter_slot,
        layout_version,
    },
};

use crate::{
    datapath::{
        object::{ebpf_object, object_hash},
        paths::Paths,
    },
    error::{Error, Result},
};

/// The layout record pinned next to the maps (not part of the eBPF object:
/// userspace creates it).
pub const MAP_META: &str = "WEFT_META";
/// Slots of [`MAP_META`]: one per pinned map, with room to grow.
pub const META_SLOTS: u32 = 64;

/// Kernel map types weft uses (`enum bpf_map_type`).
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// Suffix of a pin being prepared, renamed over its final name when
/// complete. bpffs refuses names containing `.` (reserved by the kernel).
pub const TEMP_SUFFIX: &str = "-new";

/// Tail-call targets: program name and its `WEFT_TAILS` slot.
pub const TAILS: [(&str, u32); 3] = [
    (PROG_NAT_EGRESS, TAIL_NAT_EGRESS),
    (PROG_OVERLAY_ENCAP, TAIL_OVERLAY_ENCAP),
    (
        weft_common::maps::PROG_SERVICE,
        weft_common::maps::TAIL_SERVICE,
    ),
];

/// What the kernel knows of a map's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.map_type {
            1 => "hash".to_owned(),
            2 => "array".to_owned(),
            3 => "prog_array".to_owned(),
            6 => "percpu_array".to_owned(),
            9 => "lru_hash".to_owned(),
            11 => "lpm_trie".to_owned(),
            27 => "ringbuf".to_owned(),
            n => format!("map type {n}"),
        };
        write!(
            f,
            "{kind}, key {} B, value {} B, {} entries",
            self.key_size, self.value_size, self.max_entries
        )
    }
}

impl Layout {
    fn of(info: &MapInfo) -> Result<Self> {
        let map_type = info
            .map_type()
            .map_err(|e| Error::map("the kernel reports an unknown map type", e))?;
        Ok(Self {
            map_type: map_type as u32,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        })
    }
}

/// One slot of [`MAP_META`]; an all-zero slot is unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MetaRecord {
    /// The map's name, NUL-padded.
    pub name: [u8; 16],
    /// `weft_common::ABI_VERSION` of the weft that pinned (or migrated) it.
    pub abi_version: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// The map's layout version (`weft_common::maps::LAYOUT_VERSIONS`),
    /// valid if `flags` has [`META_FLAG_VERSIONED`]. Map ABI <= v6 had
    /// zeroed padding here.
    pub layout_version: u16,
    /// `META_FLAG_*`.
    pub flags: u16,
}

/// `MetaRecord::flags`: `layout_version` holds the map's layout version
/// (map ABI >= 7). A record without it counts as [`UNRECORDED_VERSION`].
pub const META_FLAG_VERSIONED: u16 = 1;

/// The layout version of a pinned map that has no record of one: pinned
/// before map ABI v7, where versions began (every map at version 1), or
/// by a weft that left no record describing the pin's layout.
pub const UNRECORDED_VERSION: u16 = 1;

// SAFETY: `#[repr(C)]`, no padding (asserted below), every field an integer.
unsafe impl aya::Pod for MetaRecord {}

const _: () = assert!(size_of::<MetaRecord>() == 40);

impl MetaRecord {
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    pub fn layout(&self) -> Layout {
        Layout {
            map_type: self.map_type,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
        }
    }

    /// The recorded layout version, if the record has one (map ABI >= 7).
    pub fn version(&self) -> Option<u16> {
        (self.flags & META_FLAG_VERSIONED != 0).then_some(self.layout_version)
    }

    /// The record of map `name` pinned with `layout` at layout version
    /// `version` by map ABI `abi_version`.
    pub fn map(name: &str, layout: Layout, version: u16, abi_version: u32) -> Self {
        let mut rec = Self {
            abi_version,
            map_type: layout.map_type,
            key_size: layout.key_size,
            value_size: layout.value_size,
            max_entries: layout.max_entries,
            layout_version: version,
            flags: META_FLAG_VERSIONED,
            ..Self::default()
        };
        let bytes = name.as_bytes();
        let n = bytes.len().min(15);
        rec.name[..n].copy_from_slice(&bytes[..n]);
        rec
    }

    /// The record of pinned program `program` (kernel id `id`), loaded from
    /// the object whose [`object_hash`] is `hash`. Its name is
    /// [`PROGRAM_RECORD_MARK`] and the program's first 15 bytes, map type 0
    /// (no map has it); `key_size` holds the id and `value_size` /
    /// `max_entries` the hash's low / high half.
    pub fn program(program: &str, id: u32, hash: u64) -> Self {
        let mut rec = Self {
            abi_version: ABI_VERSION,
            key_size: id,
            value_size: hash as u32,
            max_entries: (hash >> 32) as u32,
            ..Self::default()
        };
        rec.name[0] = PROGRAM_RECORD_MARK;
        let bytes = program.as_bytes();
        let n = bytes.len().min(15);
        rec.name[1..=n].copy_from_slice(&bytes[..n]);
        rec
    }

    /// (program id, object hash) if this is a program's record.
    pub fn program_object(&self) -> Option<(u32, u64)> {
        (self.name[0] == PROGRAM_RECORD_MARK && self.map_type == 0).then(|| {
            (
                self.key_size,
                u64::from(self.value_size) | u64::from(self.max_entries) << 32,
            )
        })
    }
}

/// First name byte of a program's record in [`MAP_META`] (map names never
/// start with it).
pub const PROGRAM_RECORD_MARK: u8 = b'@';

/// Records that pinned program `program` was loaded from this weft's
/// object (after pinning it, or reloading it).
pub fn record_program(paths: &Paths, program: &str) -> Result<()> {
    let info = ProgramInfo::from_pin(paths.prog_pin(program))
        .map_err(|e| Error::program(format!("cannot read the pinned program {program}"), e))?;
    let rec = MetaRecord::program(program, info.id(), object_hash());
    let mut records = read_meta(paths)?;
    records.retain(|r| r.name != rec.name);
    records.push(rec);
    write_meta(paths, &records)
}

/// Drops the record of program `program` (it was unpinned).
pub fn forget_program(paths: &Paths, program: &str) -> Result<()> {
    let key = MetaRecord::program(program, 0, 0).name;
    let mut records = read_meta(paths)?;
    let before = records.len();
    records.retain(|r| r.name != key);
    if records.len() == before {
        return Ok(());
    }
    write_meta(paths, &records)
}

/// Why the pinned programs are not this weft's build, if they are not:
/// a pinned program with no record, a record of another program id (a
/// weft that records nothing pinned it), or another object's hash.
fn foreign_programs(paths: &Paths, programs: &[(String, u32)]) -> Result<Option<String>> {
    let records = read_meta(paths)?;
    for (name, id) in programs {
        let key = MetaRecord::program(name, *id, 0).name;
        let Some((recorded_id, hash)) = records
            .iter()
            .find(|r| r.name == key)
            .and_then(MetaRecord::program_object)
        else {
            return Ok(Some(format!(
                "program {name} #{id} has no record of the object it was loaded from"
            )));
        };
        if recorded_id != *id {
            return Ok(Some(format!(
                "program {name} #{id} was pinned by a weft that did not record its object"
            )));
        }
        if hash != object_hash() {
            return Ok(Some(format!(
                "program {name} #{id} was loaded from another eBPF object ({hash:016x}; this \
                 weft carries {:016x})",
                object_hash()
            )));
        }
    }
    Ok(None)
}

/// A known change of one map's layout (sizes, version or both) and how
/// entries cross it.
pub struct Migration {
    pub map: &'static str,
    pub from_version: u16,
    pub from: Layout,
    pub to_version: u16,
    pub to: Layout,
    /// What changes, for the report.
    pub what: &'static str,
    /// Copies every entry of `old` into `new` (converted); returns how many.
    copy: fn(&Map, &mut Map) -> Result<usize, MapError>,
}

/// Members of a flood list in the smaller, earlier layout of [`MAP_FLOOD`]
/// weft migrates from: 16, where the current one has `MAX_FLOOD` = 32. The
/// worked example of a value that grew by appending fields.
pub const FLOOD_16_MEMBERS: usize = 16;

/// [`FloodList`] with [`FLOOD_16_MEMBERS`] members.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FloodList16 {
    pub count: u32,
    pub members: [FdbEntry; FLOOD_16_MEMBERS],
}

// SAFETY: `#[repr(C)]`, `Pod`: any byte pattern is a valid value.
unsafe impl aya::Pod for FloodList16 {}

/// The 16-member layout of [`MAP_FLOOD`].
pub const FLOOD_16_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_HASH,
    key_size: 4,
    value_size: size_of::<FloodList16>() as u32,
    max_entries: MAX_NETWORKS,
};

/// The current layout of [`MAP_FLOOD`].
pub const FLOOD_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_HASH,
    key_size: 4,
    value_size: size_of::<FloodList>() as u32,
    max_entries: MAX_NETWORKS,
};

pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// The drop and forward counter arrays before they had directions (map
/// ABI <= 3): one counter per reason.
pub const UNDIRECTED_COUNTERS_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
    key_size: 4,
    value_size: size_of::<Counter>() as u32,
    max_entries: MAX_REASONS,
};

/// The drop and forward counter arrays now: one block per direction.
pub const COUNTERS_LAYOUT: Layout = Layout {
    max_entries: COUNTER_SLOTS,
    ..UNDIRECTED_COUNTERS_LAYOUT
};

const COUNTERS_SPLIT: &str = "counters split by direction (existing counts, which cannot be \
                              split, are kept as direction from_container)";

/// [`CtEntry`] as map ABI v3 and v4 had it: no flags, hairpin port or creation
/// time (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntryV3 {
    pub last_seen_ns: u64,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
    pub xlate_ip_be: u32,
    pub ifindex: u32,
    pub stats_slot: u32,
    pub xlate_port_be: [u8; 2],
    pub tcp_state: u8,
    pub direction: u8,
    pub fin_seen: u8,
    pub next_hop_be: [u8; 4],
    pub _pad: [u8; 3],
}

// SAFETY: `#[repr(C)]`, `Pod`: any byte pattern is a valid value.
unsafe impl aya::Pod for CtEntryV3 {}

const _: () = assert!(size_of::<CtEntryV3>() == 64);

/// The v3/v4 layout of [`MAP_CT`].
pub const CT_V3_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_LRU_HASH,
    key_size: size_of::<CtKey>() as u32,
    value_size: size_of::<CtEntryV3>() as u32,
    max_entries: CT_MAX_ENTRIES,
};

/// The current layout of [`MAP_CT`].
pub const CT_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_LRU_HASH,
    key_size: size_of::<CtKey>() as u32,
    value_size: size_of::<CtEntry>() as u32,
    max_entries: CT_MAX_ENTRIES,
};

/// The layout of [`MAP_CT_CLOSING`] (both versions).
pub const CT_CLOSING_LAYOUT: Layout = Layout {
    max_entries: CT_CLOSING_MAX_ENTRIES,
    ..CT_LAYOUT
};

/// Layout version 2 of the conntrack tables: a published port's entries
/// carry the client's port on the other side in `peer_port_be`, which
/// version 1 left zero (and version 2 reads zero as "the same port"), so
/// version 1 entries are version 2 entries as they are.
const CT_V2: u16 = 2;

const CT_PEER_PORT: &str = "published ports' entries may carry the client's port on the other \
                            side (version 1 entries carry none and are copied as they are)";

/// [`FdbEntry`] at the synthetic layout version 0 of [`MAP_FDB`]: the same
/// two `u32`s in the other order, so the same 8 bytes, and only the
/// recorded version tells them apart. No weft ever pinned it (versions
/// began at 1, see [`UNRECORDED_VERSION`]): like [`FloodList16`], it is
/// the worked example, and the test case, of a same-size change whose
/// entries are converted field by field. A real migration looks the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FdbEntryV0 {
    pub stats_slot: u32,
    pub ifindex: u32,
}

// SAFETY: `#[repr(C)]`, `Pod`: any byte pattern is a valid value.
unsafe impl aya::Pod for FdbEntryV0 {}

const _: () = assert!(size_of::<FdbEntryV0>() == size_of::<FdbEntry>());

/// The synthetic layout version of [`MAP_FDB`] before the current one.
pub const FDB_V0: u16 = 0;

/// The layout of [`MAP_FDB`] (both versions).
pub const FDB_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_HASH,
    key_size: size_of::<FdbKey>() as u32,
    value_size: size_of::<FdbEntry>() as u32,
    max_entries: MAX_ENDPOINTS,
};

/// Layout version 1 of the maps of [`MIGRATIONS`]: the layout changes
/// below that predate versions are told apart by their sizes alone.
const V1: u16 = 1;

/// Every layout change weft can carry entries across. A migration leads to
/// the map's current version and layout; a map two changes behind is
/// refused unless one migration covers both.
pub static MIGRATIONS: [Migration; 7] = [
    Migration {
        map: MAP_FLOOD,
        from_version: V1,
        from: FLOOD_16_LAYOUT,
        to_version: V1,
        to: FLOOD_LAYOUT,
        what: "flood lists grow from 16 to 32 members (new members zeroed)",
        copy: flood_16_to_32,
    },
    Migration {
        map: MAP_DROPS,
        from_version: V1,
        from: UNDIRECTED_COUNTERS_LAYOUT,
        to_version: V1,
        to: COUNTERS_LAYOUT,
        what: COUNTERS_SPLIT,
        copy: counters_to_directed,
    },
    Migration {
        map: MAP_FORWARDS,
        from_version: V1,
        from: UNDIRECTED_COUNTERS_LAYOUT,
        to_version: V1,
        to: COUNTERS_LAYOUT,
        what: COUNTERS_SPLIT,
        copy: counters_to_directed,
    },
    Migration {
        map: MAP_CT,
        from_version: V1,
        from: CT_V3_LAYOUT,
        to_version: CT_V2,
        to: CT_LAYOUT,
        what: "conntrack entries gain a creation time (taken as their last-seen time), \
               NAT flags and a hairpin port (zero)",
        copy: ct_add_creation_time,
    },
    Migration {
        map: MAP_CT,
        from_version: V1,
        from: CT_LAYOUT,
        to_version: CT_V2,
        to: CT_LAYOUT,
        what: CT_PEER_PORT,
        copy: ct_entries_as_they_are,
    },
    Migration {
        map: MAP_CT_CLOSING,
        from_version: V1,
        from: CT_CLOSING_LAYOUT,
        to_version: CT_V2,
        to: CT_CLOSING_LAYOUT,
        what: CT_PEER_PORT,
        copy: ct_entries_as_they_are,
    },
    Migration {
        map: MAP_FDB,
        from_version: FDB_V0,
        from: FDB_LAYOUT,
        to_version: V1,
        to: FDB_LAYOUT,
        what: "forwarding entries put the ifindex before the counter slot (same size; \
               converted field by field)",
        copy: fdb_v0_to_v1,
    },
];

// The registry leads to the versions the maps have now.
const _: () = {
    let mut i = 0;
    while i < MIGRATIONS.len() {
        match layout_version(MIGRATIONS[i].map) {
            Some(v) => assert!(v == MIGRATIONS[i].to_version),
            None => panic!("a migration names a map weft does not pin"),
        }
        i += 1;
    }
};

/// Every forwarding entry of version 0, its two fields put in version 1's
/// order.
fn fdb_v0_to_v1(old: &Map, new: &mut Map) -> Result<usize, MapError> {
    convert_entries::<FdbKey, _, _>(old, new, |v0: FdbEntryV0| FdbEntry {
        ifindex: v0.ifindex,
        stats_slot: v0.stats_slot,
    })
}

/// Copies every entry of the hash map `old` into `new` under the same key,
/// its value through `convert`; returns how many. An entry gone between
/// the key walk and the lookup (evicted, collected) is skipped.
fn convert_entries<K: aya::Pod + Eq, V0: aya::Pod, V1: aya::Pod>(
    old: &Map,
    new: &mut Map,
    convert: impl Fn(V0) -> V1,
) -> Result<usize, MapError> {
    let old: HashMap<&MapData, K, V0> = HashMap::try_from(old)?;
    let mut new: HashMap<&mut MapData, K, V1> = HashMap::try_from(new)?;
    let mut n = 0;
    for entry in old.iter() {
        let (key, value) = match entry {
            Ok(pair) => pair,
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e),
        };
        new.insert(key, convert(value), 0)?;
        n += 1;
    }
    Ok(n)
}

/// Each per-CPU counter of the undirected array becomes the same reason's
/// `from_container` counter. Under map ABI v3 `weft_from_uplink` counted
/// into the same slots, and a sum cannot be split again, so its share
/// stays there too; from the migration on, each direction counts apart.
fn counters_to_directed(old: &Map, new: &mut Map) -> Result<usize, MapError> {
    let old: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(old)?;
    let mut new: PerCpuArray<&mut MapData, Counter> = PerCpuArray::try_from(new)?;
    for code in 0..old.len() {
        let values = old.get(&code, 0)?;
        new.set(counter_slot(DIR_FROM_CONTAINER, code), values, 0)?;
    }
    Ok(old.len() as usize)
}

/// Live connections keep their translation across the change; their age
/// starts at their last packet, the oldest time the old layout knew.
fn ct_add_creation_time(old: &Map, new: &mut Map) -> Result<usize, MapError> {
    convert_entries::<CtKey, _, _>(old, new, |v3: CtEntryV3| CtEntry {
        last_seen_ns: v3.last_seen_ns,
        packets_orig: v3.packets_orig,
        bytes_orig: v3.bytes_orig,
        packets_reply: v3.packets_reply,
        bytes_reply: v3.bytes_reply,
        xlate_ip_be: v3.xlate_ip_be,
        ifindex: v3.ifindex,
        stats_slot: v3.stats_slot,
        xlate_port_be: v3.xlate_port_be,
        tcp_state: v3.tcp_state,
        direction: v3.direction,
        fin_seen: v3.fin_seen,
        next_hop_be: v3.next_hop_be,
        created_ns: v3.last_seen_ns,
        ..CtEntry::default()
    })
}

/// Conntrack entries of layout version 1, valid version 2 entries.
fn ct_entries_as_they_are(old: &Map, new: &mut Map) -> Result<usize, MapError> {
    convert_entries::<CtKey, _, _>(old, new, |entry: CtEntry| entry)
}

fn flood_16_to_32(old: &Map, new: &mut Map) -> Result<usize, MapError> {
    convert_entries::<u32, _, _>(old, new, |v16: FloodList16| {
        let mut list = FloodList::zeroed();
        list.count = v16.count.min(FLOOD_16_MEMBERS as u32);
        list.members[..FLOOD_16_MEMBERS].copy_from_slice(&v16.members);
        list
    })
}

/// A map whose layout changed and what will be done about it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Migrated {
    pub map: String,
    pub from_version: u16,
    pub from: Layout,
    pub to_version: u16,
    pub to: Layout,
    pub what: String,
    /// Entries copied.
    pub entries: usize,
}

/// What [`Datapath::open`](crate::datapath::Datapath::open) migrated and
/// reloaded.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub migrated: Vec<Migrated>,
    /// Programs loaded again against the pinned maps.
    pub reloaded_programs: Vec<String>,
    /// Link pins (interface names) moved onto the reloaded programs.
    pub relinked: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.migrated.is_empty() && self.reloaded_programs.is_empty()
    }
}

/// The plan for the pins: the migrations to run, all known (a layout with
/// no migration is an error from [`plan`]).
#[derive(Default)]
pub struct Plan {
    steps: Vec<&'static Migration>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

struct ObjectMap {
    layout: Layout,
    def: aya_obj::Map,
}

/// The embedded object's pinned maps, with the layout the loader creates
/// them with (ring buffers: value size 0, as aya sets it).
fn object_maps() -> Result<&'static BTreeMap<String, ObjectMap>> {
    static MAPS: OnceLock<std::result::Result<BTreeMap<String, ObjectMap>, String>> =
        OnceLock::new();
    MAPS.get_or_init(|| {
        let obj = aya_obj::Object::parse(ebpf_object()).map_err(|e| e.to_string())?;
        Ok(obj
            .maps
            .into_iter()
            .filter(|(_, m)| m.pinning() == PinningType::ByName)
            .map(|(name, def)| {
                let map_type = def.map_type();
                let value_size = if map_type == 27 { 0 } else { def.value_size() };
                let layout = Layout {
                    map_type,
                    key_size: def.key_size(),
                    value_size,
                    max_entries: def.max_entries(),
                };
                (name, ObjectMap { layout, def })
            })
            .collect())
    })
    .as_ref()
    .map_err(|e| {
        Error::Invalid(format!(
            "the embedded eBPF object does not parse ({e}); this weft build is broken, rebuild it"
        ))
    })
}

/// The layout the embedded object gives map `name`.
pub fn object_layout(name: &str) -> Result<Option<Layout>> {
    Ok(object_maps()?.get(name).map(|m| m.layout))
}

/// The kernel layout and id of the map pinned at `pin`, if one is.
pub fn pinned_layout(pin: &Path) -> Result<Option<(Layout, u32)>> {
    match MapInfo::from_pin(pin) {
        Ok(info) => Ok(Some((Layout::of(&info)?, info.id()))),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::map(
            format!("cannot read the pinned map {}", pin.display()),
            e,
        )),
    }
}

/// A pinned map [`plan`] cannot use.
struct Refused {
    map: String,
    have: Layout,
    have_version: u16,
    want: Layout,
    want_version: u16,
    /// The map ABI version that recorded the pin, if a record describes it.
    pinned_by: Option<u32>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.pinned_by {
            Some(v) => format!("by map ABI v{v}"),
            None => "by a weft that left no matching layout record, so taken as version \
                     1"
            .to_owned(),
        };
        write!(
            f,
            "{}: pinned {}, layout version {} ({by}); this weft needs {}, layout version {}",
            self.map, self.have, self.have_version, self.want, self.want_version
        )?;
        if self.newer() {
            write!(f, "; pinned by a newer weft")
        } else if self.have == self.want {
            write!(
                f,
                "; the sizes match but the entries mean something else, and this weft knows \
                 no migration from layout version {}",
                self.have_version
            )
        } else {
            Ok(())
        }
    }
}

impl Refused {
    fn newer(&self) -> bool {
        self.have_version > self.want_version || self.pinned_by.is_some_and(|v| v > ABI_VERSION)
    }
}

/// The layout version `weft_common` gives map `name` of the object.
fn object_version(name: &str) -> Result<u16> {
    layout_version(name).ok_or_else(|| {
        Error::Invalid(format!(
            "the embedded eBPF object pins map {name}, which has no layout version in \
             weft_common::maps::LAYOUT_VERSIONS; this weft build is broken, rebuild it"
        ))
    })
}

/// Compares every pinned map (kernel layout, recorded layout version) with
/// the embedded object's (layout, version in `LAYOUT_VERSIONS`). Changes
/// nothing; fails naming every map whose layout or version changed with no
/// known migration, or is newer than this weft's.
pub fn plan(paths: &Paths) -> Result<Plan> {
    let recorded = read_meta(paths)?;
    let mut plan = Plan::default();
    let mut refused = Vec::new();
    for (name, want) in object_maps()? {
        let pin = paths.maps_dir().join(name);
        let Some((have, _)) = pinned_layout(&pin)? else {
            continue;
        };
        let want_version = object_version(name)?;
        // The record speaks for the pin only if it describes this layout.
        let record = recorded
            .iter()
            .find(|r| &r.name() == name && r.layout() == have);
        let have_version = record
            .and_then(MetaRecord::version)
            .unwrap_or(UNRECORDED_VERSION);
        if have == want.layout && have_version == want_version {
            continue;
        }
        let refusal = Refused {
            map: name.clone(),
            have,
            have_version,
            want: want.layout,
            want_version,
            pinned_by: record.map(|r| r.abi_version),
        };
        match MIGRATIONS.iter().find(|m| {
            m.map == name
                && (m.from_version, m.from) == (have_version, have)
                && (m.to_version, m.to) == (want_version, want.layout)
        }) {
            Some(m) if !refusal.newer() => plan.steps.push(m),
            _ => refused.push(refusal),
        }
    }
    if refused.is_empty() {
        return Ok(plan);
    }
    let mut msg = format!(
        "the maps pinned in {} have a layout this weft (map ABI v{ABI_VERSION}) cannot use \
         and knows no migration for:",
        paths.maps_dir().display()
    );
    let mut versions = Vec::new();
    for r in &refused {
        versions.extend(r.pinned_by.filter(|&v| v != ABI_VERSION));
        msg.push_str(&format!("\n  {r}"));
    }
    versions.sort_unstable();
    versions.dedup();
    let which = match versions.as_slice() {
        [v] => format!("the weft release with map ABI v{v}"),
        _ => "the weft release that pinned them".to_owned(),
    };
    msg.push_str(&format!(
        "\nNothing was changed. Run {which} instead, or run `weft teardown` (it removes every \
         network and endpoint of this node, and their state) and set the node up again."
    ));
    Err(Error::Conflict(msg))
}

/// Runs `plan`: every migrated map is built and filled under a temporary
/// pin first, then all are renamed over the old pins. A failure before the
/// renames removes the temporary pins and leaves the old maps as they were.
pub fn migrate_maps(paths: &Paths, plan: &Plan) -> Result<Vec<Migrated>> {
    let objects = object_maps()?;
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut done = Vec::new();
    let result = (|| -> Result<()> {
        for step in &plan.steps {
            let pin = paths.maps_dir().join(step.map);
            let temp = paths.maps_dir().join(format!("{}{TEMP_SUFFIX}", step.map));
            remove_pin(&temp)?;
            let old = MapData::from_pin(&pin)
                .and_then(Map::from_map_data)
                .map_err(|e| {
                    Error::map(format!("cannot open the pinned map {}", pin.display()), e)
                })?;
            let def = objects
                .get(step.map)
                .ok_or_else(|| Error::Invalid(format!("the object has no map {}", step.map)))?;
            let mut new = MapData::create(def.def.clone(), step.map, None)
                .and_then(Map::from_map_data)
                .map_err(|e| Error::map(format!("cannot create the new {}", step.map), e))?;
            let entries = (step.copy)(&old, &mut new).map_err(|e| {
                Error::map(
                    format!(
                        "cannot copy the entries of {} into its new layout",
                        step.map
                    ),
                    e,
                )
            })?;
            new.pin(&temp)
                .map_err(|e| Error::pin(format!("cannot pin {}", temp.display()), e))?;
            staged.push((temp, pin));
            done.push(Migrated {
                map: step.map.to_owned(),
                from_version: step.from_version,
                from: step.from,
                to_version: step.to_version,
                to: step.to,
                what: step.what.to_owned(),
                entries,
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (temp, _) in &staged {
            let _ = fs::remove_file(temp);
        }
        return Err(e);
    }
    for (temp, pin) in &staged {
        fs::rename(temp, pin).map_err(|e| {
            Error::io(
                format!("cannot rename {} over {}", temp.display(), pin.display()),
                e,
            )
        })?;
    }
    for m in &done {
        log::warn!(
            "migrated map {}: layout version {} ({}) -> {} ({}) ({}; {} entries copied)",
            m.map,
            m.from_version,
            m.from,
            m.to_version,
            m.to,
            m.what,
            m.entries
        );
    }
    Ok(done)
}

/// Names of pinned files in `dir` (temporary pins skipped).
fn pins_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(TEMP_SUFFIX))
        .collect();
    names.sort();
    names
}

/// Pinned program name -> kernel id.
fn pinned_programs(paths: &Paths) -> Vec<(String, u32)> {
    pins_in(&paths.progs_dir())
        .into_iter()
        .filter_map(|name| {
            let info = ProgramInfo::from_pin(paths.prog_pin(&name)).ok()?;
            Some((name, info.id()))
        })
        .collect()
}

/// Why the pinned programs must be loaded again, if they must: they were
/// loaded from another eBPF object than this weft's (another build, even
/// with the same map layouts), a pinned program uses a map that is no
/// longer the pinned one of that name, or a pinned link runs a program
/// that is no longer pinned (a migration, or a refresh interrupted half
/// way).
pub fn stale_programs(paths: &Paths) -> Result<Option<String>> {
    let mut pinned_maps = StdHashMap::new();
    for name in object_maps()?.keys() {
        if let Some((_, id)) = pinned_layout(&paths.maps_dir().join(name))? {
            pinned_maps.insert(name.clone(), id);
        }
    }
    let programs = pinned_programs(paths);
    if let Some(why) = foreign_programs(paths, &programs)? {
        return Ok(Some(why));
    }
    for (prog, _) in &programs {
        let Ok(Some(ids)) =
            ProgramInfo::from_pin(paths.prog_pin(prog)).and_then(|info| info.map_ids())
        else {
            continue;
        };
        for id in ids {
            let Ok(info) = MapInfo::from_id(id) else {
                continue;
            };
            let Some(name) = info.name_as_str() else {
                continue;
            };
            if let Some(&pinned) = pinned_maps.get(name)
                && pinned != id
            {
                return Ok(Some(format!(
                    "program {prog} uses map {name} #{id}, but #{pinned} is pinned"
                )));
            }
        }
    }
    for link in pins_in(&paths.links_dir()) {
        let Ok(pinned) = PinnedLink::from_pin(paths.link_pin(&link)) else {
            continue;
        };
        let Ok(info) = FdLink::from(pinned).info() else {
            continue;
        };
        if !programs.iter().any(|(_, id)| *id == info.program_id()) {
            return Ok(Some(format!(
                "link {link} runs program #{}, which is not pinned",
                info.program_id()
            )));
        }
    }
    Ok(None)
}

/// Loads every pinned program again from `ebpf` (whose maps are the pinned
/// ones), installs the tail-call targets, swaps every pinned link onto its
/// program's new copy (`BPF_LINK_UPDATE`: atomic, the interface is never
/// without a program) and renames the new program pins over the old ones,
/// last, so an interruption is found again by [`stale_programs`].
pub fn refresh_programs(ebpf: &mut Ebpf, paths: &Paths, report: &mut Report) -> Result<()> {
    let old = pinned_programs(paths);
    // Links whose program is not pinned any more: match by kernel name
    // (truncated to 15 bytes), e.g. after an interrupted refresh.
    let kernel_name = |name: &str| name.chars().take(15).collect::<String>();
    let names: Vec<String> = old.iter().map(|(n, _)| n.clone()).collect();
    for name in &names {
        let prog = classifier(ebpf, name)?;
        prog.load()
            .map_err(|e| Error::program(format!("the kernel rejected {name}"), e))?;
    }
    for (prog_name, slot) in TAILS {
        if !names.iter().any(|n| n == prog_name) {
            continue;
        }
        let fd = classifier(ebpf, prog_name)?
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|e| Error::program(format!("cannot use {prog_name}'s fd"), e))?;
        let map = ebpf
            .map_mut(MAP_TAILS)
            .ok_or_else(|| Error::Invalid(format!("the object has no map {MAP_TAILS}")))?;
        ProgramArray::try_from(map)
            .and_then(|mut tails| tails.set(slot, &fd, 0))
            .map_err(|e| Error::map(format!("cannot install {prog_name} in {MAP_TAILS}"), e))?;
    }
    for link in pins_in(&paths.links_dir()) {
        let pin = paths.link_pin(&link);
        let fd_link = FdLink::from(
            PinnedLink::from_pin(&pin)
                .map_err(|e| Error::link(format!("cannot open link {}", pin.display()), e))?,
        );
        let prog_id = fd_link
            .info()
            .map_err(|e| Error::link(format!("cannot read link {}", pin.display()), e))?
            .program_id();
        let name = match old.iter().find(|(_, id)| *id == prog_id) {
            Some((name, _)) => name.clone(),
            None => {
                let kernel = aya::programs::loaded_programs()
                    .filter_map(|p| p.ok())
                    .find(|p| p.id() == prog_id)
                    .and_then(|p| p.name_as_str().map(str::to_owned));
                match kernel.and_then(|k| names.iter().find(|n| kernel_name(n) == k).cloned()) {
                    Some(name) => name,
                    None => {
                        log::warn!(
                            "link {link} runs program #{prog_id}, which weft did not pin; left as is"
                        );
                        continue;
                    }
                }
            }
        };
        let tc_link = SchedClassifierLink::try_from(fd_link)
            .map_err(|e| Error::link(format!("link {} is not a TCX link", pin.display()), e))?;
        let prog = classifier(ebpf, &name)?;
        let id = prog.attach_to_link(tc_link).map_err(|e| {
            Error::program(format!("cannot move link {link} onto the new {name}"), e)
        })?;
        // The pin keeps the link; dropping our handle only closes an fd.
        let _handle = prog.take_link(id);
        report.relinked.push(link);
    }
    for name in &names {
        let pin = paths.prog_pin(name);
        let temp = paths.progs_dir().join(format!("{name}{TEMP_SUFFIX}"));
        remove_pin(&temp)?;
        classifier(ebpf, name)?
            .pin(&temp)
            .map_err(|e| Error::pin(format!("cannot pin {name} at {}", temp.display()), e))?;
        fs::rename(&temp, &pin).map_err(|e| {
            Error::io(
                format!("cannot rename {} over {}", temp.display(), pin.display()),
                e,
            )
        })?;
        record_program(paths, name)?;
        report.reloaded_programs.push(name.clone());
    }
    log::warn!(
        "reloaded programs {:?} against the pinned maps; links moved: {:?}",
        report.reloaded_programs,
        report.relinked
    );
    Ok(())
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "program {name} is pinned but this weft's eBPF object has no such program; \
                 run `weft teardown` or the weft version that pinned it"
            ))
        })?
        .try_into()
        .map_err(|e| Error::program(format!("{name} is not a TC program"), e))
}

/// A map of `layout` named `name`, not pinned (for [`MAP_META`], and for
/// tests that recreate an old layout).
pub fn create_map(name: &str, layout: Layout, flags: u32) -> Result<MapData> {
    let def = aya_obj::Map::new_from_params(
        layout.map_type,
        layout.key_size,
        layout.value_size,
        layout.max_entries,
        flags,
    );
    MapData::create(def, name, None).map_err(|e| Error::map(format!("cannot create {name}"), e))
}

/// Pins `map` at `pin`, replacing what is pinned there in one rename.
pub fn replace_pin(map: &MapData, pin: &Path) -> Result<()> {
    let file = pin.file_name().and_then(|n| n.to_str()).unwrap_or("map");
    let temp = pin.with_file_name(format!("{file}{TEMP_SUFFIX}"));
    remove_pin(&temp)?;
    map.pin(&temp)
        .map_err(|e| Error::pin(format!("cannot pin {}", temp.display()), e))?;
    fs::rename(&temp, pin).map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::io(
            format!("cannot rename {} over {}", temp.display(), pin.display()),
            e,
        )
    })
}

fn remove_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}

const META_LAYOUT: Layout = Layout {
    map_type: BPF_MAP_TYPE_ARRAY,
    key_size: 4,
    value_size: size_of::<MetaRecord>() as u32,
    max_entries: META_SLOTS,
};

/// The records of [`MAP_META`] (empty if none is pinned, or it has another
/// layout).
pub fn read_meta(paths: &Paths) -> Result<Vec<MetaRecord>> {
    let pin = paths.maps_dir().join(MAP_META);
    match pinned_layout(&pin)? {
        Some((layout, _)) if layout == META_LAYOUT => {}
        _ => return Ok(Vec::new()),
    }
    let data = MapData::from_pin(&pin)
        .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
    let map = Map::from_map_data(data)
        .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
    let meta: Array<MapData, MetaRecord> = Array::try_from(map)
        .map_err(|e| Error::map(format!("{MAP_META} has an unexpected type"), e))?;
    Ok(meta
        .iter()
        .filter_map(|r| r.ok())
        .filter(|r| r.name[0] != 0)
        .collect())
}

/// Records the layout and layout version of every pinned map of the
/// object in [`MAP_META`] (creating it), keeping the ABI version a map was
/// recorded with while its layout and version are unchanged, and stamping
/// this weft's on new or migrated maps. Runs after [`plan`] and
/// [`migrate_maps`], so every pinned map has the object's version (a map
/// the loader has just created is empty: if this weft dies before its
/// record is written, the next one takes it as [`UNRECORDED_VERSION`]
/// with nothing in it to misread).
pub fn record(paths: &Paths) -> Result<()> {
    let old = read_meta(paths)?;
    let mut records = Vec::new();
    for name in object_maps()?.keys() {
        let Some((layout, _)) = pinned_layout(&paths.maps_dir().join(name))? else {
            continue;
        };
        let version = object_version(name)?;
        let abi_version = old
            .iter()
            .find(|r| {
                &r.name() == name
                    && r.layout() == layout
                    && r.version().unwrap_or(UNRECORDED_VERSION) == version
            })
            .map_or(ABI_VERSION, |r| r.abi_version);
        records.push(MetaRecord::map(name, layout, version, abi_version));
    }
    records.extend(old.iter().filter(|r| r.program_object().is_some()));
    if records == old {
        return Ok(());
    }
    write_meta(paths, &records)
}

/// Replaces the records of [`MAP_META`] (creating it) with `records`.
pub fn write_meta(paths: &Paths, records: &[MetaRecord]) -> Result<()> {
    let pin = paths.maps_dir().join(MAP_META);
    let data = match pinned_layout(&pin)? {
        Some((layout, _)) if layout == META_LAYOUT => MapData::from_pin(&pin)
            .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?,
        _ => {
            let map = create_map(MAP_META, META_LAYOUT, 0)?;
            replace_pin(&map, &pin)?;
            map
        }
    };
    let map = Map::from_map_data(data)
        .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
    let mut meta: Array<MapData, MetaRecord> = Array::try_from(map)
        .map_err(|e| Error::map(format!("{MAP_META} has an unexpected type"), e))?;
    let slots = usize::try_from(META_SLOTS).unwrap_or(usize::MAX);
    for i in 0..slots.max(records.len()).min(slots) {
        let rec = records.get(i).copied().unwrap_or_default();
        meta.set(i as u32, rec, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_META}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_map_of_the_object_has_a_layout_version() {
        for name in object_maps().expect("the object parses").keys() {
            assert!(
                layout_version(name).is_some(),
                "{name} has no entry in LAYOUT_VERSIONS"
            );
        }
    }

    /// A map ABI v6 record (zeroed padding where v7 keeps the version) has
    /// no version; a v7 record has its own, even version 0.
    #[test]
    fn records_without_the_flag_have_no_version() {
        let v7 = MetaRecord::map(MAP_FDB, FDB_LAYOUT, FDB_V0, ABI_VERSION);
        assert_eq!(v7.version(), Some(FDB_V0));
        assert_eq!(v7.name(), MAP_FDB);
        let v6 = MetaRecord {
            layout_version: 0,
            flags: 0,
            abi_version: 6,
            ..v7
        };
        assert_eq!(v6.version(), None);
        assert_eq!(v6.layout(), FDB_LAYOUT);
    }
}

//! Map layout versioning end to end: a node whose pinned maps have an older
//! layout (other sizes, or the same sizes at an older layout version) is
//! migrated with every entry intact and keeps forwarding (by the agent and
//! by the CLI), and a layout or version weft has no migration for is
//! refused with a clear message, every pinned map left exactly as it was.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{
    maps::{HashMap, IterableMap, MapData, MapInfo},
    programs::{
        ProgramInfo,
        links::{FdLink, PinnedLink},
    },
};
use weft::datapath::migrate::{
    self, BPF_MAP_TYPE_HASH, FDB_LAYOUT, FDB_V0, FLOOD_16_LAYOUT, FLOOD_16_MEMBERS, FLOOD_LAYOUT,
    FdbEntryV0, FloodList16, Layout,
};
use weft_common::maps::{
    CtEntry, CtKey, FdbEntry, FdbKey, FloodList, MAP_EP_BY_IF, MAP_EP_BY_IP, MAP_FDB, MAP_FLOOD,
    MAP_NET_LINKS, MAP_NETWORKS, MAX_NETWORKS, PROG_FROM_CONTAINER,
};
use weft_tests::node::Node;

fn map_pin(node: &Node, name: &str) -> PathBuf {
    node.pin_dir().join("maps").join(name)
}

/// Every entry of the hash map pinned at `pin`, as raw bytes, sorted.
fn dump<const K: usize, const V: usize>(pin: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let data = MapData::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
    let map: HashMap<MapData, [u8; K], [u8; V]> =
        HashMap::try_from(aya::maps::Map::from_map_data(data)?)
            .with_context(|| format!("{} is not a {K}/{V} hash", pin.display()))?;
    map.iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
        .collect()
}

fn flood_lists(node: &Node) -> Result<BTreeMap<u32, FloodList>> {
    let data = MapData::from_pin(map_pin(node, MAP_FLOOD))?;
    let map: HashMap<MapData, u32, FloodList> =
        HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    map.iter().map(|r| r.map_err(Into::into)).collect()
}

/// Replaces the pinned flood lists with a map of the older 16-member
/// layout holding the same lists (as an older weft would have pinned it).
fn pin_16_member_flood_lists(node: &Node, lists: &BTreeMap<u32, FloodList>) -> Result<()> {
    let data = migrate::create_map(MAP_FLOOD, FLOOD_16_LAYOUT, 0)?;
    let mut old: HashMap<MapData, u32, FloodList16> =
        HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    for (id, list) in lists {
        assert!(list.count as usize <= FLOOD_16_MEMBERS, "{list:?}");
        let mut members = [Default::default(); FLOOD_16_MEMBERS];
        members.copy_from_slice(&list.members[..FLOOD_16_MEMBERS]);
        old.insert(
            id,
            FloodList16 {
                count: list.count,
                members,
            },
            0,
        )?;
    }
    migrate::replace_pin(old.map(), &map_pin(node, MAP_FLOOD))?;
    assert_eq!(pinned(node, MAP_FLOOD)?, FLOOD_16_LAYOUT);
    Ok(())
}

fn pinned(node: &Node, name: &str) -> Result<Layout> {
    Ok(migrate::pinned_layout(&map_pin(node, name))?
        .with_context(|| format!("{name} is not pinned"))?
        .0)
}

fn program_id(node: &Node) -> Result<u32> {
    Ok(ProgramInfo::from_pin(node.pin_dir().join("progs").join(PROG_FROM_CONTAINER))?.id())
}

/// The program each pinned link runs, by interface.
fn link_programs(node: &Node) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(node.pin_dir().join("links"))? {
        let entry = entry?;
        let link = FdLink::from(PinnedLink::from_pin(entry.path())?);
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            link.info()?.program_id(),
        );
    }
    Ok(out)
}

/// After a migration of `map`: the program was reloaded (its id is not
/// `old_program`), every link runs it and it uses the migrated map.
/// Returns the new program id.
fn programs_reloaded_onto(node: &Node, map: &str, old_program: u32) -> Result<u32> {
    let program = program_id(node)?;
    assert_ne!(program, old_program, "the program must be reloaded");
    let links = link_programs(node)?;
    assert!(
        !links.is_empty() && links.values().all(|&p| p == program),
        "every link must run the reloaded program #{program}: {links:?}"
    );
    let map_id = MapInfo::from_pin(map_pin(node, map))?.id();
    let maps = ProgramInfo::from_pin(node.pin_dir().join("progs").join(PROG_FROM_CONTAINER))?
        .map_ids()?
        .context("kernel gives no map ids")?;
    assert!(
        maps.contains(&map_id),
        "the reloaded program must use the migrated {map} #{map_id}: {maps:?}"
    );
    Ok(program)
}

/// The migration contract for one map, given a node whose program is
/// `program` and whose `map` holds `entries` entries: the agent migrates
/// the older layout `pin_old` pins (`status` checks its report of that one
/// migration) and `check` finds the node right (it gets the program id
/// before and returns the one after); the next agent adopts without
/// reloading; and the CLI's first command that opens the datapath
/// migrates too.
fn migrated_by_agent_then_cli(
    node: &Node,
    map: &str,
    entries: u64,
    pin_old: impl Fn() -> Result<()>,
    status_extra: impl Fn(&serde_json::Value),
    check: impl Fn(u32) -> Result<u32>,
) -> Result<()> {
    let program = program_id(node)?;
    pin_old()?;
    let agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    let migrated = &status["migrated_at_start"]["migrated"];
    assert_eq!(migrated.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(migrated[0]["map"], map, "{status}");
    assert_eq!(migrated[0]["entries"], entries, "{status}");
    status_extra(&migrated[0]);
    let program = check(program)?;
    agent.kill()?;

    // Nothing left to do: the next agent adopts without reloading.
    let agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    assert_eq!(
        status["migrated_at_start"]["migrated"],
        serde_json::json!([]),
        "{status}"
    );
    assert_eq!(program_id(node)?, program, "a second start must adopt");
    agent.kill()?;

    pin_old()?;
    node.weft(&["network", "create", "green", "--subnet", "10.3.0.0/24"])?;
    check(program)?;
    Ok(())
}

/// Checks the node after a migration of the flood lists: the same lists,
/// the new layout, a new program on every link that uses the new map, and
/// traffic between the containers.
fn check_migrated(
    node: &Node,
    lists: &BTreeMap<u32, FloodList>,
    old_program: u32,
    ping: impl Fn() -> Result<u32>,
) -> Result<u32> {
    assert_eq!(pinned(node, MAP_FLOOD)?, FLOOD_LAYOUT, "WEFT_FLOOD layout");
    let now = flood_lists(node)?;
    for (id, list) in lists {
        assert!(
            now.get(id) == Some(list),
            "flood list of network #{id} must survive the migration unchanged: \
             {list:?} became {:?}",
            now.get(id)
        );
    }
    let program = programs_reloaded_onto(node, MAP_FLOOD, old_program)?;
    let meta = migrate::read_meta(&weft::datapath::Paths::new(node.pin_dir(), "/nonexistent"))?;
    let rec = meta
        .iter()
        .find(|r| r.name() == MAP_FLOOD)
        .context("WEFT_META has no WEFT_FLOOD record")?;
    assert_eq!(rec.layout(), FLOOD_LAYOUT);
    assert_eq!(rec.abi_version, weft_common::ABI_VERSION);
    assert_eq!(ping()?, 3, "traffic after the migration");
    Ok(program)
}

#[test]
fn older_flood_list_layout_is_migrated_with_entries_intact() -> Result<()> {
    let node = Node::new()?;
    node.weft(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.1.0.0/24",
        "--flood",
    ])?;
    node.weft(&["network", "create", "red", "--subnet", "10.2.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let (_c, _) = node.container("red", "c")?;
    let lists = flood_lists(&node)?;
    assert_eq!(lists.len(), 2, "one flood list per network: {lists:?}");
    assert!(lists.values().any(|l| l.count == 2));
    let ping = || a.ping(&ip_b, 3);
    assert_eq!(ping()?, 3);

    migrated_by_agent_then_cli(
        &node,
        MAP_FLOOD,
        2,
        || pin_16_member_flood_lists(&node, &lists),
        |_| {},
        |program| check_migrated(&node, &lists, program, ping),
    )
}

/// Map ids, every pin's name, and every entry of the hash maps weft fills,
/// byte for byte.
#[derive(Debug, PartialEq)]
struct Snapshot {
    pins: BTreeMap<String, u32>,
    entries: BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>,
    links: BTreeMap<String, u32>,
    program: u32,
}

fn snapshot(node: &Node) -> Result<Snapshot> {
    let mut pins = BTreeMap::new();
    for entry in std::fs::read_dir(node.pin_dir().join("maps"))? {
        let entry = entry?;
        pins.insert(
            entry.file_name().to_string_lossy().into_owned(),
            MapInfo::from_pin(entry.path())?.id(),
        );
    }
    let m = |name| map_pin(node, name);
    let mut entries = BTreeMap::new();
    entries.insert(MAP_NETWORKS, dump::<4, 12>(&m(MAP_NETWORKS))?);
    entries.insert(MAP_FLOOD, dump::<4, 260>(&m(MAP_FLOOD))?);
    entries.insert(MAP_EP_BY_IP, dump::<4, 28>(&m(MAP_EP_BY_IP))?);
    entries.insert(MAP_EP_BY_IF, dump::<4, 28>(&m(MAP_EP_BY_IF))?);
    entries.insert(MAP_FDB, dump::<12, 8>(&m(MAP_FDB))?);
    entries.insert(MAP_NET_LINKS, dump::<8, 4>(&m(MAP_NET_LINKS))?);
    Ok(Snapshot {
        pins,
        entries,
        links: link_programs(node)?,
        program: program_id(node)?,
    })
}

/// `weft agent` for `node`, which must exit (refuse) within 10 s.
fn agent_refusal(node: &Node) -> Result<String> {
    let mut child = node.weft_spawn(&["agent"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the agent started on a layout it cannot migrate");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    assert!(!out.status.success(), "the agent must refuse");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_clear_refusal(stderr: &str) {
    for needle in [
        "WEFT_NETWORKS",
        "pinned hash, key 4 B, value 12 B, 1024 entries",
        "needs hash, key 4 B, value 16 B, 1024 entries",
        "by a weft that left no matching layout record",
        "Nothing was changed",
        "weft teardown",
    ] {
        assert!(
            stderr.contains(needle),
            "the refusal must say {needle:?}; it said: {stderr}"
        );
    }
}

#[test]
fn unknown_layout_change_is_refused_and_changes_nothing() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;

    // A networks map with a 12-byte value (no `flags`, no full MAC): a
    // layout weft has no migration for. It holds the networks' first 12
    // bytes, so there are entries to lose.
    let current = dump::<4, 16>(&map_pin(&node, MAP_NETWORKS))?;
    assert_eq!(current.len(), 1);
    let layout = Layout {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: 4,
        value_size: 12,
        max_entries: MAX_NETWORKS,
    };
    let data = migrate::create_map(MAP_NETWORKS, layout, 0)?;
    let mut old: HashMap<MapData, [u8; 4], [u8; 12]> =
        HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    for (k, v) in &current {
        let key: [u8; 4] = k.as_slice().try_into()?;
        let value: [u8; 12] = v[..12].try_into()?;
        old.insert(key, value, 0)?;
    }
    migrate::replace_pin(old.map(), &map_pin(&node, MAP_NETWORKS))?;
    let before = snapshot(&node)?;
    assert_eq!(before.entries[MAP_NETWORKS].len(), 1);

    assert_clear_refusal(&agent_refusal(&node)?);
    assert_eq!(
        snapshot(&node)?,
        before,
        "a refused agent must change nothing"
    );

    let out = node.weft_unchecked(&["network", "create", "red", "--subnet", "10.2.0.0/24"])?;
    assert!(!out.status.success(), "the CLI must refuse too");
    assert_clear_refusal(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        snapshot(&node)?,
        before,
        "a refused CLI must change nothing"
    );

    // The running programs still hold the original map: traffic is untouched.
    assert_eq!(a.ping(&ip_b, 3)?, 3);
    Ok(())
}

/// The drop and forward counter arrays of map ABI v3 (one counter per
/// reason, no direction) are migrated: each count becomes its reason's
/// `from_container` counter, per CPU; the `from_uplink` block starts at
/// zero; the reloaded program counts by direction.
#[test]
fn undirected_counters_are_migrated_to_the_container_direction() -> Result<()> {
    use aya::{
        maps::{Map, PerCpuArray, PerCpuValues},
        util::nr_cpus,
    };
    use weft::datapath::migrate::{COUNTERS_LAYOUT, UNDIRECTED_COUNTERS_LAYOUT};
    use weft_common::{
        maps::{
            COUNTER_SLOTS, Counter, DIR_FROM_CONTAINER, MAP_DROPS, MAP_FORWARDS, MAX_REASONS,
            counter_slot,
        },
        reason::Forward,
    };

    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    assert_eq!(a.ping(&ip_b, 3)?, 3);
    let program = program_id(&node)?;

    let cpus = nr_cpus().map_err(|(_, e)| e)?;
    // Counter `code` on CPU `cpu` of the old arrays: distinct everywhere.
    let old_value = |code: u32, cpu: usize| Counter {
        packets: u64::from(code) * 1000 + cpu as u64 + 1,
        bytes: u64::from(code) * 100_000 + cpu as u64 + 7,
    };
    for map in [MAP_DROPS, MAP_FORWARDS] {
        let data = migrate::create_map(map, UNDIRECTED_COUNTERS_LAYOUT, 0)?;
        let mut old: PerCpuArray<MapData, Counter> =
            PerCpuArray::try_from(Map::from_map_data(data)?)?;
        for code in 0..MAX_REASONS {
            let values: Vec<Counter> = (0..cpus).map(|cpu| old_value(code, cpu)).collect();
            old.set(code, PerCpuValues::try_from(values)?, 0)?;
        }
        migrate::replace_pin(old.map(), &map_pin(&node, map))?;
    }

    let _agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    let migrated = status["migrated_at_start"]["migrated"]
        .as_array()
        .context("migrated")?;
    for map in [MAP_DROPS, MAP_FORWARDS] {
        let m = migrated
            .iter()
            .find(|m| m["map"] == map)
            .with_context(|| format!("{map} not migrated: {status}"))?;
        assert_eq!(m["entries"].as_u64(), Some(u64::from(MAX_REASONS)), "{m}");
        assert_eq!(pinned(&node, map)?, COUNTERS_LAYOUT, "{map} layout");
    }
    assert_ne!(program_id(&node)?, program, "the program must be reloaded");

    let read = |map: &str| -> Result<Vec<Vec<Counter>>> {
        let data = MapData::from_pin(map_pin(&node, map))?;
        let arr: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(Map::from_map_data(data)?)?;
        (0..COUNTER_SLOTS)
            .map(|slot| Ok(arr.get(&slot, 0)?.iter().copied().collect()))
            .collect()
    };
    let drops = read(MAP_DROPS)?;
    for code in 0..MAX_REASONS {
        let want: Vec<Counter> = (0..cpus).map(|cpu| old_value(code, cpu)).collect();
        assert_eq!(
            drops[counter_slot(DIR_FROM_CONTAINER, code) as usize],
            want,
            "drop counter {code} must keep its per-CPU counts as from_container"
        );
    }
    let uplink_block = |counters: &[Vec<Counter>]| {
        counters[MAX_REASONS as usize..]
            .iter()
            .flatten()
            .all(|c| *c == Counter::default())
    };
    assert!(
        uplink_block(&drops),
        "from_uplink drop counters start at zero"
    );

    // The reloaded program counts bridged pings under from_container.
    let bridged = counter_slot(DIR_FROM_CONTAINER, Forward::Bridged.code()) as usize;
    let sum = |c: &[Counter]| c.iter().map(|c| c.packets).sum::<u64>();
    let before = sum(&read(MAP_FORWARDS)?[bridged]);
    assert_eq!(a.ping(&ip_b, 3)?, 3, "traffic after the migration");
    let forwards = read(MAP_FORWARDS)?;
    assert!(sum(&forwards[bridged]) >= before + 6);
    assert!(
        uplink_block(&forwards),
        "no uplink here: nothing from_uplink"
    );
    Ok(())
}

/// Programs are reloaded only when stale: WEFT_META records, per pinned
/// program, the hash of the eBPF object it was loaded from. An agent with
/// the same object adopts; with another object (another build, same map
/// layouts: here the recorded hash is changed as another build's would be)
/// it reloads them and swaps every link atomically, and traffic flows.
#[test]
fn programs_of_another_object_are_reloaded_and_of_this_one_adopted() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let paths = weft::datapath::Paths::new(node.pin_dir(), "/nonexistent");
    let program = program_id(&node)?;
    let ours = weft::datapath::object::object_hash();
    let recorded = |paths: &weft::datapath::Paths| -> Result<Vec<(u32, u64)>> {
        Ok(migrate::read_meta(paths)?
            .iter()
            .filter_map(migrate::MetaRecord::program_object)
            .collect())
    };
    let records = recorded(&paths)?;
    assert_eq!(
        records.len(),
        3,
        "from_container and its tail calls nat_egress and overlay_encap: {records:?}"
    );
    assert!(records.contains(&(program, ours)), "{records:?}");

    let reloaded = |node: &Node| -> Result<serde_json::Value> {
        Ok(node.weft_json(&["status"])?["migrated_at_start"]["reloaded_programs"].clone())
    };
    let agent = node.start_agent()?;
    assert_eq!(reloaded(&node)?, serde_json::json!([]), "same object");
    assert_eq!(program_id(&node)?, program, "same object: adopted");
    agent.kill()?;

    let forged: Vec<migrate::MetaRecord> = migrate::read_meta(&paths)?
        .into_iter()
        .map(|mut r| {
            if r.program_object().is_some() {
                r.value_size ^= 1;
            }
            r
        })
        .collect();
    migrate::write_meta(&paths, &forged)?;
    let agent = node.start_agent()?;
    let names = reloaded(&node)?;
    assert_eq!(
        names,
        serde_json::json!([PROG_FROM_CONTAINER, "weft_nat_egress", "weft_overlay_encap"]),
        "another object: reloaded"
    );
    let new_program = program_id(&node)?;
    assert_ne!(new_program, program);
    let links = link_programs(&node)?;
    assert!(
        links.len() == 2 && links.values().all(|&p| p == new_program),
        "both links moved onto #{new_program}: {links:?}"
    );
    assert!(recorded(&paths)?.contains(&(new_program, ours)));
    assert_eq!(a.ping(&ip_b, 3)?, 3, "traffic after the reload");
    agent.kill()?;

    let _agent = node.start_agent()?;
    assert_eq!(reloaded(&node)?, serde_json::json!([]), "now adopted");
    assert_eq!(program_id(&node)?, new_program);
    Ok(())
}

/// Every pinned map byte for byte: its kernel id and what `bpftool map
/// dump` prints of it (every entry; per-CPU maps per CPU). The event ring
/// cannot be dumped; its id stands for it.
fn every_map(node: &Node) -> Result<BTreeMap<String, (u32, Vec<u8>)>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(node.pin_dir().join("maps"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let info = MapInfo::from_pin(entry.path())?;
        let dump = if info.map_type()? == aya::maps::MapType::RingBuf {
            Vec::new()
        } else {
            let path = entry.path();
            let path = path.to_string_lossy();
            weft_tests::netns::run("bpftool", &["map", "dump", "pinned", &path])?.stdout
        };
        out.insert(name, (info.id(), dump));
    }
    Ok(out)
}

/// Fails naming each map that is not as it was.
fn assert_maps_unchanged(
    before: &BTreeMap<String, (u32, Vec<u8>)>,
    node: &Node,
    after_what: &str,
) -> Result<()> {
    let after = every_map(node)?;
    let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(before),
        "{after_what}: the pins changed"
    );
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, was)| after.get(*name) != Some(was))
        .map(|(name, _)| name)
        .collect();
    assert!(
        changed.is_empty(),
        "{after_what} must change nothing, but these maps changed (id or bytes): {changed:?}"
    );
    Ok(())
}

fn node_paths(node: &Node) -> weft::datapath::Paths {
    weft::datapath::Paths::new(node.pin_dir(), "/nonexistent")
}

/// Rewrites `map`'s WEFT_META record as if a weft of layout version
/// `version` had pinned it (the pin itself is left alone).
fn record_version(node: &Node, map: &str, version: u16) -> Result<()> {
    let paths = node_paths(node);
    let mut records = migrate::read_meta(&paths)?;
    let rec = records
        .iter_mut()
        .find(|r| r.name() == map)
        .with_context(|| format!("WEFT_META has no {map} record"))?;
    rec.layout_version = version;
    rec.flags |= migrate::META_FLAG_VERSIONED;
    Ok(migrate::write_meta(&paths, &records)?)
}

/// The layout version WEFT_META records for `map`.
fn recorded_version(node: &Node, map: &str) -> Result<Option<u16>> {
    Ok(migrate::read_meta(&node_paths(node))?
        .iter()
        .find(|r| r.name() == map)
        .with_context(|| format!("WEFT_META has no {map} record"))?
        .version())
}

/// The kernel cannot tell a change of meaning that keeps every size: only
/// the recorded layout version can. WEFT_NETWORKS recorded at version 0
/// (same type and sizes as this weft's version 1, no migration known) is
/// refused by the agent and by the CLI, naming the map and both versions,
/// and every pinned map, WEFT_META included, stays byte for byte as it
/// was; a version newer than this weft's is refused the same way.
#[test]
fn older_layout_version_with_the_same_sizes_is_refused_and_changes_nothing() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let layout = pinned(&node, MAP_NETWORKS)?;
    assert_eq!(
        recorded_version(&node, MAP_NETWORKS)?,
        weft_common::maps::layout_version(MAP_NETWORKS),
        "a node set up by this weft records its versions"
    );

    for (version, needles) in [
        (
            0,
            &[
                "WEFT_NETWORKS: pinned hash, key 4 B, value 16 B, 1024 entries, layout version 0 \
                 (by map ABI v",
                "this weft needs hash, key 4 B, value 16 B, 1024 entries, layout version 1",
                "the sizes match but the entries mean something else",
                "no migration from layout version 0",
            ][..],
        ),
        (
            2,
            &[
                "WEFT_NETWORKS: pinned hash, key 4 B, value 16 B, 1024 entries, layout version 2",
                "this weft needs hash, key 4 B, value 16 B, 1024 entries, layout version 1",
                "pinned by a newer weft",
            ][..],
        ),
    ] {
        record_version(&node, MAP_NETWORKS, version)?;
        assert_eq!(pinned(&node, MAP_NETWORKS)?, layout, "sizes unchanged");
        let before = every_map(&node)?;
        let check = |stderr: &str| {
            for needle in needles
                .iter()
                .chain(&["Nothing was changed", "weft teardown"])
            {
                assert!(
                    stderr.contains(needle),
                    "version {version}: the refusal must say {needle:?}; it said: {stderr}"
                );
            }
        };

        check(&agent_refusal(&node)?);
        assert_maps_unchanged(&before, &node, "a refused agent")?;

        let out = node.weft_unchecked(&["network", "create", "red", "--subnet", "10.2.0.0/24"])?;
        assert!(!out.status.success(), "the CLI must refuse too");
        check(&String::from_utf8_lossy(&out.stderr));
        assert_maps_unchanged(&before, &node, "a refused CLI command")?;
        assert_eq!(recorded_version(&node, MAP_NETWORKS)?, Some(version));
    }

    // The running programs never noticed: traffic is untouched.
    assert_eq!(a.ping(&ip_b, 3)?, 3);
    Ok(())
}

/// What the forwarding table holds, typed.
fn fdb(node: &Node) -> Result<BTreeMap<(u32, [u8; 6]), FdbEntry>> {
    let data = MapData::from_pin(map_pin(node, MAP_FDB))?;
    let map: HashMap<MapData, FdbKey, FdbEntry> =
        HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    map.iter()
        .map(|r| {
            let (k, v) = r?;
            Ok(((k.network_id, k.mac), v))
        })
        .collect()
}

/// Replaces the pinned forwarding table with one of the synthetic layout
/// version 0 holding the same entries (each entry's two fields in v0's
/// order: same sizes, other bytes), and records it as version 0.
fn pin_fdb_v0(node: &Node, entries: &BTreeMap<(u32, [u8; 6]), FdbEntry>) -> Result<()> {
    let data = migrate::create_map(MAP_FDB, FDB_LAYOUT, 0)?;
    let mut old: HashMap<MapData, FdbKey, FdbEntryV0> =
        HashMap::try_from(aya::maps::Map::from_map_data(data)?)?;
    for (&(network_id, mac), e) in entries {
        let key = FdbKey {
            network_id,
            mac,
            _pad: [0; 2],
        };
        let v0 = FdbEntryV0 {
            stats_slot: e.stats_slot,
            ifindex: e.ifindex,
        };
        old.insert(key, v0, 0)?;
    }
    migrate::replace_pin(old.map(), &map_pin(node, MAP_FDB))?;
    assert_eq!(pinned(node, MAP_FDB)?, FDB_LAYOUT, "same sizes");
    record_version(node, MAP_FDB, FDB_V0)?;
    // Read as version 1 the bytes are wrong: the migration has to convert.
    let misread = fdb(node)?;
    assert!(
        entries.iter().all(|(k, e)| misread.get(k) != Some(e)),
        "v0 bytes must differ from v1's for every entry: {misread:?}"
    );
    Ok(())
}

/// After a migration of the forwarding table from version 0: the same
/// entries in version 1's layout, recorded as version 1, a reloaded
/// program on every link using the new map, and traffic across it.
fn check_fdb_migrated(
    node: &Node,
    entries: &BTreeMap<(u32, [u8; 6]), FdbEntry>,
    old_program: u32,
    traffic: impl Fn() -> Result<()>,
) -> Result<u32> {
    assert_eq!(
        &fdb(node)?,
        entries,
        "every forwarding entry must come through the migration intact"
    );
    assert_eq!(recorded_version(node, MAP_FDB)?, Some(1));
    let program = programs_reloaded_onto(node, MAP_FDB, old_program)?;
    traffic()?;
    Ok(program)
}

/// A same-size change of meaning, migrated: WEFT_FDB pinned at the
/// synthetic layout version 0 (its entry's two `u32`s in the other order;
/// the registry's stand-in, never pinned by a real weft) is converted
/// field by field to version 1 by the agent at start and by the CLI, every
/// entry intact, the programs reloaded onto it and bridged traffic (which
/// looks up every frame's destination in it) flowing.
#[test]
fn same_size_layout_version_change_is_migrated_field_by_field() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    node.weft(&["network", "create", "red", "--subnet", "10.2.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (b, ip_b) = node.container("blue", "b")?;
    let (_c, _) = node.container("red", "c")?;
    let entries = fdb(&node)?;
    assert_eq!(entries.len(), 3, "one FDB entry per endpoint: {entries:?}");
    let traffic = || -> Result<()> {
        assert_eq!(a.ping(&ip_b, 3)?, 3, "bridged ping a -> b");
        weft_tests::traffic::tcp_echo(&b, &ip_b, &a, 1 << 20)
    };
    traffic()?;

    migrated_by_agent_then_cli(
        &node,
        MAP_FDB,
        3,
        || pin_fdb_v0(&node, &entries),
        |m| {
            assert_eq!(m["from_version"], 0, "{m}");
            assert_eq!(m["to_version"], 1, "{m}");
        },
        |program| check_fdb_migrated(&node, &entries, program, traffic),
    )
}

/// A WEFT_META written by map ABI v6 (no layout versions: zeros where v7
/// keeps them) needs no migration of its own: its maps count as layout
/// version 1, so the agent adopts every map still at version 1 as it is
/// and the next write adds the versions, keeping the ABI version that
/// pinned each map. Maps whose version moved on since (the conntrack
/// tables, version 2 since map ABI v8) are migrated from version 1 like
/// any other such map, which reloads the programs onto them.
#[test]
fn map_abi_v6_records_count_as_version_1_and_are_adopted() -> Result<()> {
    let node = Node::new()?;
    node.weft(&["network", "create", "blue", "--subnet", "10.1.0.0/24"])?;
    let (a, _) = node.container("blue", "a")?;
    let (_b, ip_b) = node.container("blue", "b")?;
    let paths = node_paths(&node);
    let v6: Vec<migrate::MetaRecord> = migrate::read_meta(&paths)?
        .into_iter()
        .map(|mut r| {
            if r.program_object().is_none() {
                r.layout_version = 0;
                r.flags = 0;
                r.abi_version = 6;
            }
            r
        })
        .collect();
    migrate::write_meta(&paths, &v6)?;
    assert_eq!(recorded_version(&node, MAP_FDB)?, None);
    // A connection in each conntrack table, to be carried over as it is
    // (a version 1 entry is a version 2 entry).
    let ct_table = |table: &str| -> Result<HashMap<MapData, CtKey, CtEntry>> {
        let data = MapData::from_pin(map_pin(&node, table))?;
        Ok(HashMap::try_from(aya::maps::Map::from_map_data(data)?)?)
    };
    let mut carried = Vec::new();
    for (n, table) in [(1, "WEFT_CT"), (2, "WEFT_CT_CLOSING")] {
        let key = CtKey::new(
            6,
            u32::from_ne_bytes([10, 1, 0, 2]),
            u32::from_ne_bytes([198, 18, 0, 2]),
            [0x9c, n],
            [0, 80],
        );
        // Alive, so the agent's first GC keeps it.
        let entry = CtEntry {
            last_seen_ns: weft::datapath::conntrack::now_ns(),
            tcp_state: weft_common::maps::CT_TCP_ESTABLISHED,
            xlate_ip_be: u32::from_ne_bytes([198, 18, 0, 1]),
            xlate_port_be: [0xee, n],
            ..Default::default()
        };
        ct_table(table)?.insert(key, entry, 0)?;
        carried.push((table, key, entry));
    }
    let maps: BTreeMap<String, u32> = every_map(&node)?
        .into_iter()
        .map(|(name, (id, _))| (name, id))
        .collect();
    let moved_on: Vec<String> = maps
        .keys()
        .filter(|name| weft_common::maps::layout_version(name).is_some_and(|v| v > 1))
        .cloned()
        .collect();
    assert_eq!(
        moved_on,
        ["WEFT_CT", "WEFT_CT_CLOSING"],
        "maps past version 1"
    );

    let _agent = node.start_agent()?;
    let status = node.weft_json(&["status"])?;
    let migrated: Vec<(String, u64)> = status["migrated_at_start"]["migrated"]
        .as_array()
        .with_context(|| format!("{status}"))?
        .iter()
        .map(|m| {
            (
                m["map"].as_str().unwrap_or_default().to_owned(),
                m["from_version"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = moved_on.iter().map(|m| (m.clone(), 1)).collect();
    assert_eq!(migrated, expected, "only those, from version 1: {status}");
    let now: BTreeMap<String, u32> = every_map(&node)?
        .into_iter()
        .map(|(name, (id, _))| (name, id))
        .collect();
    for (name, id) in &maps {
        if !moved_on.contains(name) {
            assert_eq!(now.get(name), Some(id), "{name}: adopted, not recreated");
        }
    }
    for (table, key, entry) in &carried {
        assert_eq!(
            ct_table(table)?.get(key, 0)?,
            *entry,
            "{table}: the entry is carried over as it was"
        );
    }
    for r in migrate::read_meta(&paths)?
        .iter()
        .filter(|r| r.program_object().is_none())
    {
        let name = r.name();
        assert_eq!(
            r.version(),
            weft_common::maps::layout_version(&name),
            "{name}: the agent records the version"
        );
        if !moved_on.contains(&name) {
            assert_eq!(r.abi_version, 6, "{name}: still pinned by v6");
        }
    }
    assert_eq!(a.ping(&ip_b, 3)?, 3);
    Ok(())
}

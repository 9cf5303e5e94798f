//! Masquerade's connection tables (`WEFT_CT`, open connections, and
//! `WEFT_CT_CLOSING`, closed TCP ones) from userspace: reading them as
//! connections, NAT port use, and garbage collection.
//!
//! The datapath treats an entry as absent once it and its partner are both
//! past their timeout (`ct_timeout_ns`), but never deletes it: an expired
//! reply entry keeps its NAT port claimed until it is removed here. Pairing
//! and freshness come from `weft_common` (`CtKey::partner`,
//! `CtEntry::fresh`), the same code the datapath runs; timestamps are
//! CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};

use aya::maps::{HashMap, MapData};
use nix::time::{ClockId, clock_gettime};
use weft_api::views::GcResult;
use weft_common::maps::{
    CT_DIR_ORIGINAL, CT_DIR_REPLY, CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_TCP_CLOSED, CtEntry, CtKey,
    IPPROTO_ICMP, IPPROTO_TCP, MAP_CT, MAP_CT_CLOSING,
};

use crate::{
    datapath::{ct_budget, maps::open_pinned, paths::Paths},
    error::{Error, Result},
};

type CtMap = HashMap<MapData, CtKey, CtEntry>;

/// CLOCK_MONOTONIC now, in nanoseconds (`bpf_ktime_get_ns`'s clock).
pub fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The tables a connection's entries live in: open connections, then
/// closed TCP ones (the datapath moves a connection when it closes).
const TABLES: [&str; 2] = [MAP_CT, MAP_CT_CLOSING];

/// The pinned tables (`TABLES` order), or `None` when nothing was ever set
/// up.
fn open(paths: &Paths) -> Result<Option<Vec<(&'static str, CtMap)>>> {
    let mut maps = Vec::new();
    for name in TABLES {
        let Some(m) = open_pinned(paths, name)? else {
            return Ok(None);
        };
        let map = HashMap::try_from(m)
            .map_err(|e| Error::map(format!("map {name} has an unexpected type"), e))?;
        maps.push((name, map));
    }
    Ok(Some(maps))
}

/// Every entry now, open connections' first; a key in both tables (a
/// moment of a move) is listed once. Entries the datapath adds, moves or
/// the LRU evicts while this runs may or may not be seen.
pub fn snapshot(paths: &Paths) -> Result<Vec<(CtKey, CtEntry)>> {
    let Some(maps) = open(paths)? else {
        return Ok(Vec::new());
    };
    Ok(read_tables(&maps)?
        .into_iter()
        .map(|(_, k, e)| (k, e))
        .collect())
}

/// [`snapshot`] of opened tables, with the index of the table each entry
/// was read from.
fn read_tables(maps: &[(&'static str, CtMap)]) -> Result<Vec<(usize, CtKey, CtEntry)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (table, (name, map)) in maps.iter().enumerate() {
        for item in map.iter() {
            match item {
                Ok((k, e)) => {
                    if seen.insert(k) {
                        out.push((table, k, e));
                    }
                }
                // Deleted between the key walk and the lookup.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::map(format!("cannot read {name}"), e)),
            }
        }
    }
    Ok(out)
}

/// Expired: this entry and its partner (if any) are both past their
/// timeout; the negation of the datapath's `alive`.
pub fn expired(
    k: &CtKey,
    e: &CtEntry,
    partner: Option<&CtEntry>,
    now: u64,
    max_idle_ns: Option<u64>,
) -> bool {
    !e.fresh(k.proto, now, max_idle_ns.unwrap_or(u64::MAX))
        && !partner.is_some_and(|p| p.fresh(k.proto, now, max_idle_ns.unwrap_or(u64::MAX)))
}

/// One connection from the table: both entries, or one whose partner is
/// gone (LRU eviction).
#[derive(Clone, Debug)]
pub struct Connection {
    pub proto: u8,
    /// The container's tuple (src ip, src port, dst ip, dst port), network
    /// order as the map holds them.
    pub original: (u32, [u8; 2], u32, [u8; 2]),
    /// The tuple on the uplink (node ip, NAT port, dst ip, dst port).
    pub translated: (u32, [u8; 2], u32, [u8; 2]),
    pub tcp_state: u8,
    /// The latest `last_seen_ns` of the two entries.
    pub last_seen_ns: u64,
    /// When the connection was made (the earlier entry's `created_ns`).
    pub created_ns: u64,
    /// `CT_FLAG_*` of the entries.
    pub flags: u8,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
    pub expired: bool,
}

/// The table's entries paired into connections, each once.
pub fn connections(entries: &[(CtKey, CtEntry)], now: u64) -> Vec<Connection> {
    let by_key: StdHashMap<CtKey, &CtEntry> = entries.iter().map(|(k, e)| (*k, e)).collect();
    let mut out = Vec::new();
    for (k, e) in entries {
        let pk = k.partner(e);
        let partner = by_key.get(&pk).copied().filter(|p| k.pairs_with(e, p));
        if e.direction == CT_DIR_REPLY && partner.is_some() {
            // Listed from its original entry.
            continue;
        }
        let (orig_key, orig, reply) = if e.direction == CT_DIR_ORIGINAL {
            (*k, Some(e), partner)
        } else {
            (pk, None, Some(e))
        };
        let sum = |f: fn(&CtEntry) -> u64| orig.map_or(0, f) + reply.map_or(0, f);
        // The uplink tuple: from the original entry's translation, or the
        // reply entry's key read backwards.
        // A published port's client may have another port outside than
        // the container sees (`CtEntry::peer_port_be`).
        let translated = match (orig, reply) {
            (Some(o), _) => (
                o.xlate_ip_be,
                o.xlate_port_be,
                orig_key.dst_ip_be,
                o.dnat_peer_port().unwrap_or(orig_key.dst_port_be),
            ),
            (None, _) => {
                let (nat_port, peer_port) = if k.proto == IPPROTO_ICMP {
                    (k.src_port_be, orig_key.dst_port_be)
                } else {
                    (k.dst_port_be, k.src_port_be)
                };
                (k.dst_ip_be, nat_port, k.src_ip_be, peer_port)
            }
        };
        out.push(Connection {
            proto: k.proto,
            original: (
                orig_key.src_ip_be,
                orig_key.src_port_be,
                orig_key.dst_ip_be,
                orig_key.dst_port_be,
            ),
            translated,
            tcp_state: e.tcp_state,
            last_seen_ns: orig
                .map_or(0, |o| o.last_seen_ns)
                .max(reply.map_or(0, |r| r.last_seen_ns)),
            created_ns: orig
                .map_or(u64::MAX, |o| o.created_ns)
                .min(reply.map_or(u64::MAX, |r| r.created_ns)),
            flags: e.flags,
            packets_orig: sum(|x| x.packets_orig),
            bytes_orig: sum(|x| x.bytes_orig),
            packets_reply: sum(|x| x.packets_reply),
            bytes_reply: sum(|x| x.bytes_reply),
            expired: expired(k, e, partner, now, None),
        });
    }
    out.sort_by_key(|c| {
        (
            c.proto,
            c.original.0,
            c.original.1,
            c.original.2,
            c.original.3,
        )
    });
    out
}

/// NAT ports in use per protocol: distinct ports held by reply entries to
/// `node_ip_be` within the range (expired ones too: they hold their port
/// until collected), and how many connections hold them.
pub fn ports_used(
    entries: &[(CtKey, CtEntry)],
    node_ip_be: u32,
    range: (u16, u16),
) -> BTreeMap<u8, (usize, usize)> {
    let mut ports: BTreeMap<u8, (BTreeSet<u16>, usize)> = BTreeMap::new();
    for (k, e) in entries {
        // Connections to published ports hold no NAT port.
        let published = e.flags & CT_FLAG_DNAT != 0 && e.flags & CT_FLAG_HAIRPIN == 0;
        if e.direction != CT_DIR_REPLY || k.dst_ip_be != node_ip_be || published {
            continue;
        }
        let port = u16::from_be_bytes(if k.proto == IPPROTO_ICMP {
            k.src_port_be
        } else {
            k.dst_port_be
        });
        if !(range.0..=range.1).contains(&port) {
            continue;
        }
        let slot = ports.entry(k.proto).or_default();
        slot.0.insert(port);
        slot.1 += 1;
    }
    ports
        .into_iter()
        .map(|(proto, (set, conns))| (proto, (set.len(), conns)))
        .collect()
}

/// Removes every expired entry (see [`expired`]); with `max_idle_ns`, also
/// pairs idle longer than that. Each entry is read again just before its
/// removal, so one the datapath refreshed meanwhile is kept.
pub fn gc(paths: &Paths, max_idle_ns: Option<u64>, limit: Option<u32>) -> Result<GcResult> {
    let Some(mut maps) = open(paths)? else {
        return Ok(GcResult::default());
    };
    let created_before = ct_budget::created_not_closed(paths)?;
    let entries = read_tables(&maps)?;
    let mut live = entries
        .iter()
        .filter(|(_, k, e)| is_open_connection(k, e))
        .count() as u64;
    let by_key: StdHashMap<CtKey, CtEntry> = entries.iter().map(|(_, k, e)| (*k, *e)).collect();
    let now = now_ns();
    let mut result = GcResult::default();
    for (table, k, e) in &entries {
        // A partner key another connection took since does not keep this
        // entry alive (the datapath's rule too).
        let partner = by_key.get(&k.partner(e)).filter(|p| k.pairs_with(e, p));
        if !expired(k, e, partner, now, max_idle_ns) {
            continue;
        }
        // Read again where it was: refreshed meanwhile, it stays (moved
        // meanwhile, the next round finds it).
        let (name, map) = &mut maps[*table];
        let Ok(current) = map.get(k, 0) else {
            continue;
        };
        let partner_now = map
            .get(&k.partner(&current), 0)
            .ok()
            .filter(|p| k.pairs_with(&current, p));
        if !expired(k, &current, partner_now.as_ref(), now_ns(), max_idle_ns) {
            continue;
        }
        match map.remove(k) {
            Ok(()) => {
                result.removed += 1;
                if is_open_connection(k, e) {
                    live = live.saturating_sub(1);
                }
            }
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::map(format!("cannot remove from {name}"), e)),
        }
    }
    result.remaining = entries.len().saturating_sub(result.removed);
    ct_budget::record(paths, created_before, live, limit)?;
    Ok(result)
}

/// Counts the live connections for the datapath's connection budget
/// (`ct_budget`), removing nothing; e.g. when `node set` changes the limit
/// to `limit`.
pub fn refresh_budget(paths: &Paths, limit: Option<u32>) -> Result<()> {
    let created_before = ct_budget::created_not_closed(paths)?;
    let live = connection_count(&snapshot(paths)?);
    ct_budget::record(paths, created_before, live, limit)
}

/// Open connections in `entries` (a [`snapshot`]): one original-direction
/// entry each, TCP ones only until they close; what the datapath's
/// connection budget counts.
pub fn connection_count(entries: &[(CtKey, CtEntry)]) -> u64 {
    entries
        .iter()
        .filter(|(k, e)| is_open_connection(k, e))
        .count() as u64
}

/// Whether `e` is the original-direction entry of a connection that is not
/// a closed TCP one.
fn is_open_connection(k: &CtKey, e: &CtEntry) -> bool {
    e.direction == CT_DIR_ORIGINAL && !(k.proto == IPPROTO_TCP && e.tcp_state == CT_TCP_CLOSED)
}

/// Removes every entry (the node's uplink went away): returns how many.
pub fn flush(paths: &Paths, limit: Option<u32>) -> Result<usize> {
    let Some(mut maps) = open(paths)? else {
        return Ok(0);
    };
    let created_before = ct_budget::created_not_closed(paths)?;
    let mut removed = 0;
    for (_, map) in &mut maps {
        let keys: Vec<CtKey> = map.keys().filter_map(|k| k.ok()).collect();
        removed += keys.iter().filter(|k| map.remove(k).is_ok()).count();
    }
    ct_budget::record(paths, created_before, 0, limit)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use weft_common::maps::{CT_TCP_ESTABLISHED, CT_TIMEOUT_UDP_S, IPPROTO_TCP, IPPROTO_UDP};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn pair(proto: u8) -> ((CtKey, CtEntry), (CtKey, CtEntry)) {
        let (c, o, n) = (
            u32::from_ne_bytes([10, 1, 0, 2]),
            u32::from_ne_bytes([198, 18, 0, 2]),
            u32::from_ne_bytes([198, 18, 0, 1]),
        );
        let orig = CtKey::new(proto, c, o, 5000u16.to_be_bytes(), 80u16.to_be_bytes());
        let oe = CtEntry {
            xlate_ip_be: n,
            xlate_port_be: 30000u16.to_be_bytes(),
            direction: CT_DIR_ORIGINAL,
            ..CtEntry::default()
        };
        let rk = orig.reply(n, oe.xlate_port_be);
        let re = CtEntry {
            xlate_ip_be: c,
            xlate_port_be: orig.src_port_be,
            direction: CT_DIR_REPLY,
            ..CtEntry::default()
        };
        ((orig, oe), (rk, re))
    }

    #[test]
    fn partners_find_each_other() {
        for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
            let ((ok, oe), (rk, re)) = pair(proto);
            assert_eq!(ok.partner(&oe), rk);
            assert_eq!(rk.partner(&re), ok);
        }
    }

    /// A published port's connection from client port 40000 to host port
    /// `host`, which the container sees from port `seen`.
    fn dnat_pair(host: u16, seen: u16) -> ((CtKey, CtEntry), (CtKey, CtEntry)) {
        let (c, o, n) = (
            u32::from_ne_bytes([10, 1, 0, 2]),
            u32::from_ne_bytes([198, 18, 0, 2]),
            u32::from_ne_bytes([198, 18, 0, 1]),
        );
        let inbound = CtKey::new(
            IPPROTO_TCP,
            o,
            n,
            40000u16.to_be_bytes(),
            host.to_be_bytes(),
        );
        let ie = CtEntry {
            xlate_ip_be: c,
            xlate_port_be: 8080u16.to_be_bytes(),
            peer_port_be: seen.to_be_bytes(),
            direction: CT_DIR_REPLY,
            flags: CT_FLAG_DNAT,
            ..CtEntry::default()
        };
        let outbound = CtKey::new(IPPROTO_TCP, c, o, 8080u16.to_be_bytes(), seen.to_be_bytes());
        let oe = CtEntry {
            xlate_ip_be: n,
            xlate_port_be: host.to_be_bytes(),
            peer_port_be: 40000u16.to_be_bytes(),
            direction: CT_DIR_ORIGINAL,
            flags: CT_FLAG_DNAT,
            ..CtEntry::default()
        };
        ((inbound, ie), (outbound, oe))
    }

    #[test]
    fn a_published_ports_pair_with_another_client_port_inside_pairs_up() {
        let ((ik, ie), (ok, oe)) = dnat_pair(20000, 61000);
        assert_eq!(ik.partner(&ie), ok);
        assert_eq!(ok.partner(&oe), ik);
        assert!(ik.pairs_with(&ie, &oe) && ok.pairs_with(&oe, &ie));
        let conns = connections(&[(ik, ie), (ok, oe)], 0);
        assert_eq!(conns.len(), 1);
        assert_eq!(
            conns[0].original.3,
            61000u16.to_be_bytes(),
            "as the container sees it"
        );
        assert_eq!(
            conns[0].translated.3,
            40000u16.to_be_bytes(),
            "the client's own port"
        );
        let alone = connections(&[(ik, ie)], 0);
        assert_eq!(alone[0].translated, conns[0].translated);
        // Version 1 entries (no peer port) pair as they always did.
        let ((ik, mut ie), (ok, mut oe)) = dnat_pair(20000, 40000);
        (ie.peer_port_be, oe.peer_port_be) = ([0; 2], [0; 2]);
        assert!(ik.pairs_with(&ie, &oe) && ok.pairs_with(&oe, &ie));
    }

    #[test]
    fn a_partner_key_taken_by_another_connection_pairs_with_nothing() {
        // Client port 40000 to host port 20000 closed; the same client
        // port to host port 20001 took the container-side key since.
        let ((old_in, old_ie), _) = dnat_pair(20000, 40000);
        let ((new_in, new_ie), (ok, oe)) = dnat_pair(20001, 40000);
        assert_eq!(old_in.partner(&old_ie), ok, "the same container-side key");
        assert!(!old_in.pairs_with(&old_ie, &oe), "which names the new one");
        assert!(new_in.pairs_with(&new_ie, &oe));
        let now = 1000 * S;
        let mut stale = old_ie;
        stale.last_seen_ns = now - 200 * S;
        let fresh = CtEntry {
            last_seen_ns: now,
            ..oe
        };
        let conns = connections(&[(old_in, stale), (new_in, new_ie), (ok, fresh)], now);
        assert_eq!(conns.len(), 2, "{conns:?}");
        assert!(
            conns.iter().any(|c| c.expired),
            "the stale half is not kept alive by the other connection's entry"
        );
    }

    #[test]
    fn expired_only_when_both_are_past_their_timeout() {
        let ((ok, mut oe), (_, mut re)) = pair(IPPROTO_UDP);
        let now = 1000 * S;
        oe.last_seen_ns = now - (CT_TIMEOUT_UDP_S + 1) * S;
        re.last_seen_ns = now - S;
        assert!(!expired(&ok, &oe, Some(&re), now, None));
        re.last_seen_ns = oe.last_seen_ns;
        assert!(expired(&ok, &oe, Some(&re), now, None));
        assert!(expired(&ok, &oe, None, now, None));
        // Exactly at the timeout is still alive, as in the datapath.
        oe.last_seen_ns = now - CT_TIMEOUT_UDP_S * S;
        assert!(!expired(&ok, &oe, None, now, None));
        // --older-than shortens the timeout, never lengthens it.
        assert!(expired(&ok, &oe, None, now, Some(S)));
        let ((tk, mut te), _) = pair(IPPROTO_TCP);
        te.tcp_state = CT_TCP_ESTABLISHED;
        te.last_seen_ns = now - 200 * S;
        assert!(!expired(&tk, &te, None, now, None));
    }

    #[test]
    fn connections_are_listed_once_with_summed_counters() {
        let ((ok, mut oe), (rk, mut re)) = pair(IPPROTO_TCP);
        oe.packets_orig = 3;
        re.packets_reply = 2;
        let conns = connections(&[(rk, re), (ok, oe)], 0);
        assert_eq!(conns.len(), 1);
        assert_eq!((conns[0].packets_orig, conns[0].packets_reply), (3, 2));
        assert_eq!(conns[0].translated.1, 30000u16.to_be_bytes());
        // A reply entry alone still names the whole connection.
        let alone = connections(&[(rk, re)], 0);
        assert_eq!(alone[0].original, conns[0].original);
        assert_eq!(alone[0].translated, conns[0].translated);
    }
}

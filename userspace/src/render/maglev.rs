//! Maglev consistent hashing (Eisenbud et al., NSDI'16): a service's
//! lookup table of M slots (M a prime), each naming a backend, filled so
//! that every backend holds about M/N slots and a change of the backend
//! set moves few slots besides the ones that must move.
//!
//! Each backend's permutation comes from two hashes of its address with a
//! seed fixed in the code ([`SEED`]), never from the order backends were
//! added or from anything node-local: every node builds the same table
//! from the same members, so any node picks the same backend for a flow.
//!
//! Tables are pure functions of (M, backend addresses); building one for
//! M = 16381 costs ~0.2 ms, and a node may hold thousands, so built tables
//! are kept in a cache keyed by that content (renders of two models share
//! every unchanged table).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use weft_common::maps::{MAGLEV_CHUNK, MaglevChunk};

/// The hash seed of every node's Maglev permutations.
pub const SEED: u64 = 0x7765_6674_6d61_676c; // "weftmagl"

/// A built table: slot -> index into the backend list it was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The backends, in the order the indexes refer to.
    pub backends: Vec<Ipv4Addr>,
    pub slots: Vec<u16>,
    /// Its content id ([`table_id`]).
    pub id: u64,
    /// The slots as the datapath's chunks, built once with the table:
    /// renders share them instead of copying 4 KiB per chunk each time.
    pub chunks: Vec<MaglevChunk>,
}

impl Table {
    /// The backend of slot `i`.
    pub fn backend(&self, i: usize) -> Ipv4Addr {
        self.backends[usize::from(self.slots[i])]
    }

    /// The slots as the datapath holds them: backend addresses in network
    /// order.
    pub fn addresses_be(&self) -> Vec<u32> {
        self.slots
            .iter()
            .map(|&b| u32::from_ne_bytes(self.backends[usize::from(b)].octets()))
            .collect()
    }

    /// How many slots each backend holds, in backend order.
    pub fn shares(&self) -> Vec<u32> {
        let mut out = vec![0; self.backends.len()];
        for &b in &self.slots {
            out[usize::from(b)] += 1;
        }
        out
    }
}

/// A 64-bit hash of `bytes` under `seed` (splitmix64's finaliser over
/// 8-byte words): stable across Rust versions and machines.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(word));
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Builds the table of size `m` (a prime) for `backends` (at most
/// `u16::MAX`; order does not matter: they are sorted first, so the table
/// depends only on the set). `None` without backends.
pub fn build(m: u32, backends: &[Ipv4Addr]) -> Option<Table> {
    if backends.is_empty() || m < 2 {
        return None;
    }
    let mut backends = backends.to_vec();
    backends.sort();
    backends.dedup();
    backends.truncate(usize::from(u16::MAX));
    let m64 = u64::from(m);
    let perm: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            let o = b.octets();
            let offset = hash64(SEED, &o) % m64;
            let skip = hash64(SEED.rotate_left(32) ^ 0x5bd1_e995, &o) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    const EMPTY: u16 = u16::MAX;
    let mut slots = vec![EMPTY; m as usize];
    let mut next = vec![0u64; backends.len()];
    let mut filled = 0usize;
    // Backends take turns claiming their next preferred free slot.
    'fill: loop {
        for (i, &(offset, skip)) in perm.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m64;
            while slots[c as usize] != EMPTY {
                next[i] += 1;
                c = (offset + next[i] * skip) % m64;
            }
            slots[c as usize] = i as u16;
            next[i] += 1;
            filled += 1;
            if filled == m as usize {
                break 'fill;
            }
        }
    }
    let id = table_id(m, &backends);
    let mut table = Table {
        backends,
        slots,
        id,
        chunks: Vec::new(),
    };
    let addresses = table.addresses_be();
    table.chunks = addresses
        .chunks(MAGLEV_CHUNK as usize)
        .map(|part| {
            let mut chunk = MaglevChunk::default();
            chunk.slots[..part.len()].copy_from_slice(part);
            chunk
        })
        .collect();
    Some(table)
}

/// The content id of the table for (`m`, `backends` sorted): the datapath
/// keys a table's chunks by it, so a changed member set is a new table
/// written beside the old one and swapped in with one update.
pub fn table_id(m: u32, sorted_backends: &[Ipv4Addr]) -> u64 {
    let mut bytes = m.to_le_bytes().to_vec();
    for b in sorted_backends {
        bytes.extend_from_slice(&b.octets());
    }
    // 0 means "no table" to the datapath.
    hash64(SEED ^ 0x0074_6162_6c65, &bytes).max(1)
}

/// The datapath's flow hash (`ebpf/src/helpers/maglev.rs`, the same
/// function): the slot a flow from `src:sport` to port `dport` of `proto`
/// takes in a table of `m` slots. Addresses and ports in host order.
pub fn flow_slot(src: Ipv4Addr, sport: u16, dport: u16, proto: u8, m: u32) -> u32 {
    let fmix = |mut h: u32| {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    };
    let ports = u32::from(sport) | (u32::from(dport) << 16);
    let mut h = weft_common::maps::MAGLEV_FLOW_SEED ^ u32::from(src);
    h = fmix(h) ^ ports;
    h = fmix(h) ^ u32::from(proto);
    fmix(h) % m
}

type Cache = HashMap<(u32, Vec<Ipv4Addr>), Arc<Table>>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Tables kept at most; beyond it the cache starts over (a render then
/// rebuilds what it needs).
const CACHE_MAX: usize = 65_536;

/// [`build`], cached by content.
pub fn cached(m: u32, backends: &[Ipv4Addr]) -> Option<Arc<Table>> {
    let mut key = backends.to_vec();
    key.sort();
    key.dedup();
    if key.is_empty() {
        return None;
    }
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(t) = cache.get(&(m, key.clone())) {
        return Some(t.clone());
    }
    let table = Arc::new(build(m, &key)?);
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert((m, key), table.clone());
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_HASH: u64 = 2_468_535_689_321_170_950;
    const PINNED_SLOT: u32 = 1033;

    fn backends(n: u8) -> Vec<Ipv4Addr> {
        (0..n)
            .map(|i| Ipv4Addr::new(10, 1, i / 200, 2 + i % 200))
            .collect()
    }

    /// Slots whose backend differs between two tables, not counting the
    /// slots of `gone` in `before`.
    fn moved(before: &Table, after: &Table, gone: Option<Ipv4Addr>) -> (usize, usize) {
        let mut own = 0;
        let mut others = 0;
        for i in 0..before.slots.len() {
            let (b, a) = (before.backend(i), after.backend(i));
            if Some(b) == gone {
                own += 1;
            } else if a != b {
                others += 1;
            }
        }
        (own, others)
    }

    #[test]
    fn every_backend_gets_about_its_share() {
        for (m, n) in [(16381, 10), (16381, 100), (251, 3), (1021, 10)] {
            let t = build(m, &backends(n)).unwrap();
            let fair = f64::from(m) / f64::from(n);
            for share in t.shares() {
                // Maglev's imbalance is at most ~1% for M >> N; allow 5%
                // for the small tables.
                assert!(
                    (f64::from(share) - fair).abs() <= fair * 0.05 + 1.0,
                    "M={m} N={n}: a backend holds {share} slots, fair is {fair:.0}"
                );
            }
        }
    }

    #[test]
    fn removing_one_of_ten_moves_its_slots_and_few_others() {
        let all = backends(10);
        let before = build(16381, &all).unwrap();
        for gone in &all {
            let rest: Vec<_> = all.iter().copied().filter(|b| b != gone).collect();
            let after = build(16381, &rest).unwrap();
            let (own, others) = moved(&before, &after, Some(*gone));
            let share = others as f64 / (16381 - own) as f64;
            assert!(
                share <= 0.02,
                "removing {gone} moved {share:.4} of the other slots"
            );
        }
    }

    #[test]
    fn removing_one_of_a_hundred_moves_few_others() {
        let all = backends(100);
        let before = build(16381, &all).unwrap();
        let rest = &all[1..];
        let after = build(16381, rest).unwrap();
        let (own, others) = moved(&before, &after, Some(all[0]));
        assert!(
            others as f64 / (16381 - own) as f64 <= 0.02,
            "{others} other slots moved"
        );
    }

    #[test]
    fn adding_one_moves_at_most_its_share_plus_two_percent() {
        let all = backends(11);
        let before = build(16381, &all[..10]).unwrap();
        let after = build(16381, &all).unwrap();
        let (_, changed) = moved(&before, &after, None);
        let bound = 16381.0 * (1.0 / 11.0 + 0.02);
        assert!(
            changed as f64 <= bound,
            "{changed} slots moved, bound {bound:.0}"
        );
    }

    #[test]
    fn plain_modulo_would_move_almost_everything() {
        // The baseline Maglev is for: hash % N moves ~(N-1)/N of the flows.
        let moved = (0..16381u32).filter(|h| h % 10 != h % 9).count();
        assert!(moved > 16381 * 8 / 10);
    }

    #[test]
    fn tables_depend_only_on_the_member_set() {
        let mut b = backends(5);
        let t1 = build(251, &b).unwrap();
        b.reverse();
        let t2 = build(251, &b).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(*cached(251, &b).unwrap(), t1);
        let mut sorted = b.clone();
        sorted.sort();
        assert_ne!(table_id(251, &sorted), table_id(1021, &sorted));
        assert!(build(251, &[]).is_none());
    }

    #[test]
    fn flows_move_only_with_their_backend() {
        // 1,000 flows over 10 backends; one backend goes: only its flows
        // and at most 2% of the others change backend.
        let all = backends(10);
        let before = build(16381, &all).unwrap();
        let after = build(16381, &all[1..]).unwrap();
        let flows: Vec<u32> = (0..1000u16)
            .map(|i| {
                flow_slot(
                    Ipv4Addr::new(10, 2, 0, 2 + (i % 50) as u8),
                    30000 + i,
                    80,
                    6,
                    16381,
                )
            })
            .collect();
        let (mut own, mut others) = (0, 0);
        for &slot in &flows {
            let (b, a) = (before.backend(slot as usize), after.backend(slot as usize));
            if b == all[0] {
                own += 1;
            } else if a != b {
                others += 1;
            }
        }
        assert!(
            own > 50 && own < 150,
            "the removed backend had {own} of 1000 flows"
        );
        assert!(
            f64::from(others) <= 0.02 * f64::from(1000 - own),
            "{others} other flows moved"
        );
    }

    #[test]
    fn hashes_are_stable_across_builds() {
        // Nodes running different weft builds must agree: pin the values.
        assert_eq!(hash64(SEED, &[10, 1, 0, 2]), PINNED_HASH);
        assert_eq!(
            flow_slot(Ipv4Addr::new(10, 1, 0, 2), 40000, 80, 6, 16381),
            PINNED_SLOT
        );
        let t = build(7, &[Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)]).unwrap();
        assert_eq!(t.shares().iter().sum::<u32>(), 7);
    }
}

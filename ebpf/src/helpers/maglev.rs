//! Backend picks for new service connections, shared by the east-west
//! path (`service`: a container's packet to a VIP) and published services
//! (`nat`: an outside client's packet to a port of the node): client-IP
//! affinity while it is fresh and its backend still active, else the
//! service's Maglev table, with a flow hash under a fixed seed so every
//! node picks the same backend for the same flow; and the per-backend
//! count of new connections.

use weft_common::maps::{
    AffinityEntry, AffinityKey, CtKey, MAGLEV_CHUNK, MAGLEV_FLOW_SEED, MaglevKey, MemberKey,
    SVC_FLAG_AFFINITY, SVC_MEMBER_ACTIVE, SvcEntry,
};

use super::{
    conntrack::Pick,
    maps::{AFFINITY, MAGLEV, SVC_COUNTS, SVC_MEMBERS, endpoint_by_ip},
};

/// The backend for a new connection `key` to `svc`: the client's affinity
/// backend while it is fresh and still an active member, else the Maglev
/// table's; `None` without backends.
#[inline(always)]
pub fn pick(svc: &SvcEntry, key: &CtKey, now: u64) -> Option<Pick> {
    if svc.table == 0 || svc.size == 0 {
        return None;
    }
    let affinity = svc.flags & SVC_FLAG_AFFINITY != 0;
    let akey = AffinityKey {
        svc_id: svc.svc_id,
        client_ip_be: key.src_ip_be,
    };
    let mut ip_be = 0;
    if affinity {
        // SAFETY: a value pointer from this run's lookup, copied at once.
        if let Some(a) = AFFINITY.get_ptr(akey).map(|p| unsafe { *p })
            && now.saturating_sub(a.last_seen_ns) <= u64::from(svc.affinity_s) * 1_000_000_000
            && member_state(svc.svc_id, a.backend_ip_be) == SVC_MEMBER_ACTIVE
        {
            ip_be = a.backend_ip_be;
        }
    }
    if ip_be == 0 {
        ip_be = maglev(svc, key, affinity)?;
    }
    if affinity {
        let a = AffinityEntry {
            last_seen_ns: now,
            backend_ip_be: ip_be,
            _pad: 0,
        };
        let _ = AFFINITY.insert(akey, a, 0);
    }
    let (ifindex, stats_slot) = match endpoint_by_ip(ip_be) {
        Some(ep) => (ep.ifindex, ep.stats_slot),
        None => (0, 0),
    };
    Some(Pick {
        ip_be,
        port_be: svc.target_port_be,
        ifindex,
        stats_slot,
    })
}

/// The Maglev table's backend for the flow.
#[inline(always)]
fn maglev(svc: &SvcEntry, key: &CtKey, affinity: bool) -> Option<u32> {
    let sport = if affinity { [0; 2] } else { key.src_port_be };
    let slot = flow_hash(key.src_ip_be, sport, key.dst_port_be, key.proto) % svc.size;
    let chunk = MaglevKey {
        table: svc.table,
        chunk: slot / MAGLEV_CHUNK,
        _pad: 0,
    };
    let p = MAGLEV.get_ptr(chunk)?;
    // SAFETY: a value pointer from this run's lookup, read at one index.
    let ip_be = unsafe { (*p).slots.get((slot % MAGLEV_CHUNK) as usize).copied()? };
    (ip_be != 0).then_some(ip_be)
}

fn member_state(svc_id: u32, ip_be: u32) -> u32 {
    // SAFETY: a value pointer from this run's lookup, copied at once.
    SVC_MEMBERS
        .get_ptr(MemberKey { svc_id, ip_be })
        .map_or(0, |p| unsafe { *p })
}

/// The flow hash Maglev slots are chosen by (murmur3's finaliser, seeded).
/// Userspace has a copy (`render::maglev::flow_slot`) for tests.
#[inline(always)]
pub fn flow_hash(src_ip_be: u32, sport: [u8; 2], dport: [u8; 2], proto: u8) -> u32 {
    let ports = u32::from(u16::from_be_bytes(sport)) | (u32::from(u16::from_be_bytes(dport)) << 16);
    let mut h = MAGLEV_FLOW_SEED ^ u32::from_be(src_ip_be);
    h = fmix(h) ^ ports;
    h = fmix(h) ^ u32::from(proto);
    fmix(h)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Counts a new connection to member `ip_be` of service `svc_id` (0: one
/// refused for want of a backend).
#[inline(always)]
pub fn count(svc_id: u32, ip_be: u32) {
    let key = MemberKey { svc_id, ip_be };
    match SVC_COUNTS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU hash, valid for the run.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = SVC_COUNTS.insert(key, 1, 0);
        }
    }
}

//! Connection tracking for masquerade: two `WEFT_CT` entries per connection
//! (see `weft_common::maps::CtEntry`), NAT port allocation, TCP state and
//! timeouts. Expired entries are treated as absent here; removing them is
//! userspace's garbage collection (until then an expired reply entry keeps
//! its NAT port taken, which is what makes a port claim race-free).

use aya_ebpf::bindings::BPF_NOEXIST;
use weft_common::maps::{
    CT_BUDGET_CLOSED, CT_BUDGET_CREATED, CT_BUDGET_FRESH_NS, CT_BUDGET_LIMIT, CT_BUDGET_MAX_CPUS,
    CT_BUDGET_REFRESHED, CT_BUDGET_REMOVED, CT_DEFAULT_LIMIT, CT_DIR_ORIGINAL, CT_DIR_REPLY,
    CT_FIN_ORIGINAL, CT_FIN_REPLY, CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_TCP_CLOSED,
    CT_TCP_ESTABLISHED, CT_TCP_FIN_WAIT, CT_TCP_NONE, CT_TCP_SYN_SENT, CtEntry, CtKey,
    EndpointInfo, IPPROTO_TCP, NAT_PORT_PROBES, NodeConfig, PublishTarget,
};

use super::{
    access::{now_ns, percpu_u64},
    maps::{CT, CT_BUDGET, CT_CLOSING, endpoint_by_ip},
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    verdict::Dropped,
};

const EEXIST: i32 = -17;

/// Whether one more connection fits the table's budget
/// (`weft_common::maps::MAP_CT_BUDGET`): always, unless a GC refreshed the
/// live estimate recently and it is at the limit. Only new connections
/// ask, so summing every CPU's count here costs the fast path nothing.
#[inline(always)]
fn within_budget(now: u64) -> bool {
    let slot = |i| CT_BUDGET.get(i).copied().unwrap_or(0);
    let refreshed = slot(CT_BUDGET_REFRESHED);
    if refreshed == 0 || now.saturating_sub(refreshed) > CT_BUDGET_FRESH_NS {
        return true;
    }
    let limit = match slot(CT_BUDGET_LIMIT) {
        0 => CT_DEFAULT_LIMIT,
        set => set,
    };
    let (mut created, mut closed) = (0u64, 0u64);
    // The verifier needs a bound: at most CT_BUDGET_MAX_CPUS CPUs.
    for cpu in 0..CT_BUDGET_MAX_CPUS {
        let (Some(c), Some(d)) = (
            percpu_u64(&CT_BUDGET, CT_BUDGET_CREATED, cpu),
            percpu_u64(&CT_BUDGET, CT_BUDGET_CLOSED, cpu),
        ) else {
            break;
        };
        created = created.wrapping_add(c);
        closed = closed.wrapping_add(d);
    }
    created
        .wrapping_sub(closed)
        .saturating_sub(slot(CT_BUDGET_REMOVED))
        < limit
}

/// Counts an event (`CT_BUDGET_CREATED` or `CT_BUDGET_CLOSED`) in this
/// CPU's copy of the budget.
#[inline(always)]
fn count(slot: u32) {
    if let Some(n) = CT_BUDGET.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array, valid for the program
        // run; BPF programs do not migrate between CPUs.
        unsafe { *n += 1 };
    }
}

/// Which table holds a connection's entries: `CT` while it is open,
/// `CT_CLOSING` once a TCP connection closed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Open,
    Closing,
}

/// The entry at `k` in `table` (a map is named at each call: the verifier
/// wants one known map per helper call).
#[inline(always)]
fn entry_ptr(table: Table, k: &CtKey) -> Option<*mut CtEntry> {
    match table {
        Table::Open => CT.get_ptr_mut(k),
        Table::Closing => CT_CLOSING.get_ptr_mut(k),
    }
}

/// The entry at `k`, open connections first, and the table it is in. A
/// closed connection counts only whole: the closing table is an LRU that
/// churn keeps full, and it evicts the two entries of a pair separately;
/// half a pair (say the inbound half of a published port's connection,
/// reopened by a client reusing its port) would translate one way only.
#[inline(always)]
fn find(k: &CtKey) -> Option<(Table, *mut CtEntry)> {
    if let Some(p) = CT.get_ptr_mut(k) {
        return Some((Table::Open, p));
    }
    let p = CT_CLOSING.get_ptr_mut(k)?;
    // SAFETY: as in `alive`: copied out at once.
    let entry = unsafe { *p };
    CT_CLOSING.get_ptr(k.partner(&entry))?;
    Some((Table::Closing, p))
}

/// Whether the connection is alive: this entry or its partner (in the same
/// table) was seen within its timeout (a one-way flow refreshes only one
/// of them).
#[inline(always)]
fn alive(table: Table, k: &CtKey, entry: &CtEntry, now: u64) -> bool {
    if entry.fresh(k.proto, now, u64::MAX) {
        return true;
    }
    // SAFETY: a successful lookup returns a pointer valid for this program
    // run; the value is copied out at once.
    match entry_ptr(table, &k.partner(entry)).map(|p| unsafe { *p }) {
        Some(partner) => partner.fresh(k.proto, now, u64::MAX),
        None => false,
    }
}

/// Moves both entries of a connection, with their new TCP state, into
/// `to` and out of the other table (its partner is looked up in `from`).
/// `entry` may be the map value itself: values are inserted straight from
/// map memory, never copied to the stack, which NAT's 512 bytes could not
/// spare.
#[inline(always)]
fn move_pair(k: &CtKey, entry: &CtEntry, from: Table, to: Table) {
    let partner_key = k.partner(entry);
    let moved = match to {
        Table::Open => CT.insert(k, entry, 0),
        Table::Closing => CT_CLOSING.insert(k, entry, 0),
    };
    if moved.is_err() {
        // Left where it was: still translated, just not moved.
        return;
    }
    if let Some(partner) = entry_ptr(from, &partner_key) {
        // SAFETY: a value pointer from this run's lookup: the state is
        // written in place and the value inserted straight from the map
        // (no copy on this frame's stack).
        unsafe {
            (*partner).tcp_state = entry.tcp_state;
            (*partner).fin_seen = entry.fin_seen;
            let _ = match to {
                Table::Open => CT.insert(partner_key, *partner, 0),
                Table::Closing => CT_CLOSING.insert(partner_key, *partner, 0),
            };
        }
    }
    let _ = match from {
        Table::Open => CT.remove(k).and(CT.remove(partner_key)),
        Table::Closing => CT_CLOSING.remove(k).and(CT_CLOSING.remove(partner_key)),
    };
}

/// The direction whose entry sees a connection's opening SYN: a published
/// port's connection opens from outside, its reply-direction entry (the
/// container-side entry is the original one); masqueraded and hairpin
/// ones from the container.
#[inline(always)]
fn initiator(entry: &CtEntry) -> u8 {
    if entry.flags & CT_FLAG_DNAT != 0 && entry.flags & CT_FLAG_HAIRPIN == 0 {
        CT_DIR_REPLY
    } else {
        CT_DIR_ORIGINAL
    }
}

/// The TCP state after a packet with `flags` in `direction`, on a
/// connection opened from `initiator`.
#[inline(always)]
fn tcp_next(state: u8, fin_seen: u8, flags: u8, direction: u8, initiator: u8) -> (u8, u8) {
    if flags & TCP_RST != 0 {
        return (CT_TCP_CLOSED, fin_seen);
    }
    if state == CT_TCP_CLOSED {
        // A new SYN on a closing tuple from the side that opens this kind
        // of connection starts a new one (a client reusing its port).
        if direction == initiator && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            return (CT_TCP_SYN_SENT, 0);
        }
        return (state, fin_seen);
    }
    if flags & TCP_FIN != 0 {
        let bit = if direction == CT_DIR_ORIGINAL {
            CT_FIN_ORIGINAL
        } else {
            CT_FIN_REPLY
        };
        let fins = fin_seen | bit;
        let next = if fins == CT_FIN_ORIGINAL | CT_FIN_REPLY {
            CT_TCP_CLOSED
        } else {
            CT_TCP_FIN_WAIT
        };
        return (next, fins);
    }
    if state == CT_TCP_SYN_SENT && direction == CT_DIR_REPLY {
        return (CT_TCP_ESTABLISHED, fin_seen);
    }
    (state, fin_seen)
}

/// Refreshes the entry at `k` (in `table`) for a packet of `len` bytes,
/// tracks TCP state (written to both entries when it changes; a closing
/// connection moves to `CT_CLOSING`, one a SYN reopens back) and returns
/// a copy.
#[inline(always)]
fn touch(k: &CtKey, table: Table, p: *mut CtEntry, tcp_flags: u8, now: u64, len: u32) -> CtEntry {
    // SAFETY: `p` is a map value pointer from a lookup in this program run.
    // Concurrent CPUs may race on the counters (plain adds, as per-CPU
    // counters cannot be used in a hash value); a lost increment is benign.
    let entry = unsafe { &mut *p };
    entry.last_seen_ns = now;
    if entry.direction == CT_DIR_ORIGINAL {
        entry.packets_orig += 1;
        entry.bytes_orig += u64::from(len);
    } else {
        entry.packets_reply += 1;
        entry.bytes_reply += u64::from(len);
    }
    if k.proto == IPPROTO_TCP {
        let (state, fins) = tcp_next(
            entry.tcp_state,
            entry.fin_seen,
            tcp_flags,
            entry.direction,
            initiator(entry),
        );
        if state != entry.tcp_state || fins != entry.fin_seen {
            let closes = state == CT_TCP_CLOSED && entry.tcp_state != CT_TCP_CLOSED;
            let reopens = entry.tcp_state == CT_TCP_CLOSED && state != CT_TCP_CLOSED;
            entry.tcp_state = state;
            entry.fin_seen = fins;
            let copy = *entry;
            if closes && table == Table::Open {
                count(CT_BUDGET_CLOSED);
                // Moved from the map value, removed last.
                move_pair(k, entry, Table::Open, Table::Closing);
                return copy;
            }
            if reopens {
                // A new SYN on a closed tuple: a connection again.
                count(CT_BUDGET_CREATED);
                if table == Table::Closing {
                    move_pair(k, entry, Table::Closing, Table::Open);
                    return copy;
                }
            }
            if let Some(partner) = entry_ptr(table, &k.partner(&copy)) {
                // SAFETY: as above, a value pointer from this run's lookup.
                unsafe {
                    (*partner).tcp_state = state;
                    (*partner).fin_seen = fins;
                }
            }
            return copy;
        }
    }
    *entry
}

/// The live entry at `k`, refreshed for this packet.
#[inline(always)]
pub fn hit(k: &CtKey, tcp_flags: u8, now: u64, len: u32) -> Option<CtEntry> {
    let (table, p) = find(k)?;
    // SAFETY: as in `alive`.
    let entry = unsafe { *p };
    if !alive(table, k, &entry, now) {
        return None;
    }
    Some(touch(k, table, p, tcp_flags, now, len))
}

/// The live connection `orig` from endpoint `src` through `node`, refreshed
/// for this packet: `None` if there is none (or the tuple now belongs to
/// another endpoint or node address, and must be created anew).
#[inline(always)]
pub fn established(
    orig: &CtKey,
    src: &EndpointInfo,
    node: &NodeConfig,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Option<CtEntry> {
    hit(orig, tcp_flags, now, len)
        .filter(|entry| entry.ifindex == src.ifindex && entry.xlate_ip_be == node.node_ip_be)
}

/// Remembers the FIB's next hop for connection `orig` (see
/// `CtEntry::next_hop_be`).
#[inline(always)]
pub fn remember_next_hop(orig: &CtKey, next_hop_be: u32) {
    if let Some(p) = CT.get_ptr_mut(orig) {
        // SAFETY: a value pointer from this run's lookup; a racing writer
        // can only store another valid next hop.
        unsafe { (*p).next_hop_be = next_hop_be.to_ne_bytes() };
    }
}

/// Creates both entries of connection `orig` and returns its NAT port.
#[inline(always)]
pub fn create(
    orig: &CtKey,
    src: &EndpointInfo,
    node: &NodeConfig,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Result<[u8; 2], Dropped> {
    if !within_budget(now) {
        return Err(drop_here!(ConntrackFull));
    }
    let (tcp_state, fin_seen) = if orig.proto == IPPROTO_TCP {
        let start = if tcp_flags & TCP_SYN != 0 {
            CT_TCP_SYN_SENT
        } else {
            // Picked up mid-stream (e.g. after an LRU eviction).
            CT_TCP_ESTABLISHED
        };
        tcp_next(
            start,
            0,
            tcp_flags & (TCP_RST | TCP_FIN),
            CT_DIR_ORIGINAL,
            CT_DIR_ORIGINAL,
        )
    } else {
        (CT_TCP_NONE, 0)
    };
    let reply = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        xlate_ip_be: orig.src_ip_be,
        xlate_port_be: orig.src_port_be,
        ifindex: src.ifindex,
        stats_slot: src.stats_slot,
        tcp_state,
        fin_seen,
        direction: CT_DIR_REPLY,
        ..CtEntry::default()
    };
    let nat_port = claim_port(orig, node, &reply)?;
    let original = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        packets_orig: 1,
        bytes_orig: u64::from(len),
        xlate_ip_be: node.node_ip_be,
        xlate_port_be: nat_port,
        ifindex: src.ifindex,
        stats_slot: src.stats_slot,
        tcp_state,
        fin_seen,
        direction: CT_DIR_ORIGINAL,
        ..CtEntry::default()
    };
    if CT.insert(orig, original, 0).is_err() {
        let _ = CT.remove(orig.reply(node.node_ip_be, nat_port));
        return Err(drop_here!(ConntrackFull));
    }
    count(CT_BUDGET_CREATED);
    Ok(nat_port)
}

/// The live entry at `k`, read without counting a packet (ICMP errors
/// about a connection are not part of it).
#[inline(always)]
pub fn peek(k: &CtKey, now: u64) -> Option<CtEntry> {
    let (table, p) = find(k)?;
    // SAFETY: as in `alive`.
    let entry = unsafe { *p };
    alive(table, k, &entry, now).then_some(entry)
}

/// The TCP state a connection starts in, made by a packet with `flags`.
#[inline(always)]
fn initial_tcp(proto: u8, flags: u8) -> (u8, u8) {
    if proto != IPPROTO_TCP {
        return (CT_TCP_NONE, 0);
    }
    if flags & TCP_RST != 0 {
        (CT_TCP_CLOSED, 0)
    } else if flags & TCP_SYN != 0 {
        (CT_TCP_SYN_SENT, 0)
    } else {
        // Picked up mid-stream (e.g. after an LRU eviction).
        (CT_TCP_ESTABLISHED, 0)
    }
}

/// Creates both entries of a connection made from outside to a published
/// port: `inbound` (outside -> node ip : published port) translates to
/// `target`'s address and port; its partner, keyed by the container's
/// reply tuple, translates back to the node's address and published port.
/// Returns the inbound entry. Either key may hold an expired entry (the
/// caller found no live one), so both are written unconditionally.
#[inline(always)]
pub fn create_dnat(
    inbound: &CtKey,
    target: &PublishTarget,
    dst: &EndpointInfo,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Result<CtEntry, Dropped> {
    if !within_budget(now) {
        return Err(drop_here!(ConntrackFull));
    }
    let (tcp_state, fin_seen) = initial_tcp(inbound.proto, tcp_flags);
    let entry = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        packets_reply: 1,
        bytes_reply: u64::from(len),
        xlate_ip_be: target.ip_be,
        xlate_port_be: target.port_be,
        ifindex: dst.ifindex,
        stats_slot: dst.stats_slot,
        tcp_state,
        fin_seen,
        direction: CT_DIR_REPLY,
        flags: CT_FLAG_DNAT,
        ..CtEntry::default()
    };
    let outbound_key = inbound.partner(&entry);
    let outbound = CtEntry {
        packets_reply: 0,
        bytes_reply: 0,
        xlate_ip_be: inbound.dst_ip_be,
        xlate_port_be: inbound.dst_port_be,
        direction: CT_DIR_ORIGINAL,
        ..entry
    };
    if CT.insert(outbound_key, outbound, 0).is_err() {
        return Err(drop_here!(ConntrackFull));
    }
    if CT.insert(inbound, entry, 0).is_err() {
        let _ = CT.remove(outbound_key);
        return Err(drop_here!(ConntrackFull));
    }
    count(CT_BUDGET_CREATED);
    Ok(entry)
}

/// Creates both entries of a hairpin connection: container `src` sent
/// `orig` (to the node's address and a published port) and reaches `dst`
/// at `target`, seeing the node's address as the peer both ways. The
/// source port towards the target is claimed like a NAT port. Returns the
/// entry at `orig`.
#[inline(always)]
pub fn create_hairpin(
    orig: &CtKey,
    src: &EndpointInfo,
    target: &PublishTarget,
    node: &NodeConfig,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Result<CtEntry, Dropped> {
    if !within_budget(now) {
        return Err(drop_here!(ConntrackFull));
    }
    let dst = endpoint_by_ip(target.ip_be).ok_or(drop_here!(PublishedEndpointMissing))?;
    let (tcp_state, fin_seen) = initial_tcp(orig.proto, tcp_flags);
    let back = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        xlate_ip_be: src.ip_be,
        xlate_port_be: orig.src_port_be,
        peer_port_be: orig.dst_port_be,
        ifindex: src.ifindex,
        stats_slot: src.stats_slot,
        tcp_state,
        fin_seen,
        direction: CT_DIR_REPLY,
        flags: CT_FLAG_DNAT | CT_FLAG_HAIRPIN,
        ..CtEntry::default()
    };
    // `claim_port` inserts at `towards.reply(node ip, port)`, which is
    // what `dst` sends back: dst -> node ip : port.
    let towards = CtKey::new(
        orig.proto,
        src.ip_be,
        target.ip_be,
        orig.src_port_be,
        target.port_be,
    );
    let port = claim_port(&towards, node, &back)?;
    let forth = CtEntry {
        packets_orig: 1,
        bytes_orig: u64::from(len),
        xlate_ip_be: target.ip_be,
        xlate_port_be: target.port_be,
        peer_port_be: port,
        ifindex: dst.ifindex,
        stats_slot: dst.stats_slot,
        direction: CT_DIR_ORIGINAL,
        ..back
    };
    if CT.insert(orig, forth, 0).is_err() {
        let _ = CT.remove(towards.reply(node.node_ip_be, port));
        return Err(drop_here!(ConntrackFull));
    }
    count(CT_BUDGET_CREATED);
    Ok(forth)
}

/// Claims a NAT port for `orig` by inserting its reply entry with
/// `BPF_NOEXIST`: the insert is atomic, so two CPUs never get the same
/// port for the same destination. The original port is kept when it is in
/// the range and free; otherwise up to `NAT_PORT_PROBES` ports of the
/// range are tried from an offset given by the flow's hash.
#[inline(always)]
fn claim_port(orig: &CtKey, node: &NodeConfig, reply: &CtEntry) -> Result<[u8; 2], Dropped> {
    if node.port_max < node.port_min {
        return Err(drop_here!(NatPortsExhausted));
    }
    let size = u32::from(node.port_max - node.port_min) + 1;
    let own = u16::from_be_bytes(orig.src_port_be);
    if (node.port_min..=node.port_max).contains(&own) && try_claim(orig, node, reply, own)? {
        return Ok(own.to_be_bytes());
    }
    let start = flow_hash(orig).checked_rem(size).unwrap_or(0);
    // The verifier needs a constant trip count: a fixed number of probes,
    // fewer when the range is smaller.
    for i in 0..NAT_PORT_PROBES {
        if i >= size {
            break;
        }
        let offset = start.wrapping_add(i).checked_rem(size).unwrap_or(0);
        let port = node.port_min.wrapping_add(offset as u16);
        if try_claim(orig, node, reply, port)? {
            return Ok(port.to_be_bytes());
        }
    }
    Err(drop_here!(NatPortsExhausted))
}

/// Whether the reply entry for `port` was inserted (`false`: taken).
#[inline(always)]
fn try_claim(orig: &CtKey, node: &NodeConfig, reply: &CtEntry, port: u16) -> Result<bool, Dropped> {
    let k = orig.reply(node.node_ip_be, port.to_be_bytes());
    // A closed connection keeps its port until it expires: the peer may
    // still hold the old connection (TIME_WAIT).
    // SAFETY: as in `alive`.
    if let Some(closed) = CT_CLOSING.get_ptr(k).map(|p| unsafe { *p })
        && alive(Table::Closing, &k, &closed, now_ns())
    {
        return Ok(false);
    }
    match CT.insert(k, reply, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(true),
        Err(EEXIST) => Ok(false),
        Err(_) => Err(drop_here!(ConntrackFull)),
    }
}

/// A well-mixed 32-bit hash of the tuple (murmur3's finaliser).
#[inline(always)]
fn flow_hash(k: &CtKey) -> u32 {
    let ports = u32::from(u16::from_ne_bytes(k.src_port_be))
        | (u32::from(u16::from_ne_bytes(k.dst_port_be)) << 16);
    let mut h = k.src_ip_be ^ k.dst_ip_be.rotate_left(16) ^ ports ^ u32::from(k.proto);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

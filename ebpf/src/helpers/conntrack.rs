//! Connection tracking for masquerade: two `WEFT_CT` entries per connection
//! (see `weft_common::maps::CtEntry`), NAT port allocation, TCP state and
//! timeouts. Expired entries are treated as absent here; removing them is
//! userspace's garbage collection (until then an expired reply entry keeps
//! its NAT port taken, which is what makes a port claim race-free).

use aya_ebpf::bindings::BPF_NOEXIST;
use weft_common::maps::{
    CT_BUDGET_CLOSED, CT_BUDGET_CREATED, CT_BUDGET_FRESH_NS, CT_BUDGET_LIMIT, CT_BUDGET_MAX_CPUS,
    CT_BUDGET_REFRESHED, CT_BUDGET_REMOVED, CT_DEFAULT_LIMIT, CT_DIR_ORIGINAL, CT_DIR_REPLY,
    CT_FIN_ORIGINAL, CT_FIN_REPLY, CT_FLAG_DNAT, CT_FLAG_HAIRPIN, CT_FLAG_SERVICE, CT_TCP_CLOSED,
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

/// The partner of `entry` (at `k` in `table`; its key is `pk`, that is
/// `k.partner(entry)`), if that entry names `k` back (`CtKey::pairs_with`):
/// a key a newer connection took belongs to that one, and pairing with it
/// would translate this connection with the other's ports.
#[inline(always)]
fn partner_at(table: Table, k: &CtKey, pk: &CtKey) -> Option<*mut CtEntry> {
    let p = entry_ptr(table, pk)?;
    // SAFETY: a successful lookup returns a pointer valid for this program
    // run; the value is read in place.
    pk.names(unsafe { &*p }, k).then_some(p)
}

/// [`partner_at`] for `entry`'s partner.
#[inline(always)]
fn partner_ptr(table: Table, k: &CtKey, entry: &CtEntry) -> Option<*mut CtEntry> {
    partner_at(table, k, &k.partner(entry))
}

/// The entry at `k`, open connections first, and the table it is in. A
/// closed connection counts only whole: the closing table is an LRU that
/// churn keeps full, and it evicts the two entries of a pair separately;
/// half a pair (say the inbound half of a published port's connection,
/// reopened by a client reusing its port, whose container-side key another
/// connection took since) would translate one way only, or with another
/// connection's ports.
#[inline(always)]
fn find(k: &CtKey) -> Option<(Table, *mut CtEntry)> {
    if let Some(p) = CT.get_ptr_mut(k) {
        return Some((Table::Open, p));
    }
    let p = CT_CLOSING.get_ptr_mut(k)?;
    // SAFETY: as in `partner_ptr`: read in place.
    partner_ptr(Table::Closing, k, unsafe { &*p })?;
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
    // SAFETY: as in `partner_ptr`: read in place.
    match partner_ptr(table, k, entry) {
        Some(p) => unsafe { (*p).fresh(k.proto, now, u64::MAX) },
        None => false,
    }
}

/// Moves both entries of a connection, with their new TCP state, into
/// `to` and out of the other table (its partner is looked up in `from`);
/// whether it moved. Back into the open table (a reopen) it moves only
/// where neither key holds an open connection now: a published port's
/// container-side key can be taken by another connection once this one
/// closed (see `Side::Container`). `entry` may be the map value itself:
/// values are inserted straight from map memory, never copied to the
/// stack, which NAT's 512 bytes could not spare.
#[inline(always)]
fn move_pair(k: &CtKey, entry: &CtEntry, from: Table, to: Table) -> bool {
    let partner_key = k.partner(entry);
    let partner = partner_at(from, k, &partner_key);
    let flags = if to == Table::Open {
        u64::from(BPF_NOEXIST)
    } else {
        0
    };
    let moved = match to {
        Table::Open => CT.insert(k, entry, flags),
        Table::Closing => CT_CLOSING.insert(k, entry, 0),
    };
    if moved.is_err() {
        // Left where it was: still translated, just not moved.
        return false;
    }
    if let Some(partner) = partner {
        // SAFETY: a value pointer from this run's lookup: the state is
        // written in place and the value inserted straight from the map
        // (no copy on this frame's stack).
        let put = unsafe {
            (*partner).tcp_state = entry.tcp_state;
            (*partner).fin_seen = entry.fin_seen;
            match to {
                Table::Open => CT.insert(partner_key, *partner, flags),
                Table::Closing => CT_CLOSING.insert(partner_key, *partner, 0),
            }
        };
        if put.is_err() && to == Table::Open {
            let _ = CT.remove(k);
            return false;
        }
        let _ = match from {
            Table::Open => CT.remove(partner_key),
            Table::Closing => CT_CLOSING.remove(partner_key),
        };
    }
    let _ = match from {
        Table::Open => CT.remove(k),
        Table::Closing => CT_CLOSING.remove(k),
    };
    true
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
/// a copy; `None` for a SYN on a closed connection that cannot reopen
/// because another connection holds one of its keys now (the caller
/// makes a new one).
#[inline(always)]
fn touch(
    k: &CtKey,
    table: Table,
    p: *mut CtEntry,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Option<CtEntry> {
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
            let (old_state, old_fins) = (entry.tcp_state, entry.fin_seen);
            entry.tcp_state = state;
            entry.fin_seen = fins;
            let copy = *entry;
            if closes && table == Table::Open {
                count(CT_BUDGET_CLOSED);
                // Moved from the map value, removed last.
                move_pair(k, entry, Table::Open, Table::Closing);
                return Some(copy);
            }
            if reopens && table == Table::Closing {
                if !move_pair(k, entry, Table::Closing, Table::Open) {
                    entry.tcp_state = old_state;
                    entry.fin_seen = old_fins;
                    return None;
                }
                // A new SYN on a closed tuple: a connection again.
                count(CT_BUDGET_CREATED);
                return Some(copy);
            }
            if reopens {
                count(CT_BUDGET_CREATED);
            }
            if let Some(partner) = partner_ptr(table, k, &copy) {
                // SAFETY: as above, a value pointer from this run's lookup.
                unsafe {
                    (*partner).tcp_state = state;
                    (*partner).fin_seen = fins;
                }
            }
            return Some(copy);
        }
    }
    Some(*entry)
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
    touch(k, table, p, tcp_flags, now, len)
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
    let mut entry = CtEntry {
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
    let nat_port = claim_port(orig, node, &entry)?;
    // The reply entry is in the map: the same stack slot becomes the
    // original one (two 72-byte values do not fit NAT's stack next to the
    // rest).
    entry.packets_orig = 1;
    entry.bytes_orig = u64::from(len);
    entry.xlate_ip_be = node.node_ip_be;
    entry.xlate_port_be = nat_port;
    entry.direction = CT_DIR_ORIGINAL;
    if CT.insert(orig, entry, 0).is_err() {
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
/// Returns the inbound entry. The inbound key may hold an expired entry
/// (the caller found no live one), so it is written unconditionally.
///
/// The container's tuple does not name the host port: a client that uses
/// one source port towards two host ports leading to one container port
/// (Linux shares an ephemeral port between connections to different
/// destinations) makes one tuple in the container for two connections.
/// So the container's side is claimed like a NAT port, the client's own
/// port first, and where another connection holds it the container sees
/// the client with a port of the NAT range instead (as the kernel's NAT
/// gives a clashing connection another source port); both entries keep
/// the client's port on the other side in `peer_port_be`.
#[inline(always)]
pub fn create_dnat(
    inbound: &CtKey,
    target: &PublishTarget,
    dst: &EndpointInfo,
    node: &NodeConfig,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Result<CtEntry, Dropped> {
    if !within_budget(now) {
        return Err(drop_here!(ConntrackFull));
    }
    let (tcp_state, fin_seen) = initial_tcp(inbound.proto, tcp_flags);
    let outbound = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        xlate_ip_be: inbound.dst_ip_be,
        xlate_port_be: inbound.dst_port_be,
        peer_port_be: inbound.src_port_be,
        ifindex: dst.ifindex,
        stats_slot: dst.stats_slot,
        tcp_state,
        fin_seen,
        direction: CT_DIR_ORIGINAL,
        flags: CT_FLAG_DNAT,
        ..CtEntry::default()
    };
    let container_side = |port: u16| {
        CtKey::new(
            inbound.proto,
            target.ip_be,
            inbound.src_ip_be,
            target.port_be,
            port.to_be_bytes(),
        )
    };
    let client_port = claim(
        container_side,
        u16::from_be_bytes(inbound.src_port_be),
        true,
        flow_hash(inbound),
        node,
        &outbound,
        Side::Container,
    )?;
    let entry = CtEntry {
        packets_reply: 1,
        bytes_reply: u64::from(len),
        xlate_ip_be: target.ip_be,
        xlate_port_be: target.port_be,
        peer_port_be: client_port,
        direction: CT_DIR_REPLY,
        ..outbound
    };
    if CT.insert(inbound, entry, 0).is_err() {
        let _ = CT.remove(container_side(u16::from_be_bytes(client_port)));
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

/// Where a new service connection goes: the backend Maglev (or affinity)
/// picked, its port, and its endpoint on this node (ifindex 0: on another
/// node, reached over the overlay).
pub struct Pick {
    pub ip_be: u32,
    pub port_be: [u8; 2],
    pub ifindex: u32,
    pub stats_slot: u32,
}

/// Creates both entries of a service connection `key` (client ->
/// VIP:port) from `client` to `backend`, and returns the client-side
/// entry. The client-side entry plays the part of a published port's
/// inbound one (direction reply, the side that opens), the backend-side
/// entry that of its container side, so `CtKey::partner`, TCP tracking
/// and GC treat them alike. A client that is its own backend (hairpin)
/// gets entries that also rewrite the source to the VIP, so it sees the
/// VIP as its peer both ways and can answer it. Either key may hold an
/// expired entry (the caller found no live one): both are written.
#[inline(always)]
pub fn create_service(
    key: &CtKey,
    client: &EndpointInfo,
    backend: &Pick,
    tcp_flags: u8,
    now: u64,
    len: u32,
) -> Result<CtEntry, Dropped> {
    if !within_budget(now) {
        return Err(drop_here!(ConntrackFull));
    }
    let hairpin = backend.ip_be == client.ip_be;
    let (tcp_state, fin_seen) = initial_tcp(key.proto, tcp_flags);
    let entry = CtEntry {
        last_seen_ns: now,
        created_ns: now,
        packets_reply: 1,
        bytes_reply: u64::from(len),
        xlate_ip_be: backend.ip_be,
        xlate_port_be: backend.port_be,
        peer_port_be: key.src_port_be,
        ifindex: backend.ifindex,
        stats_slot: backend.stats_slot,
        tcp_state,
        fin_seen,
        direction: CT_DIR_REPLY,
        flags: CT_FLAG_DNAT | CT_FLAG_SERVICE | if hairpin { CT_FLAG_HAIRPIN } else { 0 },
        ..CtEntry::default()
    };
    let back_key = key.partner(&entry);
    let back = CtEntry {
        packets_reply: 0,
        bytes_reply: 0,
        xlate_ip_be: if hairpin { client.ip_be } else { key.dst_ip_be },
        xlate_port_be: if hairpin {
            key.src_port_be
        } else {
            key.dst_port_be
        },
        // What `CtKey::partner` needs to name the client-side entry: the
        // client's port (a published port's entries record it the same
        // way), or for a hairpin the service port its source becomes.
        peer_port_be: if hairpin {
            key.dst_port_be
        } else {
            key.src_port_be
        },
        ifindex: client.ifindex,
        stats_slot: client.stats_slot,
        direction: CT_DIR_ORIGINAL,
        ..entry
    };
    claim_backend_side(&back_key, &back, key, now)?;
    if CT.insert(key, entry, 0).is_err() {
        let _ = CT.remove(back_key);
        return Err(drop_here!(ConntrackFull));
    }
    count(CT_BUDGET_CREATED);
    Ok(entry)
}

/// Writes a new service connection's backend-side entry `back` at
/// `back_key`, atomically (`BPF_NOEXIST`) unless what holds the key is
/// expired or this connection's own stale half. The key names neither
/// the VIP nor the service port, so one client port to two services
/// leading to one backend port makes the same key (Linux shares a source
/// port between different destinations): overwriting it would hand the
/// first, live connection's replies to the second. The second is refused
/// instead (`service_tuple_taken`; the backend would see both as one
/// 4-tuple anyway).
#[inline(always)]
fn claim_backend_side(
    back_key: &CtKey,
    back: &CtEntry,
    client_key: &CtKey,
    now: u64,
) -> Result<(), Dropped> {
    match CT.insert(back_key, back, u64::from(BPF_NOEXIST)) {
        Ok(()) => return Ok(()),
        Err(EEXIST) => {}
        Err(_) => return Err(drop_here!(ConntrackFull)),
    }
    if let Some(p) = entry_ptr(Table::Open, back_key) {
        // SAFETY: a value pointer from this run's lookup, read in place.
        let held = unsafe { &*p };
        if back_key.partner(held) != *client_key && alive(Table::Open, back_key, held, now) {
            return Err(drop_here!(ServiceTupleTaken));
        }
    }
    CT.insert(back_key, back, 0)
        .map_err(|_| drop_here!(ConntrackFull))
}

/// Claims a NAT port for `orig` by inserting its reply entry (see
/// [`claim`]); the original port is kept when it is in the range and free.
#[inline(always)]
fn claim_port(orig: &CtKey, node: &NodeConfig, reply: &CtEntry) -> Result<[u8; 2], Dropped> {
    claim(
        |port: u16| orig.reply(node.node_ip_be, port.to_be_bytes()),
        u16::from_be_bytes(orig.src_port_be),
        false,
        flow_hash(orig),
        node,
        reply,
        Side::Uplink,
    )
}

/// Which side of a connection a claimed key is on, which says how long a
/// closed connection holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The uplink's (a NAT port): until the closed connection expires, as
    /// the peer may still hold the old connection (TIME_WAIT).
    Uplink,
    /// A published port's container side: until the closed connection's
    /// last packet went into the container (the final ACK, an RST) at
    /// least [`CONTAINER_SIDE_GRACE_NS`] ago, after which the container
    /// holds nothing of it. Clients share a port between host ports all
    /// the time, so holding it for the whole closing timeout would move
    /// nearly every connection to another port.
    Container,
}

/// How long after a closed connection's last packet went into the
/// container its container-side tuple stays held: the final ACK and a new
/// SYN for the tuple can cross weft on two CPUs a microsecond apart and
/// reach the container in the other order, and a SYN that finds the old
/// socket still in LAST_ACK gets no answer (the bench saw exactly that).
/// Far above such reordering, far below the gaps between a client's
/// reuses of a port.
const CONTAINER_SIDE_GRACE_NS: u64 = 100_000_000;

/// Ports of the NAT range a published port's connection tries for the
/// container's side when the client's own port is taken there: that is
/// rare (a client port shared between host ports at the same moment), so a
/// few probes do, and fewer probes keep `weft_from_uplink` quick to
/// verify.
const CONTAINER_SIDE_PROBES: u32 = 8;

/// Claims the key `key_for(port)` for a new connection by inserting
/// `value` there with `BPF_NOEXIST`: the insert is atomic, so two CPUs
/// never get the same key. Port `own` is tried first (only inside the NAT
/// range unless `own_anywhere`); then up to `NAT_PORT_PROBES` ports of the
/// range (`CONTAINER_SIDE_PROBES` on the container's side) from an offset
/// given by `hash`. Returns the port.
#[inline(always)]
fn claim(
    key_for: impl Fn(u16) -> CtKey,
    own: u16,
    own_anywhere: bool,
    hash: u32,
    node: &NodeConfig,
    value: &CtEntry,
    side: Side,
) -> Result<[u8; 2], Dropped> {
    let in_range = node.port_min <= own && own <= node.port_max;
    if (own_anywhere || in_range) && try_claim(&key_for(own), value, side)? {
        return Ok(own.to_be_bytes());
    }
    if node.port_max < node.port_min {
        return Err(drop_here!(NatPortsExhausted));
    }
    let size = u32::from(node.port_max - node.port_min) + 1;
    let start = hash.checked_rem(size).unwrap_or(0);
    let probes = match side {
        Side::Uplink => NAT_PORT_PROBES,
        Side::Container => CONTAINER_SIDE_PROBES,
    };
    // The verifier needs a constant trip count: a fixed number of probes,
    // fewer when the range is smaller.
    for i in 0..probes {
        if i >= size {
            break;
        }
        let offset = start.wrapping_add(i).checked_rem(size).unwrap_or(0);
        let port = node.port_min.wrapping_add(offset as u16);
        if try_claim(&key_for(port), value, side)? {
            return Ok(port.to_be_bytes());
        }
    }
    Err(drop_here!(NatPortsExhausted))
}

/// Whether `value` was inserted at `k` (`false`: taken).
#[inline(always)]
fn try_claim(k: &CtKey, value: &CtEntry, side: Side) -> Result<bool, Dropped> {
    if closing_holds(k, side, now_ns()) {
        return Ok(false);
    }
    match CT.insert(k, value, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(true),
        Err(EEXIST) => Ok(false),
        Err(_) => Err(drop_here!(ConntrackFull)),
    }
}

/// Whether a closed connection in `CT_CLOSING` still holds key `k` on
/// `side` (see [`Side`]). It runs in the probe loop, where every lookup
/// and branch costs verification time (`weft_nat_egress` verifies some
/// 800,000 instructions of the kernel's 1,000,000): the partner is looked
/// up once.
#[inline(always)]
fn closing_holds(k: &CtKey, side: Side, now: u64) -> bool {
    let Some(p) = CT_CLOSING.get_ptr_mut(k) else {
        return false;
    };
    // SAFETY: as in `partner_ptr`: read in place.
    let closed = unsafe { &*p };
    if side == Side::Uplink {
        // Held while either entry is fresh; a partner key another
        // connection took can only hold the port longer, so it is not
        // checked here, in the probe loop, where every check costs
        // verification time.
        return closed.fresh(k.proto, now, u64::MAX)
            // SAFETY: as in `partner_ptr`.
            || entry_ptr(Table::Closing, &k.partner(closed))
                .is_some_and(|q| unsafe { (*q).fresh(k.proto, now, u64::MAX) });
    }
    let Some(partner) = partner_ptr(Table::Closing, k, closed) else {
        // Half a pair: held while it is fresh itself.
        return closed.fresh(k.proto, now, u64::MAX);
    };
    // SAFETY: as in `partner_ptr`.
    let other = unsafe { &*partner };
    if !closed.fresh(k.proto, now, u64::MAX) && !other.fresh(k.proto, now, u64::MAX) {
        return false;
    }
    other.last_seen_ns <= closed.last_seen_ns
        || now.saturating_sub(other.last_seen_ns) < CONTAINER_SIDE_GRACE_NS
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

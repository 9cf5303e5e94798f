//! Helpers by concern, used by the entry programs in `programs`. Each
//! module has one job; they never import a program, and import each other
//! only downward through these layers (no cycles):
//!
//! 1. `access` (the only raw packet, context and helper-call accesses,
//!    bounds-checked), `csum` (checksum arithmetic), `direction`, `maps`;
//! 2. `parse` (offsets, the IPv4 and VXLAN checks), `events` (drop and
//!    trace events), `tail` (tail calls and what they hand over), `dns`
//!    (queries to a gateway nobody serves);
//! 3. `verdict` (drops and counters);
//! 4. `deliver` (where a packet leaves for), `ipv4` (IPv4 headers
//!    rewritten as a router does, or originated), `conntrack`;
//! 5. `unreachable` (ICMP unreachable sent back), `tcp_reset` (TCP
//!    resets sent back), then `mtu` (the
//!    overlay's MTU), `icmp_error` (errors about translated connections),
//!    `maglev` (backend picks for new service connections);
//! 6. `arp`, `forward` (bridging, routing, flooding), `nat` (masquerade and
//!    published ports), `service_reply` (a remote service backend's
//!    replies, on `nat`'s rewrites), `encap` and `decap` (the VXLAN
//!    overlay);
//! 7. `service` (load balancing, on `nat`'s L4 rewrites).

pub mod access;
pub mod arp;
pub mod conntrack;
pub mod csum;
pub mod decap;
pub mod deliver;
pub mod direction;
pub mod dns;
pub mod encap;
pub mod events;
pub mod forward;
pub mod icmp_error;
pub mod ipv4;
pub mod maglev;
pub mod maps;
pub mod mtu;
pub mod nat;
pub mod parse;
pub mod service;
pub mod service_reply;
pub mod tail;
pub mod tcp_reset;
pub mod unreachable;
pub mod verdict;

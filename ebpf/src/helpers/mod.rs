//! Helpers by concern, used by the entry programs in `programs`. Each
//! module has one job; they import only each other, never a program.

pub mod access;
pub mod arp;
pub mod conntrack;
pub mod csum;
pub mod decap;
pub mod deliver;
pub mod direction;
pub mod encap;
pub mod events;
pub mod forward;
pub mod icmp_error;
pub mod ipv4;
pub mod maps;
pub mod mtu;
pub mod nat;
pub mod parse;
pub mod tail;
pub mod verdict;

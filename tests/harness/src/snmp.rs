//! IPv4 counters of a namespace's own stack (`/proc/net/snmp`): whether a
//! path fragmented or reassembled anything on the way.

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;

/// IPv4 fragments created by `ns`'s stack so far (`Ip: FragCreates` in
/// /proc/net/snmp): a path that fragments on the way makes it grow.
pub fn frag_creates(ns: &NetNs) -> Result<u64> {
    snmp_ip(ns, "FragCreates")
}

/// Fragments `ns`'s stack had to reassemble (`Ip: ReasmReqds`).
pub fn reassembly_requests(ns: &NetNs) -> Result<u64> {
    snmp_ip(ns, "ReasmReqds")
}

fn snmp_ip(ns: &NetNs, field: &str) -> Result<u64> {
    let out = ns.exec(&["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip_lines = text.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (ip_lines.next(), ip_lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Ip lines in /proc/net/snmp of {}", ns.name());
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == field)
        .with_context(|| format!("no Ip {field} in /proc/net/snmp"))?
        .1
        .parse()
        .with_context(|| format!("Ip {field} is not a number"))
}

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

/// ICMP destination unreachables `ns`'s stack received (`Icmp:
/// InDestUnreachs`): tells an ICMP refusal from a TCP reset.
pub fn icmp_dest_unreachs_in(ns: &NetNs) -> Result<u64> {
    snmp(ns, "Icmp", "InDestUnreachs")
}

fn snmp_ip(ns: &NetNs, field: &str) -> Result<u64> {
    snmp(ns, "Ip", field)
}

fn snmp(ns: &NetNs, section: &str, field: &str) -> Result<u64> {
    let out = ns.exec(&["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{section}: ");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next(), lines.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no {section} lines in /proc/net/snmp of {}", ns.name());
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == field)
        .with_context(|| format!("no {section} {field} in /proc/net/snmp"))?
        .1
        .parse()
        .with_context(|| format!("{section} {field} is not a number"))
}

//! The node namespace's sysctls weft reads and sets. `/proc/sys/net`
//! resolves against the namespace of the thread that opens it, so these
//! read and write the node's (weft runs in the node namespace).

use std::fs;

use crate::error::{Error, Result};

/// Masquerade's egress asks `bpf_fib_lookup`, which answers
/// `BPF_FIB_LKUP_RET_FWD_DISABLED` unless the container veth forwards;
/// writing `all` sets every interface and the default for new ones
/// (`devinet_sysctl_forward`).
pub const FORWARDING: &str = "/proc/sys/net/ipv4/conf/all/forwarding";
/// The node's ephemeral ports, which the NAT range must not overlap.
pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

pub fn read(path: &str) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io(format!("cannot read {path}"), e))
}

pub fn write(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::io(format!("cannot write {path}"), e))
}

/// The node namespace's ephemeral port range.
pub fn local_port_range() -> Result<(u16, u16)> {
    let text = read(LOCAL_PORT_RANGE)?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => Err(Error::Invalid(format!(
            "cannot parse {LOCAL_PORT_RANGE}: '{text}'"
        ))),
    }
}

//! Names users give (networks, endpoints, interfaces) and names weft derives.

use crate::error::{Error, Result};

/// Name of the collect-metadata vxlan device weft creates in tunnel mode.
pub const VXLAN_IFNAME: &str = "weft-vxlan";

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Checks a network or endpoint name: 1-32 of `[A-Za-z0-9_.-]`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {kind} name '{name}': use 1 to 32 characters from A-Z a-z 0-9 _ . -"
        )))
    }
}

/// Checks an interface name the kernel will accept.
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid interface name '{name}': use 1 to {MAX_IFNAME} printable characters \
             without '/', ':' or spaces"
        )))
    }
}

/// The host-side veth name of endpoint `name`: `wf` + 8 hex digits of a
/// stable hash, so it fits IFNAMSIZ whatever the endpoint is called.
pub fn host_ifname(endpoint: &str) -> String {
    format!("wf{:08x}", fnv1a(endpoint.as_bytes()))
}

/// FNV-1a, 32 bit: tiny and stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("network", "a-b_c.1").is_ok());
        assert!(validate_name("network", "").is_err());
        assert!(validate_name("network", "a b").is_err());
        assert!(validate_name("network", &"x".repeat(33)).is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("this-is-too-long0").is_err());
        let h = host_ifname("c1");
        assert_eq!(h.len(), 10);
        assert!(h.starts_with("wf"));
        assert_eq!(h, host_ifname("c1"));
        assert_ne!(h, host_ifname("c2"));
    }
}

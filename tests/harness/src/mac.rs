//! MAC addresses as `ip`, `bridge` and `weft` print and take them.

use anyhow::{Context, Result, bail};

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().with_context(|| format!("short MAC {text}"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {text}"))?;
    }
    if parts.next().is_some() {
        bail!("long MAC {text}");
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mac = [0x02, 0x6b, 0x76, 0, 0, 0x0a];
        assert_eq!(mac_string(mac), "02:6b:76:00:00:0a");
        assert_eq!(parse_mac("02:6b:76:00:00:0a").unwrap(), mac);
        assert!(parse_mac("02:6b:76:00:00").is_err());
        assert!(parse_mac("02:6b:76:00:00:0a:0b").is_err());
    }
}

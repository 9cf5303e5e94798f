//! MAC addresses weft assigns.
//!
//! All kinds are derived, never random, so they can be recomputed from state
//! and are stable across restarts. All are locally administered unicast
//! (second-lowest bit of the first octet set, lowest clear).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet address, printed as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// The gateway MAC of network `id`: `0a:57:46:00:` + id big-endian
    /// ("WF"). Unique per network; ids stay below 2^16.
    pub fn gateway(id: u32) -> Self {
        let [_, _, hi, lo] = id.to_be_bytes();
        Mac([0x0a, 0x57, 0x46, 0x00, hi, lo])
    }

    /// A weft node's default VTEP MAC: `0a:56:` + its underlay IPv4 octets.
    pub fn vtep(underlay_ip: std::net::Ipv4Addr) -> Self {
        let [a, b, c, d] = underlay_ip.octets();
        Mac([0x0a, 0x56, a, b, c, d])
    }

    /// A container's MAC: `02:57:` + its IPv4 octets, unique as its address.
    pub fn container(ip: std::net::Ipv4Addr) -> Self {
        let [a, b, c, d] = ip.octets();
        Mac([0x02, 0x57, a, b, c, d])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| format!("invalid MAC '{s}'"))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("invalid MAC '{s}'"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC '{s}'"));
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs() {
        assert_eq!(Mac::gateway(1).to_string(), "0a:57:46:00:00:01");
        assert_eq!(Mac::gateway(0x1234).to_string(), "0a:57:46:00:12:34");
        assert_eq!(
            Mac::container("10.1.0.2".parse().unwrap()).to_string(),
            "02:57:0a:01:00:02"
        );
        let m: Mac = "02:57:0a:01:00:02".parse().unwrap();
        assert_eq!(m, Mac([2, 0x57, 10, 1, 0, 2]));
        assert!("02:57".parse::<Mac>().is_err());
    }
}

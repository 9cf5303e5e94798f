//! IPv4 address management inside one weft network.
//!
//! A network's usable hosts are its subnet minus the network address, the
//! broadcast address and the gateway; endpoints get the lowest free one.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

/// Largest prefix weft accepts: a /31 or /32 leaves no room for a gateway
/// and an endpoint.
pub const MAX_PREFIX: u8 = 30;

/// Parses a subnet given by the user: an IPv4 network with zero host bits and
/// prefix <= 30.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        Error::Invalid(format!(
            "invalid subnet '{s}': expected an IPv4 network in CIDR form such as 10.1.0.0/24"
        ))
    })?;
    if net.prefix_len() > MAX_PREFIX {
        return Err(Error::Invalid(format!(
            "subnet '{s}' is too small: the prefix must be /{MAX_PREFIX} or shorter to hold a \
             gateway and endpoints"
        )));
    }
    if net.addr() != net.network() {
        return Err(Error::Invalid(format!(
            "subnet '{s}' has host bits set: did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Whether `ip` is a usable host address of `subnet` (not network/broadcast).
pub fn is_host(subnet: &Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// The default gateway of `subnet`: its first host address.
pub fn default_gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Checks a gateway given by the user.
pub fn check_gateway(subnet: &Ipv4Net, gateway: Ipv4Addr) -> Result<()> {
    if is_host(subnet, gateway) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "gateway {gateway} is not a host address of {subnet}: pick one inside the subnet, \
             other than the network and broadcast addresses"
        )))
    }
}

/// Checks an endpoint address requested by the user.
pub fn check_requested(
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    ip: Ipv4Addr,
    in_use: impl Fn(Ipv4Addr) -> Option<String>,
) -> Result<()> {
    if !subnet.contains(&ip) {
        return Err(Error::Invalid(format!(
            "address {ip} is outside the network's subnet {subnet}"
        )));
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        return Err(Error::Invalid(format!(
            "address {ip} is the network or broadcast address of {subnet}; pick a host address"
        )));
    }
    if ip == gateway {
        return Err(Error::Invalid(format!(
            "address {ip} is the network's gateway; pick another address or omit --ip"
        )));
    }
    if let Some(owner) = in_use(ip) {
        return Err(Error::Conflict(format!(
            "address {ip} is already used by endpoint '{owner}'; pick another or omit --ip"
        )));
    }
    Ok(())
}

/// The lowest free host address of `subnet`.
pub fn allocate(
    subnet: &Ipv4Net,
    gateway: Ipv4Addr,
    in_use: impl Fn(Ipv4Addr) -> bool,
) -> Result<Ipv4Addr> {
    subnet
        .hosts()
        .find(|ip| *ip != gateway && !in_use(*ip))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "network {subnet} has no free addresses left; remove an endpoint or use a \
                 larger subnet"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        assert!(parse_subnet("10.1.0.0/24").is_ok());
        assert!(parse_subnet("10.1.0.5/24").is_err());
        assert!(parse_subnet("10.1.0.0/33").is_err());
        assert!(parse_subnet("10.1.0.0/31").is_err());
        assert!(parse_subnet("banana").is_err());
        let net = parse_subnet("10.1.0.0/24").unwrap();
        assert_eq!(default_gateway(&net), Ipv4Addr::new(10, 1, 0, 1));
        assert!(check_gateway(&net, Ipv4Addr::new(10, 1, 0, 255)).is_err());
        assert!(check_gateway(&net, Ipv4Addr::new(10, 1, 0, 254)).is_ok());
        let gw = Ipv4Addr::new(10, 1, 0, 1);
        let used = [Ipv4Addr::new(10, 1, 0, 2)];
        assert_eq!(
            allocate(&net, gw, |ip| used.contains(&ip)).unwrap(),
            Ipv4Addr::new(10, 1, 0, 3)
        );
        let tiny = parse_subnet("10.9.0.0/30").unwrap();
        let gw = default_gateway(&tiny);
        assert_eq!(
            allocate(&tiny, gw, |_| false).unwrap(),
            Ipv4Addr::new(10, 9, 0, 2)
        );
        assert!(allocate(&tiny, gw, |ip| ip == Ipv4Addr::new(10, 9, 0, 2)).is_err());
    }
}

//! `weft publish|unpublish`: port publishing (DNAT). Traffic from outside
//! to the node's address and a published port reaches a container's port;
//! so does a container's traffic to the node's address (hairpin).
//!
//! A publication is one `WEFT_PUBLISH` entry (protocol and host port to
//! the container's address and port) plus its record in `state.json`,
//! which keeps it across agent restarts and lets `endpoint rm` remove it.
//! The datapath only sees packets to the node's uplink address, so the
//! host address, when given, must be that one. A host port may lie in the
//! NAT port range: masquerade claims a port per destination with an
//! atomic insert, so it never takes over a live connection to a published
//! port, and a live masqueraded connection keeps its replies.

use std::{fmt, net::Ipv4Addr};

use aya::maps::{HashMap, MapData};
use serde::{Deserialize, Serialize};
use weft_common::maps::{IPPROTO_TCP, IPPROTO_UDP, MAP_PUBLISH, PublishKey, PublishTarget};

use crate::{
    datapath::{Datapath, absent_ok, ip_be, open_pinned},
    error::{Error, Result},
    output::Render,
    paths::Paths,
    state::{self, Locked, Publication, State},
};

/// A parsed `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    /// `None` in an unpublish spec that names only the host side.
    pub container_port: Option<u16>,
    pub proto: Proto,
}

/// The protocols a port can be published for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

const SPEC_HELP: &str = "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80 or \
                         192.0.2.10:5353:53/udp";

fn port(text: &str, spec: &str, what: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::Invalid(format!(
            "invalid {what} '{text}' in '{spec}': use 1-65535 ({SPEC_HELP})"
        ))),
    }
}

/// Parses a publish spec; `host_only` also accepts `[HOST_IP:]HOST_PORT[/proto]`
/// (what `unpublish` needs to find a publication).
pub fn parse_spec(spec: &str, host_only: bool) -> Result<Spec> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some((_, other)) => {
            return Err(Error::Invalid(format!(
                "invalid protocol '{other}' in '{spec}': use tcp or udp"
            )));
        }
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [h, c] => (None, *h, Some(*c)),
        [ip, h, c] => (Some(*ip), *h, Some(*c)),
        [h] if host_only => (None, *h, None),
        _ => {
            return Err(Error::Invalid(format!(
                "invalid spec '{spec}': {SPEC_HELP}"
            )));
        }
    };
    let host_ip = ip
        .map(|ip| {
            ip.parse::<Ipv4Addr>().map_err(|_| {
                Error::Invalid(format!(
                    "invalid host address '{ip}' in '{spec}': {SPEC_HELP}"
                ))
            })
        })
        .transpose()?;
    Ok(Spec {
        host_ip,
        host_port: port(host, spec, "host port")?,
        container_port: container
            .map(|c| port(c, spec, "container port"))
            .transpose()?,
        proto,
    })
}

/// One published port, as `publish ls -o json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishView {
    pub endpoint: String,
    pub proto: Proto,
    /// The node's address (the uplink's), when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

fn view(st: &State, p: &Publication) -> PublishView {
    PublishView {
        endpoint: p.endpoint.clone(),
        proto: p.proto,
        host_ip: st.node.as_ref().map(|n| n.ip),
        host_port: p.host_port,
        container_ip: st
            .endpoint(&p.endpoint)
            .map_or(Ipv4Addr::UNSPECIFIED, |e| e.ip),
        container_port: p.container_port,
    }
}

impl Render for PublishView {
    fn table(&self) -> String {
        format!(
            "published {}:{}/{} -> endpoint {} ({}:{})\n",
            self.host_ip.map_or("*".to_owned(), |ip| ip.to_string()),
            self.host_port,
            self.proto,
            self.endpoint,
            self.container_ip,
            self.container_port
        )
    }
}

impl Render for Vec<PublishView> {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .iter()
            .map(|p| {
                vec![
                    p.endpoint.clone(),
                    p.proto.to_string(),
                    format!(
                        "{}:{}",
                        p.host_ip.map_or("*".to_owned(), |ip| ip.to_string()),
                        p.host_port
                    ),
                    format!("{}:{}", p.container_ip, p.container_port),
                ]
            })
            .collect();
        crate::output::table(&["ENDPOINT", "PROTO", "HOST", "CONTAINER"], &rows)
    }
}

/// The map key and value of publication `p` of endpoint address `ip`.
pub fn entry(p: &Publication, ip: Ipv4Addr) -> (PublishKey, PublishTarget) {
    (
        PublishKey {
            port_be: p.host_port.to_be_bytes(),
            proto: p.proto.number(),
            _pad: 0,
        },
        PublishTarget {
            ip_be: ip_be(ip),
            port_be: p.container_port.to_be_bytes(),
            _pad: [0; 2],
        },
    )
}

/// The pinned `WEFT_PUBLISH` alone: a publication changes one entry, and
/// loading the whole object for it would make 10,000 publications take
/// minutes. Until the map is pinned, the datapath is loaded (creating it).
struct PublishMap(HashMap<MapData, PublishKey, PublishTarget>);

impl PublishMap {
    fn open(paths: &Paths) -> Result<Self> {
        let map = match open_pinned(paths, MAP_PUBLISH)? {
            Some(map) => map,
            None => {
                Datapath::open(paths)?;
                open_pinned(paths, MAP_PUBLISH)?.ok_or_else(|| {
                    Error::Invalid(format!(
                        "loading the datapath did not pin {MAP_PUBLISH}; this weft build is broken"
                    ))
                })?
            }
        };
        HashMap::try_from(map)
            .map(Self)
            .map_err(|e| Error::map(format!("map {MAP_PUBLISH} has an unexpected type"), e))
    }

    fn put(&mut self, key: PublishKey, target: PublishTarget) -> Result<()> {
        self.0
            .insert(key, target, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_PUBLISH}"), e))
    }

    fn del(&mut self, key: PublishKey) -> Result<()> {
        absent_ok(self.0.remove(&key))
            .map_err(|e| Error::map(format!("cannot remove from {MAP_PUBLISH}"), e))
    }
}

/// Publishes `spec` to endpoint `endpoint`. Refused, changing nothing,
/// when the protocol and host port are already published.
pub fn publish(paths: &Paths, endpoint: &str, spec: &str) -> Result<PublishView> {
    let spec = parse_spec(spec, false)?;
    let mut locked = Locked::acquire(paths)?;
    let st = &locked.state;
    let ep = st.endpoint(endpoint).cloned().ok_or_else(|| {
        Error::NotFound(format!(
            "endpoint '{endpoint}' does not exist (see `weft endpoint ls`)"
        ))
    })?;
    let node = st.node.as_ref().ok_or_else(|| {
        Error::Invalid(
            "publishing needs the node's uplink, whose address the port is published on: \
             run `weft node set --uplink IF --ip IP` first"
                .into(),
        )
    })?;
    if let Some(ip) = spec.host_ip
        && ip != node.ip
    {
        return Err(Error::Invalid(format!(
            "{ip} is not the node's address {}: ports are published on the uplink's address \
             (leave HOST_IP out, or give {})",
            node.ip, node.ip
        )));
    }
    if let Some(other) = st
        .publications
        .iter()
        .find(|p| p.proto == spec.proto && p.host_port == spec.host_port)
    {
        return Err(Error::Conflict(format!(
            "port {}/{} is already published to endpoint '{}' port {}; unpublish it first \
             (`weft unpublish {}/{}`)",
            spec.host_port,
            spec.proto,
            other.endpoint,
            other.container_port,
            spec.host_port,
            spec.proto
        )));
    }
    let publication = Publication {
        endpoint: ep.name.clone(),
        proto: spec.proto,
        host_port: spec.host_port,
        container_port: spec.container_port.unwrap_or(spec.host_port),
    };
    let mut new = locked.state.clone();
    new.publications.push(publication.clone());

    let mut map = PublishMap::open(paths)?;
    let (key, target) = entry(&publication, ep.ip);
    map.put(key, target)?;
    if let Err(e) = locked.commit(new) {
        if let Err(u) = map.del(key) {
            log::warn!("rollback of publish: {}", crate::error::chain(&u));
        }
        return Err(e);
    }
    Ok(view(&locked.state, &publication))
}

/// Removes the publication of `spec`'s protocol and host port; with
/// `endpoint`, only if it is that endpoint's.
pub fn unpublish(paths: &Paths, endpoint: Option<&str>, spec: &str) -> Result<PublishView> {
    let spec = parse_spec(spec, true)?;
    let mut locked = Locked::acquire(paths)?;
    let found = locked
        .state
        .publications
        .iter()
        .find(|p| p.proto == spec.proto && p.host_port == spec.host_port)
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "port {}/{} is not published (see `weft publish ls`)",
                spec.host_port, spec.proto
            ))
        })?;
    if let Some(name) = endpoint
        && name != found.endpoint
    {
        return Err(Error::NotFound(format!(
            "port {}/{} is published to endpoint '{}', not '{name}'",
            spec.host_port, spec.proto, found.endpoint
        )));
    }
    if let Some(c) = spec.container_port
        && c != found.container_port
    {
        return Err(Error::NotFound(format!(
            "port {}/{} leads to container port {}, not {c}",
            spec.host_port, spec.proto, found.container_port
        )));
    }
    let shown = view(&locked.state, &found);
    let mut new = locked.state.clone();
    new.publications.retain(|p| p != &found);
    let mut map = PublishMap::open(paths)?;
    let ip = locked
        .state
        .endpoint(&found.endpoint)
        .map_or(Ipv4Addr::UNSPECIFIED, |e| e.ip);
    let (key, target) = entry(&found, ip);
    map.del(key)?;
    if let Err(e) = locked.commit(new) {
        if let Err(u) = map.put(key, target) {
            log::warn!("rollback of unpublish: {}", crate::error::chain(&u));
        }
        return Err(e);
    }
    Ok(shown)
}

/// Every published port, from saved state.
pub fn list(paths: &Paths) -> Result<Vec<PublishView>> {
    let st = state::read(paths)?;
    Ok(st.publications.iter().map(|p| view(&st, p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = parse_spec("8080:80", false).unwrap();
        assert_eq!(
            (s.host_ip, s.host_port, s.container_port, s.proto),
            (None, 8080, Some(80), Proto::Tcp)
        );
        let s = parse_spec("10.0.0.1:53:5353/udp", false).unwrap();
        assert_eq!(
            (s.host_ip, s.host_port, s.container_port, s.proto),
            (Some(Ipv4Addr::new(10, 0, 0, 1)), 53, Some(5353), Proto::Udp)
        );
        assert_eq!(parse_spec("8080/udp", true).unwrap().container_port, None);
        for bad in [
            "",
            "80",
            "0:80",
            "80:0",
            "80:70000",
            "a:b",
            "80:80/sctp",
            "x:80:80",
            "1:2:3:4",
        ] {
            assert!(parse_spec(bad, false).is_err(), "{bad}");
        }
    }
}

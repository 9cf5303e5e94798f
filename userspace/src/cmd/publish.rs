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

use std::{collections::HashMap as StdHashMap, fmt, net::Ipv4Addr};

use aya::maps::{HashMap, MapData};
use serde::{Deserialize, Serialize};
use weft_common::maps::{IPPROTO_TCP, IPPROTO_UDP, MAP_PUBLISH, PublishKey, PublishTarget};

use crate::{
    cmd::node::NodeFlags,
    datapath::{Datapath, absent_ok, ip_be, open_pinned},
    error::{Error, Result},
    output::Render,
    paths::Paths,
    state::{self, Locked, Publication, State},
};

/// A parsed `[HOST_IP:]HOST_PORT[-LAST]:CONTAINER_PORT[-LAST][/tcp|udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub host_ip: Option<Ipv4Addr>,
    /// Host ports, inclusive (one port: both the same).
    pub host: (u16, u16),
    /// Container ports, inclusive: as many as host ports, or one for all
    /// of them. `None` in an unpublish spec that names only the host side.
    pub container: Option<(u16, u16)>,
    pub proto: Proto,
}

impl Spec {
    /// The publications this spec makes for `endpoint`, in host port order.
    pub fn publications(&self, endpoint: &str) -> Vec<Publication> {
        (self.host.0..=self.host.1)
            .map(|host_port| Publication {
                endpoint: endpoint.to_owned(),
                proto: self.proto,
                host_port,
                container_port: self.container_port(host_port),
            })
            .collect()
    }

    /// The container port `host_port` leads to (itself without a container
    /// side).
    fn container_port(&self, host_port: u16) -> u16 {
        match self.container {
            Some((c, last)) if c == last => c,
            Some((c, _)) => c + (host_port - self.host.0),
            None => host_port,
        }
    }
}

/// The protocols a port can be published for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

const SPEC_HELP: &str = "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80, \
                         192.0.2.10:5353:53/udp, or ranges 8000-8009:9000-9009 (or \
                         8000-8009:80: every host port to one container port)";

/// `PORT` or `FIRST-LAST`, each 1-65535, FIRST <= LAST.
fn port_range(text: &str, spec: &str, what: &str) -> Result<(u16, u16)> {
    let bad = || {
        Error::Invalid(format!(
            "invalid {what} '{text}' in '{spec}': use 1-65535 or FIRST-LAST ({SPEC_HELP})"
        ))
    };
    let one = |t: &str| match t.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(bad()),
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(text)?, one(text)?),
    };
    if first > last {
        return Err(bad());
    }
    Ok((first, last))
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
    let host = port_range(host, spec, "host port")?;
    let container = container
        .map(|c| port_range(c, spec, "container port"))
        .transpose()?;
    if let Some((c, last)) = container
        && c != last
        && last - c != host.1 - host.0
    {
        return Err(Error::Invalid(format!(
            "'{spec}' maps {} host ports to {} container ports: give as many container ports \
             as host ports, or one for all",
            u32::from(host.1 - host.0) + 1,
            u32::from(last - c) + 1
        )));
    }
    Ok(Spec {
        host_ip,
        host,
        container,
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

/// Publishes `spec` to endpoint `endpoint`: one port or a range, all or
/// nothing. Refused, changing nothing, when any of its host ports is
/// already published for the protocol.
pub fn publish(paths: &Paths, endpoint: &str, spec: &str) -> Result<Vec<PublishView>> {
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
    let taken: StdHashMap<(Proto, u16), &Publication> = st
        .publications
        .iter()
        .map(|p| ((p.proto, p.host_port), p))
        .collect();
    let adding = spec.publications(&ep.name);
    if let Some(other) = adding
        .iter()
        .find_map(|p| taken.get(&(p.proto, p.host_port)))
    {
        return Err(Error::Conflict(format!(
            "port {}/{} is already published to endpoint '{}' port {}; unpublish it first \
             (`weft unpublish {}/{}`)",
            other.host_port,
            other.proto,
            other.endpoint,
            other.container_port,
            other.host_port,
            other.proto
        )));
    }
    let mut new = locked.state.clone();
    new.publications.extend(adding.iter().cloned());

    let mut map = PublishMap::open(paths)?;
    let entries: Vec<_> = adding.iter().map(|p| entry(p, ep.ip)).collect();
    let mut done = Vec::with_capacity(entries.len());
    let flags = NodeFlags::between(&locked.state, &new);
    let result = (|| {
        for (key, target) in &entries {
            map.put(*key, *target)?;
            done.push(*key);
        }
        flags.apply(paths)?;
        locked.commit(new)
    })();
    if let Err(e) = result {
        for key in done {
            if let Err(u) = map.del(key) {
                log::warn!("rollback of publish: {}", crate::error::chain(&u));
            }
        }
        flags.undo(paths);
        return Err(e);
    }
    Ok(adding.iter().map(|p| view(&locked.state, p)).collect())
}

/// Removes the publications of `spec`'s protocol and host ports (all of
/// them must be published); with `endpoint`, only if they are that
/// endpoint's, and with container ports, only if they lead there.
pub fn unpublish(paths: &Paths, endpoint: Option<&str>, spec: &str) -> Result<Vec<PublishView>> {
    let spec = parse_spec(spec, true)?;
    let mut locked = Locked::acquire(paths)?;
    let by_port: StdHashMap<(Proto, u16), &Publication> = locked
        .state
        .publications
        .iter()
        .map(|p| ((p.proto, p.host_port), p))
        .collect();
    let mut found = Vec::new();
    for host_port in spec.host.0..=spec.host.1 {
        let p = by_port.get(&(spec.proto, host_port)).ok_or_else(|| {
            Error::NotFound(format!(
                "port {host_port}/{} is not published (see `weft publish ls`)",
                spec.proto
            ))
        })?;
        if let Some(name) = endpoint
            && name != p.endpoint
        {
            return Err(Error::NotFound(format!(
                "port {host_port}/{} is published to endpoint '{}', not '{name}'",
                spec.proto, p.endpoint
            )));
        }
        let want = spec.container_port(host_port);
        if spec.container.is_some() && want != p.container_port {
            return Err(Error::NotFound(format!(
                "port {host_port}/{} leads to container port {}, not {want}",
                spec.proto, p.container_port
            )));
        }
        found.push((*p).clone());
    }
    let shown: Vec<PublishView> = found.iter().map(|p| view(&locked.state, p)).collect();
    let mut new = locked.state.clone();
    new.publications
        .retain(|p| !(p.proto == spec.proto && (spec.host.0..=spec.host.1).contains(&p.host_port)));
    let mut map = PublishMap::open(paths)?;
    let entries: Vec<_> = found
        .iter()
        .map(|p| {
            let ip = locked
                .state
                .endpoint(&p.endpoint)
                .map_or(Ipv4Addr::UNSPECIFIED, |e| e.ip);
            entry(p, ip)
        })
        .collect();
    let mut done = Vec::with_capacity(entries.len());
    let flags = NodeFlags::between(&locked.state, &new);
    let result = (|| {
        for (key, target) in &entries {
            map.del(*key)?;
            done.push((*key, *target));
        }
        flags.apply(paths)?;
        locked.commit(new)
    })();
    if let Err(e) = result {
        for (key, target) in done {
            if let Err(u) = map.put(key, target) {
                log::warn!("rollback of unpublish: {}", crate::error::chain(&u));
            }
        }
        flags.undo(paths);
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
            (s.host_ip, s.host, s.container, s.proto),
            (None, (8080, 8080), Some((80, 80)), Proto::Tcp)
        );
        let s = parse_spec("10.0.0.1:53:5353/udp", false).unwrap();
        assert_eq!(
            (s.host_ip, s.host, s.container, s.proto),
            (
                Some(Ipv4Addr::new(10, 0, 0, 1)),
                (53, 53),
                Some((5353, 5353)),
                Proto::Udp
            )
        );
        assert_eq!(parse_spec("8080/udp", true).unwrap().container, None);
        let ports = |spec: &str| -> Vec<(u16, u16)> {
            parse_spec(spec, false)
                .unwrap()
                .publications("c")
                .iter()
                .map(|p| (p.host_port, p.container_port))
                .collect()
        };
        assert_eq!(
            ports("8000-8002:9000-9002"),
            [(8000, 9000), (8001, 9001), (8002, 9002)]
        );
        assert_eq!(ports("8000-8002:80"), [(8000, 80), (8001, 80), (8002, 80)]);
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
            "9-8:80",
            "8000-8002:90-91",
        ] {
            assert!(parse_spec(bad, false).is_err(), "{bad}");
        }
    }
}

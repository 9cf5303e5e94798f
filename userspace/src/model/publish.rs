//! Published ports (DNAT): a port of the node's address leading to an
//! endpoint's port, like `docker run -p`. Specs, and the rules: the host
//! address, when given, must be the node's (the datapath only sees packets
//! to the uplink's address), and a host port is published once per
//! protocol. A host port may lie in the NAT port range: masquerade claims
//! a port per destination with an atomic insert, so it never takes over a
//! live connection to a published port.

use std::{collections::HashMap, net::Ipv4Addr};

use weft_api::requests::{Publish, Unpublish};

use crate::{
    error::{Error, Result},
    model::{Model, Proto, Publication, require_endpoint},
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
                service: false,
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

/// `model` with `req`'s ports published (all or none), and the new
/// publications in host port order.
pub fn publish(model: &Model, req: &Publish) -> Result<(Model, Vec<Publication>)> {
    if model.endpoint(&req.endpoint).is_none()
        && let Some(svc) = model.service(&req.endpoint)
    {
        return publish_service(model, svc, &req.spec);
    }
    let spec = parse_spec(&req.spec, false)?;
    let ep = require_endpoint(model, &req.endpoint)?;
    uplink_for(model, &spec)?;
    let taken: HashMap<(Proto, u16), &Publication> = model
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
    let mut new = model.clone();
    new.publications.extend(adding.iter().cloned());
    Ok((new, adding))
}

/// The node's uplink, which ports are published on, and `spec`'s host
/// address checked against it.
fn uplink_for<'a>(model: &'a Model, spec: &Spec) -> Result<&'a crate::model::NodeUplink> {
    let node = model.node.as_ref().ok_or_else(|| {
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
    Ok(node)
}

/// `weft publish SERVICE [HOST_IP:]HOST_PORT[:SERVICE_PORT][/tcp|udp]`:
/// outside clients of the node's address and host port are spread over
/// the service's backends on this node (its Maglev table of local
/// backends; see the datapath's `nat::published_service`). The service
/// port defaults to the service's only port of that protocol.
fn publish_service(
    model: &Model,
    svc: &crate::model::Service,
    text: &str,
) -> Result<(Model, Vec<Publication>)> {
    let spec = parse_spec(text, true)?;
    uplink_for(model, &spec)?;
    let ports: Vec<u16> = svc
        .ports
        .iter()
        .filter(|p| p.proto == spec.proto)
        .map(|p| p.port)
        .collect();
    let port = match spec.container {
        Some((p, last)) if p == last && ports.contains(&p) => p,
        Some(_) => {
            return Err(Error::Invalid(format!(
                "service '{}' has no {} port {text}: its {} ports are {ports:?}",
                svc.name, spec.proto, spec.proto
            )));
        }
        None => match ports.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::Invalid(format!(
                    "service '{}' has no {} port to publish",
                    svc.name, spec.proto
                )));
            }
            many => {
                return Err(Error::Invalid(format!(
                    "service '{}' has {} ports {many:?}: name one, e.g. {}:{}",
                    svc.name, spec.proto, spec.host.0, many[0]
                )));
            }
        },
    };
    let adding: Vec<Publication> = (spec.host.0..=spec.host.1)
        .map(|host_port| Publication {
            endpoint: svc.name.clone(),
            proto: spec.proto,
            host_port,
            container_port: port,
            service: true,
        })
        .collect();
    if let Some(other) = model.publications.iter().find(|p| {
        adding
            .iter()
            .any(|a| (a.proto, a.host_port) == (p.proto, p.host_port))
    }) {
        return Err(Error::Conflict(format!(
            "port {}/{} is already published to '{}' port {}; unpublish it first (`weft \
             unpublish {}/{}`)",
            other.host_port,
            other.proto,
            other.endpoint,
            other.container_port,
            other.host_port,
            other.proto
        )));
    }
    let mut new = model.clone();
    new.publications.extend(adding.iter().cloned());
    Ok((new, adding))
}

/// `model` without the publications of `req`'s protocol and host ports
/// (all of them must be published); with an endpoint, only if they are
/// that endpoint's, and with container ports, only if they lead there.
/// Also the removed publications.
pub fn unpublish(model: &Model, req: &Unpublish) -> Result<(Model, Vec<Publication>)> {
    let spec = parse_spec(&req.spec, true)?;
    let by_port: HashMap<(Proto, u16), &Publication> = model
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
        if let Some(name) = &req.endpoint
            && *name != p.endpoint
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
    let mut new = model.clone();
    new.publications
        .retain(|p| !(p.proto == spec.proto && (spec.host.0..=spec.host.1).contains(&p.host_port)));
    Ok((new, found))
}

#[cfg(test)]
mod tests {
    use weft_api::{records::NodeUplink, requests::CreateService};

    use super::*;

    #[test]
    fn a_service_is_published_by_its_port_and_goes_with_it() {
        let mut m = Model {
            node: Some(NodeUplink {
                uplink: "up".into(),
                uplink_ifindex: 2,
                ip: Ipv4Addr::new(192, 0, 2, 1),
                port_min: 61000,
                port_max: 65535,
                conntrack_max: None,
                forwarding_before: None,
                overlay: None,
                subnets: vec![],
            }),
            ..Model::default()
        };
        let req = CreateService {
            name: "web".into(),
            ports: vec!["80/tcp:8080".into(), "443/tcp".into(), "53/udp".into()],
            selector: vec!["app=web".into()],
            ..CreateService::default()
        };
        m = crate::model::service::create(&m, &req).unwrap().0;
        let publish = |m: &Model, spec: &str| {
            publish(
                m,
                &Publish {
                    endpoint: "web".into(),
                    spec: spec.into(),
                },
            )
        };
        let err = |spec: &str| publish(&m, spec).unwrap_err().to_string();
        assert!(err("8080").contains("name one"), "{}", err("8080"));
        assert!(err("8080:81").contains("no tcp port"), "{}", err("8080:81"));
        assert!(err("192.0.2.9:8080:80").contains("not the node's address"));
        let (m2, added) = publish(&m, "5353/udp").unwrap();
        assert_eq!(
            (added[0].service, added[0].container_port, added[0].proto),
            (true, 53, Proto::Udp)
        );
        let (m2, _) = publish(&m2, "8080:80").unwrap();
        assert!(
            publish(&m2, "8080:443")
                .unwrap_err()
                .to_string()
                .contains("already published")
        );
        // Removing the service removes its publications.
        let gone = crate::model::service::remove(&m2, "web").unwrap();
        assert!(gone.publications.is_empty());
    }

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

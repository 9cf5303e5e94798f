//! Services: a virtual IP from the cluster-wide service range whose ports
//! are spread over backends (endpoints a selector matches, or named ones).
//! Specs, rules and allocation; the Maglev tables are rendered from the
//! members (`render::maglev`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use weft_api::{
    records::{Service, ServiceConfig, ServicePort},
    requests::{CreateService, SetServiceConfig},
};

use crate::{
    error::{Error, Result},
    model::{Model, Proto, naming::validate_name},
};

/// Default client-IP affinity timeout (Kubernetes' `sessionAffinityConfig`
/// default is 3 hours; ours is shorter, like Cilium's affinity GC).
pub const DEFAULT_AFFINITY_S: u32 = 10_800;

/// Largest Maglev table the datapath holds (`weft_common::maps::MAGLEV_MAX`).
pub const MAX_MAGLEV: u32 = weft_common::maps::MAGLEV_MAX;

/// Ports a service may have (the datapath keys services by VIP and port).
pub const MAX_PORTS: usize = 32;

/// Service `name`, or an error saying how to list the existing ones.
pub fn require<'a>(model: &'a Model, name: &str) -> Result<&'a Service> {
    model.service(name).ok_or_else(|| {
        Error::NotFound(format!(
            "service '{name}' does not exist (see `weft service ls`)"
        ))
    })
}

/// `KEY=VALUE` labels; keys are names, values may be empty.
pub fn parse_labels(specs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((k, v)) = spec.split_once('=') else {
            return Err(Error::Invalid(format!(
                "invalid label '{spec}': expected KEY=VALUE, e.g. app=web"
            )));
        };
        validate_name("label key", k)?;
        if !v.is_empty() {
            validate_name("label value", v)?;
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// `[NAME=]PORT[/tcp|udp][:TARGET]`.
pub fn parse_port(spec: &str) -> Result<ServicePort> {
    let bad = || {
        Error::Invalid(format!(
            "invalid service port '{spec}': expected [NAME=]PORT[/tcp|udp][:TARGET], e.g. \
             80/tcp:8080 or http=80"
        ))
    };
    let (name, rest) = match spec.split_once('=') {
        Some((n, r)) => {
            validate_name("port name", n)?;
            (Some(n.to_owned()), r)
        }
        None => (None, spec),
    };
    let (front, target) = match rest.split_once(':') {
        Some((f, t)) => (f, Some(t)),
        None => (rest, None),
    };
    let (port, proto) = match front.split_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some(_) => return Err(bad()),
        None => (front, Proto::Tcp),
    };
    let number = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let port = number(port)?;
    let target = target.map(number).transpose()?.unwrap_or(port);
    Ok(ServicePort {
        name: name.unwrap_or_else(|| port.to_string()),
        proto,
        port,
        target,
    })
}

/// `client-ip[:SECONDS]`.
fn parse_affinity(spec: &str) -> Result<u32> {
    let bad = || {
        Error::Invalid(format!(
            "invalid affinity '{spec}': expected client-ip or client-ip:SECONDS (1-86400)"
        ))
    };
    match spec.split_once(':') {
        None if spec == "client-ip" => Ok(DEFAULT_AFFINITY_S),
        Some(("client-ip", s)) => s
            .parse::<u32>()
            .ok()
            .filter(|s| (1..=86_400).contains(s))
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// `tcp:PORT`.
fn parse_health(spec: &str) -> Result<u16> {
    spec.strip_prefix("tcp:")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "invalid health check '{spec}': expected tcp:PORT, e.g. tcp:8080"
            ))
        })
}

/// Who holds `ip` among services, if anyone.
fn vip_holder(model: &Model, ip: Ipv4Addr) -> Option<&str> {
    model
        .services
        .iter()
        .find(|s| s.vip == ip)
        .map(|s| s.name.as_str())
}

/// The lowest free address of `range` (network and broadcast addresses
/// left out, as IPAM does for subnets).
fn allocate_vip(model: &Model, range: &Ipv4Net) -> Result<Ipv4Addr> {
    range
        .hosts()
        .find(|ip| vip_holder(model, *ip).is_none())
        .ok_or_else(|| {
            Error::Conflict(format!(
                "the service range {range} is full; remove a service or widen it \
                 (`weft service config --range`)"
            ))
        })
}

/// `model` with the service `req` asks for, and the service.
pub fn create(model: &Model, req: &CreateService) -> Result<(Model, Service)> {
    validate_name("service", &req.name)?;
    if model.service(&req.name).is_some() {
        return Err(Error::Conflict(format!(
            "service '{}' already exists; pick another name or remove it first",
            req.name
        )));
    }
    if req.ports.is_empty() {
        return Err(Error::Invalid(
            "a service needs at least one --port, e.g. --port 80/tcp:8080".into(),
        ));
    }
    if req.ports.len() > MAX_PORTS {
        return Err(Error::Invalid(format!(
            "a service has at most {MAX_PORTS} ports"
        )));
    }
    let mut ports = req
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    ports.sort();
    for pair in ports.windows(2) {
        if (pair[0].proto, pair[0].port) == (pair[1].proto, pair[1].port) {
            return Err(Error::Invalid(format!(
                "port {}/{} is given twice",
                pair[0].port, pair[0].proto
            )));
        }
    }
    let config = model.service_config();
    let vip = match &req.vip {
        Some(text) => {
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                Error::Invalid(format!("invalid VIP '{text}': expected an IPv4 address"))
            })?;
            if !config.range.contains(&ip)
                || ip == config.range.network()
                || ip == config.range.broadcast()
            {
                return Err(Error::Invalid(format!(
                    "VIP {ip} is outside the service range {} (see `weft service config`)",
                    config.range
                )));
            }
            if let Some(other) = vip_holder(model, ip) {
                return Err(Error::Conflict(format!(
                    "VIP {ip} is already service '{other}'s; pick another or leave --vip out"
                )));
            }
            ip
        }
        None => allocate_vip(model, &config.range)?,
    };
    for ep in &req.backends {
        if model.endpoint(ep).is_none() && !model.remote_endpoints.iter().any(|r| &r.name == ep) {
            return Err(Error::NotFound(format!(
                "backend endpoint '{ep}' does not exist (see `weft endpoint ls`)"
            )));
        }
    }
    let svc = Service {
        name: req.name.clone(),
        id: model.next_service_id,
        vip,
        ports,
        selector: parse_labels(&req.selector)?,
        backends: req.backends.clone(),
        affinity_timeout: req.affinity.as_deref().map(parse_affinity).transpose()?,
        health_port: req.health.as_deref().map(parse_health).transpose()?,
    };
    let mut new = model.clone();
    new.next_service_id += 1;
    new.services.push(svc.clone());
    Ok((new, svc))
}

/// `model` without service `name`.
pub fn remove(model: &Model, name: &str) -> Result<Model> {
    require(model, name)?;
    let mut new = model.clone();
    new.services.retain(|s| s.name != name);
    // Its published ports go with it.
    new.publications
        .retain(|p| !(p.service && p.endpoint == name));
    new.unhealthy.remove(name);
    Ok(new)
}

/// `model` with the backends of service `name` that this node's health
/// checks hold down being exactly `down` (names that are not its members
/// are left out: a backend that left has no health to keep).
pub fn set_health(model: &Model, name: &str, down: &BTreeSet<String>) -> Result<Model> {
    let svc = require(model, name)?;
    if svc.health_port.is_none() && !down.is_empty() {
        return Err(Error::Invalid(format!(
            "service '{name}' has no health check (`--health tcp:PORT`)"
        )));
    }
    let members: BTreeSet<String> = model
        .members(svc)
        .iter()
        .filter(|e| down.contains(&e.name))
        .map(|e| e.name.clone())
        .collect();
    let mut new = model.clone();
    if members.is_empty() {
        new.unhealthy.remove(name);
    } else {
        new.unhealthy.insert(name.to_owned(), members);
    }
    Ok(new)
}

/// Whether `m` is a prime (trial division: table sizes are small).
pub fn is_prime(m: u32) -> bool {
    m >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= m)
            .all(|d| !m.is_multiple_of(d))
}

/// `model` with the service settings `req` changes. The range may only
/// change while no service has a VIP outside the new one; it must not
/// overlap a network.
pub fn configure(model: &Model, req: &SetServiceConfig) -> Result<Model> {
    let mut config: ServiceConfig = model.service_config();
    if let Some(text) = &req.range {
        let range: Ipv4Net = text.parse().map_err(|_| {
            Error::Invalid(format!(
                "invalid range '{text}': expected a CIDR, e.g. 10.96.0.0/16"
            ))
        })?;
        if range.trunc() != range || range.prefix_len() > 30 {
            return Err(Error::Invalid(format!(
                "invalid range {range}: host bits must be zero and the prefix /30 or shorter"
            )));
        }
        if let Some(svc) = model.services.iter().find(|s| !range.contains(&s.vip)) {
            return Err(Error::Conflict(format!(
                "service '{}' has VIP {} outside {range}; remove it first",
                svc.name, svc.vip
            )));
        }
        config.range = range;
    }
    if let Some(m) = req.maglev_size {
        if !is_prime(m) || !(7..=MAX_MAGLEV).contains(&m) {
            return Err(Error::Invalid(format!(
                "invalid Maglev size {m}: use a prime from 7 to {MAX_MAGLEV} (e.g. 251, 1021, \
                 4093, 16381)"
            )));
        }
        config.maglev_size = m;
    }
    if let Some(dns) = req.dns {
        config.dns = dns;
    }
    if let Some(net) = model
        .networks
        .iter()
        .find(|n| overlaps(&n.subnet, &config.range))
    {
        return Err(Error::Conflict(format!(
            "the service range {} overlaps network '{}' ({})",
            config.range, net.name, net.subnet
        )));
    }
    let mut new = model.clone();
    new.service_config = Some(config);
    Ok(new)
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> CreateService {
        CreateService {
            name: name.into(),
            ports: vec!["80/tcp:8080".into()],
            selector: vec!["app=web".into()],
            ..CreateService::default()
        }
    }

    #[test]
    fn ports_parse_with_names_protocols_and_targets() {
        let p = parse_port("http=80/tcp:8080").unwrap();
        assert_eq!(
            (p.name.as_str(), p.proto, p.port, p.target),
            ("http", Proto::Tcp, 80, 8080)
        );
        let p = parse_port("53/udp").unwrap();
        assert_eq!(
            (p.name.as_str(), p.proto, p.port, p.target),
            ("53", Proto::Udp, 53, 53)
        );
        for bad in ["", "0", "80/sctp", "x=80:0", "80:", "a b=80"] {
            assert!(parse_port(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn create_allocates_vips_and_refuses_bad_requests() {
        let (m, a) = create(&Model::default(), &req("a")).unwrap();
        assert_eq!(a.vip, Ipv4Addr::new(10, 96, 0, 1));
        let (m, b) = create(&m, &req("b")).unwrap();
        assert_eq!((b.vip, b.id), (Ipv4Addr::new(10, 96, 0, 2), 2));
        let err = |r: CreateService| create(&m, &r).unwrap_err().to_string();
        assert!(err(req("a")).contains("already exists"));
        let mut r = req("c");
        r.vip = Some("10.96.0.1".into());
        assert!(err(r).contains("already service 'a'"));
        let mut r = req("c");
        r.vip = Some("10.200.0.1".into());
        assert!(err(r).contains("outside the service range"));
        let mut r = req("c");
        r.ports = vec![];
        assert!(err(r).contains("at least one --port"));
        let mut r = req("c");
        r.backends = vec!["ghost".into()];
        assert!(err(r).contains("does not exist"));
        let mut r = req("c");
        r.affinity = Some("client-ip:0".into());
        assert!(err(r).contains("invalid affinity"));
        let (gone, _) = (remove(&m, "a").unwrap(), ());
        let (_, c) = create(&gone, &req("c")).unwrap();
        assert_eq!(
            (c.vip, c.id),
            (Ipv4Addr::new(10, 96, 0, 1), 3),
            "ids never reused"
        );
    }

    #[test]
    fn health_keeps_only_members_and_goes_with_its_service() {
        let mut m = crate::model::endpoint::tests::blue();
        for netns in ["ca", "cb"] {
            let add = weft_api::requests::AddEndpoint {
                network: "blue".into(),
                netns: netns.into(),
                ip: None,
                name: None,
                ifname: None,
                mtu: None,
                labels: Vec::new(),
                mac: None,
            };
            m = crate::model::endpoint::add(&m, &add).unwrap().0;
        }
        let names: Vec<String> = m.endpoints.iter().map(|e| e.name.clone()).collect();
        let mut r = req("a");
        r.backends = names.clone();
        r.selector = vec![];
        r.health = Some("tcp:8080".into());
        m = create(&m, &r).unwrap().0;
        let down: BTreeSet<String> = [names[0].clone(), "ghost".into()].into();
        let sick = set_health(&m, "a", &down).unwrap();
        assert_eq!(sick.unhealthy["a"], BTreeSet::from([names[0].clone()]));
        assert!(sick.is_unhealthy(&sick.services[0], &sick.endpoints[0]));
        let well = set_health(&sick, "a", &BTreeSet::new()).unwrap();
        assert!(well.unhealthy.is_empty(), "{:?}", well.unhealthy);
        assert!(remove(&sick, "a").unwrap().unhealthy.is_empty());
        assert!(set_health(&m, "nope", &down).is_err());
        let (plain, _) = create(&m, &req("b")).unwrap();
        let err = set_health(&plain, "b", &down).unwrap_err().to_string();
        assert!(err.contains("no health check"), "{err}");
        // Not saved: a store round trip forgets it.
        let text = serde_json::to_string(&sick).unwrap();
        let back: Model = serde_json::from_str(&text).unwrap();
        assert!(back.unhealthy.is_empty());
    }

    #[test]
    fn config_wants_a_prime_and_a_range_holding_every_vip() {
        let (m, _) = create(&Model::default(), &req("a")).unwrap();
        let set = |range: Option<&str>, size: Option<u32>| {
            configure(
                &m,
                &SetServiceConfig {
                    range: range.map(Into::into),
                    maglev_size: size,
                    dns: None,
                },
            )
        };
        assert_eq!(
            set(None, Some(251)).unwrap().service_config().maglev_size,
            251
        );
        assert!(set(None, Some(250)).is_err());
        assert!(set(None, Some(MAX_MAGLEV + 2)).is_err());
        assert!(
            set(Some("10.97.0.0/16"), None)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
        assert!(set(Some("10.96.0.0/24"), None).is_ok());
    }
}

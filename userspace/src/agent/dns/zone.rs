//! The names the agent answers, from the model alone (pure, so every
//! node answers the same from the same store): in zone `weft.`,
//!
//! - `ENDPOINT.weft.` A: the endpoint's address;
//! - `SERVICE.weft.` A: the service's VIP (a service shadows an endpoint
//!   of the same name);
//! - `_PORT._PROTO.SERVICE.weft.` SRV: the service port, target the
//!   service's name;
//! - `D.C.B.A.in-addr.arpa.` PTR for endpoint addresses and VIPs;
//! - anything else in `weft.` (or a PTR of a weft address nobody holds):
//!   NXDOMAIN with the zone's SOA, authoritatively.
//!
//! Endpoints (this node's and, in cluster mode, every other node's from
//! the cluster store) are scoped to the networks a client can reach (its
//! own and the ones connected to it); services are cluster-wide. A client that
//! is no endpoint (the node itself) sees every name.

use std::{collections::HashSet, net::Ipv4Addr};

use weft_api::records::Model;

/// The zone weft is authoritative for.
pub const ZONE: &str = weft_api::records::DNS_ZONE;
/// Default TTL of every answer: short, so a removed endpoint's name goes
/// within seconds (Consul answers with 0, CoreDNS 5-30 s).
pub const TTL: u32 = 5;

/// What a query is answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type (maybe none: the name exists with other
    /// types, NOERROR/NODATA).
    Found(Vec<Data>),
    /// In the zone, no such name.
    NxDomain,
    /// Not weft's: forward it.
    Forward,
}

/// The data of one answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    /// Port and target name (without the zone).
    Srv(u16, String),
    /// Target name (without the zone).
    Ptr(String),
}

/// The asked types the zone knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    A,
    Srv,
    Ptr,
    /// Anything else (AAAA, MX, ...): NODATA for names that exist.
    Other,
}

/// The networks `client` reaches, or `None` for a client that is no
/// endpoint (it sees every network).
fn reachable(model: &Model, client: Ipv4Addr) -> Option<HashSet<&str>> {
    let ep = model.endpoints.iter().find(|e| e.ip == client)?;
    let net = model.network(&ep.network)?;
    let mut out: HashSet<&str> = net.connected.iter().map(String::as_str).collect();
    out.insert(&net.name);
    Some(out)
}

/// Answers `name` (lower case, without the trailing dot) of `kind` asked
/// by `client`.
pub fn answer(model: &Model, name: &str, kind: Kind, client: Ipv4Addr) -> Answer {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        return reverse(model, rest, kind, client);
    }
    let Some(label) = name.strip_suffix(ZONE).and_then(|n| {
        if n.is_empty() {
            Some("")
        } else {
            n.strip_suffix('.')
        }
    }) else {
        return Answer::Forward;
    };
    if label.is_empty() {
        // The apex: it exists (SOA lives there), nothing else.
        return Answer::Found(Vec::new());
    }
    let scope = reachable(model, client);
    let visible = |network: &str| scope.as_ref().is_none_or(|s| s.contains(network));
    let parts: Vec<&str> = label.split('.').collect();
    match parts.as_slice() {
        [port, proto, svc] if port.starts_with('_') && proto.starts_with('_') => {
            let Some(s) = model
                .services
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(svc))
            else {
                return Answer::NxDomain;
            };
            let found: Vec<Data> = s
                .ports
                .iter()
                .filter(|p| {
                    p.name.eq_ignore_ascii_case(&port[1..])
                        && p.proto.to_string() == proto[1..].to_ascii_lowercase()
                })
                .map(|p| Data::Srv(p.port, s.name.clone()))
                .collect();
            if found.is_empty() {
                return Answer::NxDomain;
            }
            Answer::Found(if kind == Kind::Srv { found } else { Vec::new() })
        }
        [one] => {
            let ip = model
                .services
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(one))
                .map(|s| s.vip)
                .or_else(|| {
                    model
                        .endpoints
                        .iter()
                        .find(|e| e.name.eq_ignore_ascii_case(one) && visible(&e.network))
                        .map(|e| e.ip)
                })
                .or_else(|| {
                    model
                        .remote_endpoints
                        .iter()
                        .find(|e| e.name.eq_ignore_ascii_case(one) && visible(&e.network))
                        .map(|e| e.ip)
                });
            match ip {
                Some(ip) if kind == Kind::A => Answer::Found(vec![Data::A(ip)]),
                Some(_) => Answer::Found(Vec::new()),
                None => Answer::NxDomain,
            }
        }
        _ => Answer::NxDomain,
    }
}

/// A PTR query for `rest` (`D.C.B.A`): weft's addresses are answered,
/// others forwarded, and an unheld address of a weft network or of the
/// service range is NXDOMAIN.
fn reverse(model: &Model, rest: &str, kind: Kind, client: Ipv4Addr) -> Answer {
    let octets: Vec<u8> = rest.split('.').filter_map(|o| o.parse().ok()).collect();
    let [d, c, b, a] = octets.as_slice() else {
        return Answer::Forward;
    };
    let ip = Ipv4Addr::new(*a, *b, *c, *d);
    let scope = reachable(model, client);
    let found = model
        .services
        .iter()
        .find(|s| s.vip == ip)
        .map(|s| s.name.clone())
        .or_else(|| {
            model
                .endpoints
                .iter()
                .find(|e| {
                    e.ip == ip
                        && scope
                            .as_ref()
                            .is_none_or(|s| s.contains(e.network.as_str()))
                })
                .map(|e| e.name.clone())
        })
        .or_else(|| {
            model
                .remote_endpoints
                .iter()
                .find(|e| {
                    e.ip == ip
                        && scope
                            .as_ref()
                            .is_none_or(|s| s.contains(e.network.as_str()))
                })
                .map(|e| e.name.clone())
        });
    match found {
        Some(name) if kind == Kind::Ptr => Answer::Found(vec![Data::Ptr(name)]),
        Some(_) => Answer::Found(Vec::new()),
        None if model.networks.iter().any(|n| n.subnet.contains(&ip))
            || (!model.services.is_empty() && model.service_config().range.contains(&ip)) =>
        {
            Answer::NxDomain
        }
        None => Answer::Forward,
    }
}

#[cfg(test)]
mod tests {
    use weft_api::requests::{AddEndpoint, CreateNetwork, CreateService};

    use super::*;
    use crate::model::{endpoint, network, service};

    fn model() -> Model {
        let mut m = Model::default();
        for (i, name) in ["blue", "green", "red"].into_iter().enumerate() {
            let req = CreateNetwork {
                name: name.into(),
                subnet: format!("10.{}.0.0/24", i + 1),
                gateway: None,
                flood: false,
                masquerade: true,
                vni: None,
            };
            m = network::create(&m, &req).unwrap().0;
        }
        m = network::connect(&m, "blue", "green").unwrap();
        for (ep, net) in [("web1", "blue"), ("db", "green"), ("secret", "red")] {
            let req = AddEndpoint {
                network: net.into(),
                netns: ep.into(),
                ip: None,
                name: None,
                ifname: None,
                mtu: None,
                mac: None,
                labels: vec!["app=web".into()],
            };
            m = endpoint::add(&m, &req).unwrap().0;
        }
        let req = CreateService {
            name: "web".into(),
            ports: vec!["http=80/tcp:8080".into()],
            selector: vec!["app=web".into()],
            ..CreateService::default()
        };
        service::create(&m, &req).unwrap().0
    }

    const BLUE_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    #[test]
    fn names_services_srv_and_ptr() {
        let m = model();
        let a = |n: &str| answer(&m, n, Kind::A, BLUE_CLIENT);
        assert_eq!(a("web1.weft"), Answer::Found(vec![Data::A(BLUE_CLIENT)]));
        assert_eq!(
            a("db.weft"),
            Answer::Found(vec![Data::A(Ipv4Addr::new(10, 2, 0, 2))])
        );
        assert_eq!(
            a("web.weft"),
            Answer::Found(vec![Data::A(Ipv4Addr::new(10, 96, 0, 1))])
        );
        assert_eq!(
            answer(&m, "_http._tcp.web.weft", Kind::Srv, BLUE_CLIENT),
            Answer::Found(vec![Data::Srv(80, "web".into())])
        );
        assert_eq!(
            answer(&m, "_http._udp.web.weft", Kind::Srv, BLUE_CLIENT),
            Answer::NxDomain
        );
        assert_eq!(
            answer(&m, "1.0.96.10.in-addr.arpa", Kind::Ptr, BLUE_CLIENT),
            Answer::Found(vec![Data::Ptr("web".into())])
        );
        assert_eq!(
            answer(&m, "2.0.1.10.in-addr.arpa", Kind::Ptr, BLUE_CLIENT),
            Answer::Found(vec![Data::Ptr("web1".into())])
        );
        assert_eq!(
            answer(&m, "9.0.1.10.in-addr.arpa", Kind::Ptr, BLUE_CLIENT),
            Answer::NxDomain
        );
        assert_eq!(
            answer(&m, "1.1.1.1.in-addr.arpa", Kind::Ptr, BLUE_CLIENT),
            Answer::Forward
        );
        assert_eq!(
            answer(&m, "example.com", Kind::A, BLUE_CLIENT),
            Answer::Forward
        );
        assert_eq!(a("nobody.weft"), Answer::NxDomain);
        assert_eq!(
            answer(&m, "web1.weft", Kind::Other, BLUE_CLIENT),
            Answer::Found(vec![])
        );
    }

    #[test]
    fn other_nodes_endpoints_resolve_within_their_scope() {
        let mut m = model();
        let far = |name: &str, network: &str, ip: Ipv4Addr| weft_api::records::RemoteEndpoint {
            name: name.into(),
            network: network.into(),
            ip,
            mac: weft_api::Mac([2, 0, 0, 0, 0, 9]),
            node: "n2".into(),
            labels: Default::default(),
            terminating: false,
        };
        m.remote_endpoints = vec![
            far("far", "blue", Ipv4Addr::new(10, 1, 0, 130)),
            far("hidden", "red", Ipv4Addr::new(10, 3, 0, 130)),
        ];
        assert_eq!(
            answer(&m, "far.weft", Kind::A, BLUE_CLIENT),
            Answer::Found(vec![Data::A(Ipv4Addr::new(10, 1, 0, 130))])
        );
        assert_eq!(
            answer(&m, "130.0.1.10.in-addr.arpa", Kind::Ptr, BLUE_CLIENT),
            Answer::Found(vec![Data::Ptr("far".into())])
        );
        assert_eq!(
            answer(&m, "hidden.weft", Kind::A, BLUE_CLIENT),
            Answer::NxDomain
        );
    }

    #[test]
    fn endpoints_are_scoped_to_reachable_networks() {
        let m = model();
        // red is connected to nothing: blue's client cannot see it.
        assert_eq!(
            answer(&m, "secret.weft", Kind::A, BLUE_CLIENT),
            Answer::NxDomain
        );
        let red = Ipv4Addr::new(10, 3, 0, 2);
        assert_eq!(answer(&m, "web1.weft", Kind::A, red), Answer::NxDomain);
        assert!(matches!(
            answer(&m, "secret.weft", Kind::A, red),
            Answer::Found(_)
        ));
        // Services are for everyone; so is everything for the node.
        assert!(matches!(
            answer(&m, "web.weft", Kind::A, red),
            Answer::Found(_)
        ));
        let node = Ipv4Addr::new(192, 0, 2, 1);
        assert!(matches!(
            answer(&m, "secret.weft", Kind::A, node),
            Answer::Found(_)
        ));
    }
}

//! Attachments: endpoints a container runtime asks for (CNI), known by the
//! runtime's container id and interface name. An attachment is an endpoint
//! with its published ports, made in one change, so a refused or failed
//! attach leaves nothing; its weft name is derived from the container id.

use std::collections::HashSet;

use weft_api::{
    attach::{AttachContainer, AttachmentRef},
    requests::{AddEndpoint, Publish},
};

use crate::{
    error::{Error, Result},
    model::{
        Endpoint, Model, Publication, endpoint,
        naming::{MAX_IFNAME, host_ifname, validate_ifname},
        publish,
    },
};

/// Longest container id accepted (runtimes use 64 hex digits, containerd
/// `NAMESPACE-ID`).
const MAX_CONTAINER_ID: usize = 255;

/// Checks a runtime's container id: CNI allows letters, digits, `-`, `_`
/// and `.`.
pub fn validate_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CONTAINER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid container id '{id}': use 1 to {MAX_CONTAINER_ID} characters from \
             A-Z a-z 0-9 - _ ."
        )))
    }
}

/// Checks a DNS name a runtime asks for (`aliases`).
fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 253
        && alias.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid alias '{alias}': expected a DNS name (labels of A-Z a-z 0-9 - _, \
             separated by dots)"
        )))
    }
}

/// The weft name of attachment (`id`, `ifname`): `ID-IFNAME` when it fits
/// (containerd's `default-web-eth0`), else the short id podman shows and
/// the interface (`3f2a9c1d7e4b-eth0`); should that be taken, 8 characters
/// of the id and 6 hex digits of a hash of the whole attachment. Characters
/// a name cannot hold become `_`.
fn endpoint_name(model: &Model, id: &str, ifname: &str) -> String {
    let ifname: String = ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let free = |n: &str| {
        let host = host_ifname(n);
        model.endpoint(n).is_none() && !model.endpoints.iter().any(|e| e.host_ifname == host)
    };
    let whole = format!("{id}-{ifname}");
    if whole.len() <= 32 && free(&whole) {
        return whole;
    }
    let short: String = id.chars().take(12).collect();
    let name = format!("{short}-{ifname}");
    if free(&name) {
        return name;
    }
    const _: () = assert!(8 + 6 + 1 + MAX_IFNAME <= 32);
    let hash = host_ifname(&format!("{id}/{ifname}"));
    let short: String = id.chars().take(8).collect();
    format!("{short}{}-{ifname}", &hash[2..8])
}

/// `model` with the attachment `req` asks for: its endpoint (named after
/// the container) and its published ports.
pub fn attach(model: &Model, req: &AttachContainer) -> Result<(Model, Endpoint, Vec<Publication>)> {
    validate_container_id(&req.container_id)?;
    validate_ifname(&req.ifname)?;
    for alias in &req.aliases {
        validate_alias(alias)?;
    }
    if let Some(ep) = model.attachment(&req.container_id, &req.ifname) {
        return Err(Error::Conflict(format!(
            "container {} already has {} on network '{}' (endpoint '{}'); delete that \
             attachment first",
            req.container_id, req.ifname, ep.network, ep.name
        )));
    }
    let name = endpoint_name(model, &req.container_id, &req.ifname);
    let add = AddEndpoint {
        network: req.network.clone(),
        netns: req.netns.clone(),
        ip: req.ip.clone(),
        name: Some(name.clone()),
        ifname: Some(req.ifname.clone()),
        mtu: req.mtu,
        mac: req.mac.clone(),
        labels: Vec::new(),
    };
    let (mut new, _) = endpoint::add(model, &add)?;
    let ep = new
        .endpoint_mut(&name)
        .ok_or_else(|| Error::Invalid(format!("endpoint '{name}' vanished; a bug")))?;
    ep.container_id = Some(req.container_id.clone());
    ep.cni_network = req.cni_network.clone();
    ep.aliases = req.aliases.clone();
    let ep = ep.clone();
    let mut published = Vec::new();
    for spec in &req.publish {
        let publish = Publish {
            endpoint: name.clone(),
            spec: spec.clone(),
        };
        let (next, added) = publish::publish(&new, &publish)?;
        new = next;
        published.extend(added);
    }
    Ok((new, ep, published))
}

/// `model` without attachment (`id`, `ifname`) and its publications, and
/// the endpoint removed; `None` when there is no such attachment.
pub fn detach(model: &Model, id: &str, ifname: &str) -> Result<Option<(Model, Endpoint)>> {
    match model.attachment(id, ifname) {
        Some(ep) => endpoint::remove(model, &ep.name.clone()).map(Some),
        None => Ok(None),
    }
}

/// `model` without the attachments made through CNI configuration
/// `cni_network` that `valid` does not name, and their names.
pub fn gc(model: &Model, cni_network: &str, valid: &[AttachmentRef]) -> (Model, Vec<String>) {
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let stale: Vec<String> = model
        .endpoints
        .iter()
        .filter(|e| e.cni_network.as_deref() == Some(cni_network))
        .filter(|e| {
            e.container_id
                .as_deref()
                .is_some_and(|id| !keep.contains(&(id, e.ifname.as_str())))
        })
        .map(|e| e.name.clone())
        .collect();
    let mut new = model.clone();
    new.endpoints.retain(|e| !stale.contains(&e.name));
    new.publications.retain(|p| !stale.contains(&p.endpoint));
    (new, stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::endpoint::tests::blue;

    fn req(id: &str, ifname: &str) -> AttachContainer {
        AttachContainer {
            network: "blue".into(),
            netns: "/run/netns/x".into(),
            container_id: id.into(),
            ifname: ifname.into(),
            cni_network: Some("blue-cni".into()),
            ip: None,
            mac: None,
            mtu: None,
            aliases: vec!["web".into()],
            publish: Vec::new(),
        }
    }

    const PODMAN_ID: &str = "3f2a9c1d7e4b5a6978877665544332211aabbccddeeff00112233445566778899";

    #[test]
    fn attach_names_endpoints_after_the_container() {
        let (m, a, _) = attach(&blue(), &req("default-web", "eth0")).unwrap();
        assert_eq!(a.name, "default-web-eth0");
        assert_eq!(a.container_id.as_deref(), Some("default-web"));
        assert_eq!(a.aliases, ["web"]);
        let (m, b, _) = attach(&m, &req(PODMAN_ID, "eth0")).unwrap();
        assert_eq!(b.name, "3f2a9c1d7e4b-eth0");
        // Another id with the same first 12 characters.
        let other = format!("{}0", &PODMAN_ID[..63]);
        let (m, c, _) = attach(&m, &req(&other, "eth0")).unwrap();
        assert!(c.name.starts_with("3f2a9c1d") && c.name.ends_with("-eth0"));
        assert_ne!(c.name, b.name);
        assert!(c.name.len() <= 32);
        assert_eq!(m.attachment(&other, "eth0").unwrap().name, c.name);
        let err = attach(&m, &req(PODMAN_ID, "eth0")).unwrap_err().to_string();
        assert!(err.contains("already has eth0"), "{err}");
    }

    #[test]
    fn attach_refuses_bad_input_and_publishing_without_a_node() {
        let err = |r: AttachContainer| attach(&blue(), &r).unwrap_err().to_string();
        assert!(err(req("a/b", "eth0")).contains("invalid container id"));
        assert!(err(req("", "eth0")).contains("invalid container id"));
        assert!(err(req("c1", "a/b")).contains("invalid interface name"));
        let mut r = req("c1", "eth0");
        r.aliases = vec!["no spaces".into()];
        assert!(err(r).contains("invalid alias"));
        let mut r = req("c1", "eth0");
        r.publish = vec!["8080:80/tcp".into()];
        assert!(err(r).contains("node's uplink"));
    }

    #[test]
    fn detach_and_gc_find_attachments_by_container() {
        let (m, _, _) = attach(&blue(), &req("c1", "eth0")).unwrap();
        let (m, _, _) = attach(&m, &req("c2", "eth0")).unwrap();
        let mut other = req("c3", "eth0");
        other.cni_network = Some("elsewhere".into());
        let (m, _, _) = attach(&m, &other).unwrap();
        assert!(detach(&m, "c9", "eth0").unwrap().is_none());
        let (gone, ep) = detach(&m, "c1", "eth0").unwrap().unwrap();
        assert_eq!((ep.name.as_str(), gone.endpoints.len()), ("c1-eth0", 2));
        let valid = [AttachmentRef {
            container_id: "c2".into(),
            ifname: "eth0".into(),
        }];
        let (after, removed) = gc(&m, "blue-cni", &valid);
        assert_eq!(removed, ["c1-eth0"]);
        let left: Vec<_> = after.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(left, ["c2-eth0", "c3-eth0"]);
    }
}

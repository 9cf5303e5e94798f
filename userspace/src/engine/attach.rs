//! Attachments (CNI): endpoints a container runtime asks for by container
//! id and interface name. Attach is one change (the endpoint and its
//! published ports, or nothing); detach and GC succeed when there is
//! nothing to remove; a check compares the attachment with the kernel
//! (both ends of the veth, the container's address and route, the
//! datapath's entries) and names each difference.

use weft_api::{
    attach::{
        AttachContainer, Attachment, AttachmentCheck, CheckAttachment, DetachContainer, Detached,
        GcAttachments, GcAttachmentsView,
    },
    records::Network,
};

use super::{Engine, changes::ensure_free, views};
use crate::{
    apply::maps::sync_all,
    datapath::{ip_be, maps::open_pinned, netlink::Netlink, netns},
    error::{Error, Result},
    model::{Endpoint, Model, attachment, require_network},
    render::maps::{DesiredMaps, fdb_key},
};

pub(super) async fn attach(engine: &mut Engine, req: &AttachContainer) -> Result<Attachment> {
    let (model, ep, _) = engine
        .plan(|m| {
            let planned = attachment::attach(m, req)?;
            netns::open(&req.netns)?;
            Ok(planned)
        })
        .await?;
    ensure_free(&ep).await?;
    let model = engine.commit_model(model).await?;
    let ep = model
        .attachment(&req.container_id, &req.ifname)
        .ok_or_else(|| Error::Invalid(format!("endpoint '{}' vanished; a bug", ep.name)))?;
    view(&model, ep)
}

pub(super) async fn detach(engine: &mut Engine, req: &DetachContainer) -> Result<Detached> {
    let planned = engine
        .plan(|m| attachment::detach(m, &req.container_id, &req.ifname))
        .await?;
    let Some((model, ep)) = planned else {
        return Ok(Detached { removed: None });
    };
    engine.commit_model(model).await?;
    Ok(Detached {
        removed: Some(ep.name),
    })
}

pub(super) async fn gc(engine: &mut Engine, req: &GcAttachments) -> Result<GcAttachmentsView> {
    let (model, removed) = engine
        .plan(|m| Ok(attachment::gc(m, &req.cni_network, &req.valid)))
        .await?;
    if !removed.is_empty() {
        engine.commit_model(model).await?;
    }
    Ok(GcAttachmentsView { removed })
}

/// The attachment as a runtime's result needs it.
fn view(model: &Model, ep: &Endpoint) -> Result<Attachment> {
    let net = require_network(model, &ep.network)?;
    Ok(Attachment {
        endpoint: ep.clone(),
        gateway: net.gateway,
        prefix_len: net.subnet.prefix_len(),
        host_mac: net.gateway_mac(),
        published: model
            .publications
            .iter()
            .filter(|p| p.endpoint == ep.name)
            .map(|p| views::publication(model, p))
            .collect(),
    })
}

pub(super) async fn check(engine: &Engine, req: &CheckAttachment) -> Result<AttachmentCheck> {
    let model = &engine.snapshot.model;
    let ep = model
        .attachment(&req.container_id, &req.ifname)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "weft has no attachment of container {} as {} (never added, or deleted)",
                req.container_id, req.ifname
            ))
        })?;
    let net = require_network(model, &ep.network)?;
    let mut problems = host_problems(engine, ep).await?;
    match netns::open(&ep.netns) {
        Err(e) => problems.push(format!("the container's namespace: {e}")),
        Ok(ns) => {
            let (ep, net) = (ep.clone(), net.clone());
            problems.extend(netns::run_in(&ns, || container_problems(ep, net))?);
        }
    }
    problems.extend(map_problems(engine, model, ep, net)?);
    Ok(AttachmentCheck {
        attachment: view(model, ep)?,
        problems,
    })
}

/// The host end of the veth: there, the one weft made, up, its program
/// link pinned.
async fn host_problems(engine: &Engine, ep: &Endpoint) -> Result<Vec<String>> {
    let nl = Netlink::connect()?;
    let host = &ep.host_ifname;
    let mut problems = Vec::new();
    let Some(index) = nl.link_index(host).await? else {
        problems.push(format!("host interface {host} is gone"));
        return Ok(problems);
    };
    if index != ep.host_ifindex {
        problems.push(format!(
            "host interface {host} has ifindex {index}, not {} (it was made again by someone \
             else)",
            ep.host_ifindex
        ));
    }
    if !nl.is_up(index).await? {
        problems.push(format!("host interface {host} is down"));
    }
    if !engine.paths.link_pin(host).exists() {
        problems.push(format!(
            "weft's program is not attached to {host} (its link pin is gone)"
        ));
    }
    Ok(problems)
}

/// The container end, run inside the container's namespace: name, MAC,
/// MTU, up, address, default route via the gateway.
async fn container_problems(ep: Endpoint, net: Network) -> Result<Vec<String>> {
    let nl = Netlink::connect()?;
    let ifname = &ep.ifname;
    let mut problems = Vec::new();
    let Some(index) = nl.link_index(ifname).await? else {
        problems.push(format!("interface {ifname} is missing in the container"));
        return Ok(problems);
    };
    match nl.link_mac(index).await? {
        Some(mac) if mac == ep.mac => {}
        other => problems.push(format!(
            "interface {ifname} has MAC {}, weft gave it {}",
            other.map_or("none".to_owned(), |m| m.to_string()),
            ep.mac
        )),
    }
    let mtu = nl.link_mtu(index).await?;
    if mtu != ep.mtu {
        problems.push(format!(
            "interface {ifname} has MTU {mtu}, weft gave it {}",
            ep.mtu
        ));
    }
    if !nl.is_up(index).await? {
        problems.push(format!("interface {ifname} is down"));
    }
    if !nl.has_address(index, ep.ip).await? {
        problems.push(format!(
            "interface {ifname} lacks its address {}/{}",
            ep.ip,
            net.subnet.prefix_len()
        ));
    }
    let routes = nl.default_routes().await?;
    if !routes.contains(&(Some(net.gateway), Some(index))) {
        problems.push(format!(
            "the container has no default route via {} on {ifname}",
            net.gateway
        ));
    }
    Ok(problems)
}

/// This endpoint's entries in the pinned maps: missing or different ones.
fn map_problems(
    engine: &Engine,
    model: &Model,
    ep: &Endpoint,
    net: &Network,
) -> Result<Vec<String>> {
    let all = crate::render::maps::render(model, &engine.synthetic);
    let mine = endpoint_entries(&all, ep, net);
    let diffs = sync_all(|name| open_pinned(&engine.paths, name), &mine, false)?;
    let mut problems = Vec::new();
    for d in diffs {
        problems.extend(
            d.missing
                .iter()
                .map(|k| format!("datapath map {} lacks the entry for {k}", d.map)),
        );
        problems.extend(
            d.wrong
                .iter()
                .map(|k| format!("datapath map {} holds another value for {k}", d.map)),
        );
    }
    Ok(problems)
}

/// The entries of a render that belong to endpoint `ep`: its network, its
/// tables and caches, its forwarding entry, its published ports.
fn endpoint_entries(all: &DesiredMaps, ep: &Endpoint, net: &Network) -> DesiredMaps {
    let ip = ip_be(ep.ip);
    let mut mine = DesiredMaps::default();
    mine.networks
        .extend(all.networks.get_key_value(&net.id).map(|(k, v)| (*k, *v)));
    mine.ep_by_ip
        .extend(all.ep_by_ip.get_key_value(&ip).map(|(k, v)| (*k, *v)));
    mine.ep_by_if.extend(
        all.ep_by_if
            .get_key_value(&ep.host_ifindex)
            .map(|(k, v)| (*k, *v)),
    );
    mine.ep_ip_cache
        .extend(all.ep_ip_cache.iter().filter(|(_, v)| v.ip_be == ip));
    mine.ep_if_cache.extend(
        all.ep_if_cache
            .iter()
            .filter(|(_, v)| v.ifindex == ep.host_ifindex),
    );
    let fdb = fdb_key(net.id, ep.mac);
    mine.fdb
        .extend(all.fdb.get_key_value(&fdb).map(|(k, v)| (*k, *v)));
    mine.publish
        .extend(all.publish.iter().filter(|(_, t)| t.ip_be == ip));
    mine
}

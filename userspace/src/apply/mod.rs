//! Apply: make the kernel hold what a model renders to, by the smallest
//! change from what it held for the previous model, ordered so traffic
//! never sees half a state:
//!
//! 1. devices: new endpoint veths (configured in their containers) and the
//!    vxlan device; their ifindexes go into the target model;
//! 2. programs the target needs are pinned;
//! 3. map entries written, lookup tables before the caches in front of
//!    them;
//! 4. program links attached (an endpoint's maps are there before its
//!    program sees a packet), host veths up, `lo` up with the gateway
//!    addresses, host routes, forwarding;
//! 5. what the target no longer has goes, in reverse: forwarding, map
//!    entries (caches first), then the links (so a failure before them
//!    leaves them as they were), programs, addresses, `lo` as it was, and
//!    devices last.
//!
//! A rollback is the same apply from the half-applied target back to the
//! previous model. [`sync`] compares a model with what the kernel holds
//! now (drift checks, and repairs at agent start and on a timer).

pub mod devices;
pub mod maps;
pub mod steps;

pub use self::{maps::MapDiff, steps::Steps};
use crate::{
    datapath::{
        Datapath, links,
        maps::open_pinned,
        netlink::Netlink,
        paths::Paths,
        pins::{pins_in, remove_pin},
        sysctl,
    },
    error::{Error, Result},
    model::Model,
    render::{
        self,
        maps::Synthetic,
        net::{DesiredNet, EndpointDevice},
    },
};

/// The kernel an engine writes: the loaded datapath and a netlink
/// connection in the node namespace.
pub struct Kernel {
    pub dp: Datapath,
    pub nl: Netlink,
    /// The map render of what the last apply left, reused as the next
    /// apply's starting point.
    pub rendered: RenderCache,
}

/// The map render of the model and synthetic entries the last apply
/// reached. Rendering is pure, so when the next change starts from that
/// model it needs only its target rendered: with 10,000 services a
/// render is most of a change's time.
#[derive(Default)]
pub struct RenderCache(Option<(Model, Synthetic, render::maps::DesiredMaps)>);

impl RenderCache {
    /// The render of (`model`, `synthetic`): the cached one if it is of
    /// exactly them (taken out), else a fresh one.
    pub fn take_or_render(
        &mut self,
        model: &Model,
        synthetic: &Synthetic,
    ) -> render::maps::DesiredMaps {
        match self.0.take() {
            Some((m, s, maps)) if &m == model && &s == synthetic => maps,
            _ => render::maps::render(model, synthetic),
        }
    }

    fn keep(&mut self, model: &Model, synthetic: &Synthetic, maps: render::maps::DesiredMaps) {
        self.0 = Some((model.clone(), synthetic.clone(), maps));
    }
}

/// One side of an apply: a model and the synthetic benchmark endpoints
/// beside it.
pub struct Side<'a, M> {
    pub model: M,
    pub synthetic: &'a Synthetic,
}

/// Changes the kernel from what `from` renders to what `to` renders.
/// Fills in what only the kernel knows (ifindexes of created devices, how
/// `lo` was before weft raised it) in `to`.
pub async fn apply(
    kernel: &mut Kernel,
    from: Side<'_, &Model>,
    to: Side<'_, &mut Model>,
    steps: &mut Steps,
) -> Result<()> {
    let net_from = render::net::render(from.model);
    let net_to = render::net::render(to.model);
    create_devices(kernel, &net_from, to.model, &net_to, steps).await?;
    for program in &net_to.programs {
        if !kernel.dp.program_pinned(program) {
            steps.step(|| format!("pin {program}"))?;
            kernel.dp.pin_program(program)?;
        }
    }
    // Taken out: a failed apply leaves no render behind.
    let started = std::time::Instant::now();
    let maps_from = kernel.rendered.take_or_render(from.model, from.synthetic);
    let reused = started.elapsed();
    let maps_to = render::maps::render(to.model, to.synthetic);
    let rendered = started.elapsed();
    maps::write_changes(&mut kernel.dp, &maps_from, &maps_to, steps)?;
    let written = started.elapsed();
    attach(kernel, &net_from, to.model, &net_to, steps).await?;
    maps::remove_stale(&mut kernel.dp, &maps_from, &maps_to, steps)?;
    detach(kernel, from.model, &net_from, &net_to, steps)?;
    for program in net_from.programs.difference(&net_to.programs) {
        steps.step(|| format!("unpin {program}"))?;
        kernel.dp.unpin_program(program)?;
    }
    remove_devices(kernel, from.model, &net_from, to.model, &net_to, steps).await?;
    log::debug!(
        "apply: previous render {} us, render {} us, writes {} us, the rest {} us",
        reused.as_micros(),
        (rendered - reused).as_micros(),
        (written - rendered).as_micros(),
        (started.elapsed() - written).as_micros()
    );
    // `to.model` as the kernel now holds it (ifindexes filled in): the
    // render was made after the devices, so it is that model's.
    kernel.rendered.keep(to.model, to.synthetic, maps_to);
    Ok(())
}

async fn create_devices(
    kernel: &mut Kernel,
    net_from: &DesiredNet,
    to: &mut Model,
    net_to: &DesiredNet,
    steps: &mut Steps,
) -> Result<()> {
    for (host, dev) in &net_to.endpoints {
        if net_from.endpoints.contains_key(host) {
            continue;
        }
        // A rollback finds the veth of an endpoint it puts back still
        // there (devices go last): adopt it.
        let known = to.endpoint(&dev.endpoint).map(|e| e.host_ifindex);
        let (ifindex, raised) = match kernel.nl.link_index(host).await? {
            Some(index) if known == Some(index) => (index, false),
            _ => {
                steps.step(|| format!("create veth {host} for endpoint '{}'", dev.endpoint))?;
                let made = devices::create_endpoint(&kernel.nl, dev).await?;
                (made.host_ifindex, made.raised_container_lo)
            }
        };
        if let Some(ep) = to.endpoint_mut(&dev.endpoint) {
            ep.host_ifindex = ifindex;
        }
        if raised && !to.raised_container_lo.contains(&dev.endpoint) {
            to.raised_container_lo.push(dev.endpoint.clone());
        }
    }
    if let Some(vxlan) = net_to.vxlan
        && net_from.vxlan != Some(vxlan)
    {
        steps.step(|| "create or update the vxlan device".into())?;
        let index = devices::ensure_vxlan(&kernel.nl, vxlan, net_from.vxlan.is_some()).await?;
        if let Some(o) = to.node.as_mut().and_then(|n| n.overlay.as_mut()) {
            o.vxlan_ifindex = index;
        }
    }
    Ok(())
}

async fn attach(
    kernel: &mut Kernel,
    net_from: &DesiredNet,
    to: &mut Model,
    net_to: &DesiredNet,
    steps: &mut Steps,
) -> Result<()> {
    let paths = kernel.dp.paths().clone();
    for (pin, link) in &net_to.tc_links {
        if net_from.tc_links.get(pin) == Some(link) {
            continue;
        }
        steps.step(|| format!("attach {} to {}", link.program, link.ifname))?;
        links::attach_tc(&paths, link.program, &link.ifname, &paths.link_pin(pin))?;
    }
    if let Some(ifname) = &net_to.xdp
        && net_from.xdp.as_ref() != Some(ifname)
    {
        steps.step(|| format!("attach the XDP early drop to {ifname}"))?;
        links::attach_xdp(&mut kernel.dp, ifname)?;
    }
    for (host, _) in net_to
        .endpoints
        .iter()
        .filter(|(h, _)| !net_from.endpoints.contains_key(*h))
    {
        let index = kernel.nl.require_link(host).await?;
        steps.step(|| format!("bring {host} up"))?;
        kernel.nl.set_up(index).await?;
    }
    if net_to.lo_up && !net_from.lo_up {
        if to.loopback_before.is_none() {
            to.loopback_before = Some(devices::loopback_state(&kernel.nl).await?);
        }
        steps.step(|| "bring lo up".into())?;
        devices::raise_loopback(&kernel.nl).await?;
    }
    for ip in net_to.loopback_addrs.difference(&net_from.loopback_addrs) {
        steps.step(|| format!("add {ip}/32 to lo"))?;
        devices::add_loopback_address(&kernel.nl, *ip).await?;
    }
    for (ip, route) in &net_to.host_routes {
        if net_from.host_routes.get(ip) == Some(route) {
            continue;
        }
        let index = kernel.nl.require_link(&route.host_ifname).await?;
        steps.step(|| format!("add the route to {ip}/32"))?;
        match kernel.nl.add_host_route(*ip, index, route.src).await {
            // A rollback puts back an endpoint whose route never went.
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {}
            other => other?,
        }
    }
    if net_to.forwarding && !net_from.forwarding && sysctl::read(sysctl::FORWARDING)? != "1" {
        steps.step(|| "turn IPv4 forwarding on".into())?;
        sysctl::write(sysctl::FORWARDING, "1")?;
    }
    Ok(())
}

fn detach(
    kernel: &mut Kernel,
    from: &Model,
    net_from: &DesiredNet,
    net_to: &DesiredNet,
    steps: &mut Steps,
) -> Result<()> {
    if net_from.forwarding && !net_to.forwarding {
        // The value before weft turned it on; `None`: it was on already.
        if let Some(before) = from
            .node
            .as_ref()
            .and_then(|n| n.forwarding_before.as_ref())
        {
            steps.step(|| format!("put IPv4 forwarding back to {before}"))?;
            sysctl::write(sysctl::FORWARDING, before)?;
        }
    }
    let paths = kernel.dp.paths().clone();
    if net_from.xdp.is_some() && net_to.xdp.is_none() {
        steps.step(|| "detach the XDP early drop".into())?;
        remove_pin(&links::xdp_link_pin(&paths))?;
    }
    for pin in net_from.tc_links.keys() {
        if !net_to.tc_links.contains_key(pin) {
            steps.step(|| format!("detach link {pin}"))?;
            remove_pin(&paths.link_pin(pin))?;
        }
    }
    Ok(())
}

async fn remove_devices(
    kernel: &mut Kernel,
    from: &Model,
    net_from: &DesiredNet,
    to: &mut Model,
    net_to: &DesiredNet,
    steps: &mut Steps,
) -> Result<()> {
    for ip in net_from.loopback_addrs.difference(&net_to.loopback_addrs) {
        steps.step(|| format!("remove {ip}/32 from lo"))?;
        devices::del_loopback_address(&kernel.nl, *ip).await?;
    }
    if net_from.lo_up && !net_to.lo_up {
        if let Some(before) = from.loopback_before.or(to.loopback_before) {
            steps.step(|| "put lo back as it was".into())?;
            devices::restore_loopback(&kernel.nl, before).await?;
        }
        to.loopback_before = None;
    }
    if net_from.vxlan.is_some() && net_to.vxlan.is_none() {
        steps.step(|| "delete the vxlan device".into())?;
        kernel
            .nl
            .delete_link_by_name(crate::model::naming::VXLAN_IFNAME)
            .await?;
    }
    let gone: Vec<&EndpointDevice> = net_from
        .endpoints
        .iter()
        .filter(|(h, _)| !net_to.endpoints.contains_key(*h))
        .map(|(_, d)| d)
        .collect();
    for dev in gone {
        let raised = from.raised_container_lo.contains(&dev.endpoint);
        steps.step(|| format!("delete veth {}", dev.host_ifname))?;
        devices::delete_endpoint(&kernel.nl, dev, raised).await?;
        to.raised_container_lo.retain(|e| e != &dev.endpoint);
    }
    Ok(())
}

/// How the kernel differs from a model: map entries, and the program links
/// and veths it describes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drift {
    /// Endpoints whose host veth is gone (their container went away).
    pub missing_veths: Vec<String>,
    /// Endpoints whose veth exists but whose pinned TCX link is gone.
    pub missing_links: Vec<String>,
    /// Pinned links for interfaces no endpoint owns.
    pub stale_links: Vec<String>,
    /// The node's uplink (from `weft node set`) when its link pin is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_uplink_link: Option<String>,
    /// Map entries that differ from what the model describes, per map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<MapDiff>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// What a repair changed to make the kernel match the model.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Repair {
    pub found: Drift,
    /// Endpoints whose program link was attached again.
    pub reattached: Vec<String>,
    /// Stale link pins removed.
    pub unpinned: Vec<String>,
    /// The uplink whose program link was attached again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reattached_uplink: Option<String>,
    /// Map entries added, rewritten and removed to match the model.
    pub maps: Vec<MapDiff>,
}

/// Compares the kernel with `model` (and `synthetic`), changing nothing:
/// the pinned maps entry by entry, the program links, the veths.
pub async fn check(
    paths: &Paths,
    nl: &Netlink,
    model: &Model,
    synthetic: &Synthetic,
) -> Result<Drift> {
    let net = render::net::render(model);
    let mut drift = Drift::default();
    for (host, dev) in &net.endpoints {
        if nl.link_index(host).await?.is_none() {
            drift.missing_veths.push(dev.endpoint.clone());
        } else if !paths.link_pin(host).exists() {
            drift.missing_links.push(dev.endpoint.clone());
        }
    }
    drift.stale_links = pins_in(&paths.links_dir())
        .into_iter()
        .filter(|name| !name.starts_with('.') && !name.starts_with(':'))
        .filter(|name| !net.tc_links.contains_key(name))
        .collect();
    if let Some(node) = &model.node
        && !paths.uplink_link_pin().exists()
    {
        drift.missing_uplink_link = Some(node.uplink.clone());
    }
    let desired = render::maps::render(model, synthetic);
    drift.maps = maps::sync_all(|name| open_pinned(paths, name), &desired, false)?;
    Ok(drift)
}

/// Makes the kernel match `model`: map entries (every described map, entry
/// by entry), then program links missing for existing interfaces, and
/// link pins nobody owns removed. Veths that are gone are reported, not
/// recreated: their container namespace went away, which only `endpoint
/// rm` should settle.
pub async fn repair(kernel: &mut Kernel, model: &Model, synthetic: &Synthetic) -> Result<Repair> {
    let paths = kernel.dp.paths().clone();
    let found = check(&paths, &kernel.nl, model, synthetic).await?;
    let mut done = Repair {
        found: found.clone(),
        ..Repair::default()
    };
    let net = render::net::render(model);
    for program in &net.programs {
        kernel.dp.pin_program(program)?;
    }
    if !found.maps.is_empty() {
        let desired = render::maps::render(model, synthetic);
        done.maps = maps::sync_all(|name| open_pinned(&paths, name), &desired, true)?;
        for d in &done.maps {
            log::warn!(
                "reconcile: {}: added {:?}, rewrote {:?}, removed {:?}",
                d.map,
                d.missing,
                d.wrong,
                d.stale
            );
        }
    }
    for name in &found.missing_links {
        if let Some(ep) = model.endpoint(name) {
            links::attach_tc(
                &paths,
                weft_common::maps::PROG_FROM_CONTAINER,
                &ep.host_ifname,
                &paths.link_pin(&ep.host_ifname),
            )?;
            done.reattached.push(name.clone());
        }
    }
    if let (Some(uplink), Some(_)) = (&found.missing_uplink_link, &model.node) {
        links::attach_tc(
            &paths,
            weft_common::maps::PROG_FROM_UPLINK,
            uplink,
            &paths.uplink_link_pin(),
        )?;
        done.reattached_uplink = Some(uplink.clone());
    }
    for ifname in &found.stale_links {
        remove_pin(&paths.link_pin(ifname))?;
        done.unpinned.push(ifname.clone());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use weft_api::requests::CreateNetwork;

    use super::*;

    fn with_network(name: &str) -> Model {
        let req = CreateNetwork {
            name: name.into(),
            subnet: "10.1.0.0/24".into(),
            gateway: None,
            flood: false,
            masquerade: true,
            vni: None,
        };
        crate::model::network::create(&Model::default(), &req)
            .unwrap()
            .0
    }

    #[test]
    fn the_cached_render_serves_only_the_model_it_was_made_from() {
        let (a, b) = (with_network("a"), with_network("b"));
        let none = Synthetic::default();
        let mut marked = render::maps::render(&a, &none);
        // A mark a real render never has: shows which render came back.
        marked.vnis.insert(u32::MAX, 0);
        let mut cache = RenderCache::default();
        cache.keep(&a, &none, marked.clone());
        assert_eq!(cache.take_or_render(&a, &none), marked);
        // Taken out: asked again, it renders.
        assert_eq!(
            cache.take_or_render(&a, &none),
            render::maps::render(&a, &none)
        );
        cache.keep(&a, &none, marked);
        assert_eq!(
            cache.take_or_render(&b, &none),
            render::maps::render(&b, &none)
        );
    }
}

//! `weft teardown`: remove everything weft made on the node, whatever
//! state it is in: every endpoint veth (those in the model, and any whose
//! link is still pinned, left by a crash), the vxlan device, the gateway
//! addresses, `lo` and forwarding as they were, the whole pin directory
//! (maps, programs, links) and the store. Best effort and safe to repeat.

use std::{fs, io::ErrorKind};

use weft_api::views::TeardownView;

use super::Engine;
use crate::{
    apply::devices,
    datapath::{netlink::Netlink, pins::pins_in, sysctl},
    error::{Error, Result, chain},
    render,
};

pub async fn run(engine: &mut Engine) -> Result<TeardownView> {
    let model = engine.model().clone();
    let paths = engine.paths().clone();
    let nl = Netlink::connect()?;
    let net = render::net::render(&model);

    let mut hosts: Vec<String> = net.endpoints.keys().cloned().collect();
    for pin in pins_in(&paths.links_dir()) {
        if !pin.starts_with(':') && !hosts.contains(&pin) {
            hosts.push(pin);
        }
    }
    for host in &hosts {
        let _ = fs::remove_file(paths.link_pin(host));
        match net.endpoints.get(host) {
            Some(dev) => {
                let raised = model.raised_container_lo.contains(&dev.endpoint);
                devices::delete_endpoint(&nl, dev, raised).await?;
            }
            None => {
                nl.delete_link_by_name(host).await?;
            }
        }
    }
    if net.vxlan.is_some() {
        nl.delete_link_by_name(crate::model::naming::VXLAN_IFNAME)
            .await?;
    }
    for net in &model.networks {
        devices::del_loopback_address(&nl, net.gateway).await?;
    }
    if let Some(before) = model.loopback_before
        && let Err(e) = devices::restore_loopback(&nl, before).await
    {
        log::warn!("{}", chain(&e));
    }
    if let Some(before) = model
        .node
        .as_ref()
        .and_then(|n| n.forwarding_before.as_ref())
        && let Err(e) = sysctl::write(sysctl::FORWARDING, before)
    {
        log::warn!("{}", chain(&e));
    }
    match fs::remove_dir_all(&paths.bpffs) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot remove {}", paths.bpffs.display()),
                e,
            ));
        }
    }
    for ep in &model.endpoints {
        crate::datapath::resolv::remove(&ep.netns);
    }
    engine.store.clear().await?;
    engine.snapshot = crate::store::Snapshot {
        model: Default::default(),
        revision: 0,
    };
    engine.kernel = None;
    Ok(TeardownView {
        endpoints: model.endpoints.len(),
        networks: model.networks.len(),
    })
}

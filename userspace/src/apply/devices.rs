//! Netlink objects the apply creates and removes: endpoint veth pairs
//! (each configured inside its container), the tunnel mode's vxlan device,
//! loopback state and addresses, host routes, and the forwarding sysctl.
//! Each primitive either completes or undoes its own partial work, so the
//! apply above sees whole objects only.

use std::{net::Ipv4Addr, os::fd::AsRawFd};

use weft_common::overlay::{VXLAN_PORT, VXLAN_SPORT_MAX, VXLAN_SPORT_MIN};

use crate::{
    datapath::{
        netlink::{LinkSettings, Netlink},
        netns,
    },
    error::{Error, Result, chain},
    model::{Loopback, naming::VXLAN_IFNAME},
    render::net::{EndpointDevice, VxlanDevice},
};

/// What creating an endpoint's veth pair found and did.
pub struct Created {
    pub host_ifindex: u32,
    /// The container's `lo` was down and is up now.
    pub raised_container_lo: bool,
}

/// Creates endpoint `dev`'s veth pair, the container end made in the
/// container's namespace with its name, MAC and MTU, then configures it
/// there (address, up, default route via the gateway, `lo` up). The host
/// end gets the gateway MAC and stays down until its program is attached.
/// On failure the pair is deleted again.
pub async fn create_endpoint(nl: &Netlink, dev: &EndpointDevice) -> Result<Created> {
    let ns = netns::open(&dev.netns)?;
    nl.add_veth_into(
        &dev.host_ifname,
        dev.gateway_mac,
        &dev.ifname,
        dev.mac,
        ns.as_raw_fd(),
        dev.mtu,
    )
    .await?;
    match configure_endpoint(nl, dev, &ns).await {
        Ok(created) => Ok(created),
        Err(e) => {
            if let Err(d) = nl.delete_link_by_name(&dev.host_ifname).await {
                log::warn!("undoing a half-made veth: {}", chain(&d));
            }
            Err(e)
        }
    }
}

async fn configure_endpoint(
    nl: &Netlink,
    dev: &EndpointDevice,
    ns: &std::fs::File,
) -> Result<Created> {
    let host_index = nl.require_link(&dev.host_ifname).await?;
    let inner = dev.clone();
    let raised_container_lo = netns::run_in(ns, || async move {
        let nl = Netlink::connect()?;
        let index = nl.require_link(&inner.ifname).await?;
        if let Err(e) = netns::disable_ipv6(&inner.ifname) {
            log::info!(
                "cannot disable IPv6 on {} in the container: {e}",
                inner.ifname
            );
        }
        nl.add_address(index, inner.ip, inner.prefix_len).await?;
        nl.set_up(index).await?;
        let gateway = inner.gateway;
        nl.add_default_route(gateway, index)
            .await
            .map_err(|e| match e {
                Error::Netlink { source, .. } if source.raw_os_error() == Some(libc::EEXIST) => {
                    Error::Conflict(format!(
                        "network namespace '{}' already has a default route; weft needs its \
                         endpoints to route via the gateway {gateway}, so remove that route first",
                        inner.netns
                    ))
                }
                other => other,
            })?;
        let lo = nl.require_link("lo").await?;
        if nl.is_up(lo).await? {
            return Ok(false);
        }
        nl.set_up(lo).await?;
        Ok(true)
    })?;
    if let Err(e) = netns::disable_ipv6(&dev.host_ifname) {
        log::info!("cannot disable IPv6 on {}: {e}", dev.host_ifname);
    }
    Ok(Created {
        host_ifindex: host_index,
        raised_container_lo,
    })
}

/// Deletes endpoint `dev`'s veth pair (the container end and the host
/// route go with it); with `restore_container_lo`, puts the container's
/// `lo` back down first, if the container still exists.
pub async fn delete_endpoint(
    nl: &Netlink,
    dev: &EndpointDevice,
    restore_container_lo: bool,
) -> Result<()> {
    // Only while the veth is there: then its container end, and so the
    // container's namespace, is too. A namespace path of a container that
    // is gone (`/proc/PID/ns/net`, the PID reused) is never entered.
    if restore_container_lo
        && nl.link_index(&dev.host_ifname).await?.is_some()
        && let Ok(ns) = netns::open(&dev.netns)
        && holds_link(&ns, &dev.ifname)
    {
        let result = netns::run_in(&ns, || async {
            let nl = Netlink::connect()?;
            restore_loopback(
                &nl,
                Loopback {
                    up: false,
                    had_localhost: false,
                },
            )
            .await
        });
        if let Err(e) = result {
            log::warn!(
                "cannot put the loopback of endpoint '{}' back down: {}",
                dev.endpoint,
                chain(&e)
            );
        }
    }
    nl.delete_link_by_name(&dev.host_ifname).await.map(drop)
}

/// Whether namespace `ns` has an interface `ifname`.
fn holds_link(ns: &std::fs::File, ifname: &str) -> bool {
    let ifname = ifname.to_owned();
    netns::run_in(ns, || async move {
        let nl = Netlink::connect()?;
        nl.link_index(&ifname).await
    })
    .is_ok_and(|index| index.is_some())
}

/// The tunnel mode's collect-metadata vxlan device: created, or when
/// `ours` (weft made it earlier) kept with its MAC and MTU updated.
/// Returns its ifindex.
pub async fn ensure_vxlan(nl: &Netlink, dev: VxlanDevice, ours: bool) -> Result<u32> {
    match nl.link_index(VXLAN_IFNAME).await? {
        Some(index) if ours => {
            let settings = LinkSettings {
                name: None,
                mac: Some(dev.mac),
                mtu: Some(dev.mtu),
            };
            nl.configure_link(index, &settings).await?;
            Ok(index)
        }
        Some(_) => Err(Error::Conflict(format!(
            "interface {VXLAN_IFNAME} exists in the node namespace but weft did not create it; \
             delete it (`ip link del {VXLAN_IFNAME}`) or run `weft teardown`"
        ))),
        None => {
            nl.add_vxlan_external(
                VXLAN_IFNAME,
                VXLAN_PORT,
                (VXLAN_SPORT_MIN, VXLAN_SPORT_MAX),
                dev.mac,
                dev.mtu,
            )
            .await?;
            nl.require_link(VXLAN_IFNAME).await
        }
    }
}

/// How the node's `lo` is now.
pub async fn loopback_state(nl: &Netlink) -> Result<Loopback> {
    let lo = nl.require_link("lo").await?;
    Ok(Loopback {
        up: nl.is_up(lo).await?,
        had_localhost: nl.has_address(lo, Ipv4Addr::LOCALHOST).await?,
    })
}

/// Brings `lo` up (fresh namespaces have it down): it carries the gateway
/// addresses the host routes use as source.
pub async fn raise_loopback(nl: &Netlink) -> Result<()> {
    let lo = nl.require_link("lo").await?;
    if !nl.is_up(lo).await? {
        nl.set_up(lo).await?;
    }
    Ok(())
}

/// Puts `lo` back as `before` found it: down, and without the 127.0.0.1
/// the kernel added when it went up.
pub async fn restore_loopback(nl: &Netlink, before: Loopback) -> Result<()> {
    if before.up {
        return Ok(());
    }
    let lo = nl.require_link("lo").await?;
    nl.set_down(lo).await?;
    if !before.had_localhost {
        nl.del_address(lo, Ipv4Addr::LOCALHOST, 8).await?;
    }
    Ok(())
}

/// Adds `ip/32` to `lo` unless it is there.
pub async fn add_loopback_address(nl: &Netlink, ip: Ipv4Addr) -> Result<()> {
    let lo = nl.require_link("lo").await?;
    if !nl.has_address(lo, ip).await? {
        nl.add_address(lo, ip, 32).await?;
    }
    Ok(())
}

pub async fn del_loopback_address(nl: &Netlink, ip: Ipv4Addr) -> Result<()> {
    match nl.link_index("lo").await? {
        Some(lo) => nl.del_address(lo, ip, 32).await,
        None => Ok(()),
    }
}

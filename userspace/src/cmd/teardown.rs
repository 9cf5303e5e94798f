//! `weft teardown`: remove everything weft made on this node, whatever
//! state it is in. Safe to run again, and on a clean node.

use std::{fs, io::ErrorKind};

use crate::{
    error::{Error, Result, chain},
    netlink::Netlink,
    paths::Paths,
    state::Locked,
};

/// What teardown removed, for the summary line.
#[derive(Debug, Default)]
pub struct Removed {
    pub endpoints: usize,
    pub networks: usize,
}

/// Detaches and deletes every endpoint veth, removes gateway addresses, the
/// bpffs pin directory (maps, program, links) and the state file.
pub async fn teardown(paths: &Paths) -> Result<Removed> {
    let mut locked = Locked::acquire(paths)?;
    let st = locked.state.clone();
    let nl = Netlink::connect()?;

    // Endpoint veths: those in state, and any whose link is pinned here
    // (left by a crash between attach and saving state).
    let mut hosts: Vec<String> = st.endpoints.iter().map(|e| e.host_ifname.clone()).collect();
    match fs::read_dir(paths.links_dir()) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str()
                    && !name.starts_with(':')
                    && !hosts.iter().any(|h| h == name)
                {
                    hosts.push(name.to_string());
                }
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot list {}", paths.links_dir().display()),
                e,
            ));
        }
    }
    for host in &hosts {
        remove_file(&paths.link_pin(host))?;
        nl.delete_link_by_name(host).await?;
    }

    // The tunnel mode's vxlan device (its link pin goes with the pins).
    if st
        .node
        .as_ref()
        .and_then(|n| n.overlay.as_ref())
        .is_some_and(|o| o.vxlan_ifname.is_some())
    {
        nl.delete_link_by_name(crate::overlay::VXLAN_IFNAME).await?;
    }

    if let Some(lo) = nl.link_index("lo").await? {
        for net in &st.networks {
            nl.del_address(lo, net.gateway, 32).await?;
        }
    }

    // The uplink's link pin goes with the pin directory below; forwarding
    // is put back as `node unset` would.
    if let Some(node) = &st.node
        && let Err(e) = crate::cmd::node::restore_forwarding(node)
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
    locked.remove()?;
    Ok(Removed {
        endpoints: st.endpoints.len(),
        networks: st.networks.len(),
    })
}

fn remove_file(path: &std::path::Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => {
            let err = Error::io(format!("cannot remove {}", path.display()), e);
            log::warn!("{}", chain(&err));
            Err(err)
        }
    }
}

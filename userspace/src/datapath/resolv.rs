//! Containers' resolver configuration: `/etc/netns/NAME/resolv.conf`,
//! which `ip netns exec NAME` bind-mounts over /etc/resolv.conf, naming
//! the gateway (where the agent serves DNS) and weft's zone as search
//! domain. Only named namespaces have such a file; a file weft did not
//! write is never overwritten or removed.

use std::{fs, io::ErrorKind, net::Ipv4Addr, path::PathBuf};

use crate::error::{Error, Result};

/// First line of every file weft writes: how it knows its own.
const MARK: &str = "# written by weft";

/// Where `/etc/netns` is (tests may move it).
fn root() -> PathBuf {
    std::env::var_os("WEFT_ETC_NETNS").map_or_else(|| PathBuf::from("/etc/netns"), PathBuf::from)
}

/// The file of namespace `netns`, if it is a named one.
fn path(netns: &str) -> Option<PathBuf> {
    let ok = !netns.is_empty() && !netns.contains('/') && netns != "." && netns != "..";
    ok.then(|| root().join(netns).join("resolv.conf"))
}

/// Writes the resolver file of `netns` (unless another one is there).
pub fn write(netns: &str, gateway: Ipv4Addr, zone: &str) -> Result<()> {
    let Some(file) = path(netns) else {
        return Ok(());
    };
    if let Ok(old) = fs::read_to_string(&file)
        && !old.starts_with(MARK)
    {
        log::info!("{} exists and is not weft's: left alone", file.display());
        return Ok(());
    }
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    let text = format!(
        "{MARK}\nnameserver {gateway}\nsearch {zone}\noptions ndots:1 timeout:1 attempts:3\n"
    );
    fs::write(&file, text).map_err(|e| Error::io(format!("cannot write {}", file.display()), e))
}

/// Removes the resolver file of `netns` if weft wrote it, and its
/// directory if that leaves it empty.
pub fn remove(netns: &str) {
    let Some(file) = path(netns) else {
        return;
    };
    match fs::read_to_string(&file) {
        Ok(text) if text.starts_with(MARK) => {
            if let Err(e) = fs::remove_file(&file) {
                log::warn!("cannot remove {}: {e}", file.display());
            }
            if let Some(dir) = file.parent() {
                // Fails, as it should, if anything else is in it.
                let _ = fs::remove_dir(dir);
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot read {}: {e}", file.display()),
    }
}

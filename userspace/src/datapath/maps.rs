//! Typed access to the datapath's maps: the few conversions every writer
//! and reader shares, and opening a pinned map without loading the object.

use std::{io::ErrorKind, net::Ipv4Addr};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError},
};

use crate::{
    datapath::paths::Paths,
    error::{Error, Result},
};

/// Network-order `u32` of an address, as the maps store it.
pub fn ip_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The address a network-order `u32` of the maps holds.
pub fn ip_of(ip_be: u32) -> Ipv4Addr {
    Ipv4Addr::from(ip_be.to_ne_bytes())
}

/// Treats "no such element" from a delete as success: removal is idempotent.
pub fn absent_ok(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(e) if is_absent(&e) => Ok(()),
        other => other,
    }
}

/// Whether a map error says the key is not there.
pub fn is_absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.kind() == ErrorKind::NotFound,
        _ => false,
    }
}

/// Where the writers find maps by name: the loaded object's maps (the
/// engine's datapath, a packet table's private copy).
pub trait MapSet {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map>;
}

impl MapSet for Ebpf {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        Ebpf::map_mut(self, name).ok_or_else(|| {
            Error::Invalid(format!(
                "the embedded eBPF object has no map {name}; this weft build is broken, rebuild it"
            ))
        })
    }
}

/// The pinned map `name`, opened without loading anything; `None` when it
/// is not pinned (nothing was ever set up).
pub fn open_pinned(paths: &Paths, name: &str) -> Result<Option<Map>> {
    let path = paths.maps_dir().join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::map(format!("cannot open pinned map {}", path.display()), e))?;
    Map::from_map_data(data)
        .map(Some)
        .map_err(|e| Error::map(format!("cannot open pinned map {}", path.display()), e))
}

//! The node's side of masquerade: `WEFT_NODE[0]` and `weft_from_uplink`
//! on TC ingress of the uplink NIC, through a pinned TCX link like the
//! endpoints' (kernel >= 6.6), so it stays attached after weft exits.

use std::path::Path;

use aya::{
    maps::Array,
    programs::{ProgramError, SchedClassifier, TcAttachType, links::FdLink},
};
use weft_common::maps::{MAP_NODE, NodeConfig, PROG_FROM_UPLINK};

use super::{Datapath, remove_pin};
use crate::{
    error::{Error, Result},
    paths::Paths,
};

impl Datapath {
    /// Writes the node's masquerade settings; a zeroed config (no
    /// `NODE_FLAG_CONFIGURED`) turns masquerade off.
    pub fn put_node(&mut self, config: &NodeConfig) -> Result<()> {
        let mut node: Array<_, NodeConfig> = Array::try_from(self.map_mut(MAP_NODE)?)
            .map_err(|e| Error::map(format!("map {MAP_NODE} has an unexpected type"), e))?;
        node.set(0, *config, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_NODE}"), e))
    }

    /// Loads and pins `weft_from_uplink` unless it is pinned, attaches it to
    /// TC ingress of `ifname` and pins the link at
    /// [`Paths::uplink_link_pin`], replacing an earlier one.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<()> {
        let link_pin = self.paths.uplink_link_pin();
        self.attach_node_program(PROG_FROM_UPLINK, ifname, &link_pin)
    }

    /// Loads and pins TC program `name` unless it is pinned, attaches it to
    /// TC ingress of the node's interface `ifname` and pins the link at
    /// `link_pin`, replacing an earlier one.
    pub(crate) fn attach_node_program(
        &mut self,
        name: &str,
        ifname: &str,
        link_pin: &Path,
    ) -> Result<()> {
        let prog_pin = self.paths.prog_pin(name);
        if !prog_pin.exists() {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the embedded eBPF object has no program {name}; rebuild weft"
                    ))
                })?
                .try_into()
                .map_err(|e| Error::program(format!("{name} is not a TC program"), e))?;
            prog.load()
                .map_err(|e| Error::program(format!("the kernel rejected {name}"), e))?;
            prog.pin(&prog_pin).map_err(|e| {
                Error::pin(format!("cannot pin {name} at {}", prog_pin.display()), e)
            })?;
            crate::migrate::record_program(&self.paths, name)?;
        }
        let mut prog = SchedClassifier::from_pin(&prog_pin).map_err(|e| {
            Error::program(
                format!("cannot open the pinned program {}", prog_pin.display()),
                e,
            )
        })?;
        // Replacing the pin drops the old link (the kernel detaches a TCX
        // link nothing references); the new one is attached first.
        let id = match prog.attach(ifname, TcAttachType::Ingress) {
            Ok(id) => id,
            // TCX takes a program once per interface: an earlier `node set`
            // attached it here already, and its pinned link stays.
            Err(ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) && link_pin.exists() =>
            {
                return Ok(());
            }
            Err(e) => {
                return Err(Error::program(
                    format!("cannot attach {name} to {ifname}"),
                    e,
                ));
            }
        };
        let link: FdLink = prog
            .take_link(id)
            .map_err(|e| Error::program(format!("cannot take the link on {ifname}"), e))?
            .try_into()
            .map_err(|e| {
                Error::link(
                    format!("the link on {ifname} is not a TCX link (weft needs kernel >= 6.6)"),
                    e,
                )
            })?;
        remove_pin(link_pin)?;
        link.pin(link_pin).map_err(|e| {
            Error::pin(
                format!("cannot pin the link on {ifname} at {}", link_pin.display()),
                e,
            )
        })?;
        Ok(())
    }
}

/// Detaches `weft_from_uplink` from the uplink by removing its link pin.
pub fn detach_uplink(paths: &Paths) -> Result<()> {
    remove_pin(&paths.uplink_link_pin())
}

/// Writes `WEFT_NODE[0]` through its pin alone, without loading the eBPF
/// object: for commands that change only the node's flags (publishing a
/// first port or removing the last), where a load per call would dominate.
/// Nothing to do when the map is not pinned yet (no node was ever set).
pub fn put_node_pinned(paths: &Paths, config: &NodeConfig) -> Result<()> {
    let Some(map) = super::open_pinned(paths, MAP_NODE)? else {
        return Ok(());
    };
    let mut node: Array<_, NodeConfig> = Array::try_from(map)
        .map_err(|e| Error::map(format!("map {MAP_NODE} has an unexpected type"), e))?;
    node.set(0, *config, 0)
        .map_err(|e| Error::map(format!("cannot write {MAP_NODE}"), e))
}

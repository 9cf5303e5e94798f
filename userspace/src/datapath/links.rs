//! Program links: a pinned program attached to an interface through a TCX
//! link (TC ingress, kernel >= 6.6) or an XDP link, the link pinned so it
//! outlives every weft process. Removing the pin detaches the program (the
//! kernel drops a link nothing references).

use std::path::{Path, PathBuf};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp, links::FdLink, xdp::XdpMode,
};
use weft_common::maps::PROG_XDP_UNDERLAY;

use crate::{
    datapath::{loader::Datapath, paths::Paths, pins::remove_pin},
    error::{Error, Result},
};

/// Name of the XDP link pin in the bpffs directory: outside `links/` and
/// `progs/`, whose contents layout migrations reload and relink as TC
/// programs.
const XDP_LINK_PIN: &str = "xdp-underlay";

/// Where the XDP early drop's link is pinned.
pub fn xdp_link_pin(paths: &Paths) -> PathBuf {
    paths.bpffs.join(XDP_LINK_PIN)
}

/// Attaches pinned TC program `program` to TC ingress of `ifname` and pins
/// the link at `link_pin`, replacing a link pinned there (the new link is
/// attached first, so the interface is never without a program). A link
/// already pinned there for this program stays.
pub fn attach_tc(paths: &Paths, program: &str, ifname: &str, link_pin: &Path) -> Result<()> {
    let prog_pin = paths.prog_pin(program);
    let mut prog = SchedClassifier::from_pin(&prog_pin).map_err(|e| {
        Error::program(
            format!("cannot open the pinned program {}", prog_pin.display()),
            e,
        )
    })?;
    let id = match prog.attach(ifname, TcAttachType::Ingress) {
        Ok(id) => id,
        // TCX takes a program once per interface: it is attached here
        // already, and its pinned link stays.
        Err(ProgramError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::EEXIST) && link_pin.exists() =>
        {
            return Ok(());
        }
        Err(e) => {
            return Err(Error::program(
                format!("cannot attach {program} to {ifname}"),
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

/// Attaches the XDP early drop to the underlay NIC `ifname` (an interface
/// takes one XDP program: a link elsewhere is replaced).
pub fn attach_xdp(dp: &mut Datapath, ifname: &str) -> Result<()> {
    let pin = xdp_link_pin(dp.paths());
    remove_pin(&pin)?;
    let prog: &mut Xdp = dp
        .ebpf_mut()
        .program_mut(PROG_XDP_UNDERLAY)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the embedded eBPF object has no program {PROG_XDP_UNDERLAY}; rebuild weft"
            ))
        })?
        .try_into()
        .map_err(|e| Error::program(format!("{PROG_XDP_UNDERLAY} is not an XDP program"), e))?;
    if prog.fd().is_err() {
        prog.load()
            .map_err(|e| Error::program(format!("the kernel rejected {PROG_XDP_UNDERLAY}"), e))?;
    }
    let id = prog
        .attach(ifname, XdpMode::Default)
        .map_err(|e| Error::program(format!("cannot attach {PROG_XDP_UNDERLAY} to {ifname}"), e))?;
    let link: FdLink = prog
        .take_link(id)
        .map_err(|e| Error::program(format!("cannot take the XDP link on {ifname}"), e))?
        .try_into()
        .map_err(|e| Error::link(format!("the XDP link on {ifname} is not a bpf_link"), e))?;
    link.pin(&pin).map(drop).map_err(|e| {
        Error::pin(
            format!("cannot pin the XDP link on {ifname} at {}", pin.display()),
            e,
        )
    })
}

//! Raw Ethernet frames sent out of an interface (AF_PACKET), for
//! malformed packets the kernel's own stack would never build.

use anyhow::{Result, bail};

use crate::netns::NetNs;

/// Sends raw Ethernet `frames` out of `ifname` in `ns` (AF_PACKET), for
/// malformed packets the kernel's own stack would never build.
pub fn send_raw_frames(ns: &NetNs, ifname: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let ifname = std::ffi::CString::new(ifname)?;
    ns.run_in(move || {
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `ifname` is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        let result = (|| {
            if ifindex == 0 {
                bail!("no interface {ifname:?}");
            }
            for frame in &frames {
                // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = ifindex as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                // SAFETY: `frame` and `addr` outlive the call; sizes are theirs.
                let sent = unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if sent < 0 {
                    bail!("sendto: {}", std::io::Error::last_os_error());
                }
            }
            Ok(())
        })();
        // SAFETY: `fd` is ours and not used after this.
        unsafe { libc::close(fd) };
        result
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("raw sender panicked"))?
}

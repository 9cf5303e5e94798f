//! Probes of what a path does with a packet, without a server of ours:
//! whether a TCP connection is answered, what error a UDP send gets back,
//! whether a broadcast is delivered, which MSS both ends agree on.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::WAIT;
use crate::netns::NetNs;

/// Whether `ip` answers a TCP connection from `client` to `port` within two
/// seconds, with a handshake or a RST: both prove the path carries packets,
/// so no server is needed to show a path is open or blocked.
pub fn tcp_connect_answers(client: &NetNs, ip: &str, port: u16) -> Result<bool> {
    let target: SocketAddr = format!("{ip}:{port}").parse()?;
    client
        .run_in(
            move || match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(true),
                Err(_) => Ok(false),
            },
        )?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// Whether a UDP broadcast sent by `sender` to `broadcast:port` reaches a
/// socket in `receiver`.
pub fn udp_broadcast_reaches(sender: &NetNs, broadcast: &str, receiver: &NetNs) -> Result<bool> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver_thread = receiver.run_in(move || {
        let sock = UdpSocket::bind("0.0.0.0:47999")?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        ready_tx.send(())?;
        let mut buf = [0u8; 512];
        Ok(matches!(sock.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"to everyone"))
    })?;
    ready_rx
        .recv_timeout(WAIT)
        .context("receiver never bound")?;
    let target: SocketAddr = format!("{broadcast}:47999").parse()?;
    sender
        .run_in(move || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_broadcast(true)?;
            for _ in 0..3 {
                sock.send_to(b"to everyone", target)?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    receiver_thread
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?
}

/// Opens one TCP connection from `client` to a listener on `server_ip` in
/// `server` and returns the MSS each end settled on (`TCP_MAXSEG`).
pub fn tcp_mss(server: &NetNs, server_ip: &str, client: &NetNs) -> Result<(u32, u32)> {
    let listener = {
        let bind: SocketAddr = format!("{server_ip}:0").parse()?;
        server
            .run_in(move || Ok(TcpListener::bind(bind)?))?
            .join()
            .map_err(|_| anyhow::anyhow!("listener thread panicked"))??
    };
    let target = listener.local_addr()?;
    let stream = client
        .run_in(move || Ok(TcpStream::connect_timeout(&target, WAIT)?))?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    let (accepted, _) = listener.accept()?;
    Ok((max_segment(&stream)?, max_segment(&accepted)?))
}

fn max_segment(s: &TcpStream) -> Result<u32> {
    let mut mss: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) on a socket we own into a c_int of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mut mss as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!("TCP_MAXSEG: {}", std::io::Error::last_os_error());
    }
    Ok(mss as u32)
}

/// Sends a datagram from a connected UDP socket in `ns` to `to` and waits
/// for an answer: the error kind the socket reports, `None` if data came.
pub fn connected_udp_error(ns: &NetNs, to: &str) -> Result<Option<ErrorKind>> {
    let to: SocketAddr = to.parse()?;
    ns.run_in(move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_read_timeout(Some(WAIT))?;
        s.send(b"anyone?")?;
        let mut buf = [0u8; 64];
        Ok(s.recv(&mut buf).err().map(|e| e.kind()))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

//! Real TCP and UDP between containers, from threads that entered their
//! namespaces. Every wait is bounded, so a blocked path fails, never hangs.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;

const WAIT: Duration = Duration::from_secs(3);

/// Sends `len` bytes over TCP from `client` to an echo server in `server`
/// at `server_ip` and checks every byte comes back.
pub fn tcp_echo(server: &NetNs, server_ip: &str, client: &NetNs, len: usize) -> Result<()> {
    let (port_tx, port_rx) = mpsc::channel();
    let bind: SocketAddr = format!("{server_ip}:0").parse()?;
    let server_thread = server.run_in(move || {
        let listener = TcpListener::bind(bind)?;
        port_tx.send(listener.local_addr()?.port())?;
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + WAIT * 2;
        let (mut conn, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("no TCP connection arrived");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(WAIT))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n])?;
        }
        Ok(())
    })?;
    let port = port_rx
        .recv_timeout(WAIT)
        .context("echo server never bound")?;
    let target: SocketAddr = format!("{server_ip}:{port}").parse()?;
    let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let client_result = client
        .run_in(move || {
            let mut stream = TcpStream::connect_timeout(&target, WAIT)?;
            stream.set_read_timeout(Some(WAIT))?;
            let mut writer = stream.try_clone()?;
            let writer_thread = std::thread::spawn(move || -> std::io::Result<()> {
                writer.write_all(&sent)?;
                writer.shutdown(Shutdown::Write)
            });
            let mut got = Vec::with_capacity(len);
            stream.read_to_end(&mut got)?;
            writer_thread
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??;
            Ok(got)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    let server_result = server_thread
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
    let got = client_result.context("TCP client")?;
    server_result.context("TCP echo server")?;
    if got != expected {
        bail!(
            "TCP echo returned {} of {} bytes, or different bytes",
            got.len(),
            len
        );
    }
    Ok(())
}

/// Whether `ip` answers a TCP connection from `client` to `port` within two
/// seconds, with a handshake or a RST: both prove the path carries packets,
/// so no server is needed to show a path is open or blocked.
pub fn tcp_connect_answers(client: &NetNs, ip: &str, port: u16) -> Result<bool> {
    let target: SocketAddr = format!("{ip}:{port}").parse()?;
    client
        .run_in(
            move || match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
                Err(_) => Ok(false),
            },
        )?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// Sends one UDP datagram from `client` to an echo server in `server`;
/// `Ok(true)` when the echo came back intact, `Ok(false)` when nothing did.
pub fn udp_echo(server: &NetNs, server_ip: &str, client: &NetNs) -> Result<bool> {
    let (port_tx, port_rx) = mpsc::channel();
    let bind: SocketAddr = format!("{server_ip}:0").parse()?;
    let server_thread = server.run_in(move || {
        let sock = UdpSocket::bind(bind)?;
        port_tx.send(sock.local_addr()?.port())?;
        sock.set_read_timeout(Some(WAIT))?;
        let mut buf = [0u8; 2048];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                sock.send_to(&buf[..n], from)?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    })?;
    let port = port_rx
        .recv_timeout(WAIT)
        .context("UDP server never bound")?;
    let target: SocketAddr = format!("{server_ip}:{port}").parse()?;
    let echoed = client
        .run_in(move || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(Duration::from_secs(2)))?;
            let msg = b"weft udp echo";
            sock.send_to(msg, target)?;
            let mut buf = [0u8; 2048];
            Ok(matches!(sock.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == msg))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    server_thread
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(echoed)
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
        anyhow::bail!("TCP_MAXSEG: {}", std::io::Error::last_os_error());
    }
    Ok(mss as u32)
}

/// A TCP echo server on `0.0.0.0:port` in `ns` for `conns` connections;
/// reports the peers it saw.
pub fn tcp_echo_server(
    ns: &NetNs,
    port: u16,
    conns: usize,
) -> Result<JoinHandle<Result<Vec<SocketAddr>>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = ns.run_in(move || {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        ready_tx.send(())?;
        let mut peers = Vec::new();
        for _ in 0..conns {
            let (mut conn, peer) = listener.accept()?;
            peers.push(peer);
            conn.set_read_timeout(Some(WAIT))?;
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n])?;
            }
        }
        Ok(peers)
    })?;
    ready_rx
        .recv_timeout(WAIT)
        .context("TCP server never bound")?;
    Ok(thread)
}

/// A UDP echo server on `0.0.0.0:port` in `ns` for one datagram; reports
/// the peer.
pub fn udp_echo_server(ns: &NetNs, port: u16) -> Result<JoinHandle<Result<SocketAddr>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = ns.run_in(move || {
        let sock = UdpSocket::bind(("0.0.0.0", port))?;
        sock.set_read_timeout(Some(WAIT * 2))?;
        ready_tx.send(())?;
        let mut buf = [0u8; 2048];
        let (n, peer) = sock.recv_from(&mut buf)?;
        sock.send_to(&buf[..n], peer)?;
        Ok(peer)
    })?;
    ready_rx
        .recv_timeout(WAIT)
        .context("UDP server never bound")?;
    Ok(thread)
}

/// Sends `msg` over TCP from `ns` to `to` and checks the echo: `Ok(false)`
/// when the connection is refused or times out.
pub fn tcp_echo_from(ns: &NetNs, to: &str, msg: &'static [u8]) -> Result<bool> {
    let to: SocketAddr = to.parse()?;
    ns.run_in(move || {
        let mut s = match TcpStream::connect_timeout(&to, WAIT) {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::TimedOut) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(msg)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got == msg)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// Sends `msg` over UDP from `ns` to `to`; whether the echo came back.
pub fn udp_echo_from(ns: &NetNs, to: &str, msg: &'static [u8]) -> Result<bool> {
    let to: SocketAddr = to.parse()?;
    ns.run_in(move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(WAIT))?;
        s.send_to(msg, to)?;
        let mut buf = [0u8; 2048];
        Ok(matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == msg))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
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

pub fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?
}

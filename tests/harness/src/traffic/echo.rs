//! Echo servers and clients over real TCP and UDP sockets, on threads that
//! entered their namespaces: whether bytes cross a path intact, and which
//! peer address a server saw (what NAT made of the client).

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::WAIT;
use crate::netns::NetNs;

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
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
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
        s.shutdown(Shutdown::Write)?;
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

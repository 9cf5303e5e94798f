//! The world beyond the node for masquerade tests: an "outside" namespace
//! joined to the node namespace by a veth pair (`uplink` in the node with
//! [`NODE_UPLINK_IP`]/24, `eth0` outside with [`OUTSIDE_IP`]/24), the node's
//! default route via the outside end. The outside has no route back to any
//! container subnet, so only masquerade brings replies home. The pair goes
//! away with the namespaces.
//!
//! The node keeps Linux's default ephemeral ports (32768-60999), which
//! weft's default NAT range (61000-65535) is disjoint from, as `node set`
//! requires: the tests show the default works on a stock node.
//!
//! Servers here run on threads inside the outside namespace and report the
//! peer address they saw, so tests can assert what left the uplink.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{netns::NetNs, node::Node};

/// The node's address on the uplink: what masqueraded traffic carries.
pub const NODE_UPLINK_IP: &str = "198.18.0.1";
/// The outside end, also the node's default gateway.
pub const OUTSIDE_IP: &str = "198.18.0.2";
/// The uplink's name in the node namespace.
pub const UPLINK: &str = "uplink";

pub struct Outside {
    pub ns: NetNs,
}

impl Outside {
    /// Creates the outside namespace and the uplink pair for `node`.
    pub fn new(node: &Node) -> Result<Self> {
        Self::beyond(&node.ns)
    }

    /// [`Outside::new`] for any node namespace (one without weft, too).
    pub fn beyond(node: &NetNs) -> Result<Self> {
        let ns = NetNs::new("wtout")?;
        node.uplink_to((UPLINK, NODE_UPLINK_IP), &ns, ("eth0", OUTSIDE_IP))?;
        Ok(Self { ns })
    }

    /// A TCP server on `OUTSIDE_IP:port` (0: any) that serves `len` bytes
    /// to each of `conns` connections, then reports the peers it saw.
    pub fn tcp_source(&self, len: usize, conns: usize) -> Result<Server<Vec<SocketAddr>>> {
        let (port_tx, port_rx) = mpsc::channel();
        let thread = self.ns.run_in(move || {
            let listener = TcpListener::bind(format!("{OUTSIDE_IP}:0"))?;
            widen_backlog(&listener)?;
            port_tx.send(listener.local_addr()?.port())?;
            let mut peers = Vec::new();
            let mut workers = Vec::new();
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while peers.len() < conns {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        peers.push(peer);
                        workers.push(std::thread::spawn(move || -> std::io::Result<()> {
                            conn.set_nonblocking(false)?;
                            conn.set_write_timeout(Some(Duration::from_secs(20)))?;
                            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                            conn.write_all(&data)?;
                            conn.shutdown(std::net::Shutdown::Write)?;
                            // Wait for the client's close so the FIN
                            // exchange completes.
                            conn.set_read_timeout(Some(Duration::from_secs(20)))?;
                            let mut sink = [0u8; 64];
                            while conn.read(&mut sink)? > 0 {}
                            Ok(())
                        }));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            bail!("only {} of {conns} TCP connections arrived", peers.len());
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("server worker panicked"))??;
            }
            Ok(peers)
        })?;
        let port = port_rx
            .recv_timeout(Duration::from_secs(3))
            .context("TCP server never bound")?;
        Ok(Server {
            port,
            thread,
            stop: Arc::default(),
        })
    }

    /// A UDP echo server on `OUTSIDE_IP` until stopped; reports every peer
    /// it answered, in order of first datagram.
    pub fn udp_echo(&self) -> Result<Server<Vec<SocketAddr>>> {
        let (port_tx, port_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = self.ns.run_in(move || {
            let sock = UdpSocket::bind(format!("{OUTSIDE_IP}:0"))?;
            port_tx.send(sock.local_addr()?.port())?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut peers: Vec<SocketAddr> = Vec::new();
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if !peers.contains(&from) {
                        peers.push(from);
                    }
                    sock.send_to(&buf[..n], from)?;
                }
            }
            Ok(peers)
        })?;
        let port = port_rx
            .recv_timeout(Duration::from_secs(3))
            .context("UDP server never bound")?;
        Ok(Server { port, thread, stop })
    }
}

/// A server thread in the outside namespace.
pub struct Server<T> {
    pub port: u16,
    thread: JoinHandle<Result<T>>,
    stop: Arc<AtomicBool>,
}

impl<T> Server<T> {
    pub fn addr(&self) -> SocketAddr {
        format!("{OUTSIDE_IP}:{}", self.port)
            .parse()
            .expect("a valid socket address")
    }

    /// Stops the server (if it runs until stopped) and returns its report.
    pub fn finish(self) -> Result<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?
    }
}

/// std listens with a backlog of 128; a burst of connections needs more
/// (listen(2) on a listening socket only changes the backlog).
fn widen_backlog(listener: &TcpListener) -> Result<()> {
    // SAFETY: listen(2) on a socket fd we own; no memory is passed.
    if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
        bail!("listen: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `conns` TCP connections from `client` to `server` at once (all
/// connected before any is read), reads `len` bytes on each and checks
/// them. Returns the local (container-side) addresses used.
pub fn tcp_fetch_many(
    client: &NetNs,
    server: SocketAddr,
    conns: usize,
    len: usize,
    threads: usize,
) -> Result<Vec<SocketAddr>> {
    let per = conns.div_ceil(threads);
    let mut handles = Vec::new();
    let connected = Arc::new(std::sync::Barrier::new(threads));
    for t in 0..threads {
        let n = per.min(conns.saturating_sub(t * per));
        let connected = Arc::clone(&connected);
        handles.push(client.run_in(move || {
            let mut streams = Vec::with_capacity(n);
            for _ in 0..n {
                streams.push(TcpStream::connect_timeout(
                    &server,
                    Duration::from_secs(10),
                )?);
            }
            // Every connection of every thread is open at this point.
            connected.wait();
            let expected: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut locals = Vec::with_capacity(n);
            for mut s in streams {
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                let mut got = Vec::with_capacity(len);
                s.read_to_end(&mut got)?;
                if got != expected {
                    bail!(
                        "a connection returned {} of {len} bytes, or other bytes",
                        got.len()
                    );
                }
                locals.push(s.local_addr()?);
            }
            Ok(locals)
        })?);
    }
    let mut locals = Vec::new();
    for h in handles {
        locals.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
        );
    }
    Ok(locals)
}

/// A UDP socket opened in `ns` (a socket stays in the namespace it was
/// created in, whichever thread uses it later).
pub fn udp_socket_in(ns: &NetNs) -> Result<UdpSocket> {
    ns.run_in(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(s)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("socket thread panicked"))?
}

/// Sends `msg` on `sock` to `to`; whether the same bytes came back within
/// a second.
pub fn udp_roundtrip(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Result<bool> {
    sock.send_to(msg, to)?;
    let mut buf = [0u8; 2048];
    Ok(matches!(sock.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == msg))
}

//! `cargo xtask loadgen`: the TCP load generator the NAT bench runs inside
//! its namespaces (hidden; `ip netns exec NS <xtask> loadgen ...`).
//!
//! - `serve`: answers every `MSG`-byte request with `MSG` bytes until the
//!   peer closes; a fixed pool of threads each accepts and serves one
//!   connection at a time (no spawn per connection to distort rates).
//! - `crr`: connect, one request/response, close, again (netperf's
//!   TCP_CRR): new connections per second, which is what a NAT's
//!   connection setup (conntrack entry, port allocation, rule walk) costs.
//! - `rr`: request/response on connections kept open (netperf's TCP_RR):
//!   transactions per second on established flows.
//!
//! - `dns`: A queries over UDP, `--window` outstanding at once, names taken
//!   in turn from `--names`: queries answered per second and the p50/p99
//!   of each answer's latency (a DNS server's throughput and latency).
//!
//! Clients print one JSON line: `{"mode","ops","errors","error_kinds",
//! "seconds","per_second"}`; `error_kinds` counts failed connections by
//! `std::io::ErrorKind` (`TimedOut`: no answer; `ConnectionReset`: an RST;
//! `AddrNotAvailable`: the client ran out of ports), so a failure says
//! whose it is.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

/// Request and response size in bytes.
const MSG: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A stalled peer must not hang a client past its measurement.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Serve requests on ADDR:PORT.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 16)]
        threads: usize,
    },
    /// New connection per request, spread round-robin over PORTS (N or N-M).
    Crr {
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        ports: String,
        #[arg(long)]
        secs: u64,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// DNS A queries for NAMES (comma-separated), WINDOW outstanding.
    Dns {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        names: String,
        #[arg(long)]
        secs: u64,
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
    /// Requests on THREADS connections kept open.
    Rr {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        secs: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

pub fn run(args: &Args) -> Result<()> {
    match &args.mode {
        Mode::Serve { listen, threads } => serve(*listen, *threads),
        Mode::Crr {
            to,
            ports,
            secs,
            threads,
        } => {
            let (lo, hi) = parse_ports(ports)?;
            let ports: Vec<u16> = (lo..=hi).collect();
            let ports = Arc::new(ports);
            let to = *to;
            report(
                "crr",
                *secs,
                *threads,
                move |thread_no, stop, ops, errors| {
                    // Threads start at different ports so each port is used.
                    let mut i = thread_no;
                    while !stop.load(Ordering::Relaxed) {
                        let addr = SocketAddr::new(to, ports[i % ports.len()]);
                        i = i.wrapping_add(1);
                        match one_connection(addr) {
                            Ok(()) => {
                                ops.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => errors.add(&e),
                        }
                    }
                },
            )
        }
        Mode::Dns {
            to,
            names,
            secs,
            window,
        } => {
            let names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
            crate::dns_load::run(*to, &names, *secs, *window)
        }
        Mode::Rr { to, secs, threads } => {
            let to = *to;
            report("rr", *secs, *threads, move |_, stop, ops, errors| {
                let mut s = match connect(to) {
                    Ok(s) => s,
                    Err(e) => return errors.add(&e),
                };
                let mut buf = [0u8; MSG];
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = exchange(&mut s, &mut buf) {
                        return errors.add(&e);
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        }
    }
}

/// `N` or `N-M` (inclusive).
fn parse_ports(s: &str) -> Result<(u16, u16)> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo
        .parse()
        .with_context(|| format!("bad port range '{s}'"))?;
    let hi: u16 = hi
        .parse()
        .with_context(|| format!("bad port range '{s}'"))?;
    if lo == 0 || hi < lo {
        bail!("bad port range '{s}': expected N or N-M with 0 < N <= M");
    }
    Ok((lo, hi))
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn exchange(s: &mut TcpStream, buf: &mut [u8; MSG]) -> std::io::Result<()> {
    s.write_all(buf)?;
    s.read_exact(buf)
}

/// One connect, request, response and close; the client closes first.
fn one_connection(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = connect(addr)?;
    exchange(&mut s, &mut [0u8; MSG])
}

/// Failed connections, by kind.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    kinds: Mutex<BTreeMap<String, u64>>,
}

impl Errors {
    fn add(&self, e: &std::io::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kinds) = self.kinds.lock() {
            *kinds.entry(format!("{:?}", e.kind())).or_default() += 1;
        }
    }
}

/// Runs `work` on `threads` threads for `secs` seconds and prints the rate.
fn report<F>(mode: &str, secs: u64, threads: usize, work: F) -> Result<()>
where
    F: Fn(usize, &AtomicBool, &AtomicU64, &Errors) + Send + Sync + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|n| {
            let (stop, ops, errors, work) =
                (stop.clone(), ops.clone(), errors.clone(), work.clone());
            thread::spawn(move || work(n, &stop, &ops, &errors))
        })
        .collect();
    thread::sleep(Duration::from_secs(secs));
    let done = ops.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    println!(
        "{}",
        json!({
            "mode": mode,
            "ops": done,
            "errors": errors.count.load(Ordering::Relaxed),
            "error_kinds": errors.kinds.lock().map(|k| k.clone()).unwrap_or_default(),
            "seconds": elapsed,
            "per_second": done as f64 / elapsed,
        })
    );
    Ok(())
}

fn serve(listen: SocketAddr, threads: usize) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let listener = listener.try_clone()?;
            Ok(thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut s) = conn else { continue };
                    let _ = s.set_nodelay(true);
                    let mut buf = [0u8; MSG];
                    // Until the client closes (or goes silent).
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
                }
            }))
        })
        .collect::<Result<_>>()?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("80").unwrap(), (80, 80));
        assert_eq!(parse_ports("20000-29999").unwrap(), (20000, 29999));
        assert!(parse_ports("5-4").is_err());
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("x").is_err());
    }
}

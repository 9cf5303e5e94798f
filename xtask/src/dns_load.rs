//! `cargo xtask loadgen dns`: a UDP DNS load generator. One socket keeps
//! `window` A queries outstanding (ids in turn, names in turn); each answer
//! frees a slot for the next query and gives one latency sample. A query
//! unanswered after [`LOST_AFTER`] counts as lost and frees its slot, so a
//! server that drops queries lowers the rate instead of stalling the run.
//! Answers that are not NOERROR with an answer record count as errors, so
//! a server answering fast but wrong does not look good.

use std::{
    collections::VecDeque,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::json;

/// A query unanswered this long is lost.
const LOST_AFTER: Duration = Duration::from_secs(1);
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// The wire form of an A query for `name` with id `id`, recursion desired.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// The id of answer `a`, and whether it is NOERROR with an answer record.
pub fn answer(a: &[u8]) -> Option<(u16, bool)> {
    if a.len() < 12 || a[2] & 0x80 == 0 {
        return None;
    }
    let id = u16::from_be_bytes([a[0], a[1]]);
    let rcode = a[3] & 0x0f;
    let answers = u16::from_be_bytes([a[6], a[7]]);
    Some((id, rcode == 0 && answers > 0))
}

pub fn run(to: SocketAddr, names: &[&str], secs: u64, window: usize) -> Result<()> {
    anyhow::ensure!(!names.is_empty(), "dns: no --names to ask for");
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    sock.connect(to)
        .with_context(|| format!("connecting to {to}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let queries: Vec<Vec<u8>> = (0..names.len()).map(|i| query(0, names[i])).collect();
    // Send time of each id in flight.
    let mut sent: Vec<Option<Instant>> = vec![None; 65_536];
    let mut order: VecDeque<(u16, Instant)> = VecDeque::new();
    let (mut next, mut in_flight) = (0u16, 0usize);
    let (mut lost, mut wrong, mut send_errors) = (0u64, 0u64, 0u64);
    let mut latencies_us: Vec<f64> = Vec::new();
    let mut buf = [0u8; 1500];
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        while in_flight < window.max(1) {
            // An id still in flight (after 65,536 queries) is skipped.
            if sent[usize::from(next)].is_some() {
                next = next.wrapping_add(1);
                continue;
            }
            let mut q = queries[usize::from(next) % queries.len()].clone();
            q[..2].copy_from_slice(&next.to_be_bytes());
            let now = Instant::now();
            if sock.send(&q).is_err() {
                send_errors += 1;
                break;
            }
            sent[usize::from(next)] = Some(now);
            order.push_back((next, now));
            in_flight += 1;
            next = next.wrapping_add(1);
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let now = Instant::now();
                if let Some((id, good)) = answer(&buf[..n])
                    && let Some(at) = sent[usize::from(id)].take()
                {
                    in_flight -= 1;
                    if good {
                        latencies_us.push((now - at).as_secs_f64() * 1e6);
                    } else {
                        wrong += 1;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable: the server is not (yet) there.
            Err(_) => send_errors += 1,
        }
        let now = Instant::now();
        while let Some(&(id, at)) = order.front() {
            if sent[usize::from(id)] != Some(at) {
                order.pop_front();
            } else if now - at > LOST_AFTER {
                sent[usize::from(id)] = None;
                order.pop_front();
                in_flight -= 1;
                lost += 1;
            } else {
                break;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies_us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        (!latencies_us.is_empty()).then(|| {
            latencies_us[((latencies_us.len() as f64 * q) as usize).min(latencies_us.len() - 1)]
        })
    };
    println!(
        "{}",
        json!({
            "mode": "dns",
            "ops": latencies_us.len(),
            "errors": lost + wrong + send_errors,
            "error_kinds": {"lost": lost, "wrong_answer": wrong, "socket": send_errors},
            "seconds": elapsed,
            "per_second": latencies_us.len() as f64 / elapsed,
            "p50_us": at(0.50),
            "p99_us": at(0.99),
            "window": window,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_wire_format_and_answers_are_judged() {
        let q = query(0x1234, "web.weft.");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..22], b"\x03web\x04weft\x00");
        assert_eq!(&q[22..], &[0, 1, 0, 1]);
        // A query is no answer; NOERROR with one record is good, NXDOMAIN not.
        assert_eq!(answer(&q), None);
        let mut a = q.clone();
        a[2] |= 0x80;
        a[7] = 1;
        assert_eq!(answer(&a), Some((0x1234, true)));
        a[3] = 3;
        assert_eq!(answer(&a), Some((0x1234, false)));
        assert_eq!(answer(&a[..5]), None);
    }
}

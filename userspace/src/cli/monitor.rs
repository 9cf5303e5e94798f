//! `weft monitor`: the datapath's drop events, live, as lines or JSON, and
//! optionally the dropped packets' first bytes as a pcap file that tcpdump
//! and tshark open. With traces on, forwarded packets too, and each new
//! service connection with the backend it was given.

use std::{
    fs::File,
    io::Write,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, SystemTime},
};

use aya::maps::{Array, Map, MapData, RingBuf};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use weft_common::{
    events::{
        EVENT_DROP, EVENT_SERVICE_PICK, EVENT_TRACE, MAP_EVENTS, MAP_TRACE, PROGRAM_FROM_CONTAINER,
        PROGRAM_FROM_UPLINK, PROGRAM_NAT_EGRESS, PacketEvent, SOURCE_FILES, TraceConfig,
    },
    reason::{Drop, Forward},
};

use crate::{
    datapath::paths::Paths,
    error::{Error, Result},
    model::Endpoint,
};

/// What the monitor knows of the node to name what it shows: the
/// endpoints and services (from the API) and the uplink's ifindex.
pub struct Known {
    pub endpoints: Vec<Endpoint>,
    pub services: Vec<weft_api::views::ServiceView>,
    pub uplink_ifindex: Option<u32>,
}

/// What to show.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only events of this endpoint's host veth.
    pub endpoint: Option<String>,
    /// Dropped packets (always emitted by the datapath).
    pub drops: bool,
    /// Forwarded packets: the datapath emits them only while asked to.
    pub traces: bool,
    /// Trace one in this many forwarded packets (1: all).
    pub sample_every: u32,
}

/// One event as `monitor` prints it.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// RFC 3339 UTC.
    pub time: String,
    /// "drop" or "trace".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// "dropped" or "forwarded".
    pub verdict: &'static str,
    /// The drop reason, or how it was forwarded (`bridged`, `routed`, ...).
    pub reason: String,
    pub location: String,
    pub program: &'static str,
    pub ifindex: u32,
    pub endpoint: Option<String>,
    pub len: u32,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub proto: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// A service pick: the service (by name, or `id N` if unknown here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A service pick: the backend endpoint given the connection (its
    /// address when it is not known here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// Streams events until `count` were shown (if given) or the process is
/// interrupted; `json` prints one object per line.
pub async fn run(
    paths: &Paths,
    st: &Known,
    filter: &Filter,
    json: bool,
    count: Option<u64>,
    pcap: Option<&Path>,
) -> Result<()> {
    let want_ifindex = match &filter.endpoint {
        Some(name) => Some(
            st.endpoints
                .iter()
                .find(|e| &e.name == name)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "endpoint '{name}' does not exist (see `weft endpoint ls`)"
                    ))
                })?
                .host_ifindex,
        ),
        None => None,
    };
    let ring = open_ring(paths)?;
    let mut tracing = if filter.traces {
        Some(TraceSwitch::open(
            paths,
            want_ifindex.unwrap_or(0),
            filter.sample_every,
        )?)
    } else {
        None
    };
    if let Some(t) = tracing.as_mut() {
        t.arm()?;
    }
    let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut pcap = match pcap {
        Some(path) => Some(pcap_writer(path)?),
        None => None,
    };
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as the AsyncFd (which owns the ring) lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::io("cannot poll the event ring", e.into()))?;
    let clock = Clock::now();
    let mut shown = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        let mut guard = tokio::select! {
            // The trace switch disarms itself when dropped on return.
            _ = &mut ctrl_c => return Ok(()),
            _ = heartbeat.tick(), if tracing.is_some() => {
                if let Some(t) = tracing.as_mut() {
                    t.arm()?;
                }
                continue;
            }
            guard = fd.readable_mut() => {
                guard.map_err(|e| Error::io("cannot poll the event ring", e))?
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            let Some(event) = parse(&item) else { continue };
            if want_ifindex.is_some_and(|i| i != event.ifindex) {
                continue;
            }
            let wanted = match event.kind {
                EVENT_DROP => filter.drops,
                EVENT_TRACE | EVENT_SERVICE_PICK => filter.traces,
                _ => false,
            };
            if !wanted {
                continue;
            }
            let view = view(&event, st, &clock);
            let line = if json {
                serde_json::to_string(&view).unwrap_or_default()
            } else {
                line(&view)
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            if let Some(w) = pcap.as_mut() {
                let data = &event.data[..usize::from(event.captured).min(event.data.len())];
                // Unbuffered file writes: each packet is on disk at once, so
                // a monitor that is killed leaves a readable capture.
                w.write_packet(&PcapPacket::new(
                    clock.wall(event.ktime_ns),
                    event.len,
                    data,
                ))
                .map_err(|e| Error::Invalid(format!("cannot write the pcap file: {e}")))?;
            }
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                return Ok(());
            }
        }
        guard.clear_ready();
    }
}

/// Turns the datapath's trace events on while a monitor runs: `arm` pushes
/// the expiry a few seconds ahead (call it every half second); dropping the
/// switch turns tracing off at once, and a monitor that dies without
/// dropping it stops tracing when the expiry passes.
struct TraceSwitch {
    map: Array<MapData, TraceConfig>,
    ifindex: u32,
    sample_every: u32,
}

impl TraceSwitch {
    fn open(paths: &Paths, ifindex: u32, sample_every: u32) -> Result<Self> {
        let pin = paths.maps_dir().join(MAP_TRACE);
        let data = MapData::from_pin(&pin).map_err(|e| {
            Error::map(
                format!(
                    "cannot open {} (a datapath from before trace events? run any weft \
                     command that loads it)",
                    pin.display()
                ),
                e,
            )
        })?;
        let map = Map::from_map_data(data)
            .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
        let map = Array::try_from(map)
            .map_err(|e| Error::map(format!("{MAP_TRACE} is not an array"), e))?;
        Ok(Self {
            map,
            ifindex,
            sample_every: sample_every.max(1),
        })
    }

    fn arm(&mut self) -> Result<()> {
        let until = Clock::monotonic_now() + Duration::from_secs(3);
        self.write(TraceConfig {
            until_ns: until.as_nanos() as u64,
            sample_every: self.sample_every,
            ifindex: self.ifindex,
        })
    }

    fn write(&mut self, cfg: TraceConfig) -> Result<()> {
        self.map
            .set(0, cfg, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_TRACE}"), e))
    }
}

impl std::ops::Drop for TraceSwitch {
    fn drop(&mut self) {
        let _ = self.write(TraceConfig::default());
    }
}

fn open_ring(paths: &Paths) -> Result<RingBuf<MapData>> {
    let pin = paths.maps_dir().join(MAP_EVENTS);
    if !pin.exists() {
        return Err(Error::NotFound(format!(
            "no event ring is pinned at {}: this node has no datapath yet \
             (create a network and an endpoint first)",
            pin.display()
        )));
    }
    let data = MapData::from_pin(&pin)
        .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
    let map = Map::from_map_data(data)
        .map_err(|e| Error::map(format!("cannot open {}", pin.display()), e))?;
    RingBuf::try_from(map).map_err(|e| Error::map(format!("{MAP_EVENTS} is not a ring buffer"), e))
}

fn pcap_writer(path: &Path) -> Result<PcapWriter<File>> {
    let file = File::create(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    PcapWriter::new(file)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))
}

fn parse(bytes: &[u8]) -> Option<PacketEvent> {
    (bytes.len() >= size_of::<PacketEvent>())
        .then(|| bytemuck::pod_read_unaligned(&bytes[..size_of::<PacketEvent>()]))
}

fn view(event: &PacketEvent, st: &Known, clock: &Clock) -> EventView {
    let endpoint = st
        .endpoints
        .iter()
        .find(|e| e.host_ifindex == event.ifindex)
        .map(|e| e.name.clone());
    let (kind, verdict, reason) = if event.kind == EVENT_DROP {
        let reason = Drop::from_code(event.code)
            .map_or_else(|| format!("code {}", event.code), |r| r.name().into());
        ("drop", "dropped", reason)
    } else if event.kind == EVENT_SERVICE_PICK {
        ("trace", "forwarded", "service_pick".to_owned())
    } else {
        let how = Forward::from_code(event.code)
            .map_or_else(|| format!("code {}", event.code), |k| k.name().into());
        ("trace", "forwarded", how)
    };
    let uplink = st.uplink_ifindex;
    let file = SOURCE_FILES
        .get(usize::from(event.file))
        .copied()
        .unwrap_or("?");
    let location = if event.line == 0 {
        file.to_owned()
    } else {
        format!("{file}:{}", event.line)
    };
    let program = match event.program {
        PROGRAM_FROM_CONTAINER => "weft_from_container",
        PROGRAM_FROM_UPLINK => "weft_from_uplink",
        PROGRAM_NAT_EGRESS => "weft_nat_egress",
        weft_common::events::PROGRAM_OVERLAY_ENCAP => weft_common::maps::PROG_OVERLAY_ENCAP,
        weft_common::events::PROGRAM_FROM_VXLAN => weft_common::maps::PROG_FROM_VXLAN,
        weft_common::events::PROGRAM_SERVICE => weft_common::maps::PROG_SERVICE,
        _ if endpoint.is_some() => "weft_from_container",
        _ if uplink == Some(event.ifindex) => "weft_from_uplink",
        _ => "?",
    };
    let data = &event.data[..usize::from(event.captured).min(event.data.len())];
    let tuple = five_tuple(data);
    let (service, backend) = if event.kind == EVENT_SERVICE_PICK {
        let service = st
            .services
            .iter()
            .find(|s| s.id == event.code)
            .map_or_else(|| format!("id {}", event.code), |s| s.name.clone());
        // The packet is DNATed already: its destination is the backend.
        let backend = tuple.as_ref().map(|t| {
            st.endpoints
                .iter()
                .find(|e| e.ip == t.1)
                .map_or_else(|| t.1.to_string(), |e| e.name.clone())
        });
        (Some(service), backend)
    } else {
        (None, None)
    };
    EventView {
        time: rfc3339(clock.wall(event.ktime_ns)),
        kind,
        verdict,
        reason,
        location,
        program,
        ifindex: event.ifindex,
        endpoint,
        len: event.len,
        src: tuple.as_ref().map(|t| t.0.to_string()),
        dst: tuple.as_ref().map(|t| t.1.to_string()),
        proto: tuple.as_ref().map(|t| t.2.clone()),
        sport: tuple.as_ref().and_then(|t| t.3),
        dport: tuple.as_ref().and_then(|t| t.4),
        service,
        backend,
    }
}

type Tuple = (Ipv4Addr, Ipv4Addr, String, Option<u16>, Option<u16>);

/// Addresses, protocol and ports of an Ethernet/IPv4 frame's first bytes.
fn five_tuple(frame: &[u8]) -> Option<Tuple> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return None;
    };
    let h = ip.header();
    let (proto, sport, dport) = match &packet.transport {
        Some(TransportSlice::Tcp(t)) => (
            "tcp".to_owned(),
            Some(t.source_port()),
            Some(t.destination_port()),
        ),
        Some(TransportSlice::Udp(u)) => (
            "udp".to_owned(),
            Some(u.source_port()),
            Some(u.destination_port()),
        ),
        Some(TransportSlice::Icmpv4(_)) => ("icmp".to_owned(), None, None),
        _ => (format!("ip proto {}", h.protocol().0), None, None),
    };
    Some((h.source_addr(), h.destination_addr(), proto, sport, dport))
}

fn line(v: &EventView) -> String {
    let from = v.endpoint.as_deref().map_or_else(
        || format!("ifindex {}", v.ifindex),
        |e| format!("endpoint {e}"),
    );
    let flow = match (&v.src, &v.dst, &v.proto) {
        (Some(s), Some(d), Some(p)) => match (v.sport, v.dport) {
            (Some(sp), Some(dp)) => format!("{p} {s}:{sp} -> {d}:{dp}"),
            _ => format!("{p} {s} -> {d}"),
        },
        _ => "non-IPv4".to_owned(),
    };
    if let (Some(service), Some(backend)) = (&v.service, &v.backend) {
        format!(
            "{}  TRACE {:<24} {} ({})  service {service} -> backend {backend}  {}  len {}",
            v.time, v.reason, from, v.program, flow, v.len
        )
    } else if v.kind == "drop" {
        format!(
            "{}  DROP  {:<24} at {:<32} {} ({})  {}  len {}",
            v.time, v.reason, v.location, from, v.program, flow, v.len
        )
    } else {
        format!(
            "{}  TRACE {:<24} {} ({})  {}  len {}",
            v.time, v.reason, from, v.program, flow, v.len
        )
    }
}

/// Maps the kernel's monotonic event times to wall-clock time.
struct Clock {
    wall_at_mono_zero: Duration,
}

impl Clock {
    fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            wall_at_mono_zero: wall.saturating_sub(mono),
        }
    }

    /// CLOCK_MONOTONIC now: the clock `bpf_ktime_get_ns` reads.
    fn monotonic_now() -> Duration {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default()
    }

    fn wall(&self, ktime_ns: u64) -> Duration {
        self.wall_at_mono_zero + Duration::from_nanos(ktime_ns)
    }
}

/// `2026-11-25T04:58:17.123456Z` from a duration since the epoch.
fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(
            rfc3339(Duration::from_secs(0)),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(1_795_582_320)),
            "2026-11-25T04:52:00.000000Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}

//! Prometheus metrics on `GET /metrics`, read from the pinned maps at each
//! scrape: the kernel's counters are the source of truth, so an agent
//! restart never resets them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::watch;
use weft_common::maps::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PROG_FROM_CONTAINER};

use super::{cluster::Stats as ClusterStats, health::Stats as HealthStats};
use crate::{
    apply::MapDiff,
    datapath::{conntrack, counters::read_counters, ct_budget, ip_be, paths::Paths},
    engine::views::proto_name,
    error::{Error, Result},
    model::Model,
};

type Labels = Vec<(String, String)>;

/// Turns on the kernel's per-program run time/count accounting while the
/// returned fd is open (BPF_ENABLE_STATS); `None` if the kernel refuses.
pub fn enable_kernel_stats() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::warn!("kernel BPF run-time stats unavailable: {e}");
            None
        }
    }
}

/// What the agent's reconcile runs did (`weft_reconcile_*`); the agent
/// keeps it, as the kernel keeps no record of repairs.
#[derive(Debug, Default)]
pub struct ReconcileTally {
    runs: u64,
    /// Seconds since the Unix epoch.
    last_run: u64,
    /// Entries changed, by (kind, map).
    repairs: BTreeMap<(&'static str, String), u64>,
}

impl ReconcileTally {
    /// Counts one reconcile run, at `at` (Unix seconds), that changed `maps`.
    pub fn record(&mut self, at: u64, maps: &[MapDiff]) {
        self.runs += 1;
        self.last_run = at;
        for d in maps {
            for (kind, n) in [
                ("added", d.missing.len()),
                ("rewritten", d.wrong.len()),
                ("removed", d.stale.len()),
            ] {
                if n > 0 {
                    *self.repairs.entry((kind, d.map.clone())).or_default() += n as u64;
                }
            }
        }
    }

    fn register(&self, registry: &mut Registry) {
        let runs = Counter::<u64>::default();
        runs.inc_by(self.runs);
        registry.register(
            "reconcile_runs",
            "Reconciles of the maps with the saved state (one at agent start)",
            runs,
        );
        let last = Gauge::<i64>::default();
        last.set(i64::try_from(self.last_run).unwrap_or(i64::MAX));
        registry.register(
            "reconcile_last_run_timestamp_seconds",
            "When the last reconcile ran (0: never)",
            last,
        );
        let repairs = Family::<Labels, Counter>::default();
        for ((kind, map), n) in &self.repairs {
            let l = vec![
                ("kind".to_owned(), (*kind).to_owned()),
                ("object".to_owned(), map.clone()),
            ];
            repairs.get_or_create(&l).inc_by(*n);
        }
        registry.register(
            "reconcile_repairs",
            "Map entries a reconcile changed to match the saved state, by kind and map",
            repairs,
        );
    }
}

/// What a scrape reads.
#[derive(Clone)]
struct Scraped {
    paths: Paths,
    model: watch::Receiver<Arc<Model>>,
    reconcile: Arc<Mutex<ReconcileTally>>,
    cluster: Option<Arc<ClusterStats>>,
    health: Arc<HealthStats>,
}

/// Serves `/metrics` on `addr` until the returned future is dropped.
pub async fn serve(
    paths: Paths,
    model: watch::Receiver<Arc<Model>>,
    reconcile: Arc<Mutex<ReconcileTally>>,
    cluster: Option<Arc<ClusterStats>>,
    health: Arc<HealthStats>,
    addr: SocketAddr,
) -> Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen for metrics on {addr}"), e))?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scraped {
            paths,
            model,
            reconcile,
            cluster,
            health,
        });
    Ok(async move { axum::serve(listener, app).await })
}

/// OpenMetrics to scrapers that ask for it (Prometheus does), the classic
/// text format (0.0.4) to everyone else, e.g. curl and promtool.
async fn scrape(State(s): State<Scraped>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let model = s.model.borrow().clone();
    let rendered = match s.reconcile.lock() {
        Ok(tally) => render_with(
            &s.paths,
            &model,
            &tally,
            s.cluster.as_deref(),
            Some(&s.health),
        ),
        Err(_) => Err(Error::Invalid("the reconcile tally is poisoned".into())),
    };
    match rendered {
        Ok(text) if wants_openmetrics => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            prometheus_text(&text),
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the datapath's counters: {e}\n"),
        )
            .into_response(),
    }
}

/// The OpenMetrics text of every weft metric, from the pinned maps now.
pub fn render(paths: &Paths, st: &Model, reconcile: &ReconcileTally) -> Result<String> {
    render_with(paths, st, reconcile, None, None)
}

/// [`render`], with cluster mode's metrics when it is on and the health
/// checks' when they run.
pub fn render_with(
    paths: &Paths,
    st: &Model,
    reconcile: &ReconcileTally,
    cluster: Option<&ClusterStats>,
    health: Option<&HealthStats>,
) -> Result<String> {
    let slots: Vec<u32> = st.endpoints.iter().map(|e| e.stats_slot).collect();
    let counters = read_counters(paths, &slots)?;
    let mut registry = Registry::with_prefix("weft");
    reconcile.register(&mut registry);
    if let Some(c) = cluster {
        c.register(&mut registry);
    }

    let drop_packets = Family::<Labels, Counter>::default();
    let drop_bytes = Family::<Labels, Counter>::default();
    for (direction, reason, c) in &counters.directed_drops {
        let l = vec![
            ("reason".to_owned(), reason.name().to_owned()),
            ("direction".to_owned(), (*direction).to_owned()),
        ];
        drop_packets.get_or_create(&l).inc_by(c.packets);
        drop_bytes.get_or_create(&l).inc_by(c.bytes);
    }
    registry.register(
        "drop_packets",
        "Packets dropped, by reason and direction (the program that saw them)",
        drop_packets,
    );
    registry.register(
        "drop_bytes",
        "Bytes dropped, by reason and direction",
        drop_bytes,
    );

    let fwd_packets = Family::<Labels, Counter>::default();
    let fwd_bytes = Family::<Labels, Counter>::default();
    for (direction, kind, c) in &counters.directed_forwards {
        let l = vec![
            ("kind".to_owned(), kind.name().to_owned()),
            ("direction".to_owned(), (*direction).to_owned()),
        ];
        fwd_packets.get_or_create(&l).inc_by(c.packets);
        fwd_bytes.get_or_create(&l).inc_by(c.bytes);
    }
    registry.register(
        "forward_packets",
        "Packets forwarded, by kind and direction (the program that saw them)",
        fwd_packets,
    );
    registry.register(
        "forward_bytes",
        "Bytes forwarded, by kind and direction",
        fwd_bytes,
    );

    let ep_packets = Family::<Labels, Counter>::default();
    let ep_bytes = Family::<Labels, Counter>::default();
    for (ep, (_, s)) in st.endpoints.iter().zip(&counters.endpoints) {
        for (direction, packets, bytes) in [
            ("rx", s.rx_packets, s.rx_bytes),
            ("tx", s.tx_packets, s.tx_bytes),
        ] {
            let l = vec![
                ("endpoint".to_owned(), ep.name.clone()),
                ("network".to_owned(), ep.network.clone()),
                ("direction".to_owned(), direction.to_owned()),
            ];
            ep_packets.get_or_create(&l).inc_by(packets);
            ep_bytes.get_or_create(&l).inc_by(bytes);
        }
    }
    registry.register(
        "endpoint_packets",
        "Packets per endpoint; rx = delivered into it, tx = sent by it",
        ep_packets,
    );
    registry.register("endpoint_bytes", "Bytes per endpoint", ep_bytes);

    service_metrics(paths, st, &mut registry)?;
    if let Some(h) = health {
        h.register(st, &mut registry);
    }

    let endpoints = Gauge::<i64>::default();
    endpoints.set(st.endpoints.len() as i64);
    registry.register("endpoints", "Endpoints on this node", endpoints);
    let networks = Gauge::<i64>::default();
    networks.set(st.networks.len() as i64);
    registry.register("networks", "Networks on this node", networks);

    let entries = conntrack::snapshot(paths)?;
    let ct_entries = Gauge::<i64>::default();
    ct_entries.set(entries.len() as i64);
    registry.register(
        "conntrack_entries",
        "Masquerade conntrack entries (two per connection)",
        ct_entries,
    );
    let connections = Gauge::<i64>::default();
    connections.set(conntrack::connection_count(&entries) as i64);
    registry.register(
        "conntrack_connections",
        "Connections in the conntrack table (masqueraded, published, hairpin)",
        connections,
    );
    let limit = Gauge::<i64>::default();
    limit.set(ct_budget::effective_limit(st.node.as_ref().and_then(|n| n.conntrack_max)) as i64);
    registry.register(
        "conntrack_connection_limit",
        "Connections past which new ones are dropped (conntrack_full)",
        limit,
    );
    let ports_used = Family::<Labels, Gauge<i64>>::default();
    let range_size = Gauge::<i64>::default();
    if let Some(node) = &st.node {
        let used = conntrack::ports_used(&entries, ip_be(node.ip), (node.port_min, node.port_max));
        for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
            let l = vec![("proto".to_owned(), proto_name(proto))];
            let n = used.get(&proto).map_or(0, |u| u.0);
            ports_used.get_or_create(&l).set(n as i64);
        }
        range_size.set(i64::from(node.port_max - node.port_min) + 1);
    }
    registry.register(
        "nat_ports_used",
        "Distinct NAT ports held, by protocol",
        ports_used,
    );
    registry.register(
        "nat_port_range_size",
        "Ports in the node's NAT range (0: no uplink set)",
        range_size,
    );

    if let Ok(info) = aya::programs::ProgramInfo::from_pin(paths.prog_pin(PROG_FROM_CONTAINER)) {
        let l = vec![("program".to_owned(), PROG_FROM_CONTAINER.to_owned())];
        let runs = Family::<Labels, Counter>::default();
        runs.get_or_create(&l).inc_by(info.run_count());
        registry.register(
            "program_runs",
            "Runs of each eBPF program (kernel BPF stats; counted while an agent runs)",
            runs,
        );
        let run_time = Family::<Labels, Counter<f64>>::default();
        run_time
            .get_or_create(&l)
            .inc_by(info.run_time().as_secs_f64());
        registry.register(
            "program_run_time_seconds",
            "Time spent in each eBPF program (kernel BPF stats)",
            run_time,
        );
    }

    let mut text = String::new();
    encode(&mut text, &registry).map_err(|_| Error::Invalid("cannot encode metrics".into()))?;
    Ok(text)
}

/// The classic Prometheus text format of an OpenMetrics exposition: there,
/// a counter's HELP and TYPE lines carry the `_total` name its samples have,
/// and there is no `# EOF` or `# UNIT`.
/// New connections per service backend and refusals for want of one.
fn service_metrics(paths: &Paths, st: &Model, registry: &mut Registry) -> Result<()> {
    if st.services.is_empty() {
        return Ok(());
    }
    let counts = crate::datapath::counters::service_counts(paths)?;
    let conns = Family::<Labels, Counter>::default();
    let refused = Family::<Labels, Counter>::default();
    for ((svc_id, ip), n) in counts {
        let Some(svc) = st.services.iter().find(|s| s.id == svc_id) else {
            continue;
        };
        if ip.is_unspecified() {
            refused
                .get_or_create(&vec![("service".to_owned(), svc.name.clone())])
                .inc_by(n);
            continue;
        }
        let backend = st
            .ip_holder(ip)
            .map_or_else(|| ip.to_string(), str::to_owned);
        let l = vec![
            ("service".to_owned(), svc.name.clone()),
            ("backend".to_owned(), backend),
        ];
        conns.get_or_create(&l).inc_by(n);
    }
    registry.register(
        "service_connections",
        "New connections per service backend (Maglev or affinity picks)",
        conns,
    );
    registry.register(
        "service_no_backend",
        "Connections refused because the service had no backend",
        refused,
    );
    Ok(())
}

pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn counters_get_their_total_names_and_eof_goes() {
        let om = "# HELP weft_x Things.\n# TYPE weft_x counter\nweft_x_total{a=\"b\"} 3\n\
                  # HELP weft_g Level.\n# TYPE weft_g gauge\nweft_g 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP weft_x_total Things.\n# TYPE weft_x_total counter\nweft_x_total{a=\"b\"} 3\n\
             # HELP weft_g Level.\n# TYPE weft_g gauge\nweft_g 1\n"
        );
    }
}

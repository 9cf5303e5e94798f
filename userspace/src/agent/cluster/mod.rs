//! Cluster mode (`weft agent --etcd URL[,URL...]`): the node joins a
//! cluster kept in etcd (see [`crate::store::cluster`] for the keys).
//!
//! - [`sync`] runs beside the engine: it keeps the node's etcd lease alive,
//!   registers the node, claims a pod subnet of every cluster network with
//!   a create-only transaction, publishes the node's endpoints, and lists
//!   then watches the cluster's range from the listed revision + 1. Every
//!   change it sees becomes a [`ClusterView`](crate::model::cluster::ClusterView)
//!   queued to the engine like a request; the engine merges it into the
//!   model and renders the routes (`WEFT_ROUTES`) like any other change.
//!   Local intent (the node's overlay, its endpoints) flows the other way,
//!   from the engine's committed model to etcd.
//! - [`ClusterHandle`] takes the cluster's requests (network create, rm,
//!   connect, disconnect; `cluster status`): it writes them to etcd, every
//!   call bounded in time, and answers once this node's engine has applied
//!   what the watch brought back. With etcd unreachable it refuses at once
//!   with an error that says so; local reads and the datapath never wait
//!   for etcd.

mod requests;
mod sync;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::RwLock;
pub use weft_api::views::ClusterStatusView;

use crate::{
    error::{Error, Result},
    store::cluster::{Schema, SchemaKind, etcd::Etcd},
};

/// Default TTL of the node's etcd lease.
pub const DEFAULT_LEASE_TTL: i64 = 30;

/// Cluster mode's settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub schema: Schema,
    /// This node's name in the cluster.
    pub node_name: String,
    pub lease_ttl: i64,
    /// Where the lease id is kept across restarts.
    pub lease_file: PathBuf,
}

impl ClusterConfig {
    /// Parses the settings; `etcd` is a comma-separated URL list.
    pub fn new(
        etcd: &str,
        schema: Option<&str>,
        prefix: Option<&str>,
        flannel_network: Option<&str>,
        node_name: Option<String>,
        lease_ttl: Option<i64>,
        state_dir: &std::path::Path,
    ) -> Result<Self> {
        let endpoints: Vec<String> = etcd
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        crate::store::cluster::etcd::check_urls(&endpoints)?;
        let kind = SchemaKind::parse(schema.unwrap_or("weft"))?;
        let schema = Schema::new(kind, prefix, flannel_network.unwrap_or("flannel"))?;
        let node_name = match node_name {
            Some(n) => n,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    Error::Invalid("cannot read the hostname; pass --node-name".into())
                })?,
        };
        crate::model::naming::validate_name("node", &node_name)?;
        let lease_ttl = lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
        if !(2..=3600).contains(&lease_ttl) {
            return Err(Error::Invalid(format!(
                "invalid lease TTL {lease_ttl} s: use 2 to 3600 seconds (default {DEFAULT_LEASE_TTL})"
            )));
        }
        Ok(Self {
            endpoints,
            schema,
            node_name,
            lease_ttl,
            lease_file: state_dir.join("cluster-lease"),
        })
    }
}

/// What cluster mode counts (`weft_cluster_*` metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicBool,
    pub watch_restarts: AtomicU64,
    pub resyncs: AtomicU64,
    /// Unix milliseconds of the last watch event (0: none yet).
    pub last_event_ms: AtomicU64,
    pub remote_nodes: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub lease_failures: AtomicU64,
    pub skipped: AtomicU64,
    pub requests: Arc<AtomicU64>,
    pub revision: AtomicI64,
}

impl Stats {
    /// Registers every cluster metric with `registry` (prefix `weft`).
    pub fn register(&self, registry: &mut Registry) {
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        let counter = |v: &AtomicU64| {
            let c = Counter::<u64>::default();
            c.inc_by(v.load(Ordering::Relaxed));
            c
        };
        registry.register(
            "cluster_etcd_connected",
            "Whether the last exchange with the cluster store (etcd) succeeded",
            gauge(i64::from(self.connected.load(Ordering::Relaxed))),
        );
        registry.register(
            "cluster_watch_restarts",
            "Watches of the cluster store resumed after they broke",
            counter(&self.watch_restarts),
        );
        registry.register(
            "cluster_resyncs",
            "Full listings of the cluster store reconciled (start, reconnect, compaction)",
            counter(&self.resyncs),
        );
        let last = self.last_event_ms.load(Ordering::Relaxed);
        let age = if last == 0 {
            -1
        } else {
            i64::try_from(unix_ms().saturating_sub(last) / 1000).unwrap_or(i64::MAX)
        };
        registry.register(
            "cluster_last_event_age_seconds",
            "Seconds since the last watch event from the cluster store (-1: none yet)",
            gauge(age),
        );
        registry.register(
            "cluster_remote_nodes",
            "Remote nodes learned from the cluster store",
            gauge(i64::try_from(self.remote_nodes.load(Ordering::Relaxed)).unwrap_or(0)),
        );
        registry.register(
            "cluster_lease_renewals",
            "Renewals of this node's etcd lease",
            counter(&self.lease_renewals),
        );
        registry.register(
            "cluster_lease_failures",
            "Renewals of this node's etcd lease that failed or found it expired",
            counter(&self.lease_failures),
        );
        registry.register(
            "cluster_skipped_entries",
            "Entries of the cluster store skipped because they did not parse or did not fit",
            counter(&self.skipped),
        );
        registry.register(
            "cluster_etcd_requests",
            "Requests this agent sent to etcd",
            counter(&self.requests),
        );
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What `cluster status` shows, kept by the sync.
#[derive(Debug, Default, Clone)]
struct Shared {
    lease_id: Option<i64>,
    lease_ttl_left: Option<i64>,
    subnets: Vec<crate::model::PodSubnet>,
    last_error: Option<String>,
    own_ip: Option<Ipv4Addr>,
}

/// The agent's side of cluster mode.
pub struct ClusterHandle {
    config: ClusterConfig,
    pub stats: Arc<Stats>,
    /// The current connection, while the sync has one.
    etcd: RwLock<Option<Etcd>>,
    shared: Mutex<Shared>,
}

impl ClusterHandle {
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut s) = self.shared.lock() {
            s.last_error = e;
        }
    }

    async fn connection(&self) -> Result<Etcd> {
        if !self.stats.connected.load(Ordering::Relaxed) {
            let why = self
                .shared
                .lock()
                .ok()
                .and_then(|s| s.last_error.clone())
                .unwrap_or_else(|| "not connected yet".into());
            return Err(Error::Unavailable(format!(
                "the cluster store (etcd at {}) is unreachable ({why}); cluster changes need it. \
                 The datapath keeps forwarding and local reads work; the agent reconnects by \
                 itself: retry once etcd is back",
                self.config.endpoints.join(",")
            )));
        }
        self.etcd
            .read()
            .await
            .clone()
            .ok_or_else(|| Error::Unavailable("the cluster store is not connected yet".into()))
    }
}

/// Starts cluster mode beside `engine`: returns the handle requests go to
/// (see [`crate::agent::queue::EngineHandle::with_cluster`]).
pub fn start(
    config: ClusterConfig,
    engine: crate::agent::queue::EngineHandle,
) -> Arc<ClusterHandle> {
    let stats = Arc::new(Stats::default());
    let handle = Arc::new(ClusterHandle {
        config,
        stats,
        etcd: RwLock::new(None),
        shared: Mutex::new(Shared::default()),
    });
    tokio::spawn(sync::run(Arc::clone(&handle), engine));
    handle
}

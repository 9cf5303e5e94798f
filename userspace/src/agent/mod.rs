//! `weft agent`: the engine that owns one node's datapath, with its API
//! server on a unix socket, Prometheus metrics, and timers for drift
//! repair and conntrack collection.
//!
//! At start the engine adopts what is pinned (maps, programs, TCX links:
//! nothing is reloaded or recreated unless its layout or build changed)
//! and repairs drift between the kernel and the model. The datapath never
//! depends on the agent being up: programs stay attached through pinned
//! links, so stopping, killing or restarting the agent drops no traffic.

pub mod cluster;
pub mod config;
pub mod dns;
pub mod ebpf_log;
pub mod health;
pub mod metrics;
pub mod queue;
pub mod server;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

pub use self::config::AgentConfig;
use crate::{
    datapath::paths::Paths,
    engine::locks,
    error::{Error, Result},
};

/// How often the agent collects expired conntrack entries.
pub const CT_GC_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(paths: &Paths, config: &AgentConfig) -> Result<()> {
    let _agent = locks::agent(paths)?;
    let _stats = metrics::enable_kernel_stats();
    let tally = Arc::new(Mutex::new(metrics::ReconcileTally::default()));
    let mut engine = queue::spawn(paths, Arc::clone(&tally)).await?;
    let cluster = config
        .cluster
        .clone()
        .map(|c| cluster::start(c, engine.clone()));
    if let Some(c) = &cluster {
        engine = engine.with_cluster(Arc::clone(c));
    }
    log::info!(
        "agent up (pid {}): adopted program {:?}; repaired {:?}",
        engine.startup.pid,
        engine.startup.program_id,
        engine.startup.repaired
    );

    let health_stats = Arc::new(health::Stats::default());
    let socket = config.socket_path(paths);
    let api = server::serve(engine.clone(), &socket)?;
    let metrics = metrics::serve(
        paths.clone(),
        engine.model.clone(),
        tally,
        cluster.as_ref().map(|c| Arc::clone(&c.stats)),
        Arc::clone(&health_stats),
        config.metrics_addr,
    )
    .await?;
    println!(
        "weft agent: api on {}, metrics on http://{}/metrics",
        socket.display(),
        config.metrics_addr
    );

    let timers = tokio::spawn(timers(engine.clone(), config.reconcile_interval));
    let datapath_log = tokio::spawn(ebpf_log::forward(paths.clone()));
    let dns = tokio::spawn(dns::run(engine.model.clone()));
    let checks = tokio::spawn(health::run(engine.clone(), config.health, health_stats));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot watch SIGTERM", e))?;
    tokio::select! {
        r = api => log::warn!("api server stopped: {r:?}"),
        r = metrics => log::warn!("metrics server stopped: {r:?}"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: stopping; the datapath keeps running"),
        _ = term.recv() => log::info!("SIGTERM: stopping; the datapath keeps running"),
    }
    timers.abort();
    datapath_log.abort();
    dns.abort();
    checks.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Queues a conntrack collection every [`CT_GC_INTERVAL`] (so expired NAT
/// ports are handed out again) and a drift repair every `reconcile`.
async fn timers(engine: queue::EngineHandle, reconcile: Duration) {
    let mut gc =
        tokio::time::interval_at(tokio::time::Instant::now() + CT_GC_INTERVAL, CT_GC_INTERVAL);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut repair = tokio::time::interval_at(tokio::time::Instant::now() + reconcile, reconcile);
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = gc.tick() => engine.collect_conntrack().await,
            _ = repair.tick() => engine.repair().await,
        }
    }
}

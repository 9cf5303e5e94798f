//! `weft agent`: the daemon that owns one node's datapath.
//!
//! It holds a single-instance lock, adopts what is pinned (maps, program,
//! TCX links: nothing is reloaded or recreated), repairs drift between the
//! kernel and the saved state, then serves an HTTP+JSON API on a unix socket
//! and Prometheus metrics on TCP. The datapath never depends on the agent
//! being up: programs stay attached through pinned links, so stopping,
//! killing or restarting the agent drops no traffic.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod drift;
pub mod ebpf_log;
pub mod metrics;

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::fd::AsFd,
    time::SystemTime,
};

use nix::fcntl::{Flock, FlockArg};

pub use self::config::AgentConfig;
use crate::{
    error::{Error, Result},
    paths::Paths,
};

/// What the agent found and did when it started.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Startup {
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// The pinned program's kernel id when the agent adopted it.
    pub program_id: Option<u32>,
    pub repaired: drift::Repair,
    /// Maps migrated and programs reloaded because the pinned layout was
    /// an older one.
    pub migrated: crate::migrate::Report,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(paths: &Paths, config: &AgentConfig) -> Result<()> {
    paths.prepare_state_dir()?;
    let _lock = single_instance(paths)?;
    let _stats = metrics::enable_kernel_stats();

    clear_reservations(paths)?;
    let migrated = crate::migrate::at_agent_start(paths)?;
    let repaired = drift::repair(paths).await?;
    let startup = Startup {
        pid: std::process::id(),
        started_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        program_id: drift::program_id(paths),
        repaired,
        migrated,
    };
    log::info!(
        "agent up (pid {}): adopted program {:?}; repaired {:?}",
        startup.pid,
        startup.program_id,
        startup.repaired
    );

    let mut tally = metrics::ReconcileTally::default();
    tally.record(startup.started_at, &startup.repaired.maps);
    let tally = std::sync::Arc::new(std::sync::Mutex::new(tally));

    let socket = config.socket_path(paths);
    let api = api::serve(paths.clone(), startup, &socket)?;
    let metrics = metrics::serve(paths.clone(), tally, config.metrics_addr).await?;
    println!(
        "weft agent: api on {}, metrics on http://{}/metrics",
        socket.display(),
        config.metrics_addr
    );

    let gc = tokio::spawn(conntrack_gc(paths.clone()));
    let datapath_log = tokio::spawn(ebpf_log::forward(paths.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot watch SIGTERM", e))?;
    tokio::select! {
        r = api => log::warn!("api server stopped: {r:?}"),
        r = metrics => log::warn!("metrics server stopped: {r:?}"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: stopping; the datapath keeps running"),
        _ = term.recv() => log::info!("SIGTERM: stopping; the datapath keeps running"),
    }
    gc.abort();
    datapath_log.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Drops reservations of endpoint adds a previous agent did not finish (it
/// holds the agent lock, so no add of its own is in flight); the map
/// entries such an add wrote are stale and the reconcile removes them.
fn clear_reservations(paths: &Paths) -> Result<()> {
    let mut locked = crate::state::Locked::acquire(paths)?;
    if locked.state.reservations.is_empty() {
        return Ok(());
    }
    let mut new = locked.state.clone();
    for r in new.reservations.drain(..) {
        log::warn!(
            "endpoint '{}' ({} in network '{}') was being added when the last agent stopped; \
             its reservation is dropped",
            r.endpoint,
            r.ip,
            r.network
        );
    }
    locked.commit(new)
}

/// How often the agent collects expired conntrack entries.
pub const CT_GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes expired conntrack pairs every [`CT_GC_INTERVAL`], as `weft ct
/// gc` does, so expired NAT ports are handed out again.
async fn conntrack_gc(paths: Paths) {
    let mut tick = tokio::time::interval(CT_GC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let paths = paths.clone();
        match tokio::task::spawn_blocking(move || crate::conntrack::gc(&paths, None)).await {
            Ok(Ok(r)) if r.removed > 0 => {
                log::info!("conntrack gc: removed {} expired entries", r.removed);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("conntrack gc: {}", crate::error::chain(&e)),
            Err(e) => log::warn!("conntrack gc task failed: {e}"),
        }
    }
}

/// Takes the node's agent lock, or explains which agent holds it.
fn single_instance(paths: &Paths) -> Result<Flock<File>> {
    let path = paths.state_dir.join("agent.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let holder = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        Error::Conflict(format!(
            "another weft agent already runs for this node (pid {}, lock {}: {errno}); \
             stop it first",
            holder.trim(),
            path.display()
        ))
    })?;
    lock.set_len(0)
        .and_then(|()| write!(lock, "{}", std::process::id()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    let _ = lock.as_fd();
    Ok(lock)
}

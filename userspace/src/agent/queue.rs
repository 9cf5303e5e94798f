//! The agent's engine on a thread of its own: requests from the API
//! server (and the agent's timers) are queued to it and answered in
//! order, so there is one writer of maps. Its runtime is current-thread:
//! netlink connections and namespace switches stay on that one thread.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use tokio::sync::{mpsc, oneshot, watch};
use weft_api::{ApiError, Request};

use super::{cluster::ClusterHandle, metrics::ReconcileTally};
use crate::{
    datapath::{conntrack, paths::Paths},
    engine::{Engine, Role, Startup},
    error::{Error, Result, chain},
    model::{Model, cluster::ClusterView},
};

/// How many requests may wait for the engine before senders wait too.
const QUEUE_DEPTH: usize = 256;

/// Work for the engine.
enum Job {
    /// An API request, answered on the channel. Boxed: requests (an
    /// attachment's, with its ports and aliases) are far larger than the
    /// timers' jobs, and every queue slot would be that size.
    Request(
        Box<Request>,
        oneshot::Sender<Result<serde_json::Value, ApiError>>,
    ),
    /// Make the kernel match the model (the agent's timer).
    Repair,
    /// Collect expired conntrack entries (the agent's timer).
    CollectConntrack,
    /// The cluster store's view (`agent::cluster`), merged into the model;
    /// answered with what was skipped.
    Cluster(ClusterView, oneshot::Sender<Result<Vec<String>>>),
    /// The health checks hold exactly these backends of a service down
    /// (`agent::health`).
    Health(String, BTreeSet<String>, oneshot::Sender<Result<()>>),
}

/// The agent's side of its engine.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
    pub model: watch::Receiver<Arc<Model>>,
    pub startup: Arc<Startup>,
    /// Cluster mode: networks and the cluster's status go to the cluster
    /// store instead of the engine.
    cluster: Option<Arc<ClusterHandle>>,
}

/// Starts the engine thread: the engine starts as the agent's (see
/// [`Engine::start_agent`]) before this returns, and its repairs are
/// counted in `tally`.
pub async fn spawn(paths: &Paths, tally: Arc<Mutex<ReconcileTally>>) -> Result<EngineHandle> {
    let (jobs, mut queue) = mpsc::channel(QUEUE_DEPTH);
    let (started, ready) = oneshot::channel();
    let paths = paths.clone();
    std::thread::Builder::new()
        .name("weft-engine".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started.send(Err(Error::io("cannot start the engine's runtime", e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut engine = match Engine::new(&paths, Role::Agent).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                match engine.start_agent().await.cloned() {
                    Ok(startup) => {
                        record(&tally, &startup.repaired.maps);
                        let handle = (engine.subscribe(), Arc::new(startup));
                        let _ = started.send(Ok(handle));
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                }
                while let Some(job) = queue.recv().await {
                    run(&mut engine, job, &tally).await;
                }
            });
        })
        .map_err(|e| Error::io("cannot start the engine thread", e))?;
    let (model, startup) = ready
        .await
        .map_err(|_| Error::io("the engine thread died", std::io::Error::other("gone")))??;
    Ok(EngineHandle {
        jobs,
        model,
        startup,
        cluster: None,
    })
}

fn record(tally: &Mutex<ReconcileTally>, maps: &[crate::apply::MapDiff]) {
    if let Ok(mut t) = tally.lock() {
        t.record(crate::engine::unix_now(), maps);
    }
}

async fn run(engine: &mut Engine, job: Job, tally: &Mutex<ReconcileTally>) {
    match job {
        Job::Request(request, answer) => {
            let result = engine.handle(*request).await.map_err(|e| {
                if e.kind() == weft_api::ErrorKind::Internal
                    || e.kind() == weft_api::ErrorKind::Kernel
                {
                    log::warn!("api: {}", chain(&e));
                }
                ApiError::from(&e)
            });
            // The client may have hung up; the change stands either way.
            let _ = answer.send(result);
        }
        Job::Repair => match engine.repair().await {
            Ok(r) => {
                record(tally, &r.maps);
                if !r.maps.is_empty() || !r.reattached.is_empty() || !r.unpinned.is_empty() {
                    log::warn!("reconcile repaired drift: {r:?}");
                }
            }
            Err(e) => log::warn!("reconcile: {}", chain(&e)),
        },
        Job::Cluster(view, answer) => {
            let _ = answer.send(engine.merge_cluster(&view).await);
        }
        Job::Health(service, down, answer) => {
            let _ = answer.send(engine.set_backend_health(&service, &down).await);
        }
        Job::CollectConntrack => {
            let limit = engine.model().node.as_ref().and_then(|n| n.conntrack_max);
            match conntrack::gc(engine.paths(), None, limit) {
                Ok(r) if r.removed > 0 => {
                    log::info!("conntrack gc: removed {} expired entries", r.removed);
                }
                Ok(_) => {}
                Err(e) => log::warn!("conntrack gc: {}", chain(&e)),
            }
        }
    }
}

impl EngineHandle {
    /// This handle, with cluster requests going to `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<ClusterHandle>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Queues `request` and waits for its answer (in cluster mode, a
    /// cluster request goes to the cluster store first).
    pub async fn call(&self, request: Request) -> Result<serde_json::Value, ApiError> {
        if let Some(cluster) = &self.cluster
            && let Some(answer) = cluster.call(self, &request).await
        {
            return answer.map_err(|e| ApiError::from(&e));
        }
        self.engine_call(request).await
    }

    /// Queues `request` to the engine itself and waits for its answer.
    pub async fn engine_call(&self, request: Request) -> Result<serde_json::Value, ApiError> {
        let (tx, rx) = oneshot::channel();
        let gone = || {
            ApiError::new(
                weft_api::ErrorKind::Unavailable,
                "the agent's engine stopped",
            )
        };
        self.jobs
            .send(Job::Request(Box::new(request), tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues the cluster's view; returns what the merge skipped.
    pub async fn merge_cluster(&self, view: ClusterView) -> Result<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the agent's engine stopped".into());
        self.jobs
            .send(Job::Cluster(view, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues what the health checks hold down of service `service`;
    /// returns once it is applied.
    pub async fn set_health(&self, service: &str, down: BTreeSet<String>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the agent's engine stopped".into());
        self.jobs
            .send(Job::Health(service.to_owned(), down, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues a drift repair.
    pub async fn repair(&self) {
        let _ = self.jobs.send(Job::Repair).await;
    }

    /// Queues a conntrack collection.
    pub async fn collect_conntrack(&self) {
        let _ = self.jobs.send(Job::CollectConntrack).await;
    }
}

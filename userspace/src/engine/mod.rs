//! The engine: the one owner of a node's kernel state. It holds the model
//! (as committed to the store), the opened datapath and a netlink
//! connection, and takes requests one at a time. A change is: validate
//! against the model (pure rules, plus facts read from the kernel) ->
//! apply what the new model renders to -> commit it to the store. If the
//! apply or the commit fails, the engine applies the previous model again,
//! so the kernel and the store end as they were; no change carries undo
//! code of its own.
//!
//! The agent runs one engine for its life (`agent::queue`); a command run
//! without an agent runs one in-process for that command. Reads answer
//! from the model and the pinned maps without loading anything.

mod attach;
pub mod bench;
mod changes;
mod cluster;
pub mod locks;
mod reads;
pub mod teardown;
pub mod views;

use std::{sync::Arc, time::Instant};

use serde::Serialize;
use tokio::sync::watch;
use weft_api::Request;

use crate::{
    apply::{self, Kernel, Repair, Side, Steps},
    datapath::{Datapath, migrate, netlink::Netlink, paths::Paths},
    error::{Error, Result, chain},
    model::Model,
    render::maps::Synthetic,
    store::{Snapshot, Store, file::FileStore},
};

/// Which engine this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The agent's: holds the writer lock for its life.
    Agent,
    /// A command's, run without an agent: takes the writer lock for a
    /// change, refusing to run beside an agent.
    InProcess,
}

/// What the engine found and did when the agent started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Startup {
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// The pinned program's kernel id when the agent adopted it.
    pub program_id: Option<u32>,
    pub repaired: Repair,
    /// Maps migrated and programs reloaded because the pinned layout was
    /// an older one.
    pub migrated: migrate::Report,
}

/// One node's engine.
pub struct Engine {
    paths: Paths,
    role: Role,
    store: Box<dyn Store>,
    /// The model as committed, and its revision.
    snapshot: Snapshot,
    /// Benchmark endpoints: in the maps, never in the store.
    synthetic: Synthetic,
    kernel: Option<Kernel>,
    /// How long opening the datapath took (once per engine).
    open_seconds: f64,
    writer: Option<locks::Held>,
    /// The next change's apply fails at this step (tests: `WEFT_FAIL_AT`).
    fail_at: Option<u32>,
    /// Kernel changes the last apply made.
    last_steps: u32,
    /// Set for the agent: what it did at start.
    startup: Option<Startup>,
    /// The committed model, for readers outside the engine (metrics).
    published: watch::Sender<Arc<Model>>,
}

/// Environment variable that makes the next change fail at that apply
/// step (1-based), for failure-injection tests.
pub const FAIL_AT_ENV: &str = "WEFT_FAIL_AT";

impl Engine {
    /// An engine on the local store of `paths`. Opens nothing in the
    /// kernel until a request needs it.
    pub async fn new(paths: &Paths, role: Role) -> Result<Self> {
        let store = FileStore::new(paths);
        let snapshot = store.read_now()?;
        let fail_at = std::env::var(FAIL_AT_ENV).ok().and_then(|v| v.parse().ok());
        let (published, _) = watch::channel(Arc::new(snapshot.model.clone()));
        Ok(Self {
            paths: paths.clone(),
            role,
            store: Box::new(store),
            snapshot,
            synthetic: Synthetic::default(),
            kernel: None,
            open_seconds: 0.0,
            writer: None,
            fail_at,
            last_steps: 0,
            startup: None,
            published,
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn model(&self) -> &Model {
        &self.snapshot.model
    }

    /// Follows the committed model.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Model>> {
        self.published.subscribe()
    }

    /// The agent's start: takes the writer lock (waiting for in-process
    /// commands), adopts what is pinned (migrating layouts and reloading
    /// programs of another build if needed) and repairs drift between the
    /// kernel and the model. On a node where nothing was ever set up,
    /// nothing is created.
    pub async fn start_agent(&mut self) -> Result<&Startup> {
        self.writer = Some(locks::writer(&self.paths, true)?);
        self.snapshot = self.store.read().await?;
        self.publish();
        let set_up = self.paths.maps_dir().exists() || self.snapshot.model != Model::default();
        let mut startup = Startup {
            pid: std::process::id(),
            started_at: unix_now(),
            ..Startup::default()
        };
        if set_up {
            startup.migrated = self.open_kernel()?;
            startup.repaired = self.repair().await?;
        }
        startup.program_id =
            Datapath::program_id(&self.paths, weft_common::maps::PROG_FROM_CONTAINER);
        Ok(self.startup.insert(startup))
    }

    pub fn startup(&self) -> Option<&Startup> {
        self.startup.as_ref()
    }

    /// Makes the kernel match the model (drift repair): at agent start and
    /// on the agent's timer.
    pub async fn repair(&mut self) -> Result<Repair> {
        self.open_kernel()?;
        let model = self.snapshot.model.clone();
        let synthetic = self.synthetic.clone();
        let kernel = self.kernel.as_mut().ok_or_else(not_open)?;
        apply::repair(kernel, &model, &synthetic).await
    }

    /// Answers `request`, as the JSON of its answer type.
    pub async fn handle(&mut self, request: Request) -> Result<serde_json::Value> {
        if request.mutates() {
            changes::handle(self, request).await
        } else {
            reads::handle(self, request).await
        }
    }

    /// Opens the datapath and a netlink connection unless open; says what
    /// opening migrated.
    fn open_kernel(&mut self) -> Result<migrate::Report> {
        if self.kernel.is_some() {
            return Ok(migrate::Report::default());
        }
        let started = Instant::now();
        let (dp, report) = Datapath::open(&self.paths)?;
        self.open_seconds = started.elapsed().as_secs_f64();
        let nl = Netlink::connect()?;
        self.kernel = Some(Kernel {
            dp,
            nl,
            rendered: Default::default(),
        });
        Ok(report)
    }

    /// Makes this engine the writer: the agent already is; an in-process
    /// engine takes the lock and reads the store again (another command
    /// may have changed it while this one waited). Returns whether the
    /// model changed.
    async fn become_writer(&mut self) -> Result<bool> {
        if self.writer.is_some() {
            return Ok(false);
        }
        self.writer = Some(locks::writer(&self.paths, self.role == Role::Agent)?);
        let fresh = self.store.read().await?;
        let changed = fresh.revision != self.snapshot.revision;
        self.snapshot = fresh;
        Ok(changed)
    }

    /// Validates a change with `plan` against the model, as the writer:
    /// refusals come before any lock is taken; if the model changed while
    /// the lock was awaited, the change is validated again.
    async fn plan<T>(&mut self, plan: impl Fn(&Model) -> Result<T>) -> Result<T> {
        let first = plan(&self.snapshot.model)?;
        if self.become_writer().await? {
            return plan(&self.snapshot.model);
        }
        Ok(first)
    }

    /// Applies `candidate` and commits it, or puts everything back. Returns
    /// the committed model (with what the kernel filled in: ifindexes).
    async fn transact(&mut self, candidate: Model, synthetic: Synthetic) -> Result<Model> {
        self.become_writer().await?;
        self.open_kernel()?;
        let mut target = candidate;
        let previous = self.snapshot.model.clone();
        let mut steps = Steps::failing_at(self.fail_at.take());
        let kernel = self.kernel.as_mut().ok_or_else(not_open)?;
        let applied = apply::apply(
            kernel,
            Side {
                model: &previous,
                synthetic: &self.synthetic,
            },
            Side {
                model: &mut target,
                synthetic: &synthetic,
            },
            &mut steps,
        )
        .await;
        self.last_steps = steps.count();
        let applied_at = Instant::now();
        let committed = match applied {
            Ok(()) if saved_alike(&target, &previous) => Ok(self.snapshot.revision),
            Ok(()) => self.store.commit(self.snapshot.revision, &target).await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(revision) => {
                log::debug!(
                    "change applied in {} us ({} steps), committed in {} us",
                    applied_at.duration_since(steps_started(&steps)).as_micros(),
                    steps.count(),
                    applied_at.elapsed().as_micros()
                );
                self.snapshot = Snapshot {
                    model: target.clone(),
                    revision,
                };
                self.synthetic = synthetic;
                self.publish();
                Ok(target)
            }
            Err(e) => {
                log::warn!("{}: putting the kernel back", chain(&e));
                self.roll_back(&target, &synthetic, previous).await;
                Err(e)
            }
        }
    }

    /// Applies `previous` again after a failed change to `target`.
    async fn roll_back(&mut self, target: &Model, synthetic: &Synthetic, previous: Model) {
        let mut back = previous.clone();
        let mut steps = Steps::default();
        let Some(kernel) = self.kernel.as_mut() else {
            return;
        };
        let undone = apply::apply(
            kernel,
            Side {
                model: target,
                synthetic,
            },
            Side {
                model: &mut back,
                synthetic: &self.synthetic,
            },
            &mut steps,
        )
        .await;
        if let Err(e) = undone {
            log::warn!("rollback: {}", chain(&e));
        }
        // A device recreated by the rollback has a new ifindex: the store
        // must say so.
        if back != previous {
            match self.store.commit(self.snapshot.revision, &back).await {
                Ok(revision) => {
                    self.snapshot = Snapshot {
                        model: back,
                        revision,
                    };
                    self.publish();
                }
                Err(e) => log::warn!("rollback: cannot save the model: {}", chain(&e)),
            }
        }
    }

    fn publish(&self) {
        self.published
            .send_replace(Arc::new(self.snapshot.model.clone()));
    }
}

/// Whether `a` and `b` differ at most in what is never saved (health
/// verdicts), so committing `a` would write the store for nothing.
fn saved_alike(a: &Model, b: &Model) -> bool {
    if a.unhealthy == b.unhealthy {
        return a == b;
    }
    let mut a = a.clone();
    a.unhealthy.clone_from(&b.unhealthy);
    a == *b
}

fn steps_started(steps: &Steps) -> Instant {
    steps.started()
}

fn not_open() -> Error {
    Error::Invalid("the datapath is not open; this is a bug in weft".into())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The JSON of an answer.
fn answer<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::io("cannot encode the answer", std::io::Error::other(e)))
}

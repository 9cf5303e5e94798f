//! The cluster sync: one task per agent. A session connects, takes the
//! node's lease (the one it had before a restart if etcd still holds it,
//! else a new one), lists the cluster's range and reconciles it (claims,
//! registration, endpoints, the view given to the engine), then watches
//! from the listed revision + 1. A broken watch is resumed from the last
//! revision seen + 1 with backoff; a compacted revision, or a store that
//! could not be reached at all for a while, means listing again; a lost lease or connection ends the session, and the next one
//! starts over with a full listing, so nothing stays stale however long
//! etcd or the agent was away.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use etcd_client::EventType;
use tokio::time::{Instant, sleep, sleep_until};

use super::{ClusterHandle, unix_ms};
use crate::{
    agent::queue::EngineHandle,
    error::{Error, Result, chain},
    model::{Model, cluster::candidates},
    store::cluster::{
        BackendData, EndpointRecord, Parsed, Registration, SubnetLease,
        etcd::{Claim, Etcd},
    },
};

/// Backoff between attempts to reach the store: doubling from 100 ms, and
/// capped at 1 s so a node is back in step within about a second of etcd
/// answering again (the cost: one refused attempt per second meanwhile).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Runs sessions until the agent stops.
pub(super) async fn run(handle: Arc<ClusterHandle>, engine: EngineHandle) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut session = Session::new(Arc::clone(&handle), engine.clone());
        let started = Instant::now();
        let err = session.run().await;
        handle.stats.connected.store(false, Ordering::Relaxed);
        *handle.etcd.write().await = None;
        let text = chain(&err);
        log::warn!("cluster: {text}; reconnecting");
        handle.set_error(Some(text));
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_MIN;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

struct Session {
    handle: Arc<ClusterHandle>,
    engine: EngineHandle,
    etcd: Option<Etcd>,
    lease: i64,
    /// The watched range as of `revision`.
    kvs: BTreeMap<String, Vec<u8>>,
    revision: i64,
    /// What this session wrote: endpoint keys and the registration.
    endpoints: BTreeMap<String, Vec<u8>>,
    registration: Option<Vec<u8>>,
    /// Skips already logged (each is logged once per session).
    logged: std::collections::BTreeSet<String>,
    /// Own lease keys checked to be on this session's lease.
    verified: std::collections::BTreeSet<String>,
}

impl Session {
    fn new(handle: Arc<ClusterHandle>, engine: EngineHandle) -> Self {
        Self {
            handle,
            engine,
            etcd: None,
            lease: 0,
            kvs: BTreeMap::new(),
            revision: 0,
            endpoints: BTreeMap::new(),
            registration: None,
            logged: Default::default(),
            verified: Default::default(),
        }
    }

    fn etcd(&self) -> Result<&Etcd> {
        self.etcd
            .as_ref()
            .ok_or_else(|| Error::Unavailable("not connected".into()))
    }

    /// One session; returns why it ended.
    async fn run(&mut self) -> Error {
        match self.serve().await {
            Ok(()) => Error::Unavailable("the session ended".into()),
            Err(e) => e,
        }
    }

    async fn serve(&mut self) -> Result<()> {
        let cfg = self.handle.config.clone();
        let etcd = Etcd::connect(&cfg.endpoints, Arc::clone(&self.handle.stats.requests)).await?;
        self.etcd = Some(etcd.clone());
        self.take_lease().await?;
        self.resync().await?;
        *self.handle.etcd.write().await = Some(etcd.clone());
        self.handle.stats.connected.store(true, Ordering::Relaxed);
        self.handle.set_error(None);
        log::info!(
            "cluster: joined as '{}' (lease {:x}, TTL {} s) at revision {}",
            cfg.node_name,
            self.lease,
            cfg.lease_ttl,
            self.revision
        );

        let (start, end) = cfg.schema.watched();
        let renew_every =
            Duration::from_millis(u64::try_from(cfg.lease_ttl).unwrap_or(30) * 1000 / 3);
        let mut renew_at = Instant::now() + renew_every;
        let mut model = self.engine.model.clone();
        let mut backoff = BACKOFF_MIN;
        // Set once the store could not be reached: a blip is bridged by
        // resuming the watch, an outage ends with a full listing.
        let mut relist = false;
        'watch: loop {
            let stream = if relist {
                match self.resync().await {
                    Ok(()) => Ok(None),
                    Err(e) => Err(e),
                }
            } else {
                etcd.watch(&start, &end, self.revision + 1).await.map(Some)
            };
            let mut stream = match stream {
                Ok(Some(s)) => {
                    self.handle.stats.connected.store(true, Ordering::Relaxed);
                    self.handle.set_error(None);
                    s
                }
                Ok(None) => {
                    relist = false;
                    log::info!(
                        "cluster: the store answers again; listed it at revision {}",
                        self.revision
                    );
                    continue 'watch;
                }
                Err(e) => {
                    // The member is gone or there is no leader; the lease
                    // renewal decides when the lease itself is lost.
                    log::warn!("cluster: watch: {}", chain(&e));
                    relist = true;
                    self.handle.stats.connected.store(false, Ordering::Relaxed);
                    self.handle.set_error(Some(chain(&e)));
                    self.renew_if_due(&mut renew_at, renew_every).await?;
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue 'watch;
                }
            };
            loop {
                tokio::select! {
                    msg = stream.message() => {
                        let resp = match msg {
                            Ok(Some(r)) => r,
                            Ok(None) | Err(_) => {
                                let why = match msg {
                                    Err(e) => e.to_string(),
                                    _ => "the stream ended".into(),
                                };
                                log::warn!("cluster: watch broke ({why}); resuming from revision {}", self.revision + 1);
                                self.handle.stats.watch_restarts.fetch_add(1, Ordering::Relaxed);
                                self.handle.stats.connected.store(false, Ordering::Relaxed);
                                self.handle.set_error(Some(format!("watch broke: {why}")));
                                sleep(backoff).await;
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                                continue 'watch;
                            }
                        };
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                log::warn!(
                                    "cluster: revision {} was compacted (now {}); listing again",
                                    self.revision + 1,
                                    resp.compact_revision()
                                );
                                self.resync().await?;
                            } else {
                                self.handle.stats.watch_restarts.fetch_add(1, Ordering::Relaxed);
                                log::warn!("cluster: watch cancelled: {}", resp.cancel_reason());
                            }
                            continue 'watch;
                        }
                        backoff = BACKOFF_MIN;
                        self.handle.stats.connected.store(true, Ordering::Relaxed);
                        if resp.events().is_empty() {
                            continue;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            match ev.event_type() {
                                EventType::Put => {
                                    self.kvs.insert(key, kv.value().to_vec());
                                }
                                EventType::Delete => {
                                    self.kvs.remove(&key);
                                }
                            }
                            self.revision = self.revision.max(kv.mod_revision());
                        }
                        if let Some(h) = resp.header() {
                            self.revision = self.revision.max(h.revision());
                        }
                        self.handle.stats.revision.store(self.revision, Ordering::Relaxed);
                        self.handle.stats.last_event_ms.store(unix_ms(), Ordering::Relaxed);
                        self.reconcile().await?;
                    }
                    changed = model.changed() => {
                        if changed.is_err() {
                            return Err(Error::Unavailable("the engine stopped".into()));
                        }
                        // Local intent changed (overlay, endpoints).
                        self.reconcile().await?;
                    }
                    _ = sleep_until(renew_at) => {
                        self.renew_if_due(&mut renew_at, renew_every).await?;
                    }
                }
            }
        }
    }

    /// Renews the lease when due. A renewal that fails is counted and
    /// retried; a lease etcd no longer has ends the session (its keys are
    /// gone: the next session claims again).
    async fn renew_if_due(&mut self, renew_at: &mut Instant, every: Duration) -> Result<()> {
        if Instant::now() < *renew_at {
            return Ok(());
        }
        let stats = &self.handle.stats;
        match self.etcd()?.renew(self.lease).await {
            Ok(Some(ttl)) => {
                stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut s) = self.handle.shared.lock() {
                    s.lease_ttl_left = Some(ttl);
                }
                *renew_at = Instant::now() + every;
                Ok(())
            }
            Ok(None) => {
                stats.lease_failures.fetch_add(1, Ordering::Relaxed);
                Err(Error::Unavailable(format!(
                    "lease {:x} expired; joining again",
                    self.lease
                )))
            }
            Err(e) => {
                stats.lease_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!("cluster: lease renewal: {}", chain(&e));
                // Try again soon: the lease outlives a short outage.
                *renew_at = Instant::now() + Duration::from_millis(500);
                Ok(())
            }
        }
    }

    /// The lease this node had, if etcd still holds it, or a new one.
    async fn take_lease(&mut self) -> Result<()> {
        let cfg = &self.handle.config;
        let saved = std::fs::read_to_string(&cfg.lease_file)
            .ok()
            .and_then(|t| i64::from_str_radix(t.trim(), 16).ok());
        let etcd = self.etcd()?.clone();
        if let Some(id) = saved
            && let Some(left) = etcd.ttl_left(id).await?
        {
            self.lease = id;
            etcd.renew(id).await?;
            log::info!("cluster: kept lease {id:x} ({left} s were left)");
        } else {
            self.lease = etcd.grant(cfg.lease_ttl).await?;
            let _ = std::fs::write(&cfg.lease_file, format!("{:x}\n", self.lease));
        }
        if let Ok(mut s) = self.handle.shared.lock() {
            s.lease_id = Some(self.lease);
            s.lease_ttl_left = Some(cfg.lease_ttl);
        }
        Ok(())
    }

    /// Lists the whole range and reconciles it.
    async fn resync(&mut self) -> Result<()> {
        let (start, end) = self.handle.config.schema.watched();
        let listing = self.etcd()?.list(&start, &end).await?;
        self.kvs = listing.kvs;
        self.revision = listing.revision;
        self.handle.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        self.handle
            .stats
            .revision
            .store(self.revision, Ordering::Relaxed);
        // Endpoints this node registered before (another session, another
        // run): what is not in the model any more goes.
        let prefix = self
            .handle
            .config
            .schema
            .endpoints_prefix(&self.handle.config.node_name);
        self.endpoints = self
            .etcd()?
            .keys(&prefix)
            .await?
            .into_iter()
            .map(|k| (k, Vec::new()))
            .collect();
        self.registration = None;
        self.reconcile().await
    }

    /// Makes etcd hold this node's intent and the engine the cluster's.
    async fn reconcile(&mut self) -> Result<()> {
        let model = self.engine.model.borrow().clone();
        let own_ip = model.overlay().and(model.node.as_ref()).map(|n| n.ip);
        let mut parsed = self.handle.config.schema.parse(&self.kvs, own_ip);
        if let Some(ip) = own_ip {
            self.register(&model, ip).await?;
            if self.claim(&model, ip, &parsed).await? {
                // The claims are in `kvs` already: the engine gets the new
                // subnets now, not when the watch brings them back.
                parsed = self.handle.config.schema.parse(&self.kvs, own_ip);
            }
        }
        // This node's own records are its model's endpoints already.
        let own_name = &self.handle.config.node_name;
        parsed.view.endpoints.retain(|e| &e.node != own_name);
        self.publish_endpoints(&model).await?;
        for s in &parsed.skipped {
            let line = format!("{}: {}", s.key, s.why);
            if self.logged.insert(line.clone()) {
                log::warn!("cluster: skipped {line}");
                self.handle.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.handle
            .stats
            .remote_nodes
            .store(parsed.view.nodes.len() as u64, Ordering::Relaxed);
        if let Ok(mut s) = self.handle.shared.lock() {
            s.subnets = parsed.view.own.clone();
            s.own_ip = own_ip;
        }
        let skipped = self.engine.merge_cluster(parsed.view).await?;
        for line in skipped {
            if self.logged.insert(line.clone()) {
                log::warn!("cluster: not applied: {line}");
                self.handle.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The node's registration, on its lease.
    async fn register(&mut self, model: &Model, ip: Ipv4Addr) -> Result<()> {
        let Some(overlay) = model.overlay() else {
            return Ok(());
        };
        let cfg = &self.handle.config;
        let value = json(&Registration {
            name: cfg.node_name.clone(),
            underlay_ip: ip,
            vtep_mac: overlay.vtep_mac,
            encap: overlay.encap.name().into(),
        });
        if self.registration.as_ref() != Some(&value) {
            let key = cfg.schema.node_key(&cfg.node_name);
            self.etcd()?.put(&key, value.clone(), self.lease).await?;
            self.registration = Some(value);
        }
        Ok(())
    }

    /// A pod subnet lease of every cluster network this node lacks one of:
    /// the one it had (kept across restarts), else the first free slice,
    /// each with a create-only transaction; a lease of its own left on an
    /// older etcd lease is moved onto the current one. Returns whether it
    /// won a claim (recorded in `kvs`).
    async fn claim(&mut self, model: &Model, ip: Ipv4Addr, parsed: &Parsed) -> Result<bool> {
        let Some(overlay) = model.overlay() else {
            return Ok(false);
        };
        let mut claimed = false;
        let cfg = self.handle.config.clone();
        let etcd = self.etcd()?.clone();
        for net in &parsed.view.networks {
            let lease = SubnetLease {
                public_ip: ip,
                backend_type: "vxlan".into(),
                backend_data: BackendData {
                    vni: net.vni,
                    vtep_mac: overlay.vtep_mac,
                },
                node: Some(cfg.node_name.clone()),
            };
            let value = json(&lease);
            let held = parsed.leases.get(&net.name);
            if let Some(own) = parsed.view.own.iter().find(|s| s.network == net.name) {
                let key = cfg.schema.lease_key(&net.name, own.cidr);
                if self.verified.contains(&key) {
                    continue;
                }
                if let Some((current, rev, on)) = etcd.get_with_revision(&key).await?
                    && (on != self.lease || current != value)
                {
                    etcd.replace(&key, rev, value.clone(), self.lease).await?;
                } else {
                    self.verified.insert(key);
                }
                continue;
            }
            let had = model.own_subnet(&net.name);
            let mut tried = 0;
            let mut won = None;
            for cidr in had
                .into_iter()
                .chain(candidates(net.subnet, net.subnet_len))
            {
                if held.is_some_and(|h| h.contains_key(&cidr)) {
                    continue;
                }
                tried += 1;
                let key = cfg.schema.lease_key(&net.name, cidr);
                match etcd.create(&key, value.clone(), self.lease).await? {
                    Claim::Won => {
                        won = Some(cidr);
                        break;
                    }
                    Claim::Held {
                        value: theirs,
                        mod_revision,
                    } => {
                        let mine = serde_json::from_slice::<SubnetLease>(&theirs)
                            .is_ok_and(|l| l.public_ip == ip);
                        if mine
                            && etcd
                                .replace(&key, mod_revision, value.clone(), self.lease)
                                .await?
                                == Claim::Won
                        {
                            won = Some(cidr);
                            break;
                        }
                    }
                }
            }
            match won {
                Some(cidr) => {
                    log::info!(
                        "cluster: claimed {cidr} of network '{}' ({tried} tried)",
                        net.name
                    );
                    self.kvs
                        .insert(cfg.schema.lease_key(&net.name, cidr), value.clone());
                    claimed = true;
                }
                None => log::warn!(
                    "cluster: network '{}' ({}) has no free /{} left for this node",
                    net.name,
                    net.subnet,
                    net.subnet_len
                ),
            }
        }
        Ok(claimed)
    }

    /// This node's endpoints, on its lease.
    async fn publish_endpoints(&mut self, model: &Model) -> Result<()> {
        let cfg = self.handle.config.clone();
        let etcd = self.etcd()?.clone();
        let mut wanted = BTreeMap::new();
        for ep in &model.endpoints {
            let record = EndpointRecord {
                name: ep.name.clone(),
                network: ep.network.clone(),
                ip: ep.ip,
                mac: ep.mac,
                node: cfg.node_name.clone(),
                labels: ep.labels.clone(),
                terminating: ep.terminating,
            };
            wanted.insert(
                cfg.schema.endpoint_key(&cfg.node_name, &ep.name),
                json(&record),
            );
        }
        for (key, value) in &wanted {
            if self.endpoints.get(key) != Some(value) {
                etcd.put(key, value.clone(), self.lease).await?;
                self.endpoints.insert(key.clone(), value.clone());
            }
        }
        let stale: Vec<String> = self
            .endpoints
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            etcd.delete(&key).await?;
            self.endpoints.remove(&key);
        }
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

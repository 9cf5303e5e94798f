//! The cluster's requests in cluster mode: network create, rm, connect and
//! disconnect are written to etcd (checked first against this node's
//! model and the cluster's networks) and answered once this node's engine
//! applied what the watch brought back; `cluster status` is answered from
//! the sync's state and a health probe of every endpoint. Endpoints on a
//! cluster network wait for this node's pod subnet lease.

use std::{sync::atomic::Ordering, time::Duration};

use weft_api::{
    Request,
    requests::{CreateNetwork, CreateService},
    views::{ClusterStatusView, Connection, EtcdEndpointView, Removed},
};

use super::ClusterHandle;
use crate::{
    agent::queue::EngineHandle,
    engine::views,
    error::{Error, Result},
    model::{
        Model,
        cluster::{ClusterNetwork, ClusterService, DEFAULT_SUBNET_LEN},
        network, service,
    },
    store::cluster::{SchemaKind, etcd::Claim},
};

/// How long a cluster change may take to come back through the watch.
const APPLIED: Duration = Duration::from_secs(10);

impl ClusterHandle {
    /// Answers `request` if it is the cluster's; `None` for the engine's.
    pub async fn call(
        &self,
        engine: &EngineHandle,
        request: &Request,
    ) -> Option<Result<serde_json::Value>> {
        let answer = match request {
            Request::ClusterStatus(_) => self.status().await.and_then(|v| to_json(&v)),
            Request::CreateNetwork(req) => self.create_network(engine, req).await,
            Request::RemoveNetwork(req) => self.remove_network(engine, &req.name).await,
            Request::ConnectNetworks(req) => self.link(engine, &req.a, &req.b, true).await,
            Request::DisconnectNetworks(req) => self.link(engine, &req.a, &req.b, false).await,
            Request::CreateService(req) => self.create_service(engine, req).await,
            Request::RemoveService(req) => self.remove_service(engine, &req.name).await,
            Request::AddEndpoint(req) => {
                let model = engine.model.borrow().clone();
                if model.cluster_networks.contains(&req.network)
                    && model.overlay().is_some()
                    && model.own_subnet(&req.network).is_none()
                {
                    Err(Error::Unavailable(format!(
                        "this node holds no pod subnet of cluster network '{}' yet (its claim in \
                         the cluster store is pending{}); retry shortly",
                        req.network,
                        if self.stats.connected.load(Ordering::Relaxed) {
                            ""
                        } else {
                            ", and the store is unreachable"
                        }
                    )))
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        Some(answer)
    }

    /// The cluster's networks as etcd holds them now, with their keys'
    /// mod revisions.
    async fn networks(&self) -> Result<Vec<(ClusterNetwork, i64)>> {
        let etcd = self.connection().await?;
        let schema = &self.config.schema;
        let prefix = schema.network_key("")?;
        let listing = etcd.list(&prefix, &format!("{prefix}\u{10ffff}")).await?;
        let mut out = Vec::new();
        for (key, value) in &listing.kvs {
            if let Ok(net) = serde_json::from_slice::<ClusterNetwork>(value) {
                let rev = etcd
                    .get_with_revision(key)
                    .await?
                    .map_or(0, |(_, rev, _)| rev);
                out.push((net, rev));
            }
        }
        Ok(out)
    }

    fn refuse_flannel(&self) -> Result<()> {
        if self.config.schema.kind == SchemaKind::Flannel {
            return Err(Error::Invalid(format!(
                "in schema 'flannel' the one network is Flannel's config ({}/config); change it \
                 with Flannel's tools, not weft",
                self.config.schema.prefix
            )));
        }
        Ok(())
    }

    async fn create_network(
        &self,
        engine: &EngineHandle,
        req: &CreateNetwork,
    ) -> Result<serde_json::Value> {
        self.refuse_flannel()?;
        let model = engine.model.borrow().clone();
        let existing = self.networks().await?;
        if existing.iter().any(|(n, _)| n.name == req.name) {
            return Err(Error::Conflict(format!(
                "network '{}' already exists in the cluster; pick another name or remove it \
                 first",
                req.name
            )));
        }
        let vni = req.vni.unwrap_or_else(|| {
            existing
                .iter()
                .map(|(n, _)| n.vni)
                .chain(model.networks.iter().map(|n| n.overlay_vni()))
                .max()
                .unwrap_or(0)
                + 1
        });
        // The same rules as a local network, against this node's model and
        // the cluster's networks.
        let mut probe = Model::clone(&model);
        for (n, _) in &existing {
            if probe.network(&n.name).is_none() {
                let other = CreateNetwork {
                    name: n.name.clone(),
                    subnet: n.subnet.to_string(),
                    gateway: n.gateway.map(|g| g.to_string()),
                    flood: n.flood,
                    masquerade: n.masquerade,
                    vni: Some(n.vni),
                };
                if let Ok((m, _)) = network::create(&probe, &other) {
                    probe = m;
                }
            }
        }
        let checked = CreateNetwork {
            vni: Some(vni),
            ..req.clone()
        };
        let (_, net) = network::create(&probe, &checked)?;
        let value = ClusterNetwork {
            name: net.name.clone(),
            subnet: net.subnet,
            gateway: req.gateway.as_ref().map(|_| net.gateway),
            vni,
            flood: net.flood,
            masquerade: net.masquerade,
            connected: Vec::new(),
            subnet_len: DEFAULT_SUBNET_LEN.max(net.subnet.prefix_len()),
        };
        let key = self.config.schema.network_key(&net.name)?;
        let etcd = self.connection().await?;
        if let Claim::Held { .. } = etcd.create(&key, json(&value), 0).await? {
            return Err(Error::Conflict(format!(
                "network '{}' was just created in the cluster by another node",
                net.name
            )));
        }
        let model = applied(engine, |m| m.network(&net.name).is_some()).await?;
        let local = model
            .network(&net.name)
            .ok_or_else(|| Error::Invalid("the network vanished; a bug".into()))?;
        to_json(&views::network(local, &model))
    }

    async fn remove_network(&self, engine: &EngineHandle, name: &str) -> Result<serde_json::Value> {
        self.refuse_flannel()?;
        let model = engine.model.borrow().clone();
        let eps: Vec<&str> = model.endpoints_of(name).map(|e| e.name.as_str()).collect();
        if !eps.is_empty() {
            return Err(Error::Conflict(format!(
                "network '{name}' still has {} endpoint(s) on this node ({}); remove them first \
                 with `weft endpoint rm`",
                eps.len(),
                eps.join(", ")
            )));
        }
        let existing = self.networks().await?;
        if !existing.iter().any(|(n, _)| n.name == name) {
            return Err(Error::NotFound(format!(
                "network '{name}' does not exist in the cluster (see `weft network ls`)"
            )));
        }
        let etcd = self.connection().await?;
        etcd.delete(&self.config.schema.network_key(name)?).await?;
        // Links from other networks go with it.
        for (mut other, _) in existing {
            if other.connected.iter().any(|c| c == name) {
                other.connected.retain(|c| c != name);
                etcd.put(
                    &self.config.schema.network_key(&other.name)?,
                    json(&other),
                    0,
                )
                .await?;
            }
        }
        applied(engine, |m| m.network(name).is_none()).await?;
        to_json(&Removed {
            removed: name.to_owned(),
        })
    }

    async fn link(
        &self,
        engine: &EngineHandle,
        a: &str,
        b: &str,
        connect: bool,
    ) -> Result<serde_json::Value> {
        self.refuse_flannel()?;
        if a == b {
            return Err(Error::Invalid(format!(
                "cannot connect network '{a}' to itself; name two different networks"
            )));
        }
        let existing = self.networks().await?;
        let find = |name: &str| {
            existing
                .iter()
                .find(|(n, _)| n.name == name)
                .cloned()
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "network '{name}' does not exist in the cluster (see `weft network ls`)"
                    ))
                })
        };
        let etcd = self.connection().await?;
        for (me, other) in [(a, b), (b, a)] {
            let (mut net, _) = find(me)?;
            net.connected.retain(|c| c != other);
            if connect {
                net.connected.push(other.to_owned());
            }
            etcd.put(&self.config.schema.network_key(me)?, json(&net), 0)
                .await?;
        }
        applied(engine, |m| {
            m.network(a)
                .is_some_and(|n| n.connected.iter().any(|c| c == b) == connect)
        })
        .await?;
        to_json(&Connection {
            networks: [a.to_owned(), b.to_owned()],
            connected: connect,
        })
    }

    /// A service for the whole cluster: checked (and its VIP taken) against
    /// this node's model, which holds the cluster's services, then written
    /// to etcd create-only; answered once this node applied it.
    async fn create_service(
        &self,
        engine: &EngineHandle,
        req: &CreateService,
    ) -> Result<serde_json::Value> {
        let model = engine.model.borrow().clone();
        let (_, svc) = service::create(&model, req)?;
        let key = self.config.schema.service_key(&svc.name);
        let etcd = self.connection().await?;
        if let Claim::Held { .. } = etcd
            .create(&key, json(&ClusterService::of(&svc)), 0)
            .await?
        {
            return Err(Error::Conflict(format!(
                "service '{}' already exists in the cluster; pick another name or remove it first",
                svc.name
            )));
        }
        let model = applied(engine, |m| m.service(&svc.name).is_some()).await?;
        let local = service::require(&model, &svc.name)?;
        to_json(&views::service(local, &model))
    }

    async fn remove_service(&self, engine: &EngineHandle, name: &str) -> Result<serde_json::Value> {
        let etcd = self.connection().await?;
        let key = self.config.schema.service_key(name);
        if etcd.get_with_revision(&key).await?.is_none() {
            return Err(Error::NotFound(format!(
                "service '{name}' does not exist in the cluster (see `weft service ls`)"
            )));
        }
        etcd.delete(&key).await?;
        applied(engine, |m| m.service(name).is_none()).await?;
        to_json(&Removed {
            removed: name.to_owned(),
        })
    }

    async fn status(&self) -> Result<ClusterStatusView> {
        let shared = self.shared.lock().map(|s| s.clone()).unwrap_or_default();
        let mut endpoints = Vec::new();
        for url in &self.config.endpoints {
            let health = crate::store::cluster::etcd::Etcd::health(url).await;
            endpoints.push(EtcdEndpointView {
                url: url.clone(),
                healthy: health.is_ok(),
                error: health.err(),
            });
        }
        let mut ttl_left = shared.lease_ttl_left;
        if let (Some(id), Some(etcd)) = (shared.lease_id, self.etcd.read().await.clone())
            && let Ok(left) = etcd.ttl_left(id).await
        {
            ttl_left = left;
        }
        Ok(ClusterStatusView {
            schema: self.config.schema.kind.name().into(),
            prefix: self.config.schema.prefix.clone(),
            node: self.config.node_name.clone(),
            connected: self.stats.connected.load(Ordering::Relaxed),
            endpoints,
            lease_id: shared.lease_id,
            lease_ttl_seconds: self.config.lease_ttl,
            lease_ttl_left_seconds: ttl_left,
            subnets: shared.subnets,
            remote_nodes: usize::try_from(self.stats.remote_nodes.load(Ordering::Relaxed))
                .unwrap_or(0),
            revision: self.stats.revision.load(Ordering::Relaxed),
            skipped: self.stats.skipped.load(Ordering::Relaxed),
            last_error: shared.last_error,
        })
    }
}

/// Waits until the engine's model satisfies `done`.
async fn applied(engine: &EngineHandle, done: impl Fn(&Model) -> bool) -> Result<Model> {
    let mut rx = engine.model.clone();
    let waited = tokio::time::timeout(APPLIED, rx.wait_for(|m| done(m))).await;
    match waited {
        Ok(Ok(m)) => Ok((**m).clone()),
        _ => Err(Error::Unavailable(format!(
            "the change is in the cluster store but this node did not apply it within {} s; \
             see the agent's log",
            APPLIED.as_secs()
        ))),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::io("cannot encode the answer", std::io::Error::other(e)))
}

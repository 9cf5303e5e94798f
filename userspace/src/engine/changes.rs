//! Requests that change something: each validates against the model, then
//! hands the new model to [`Engine::transact`].

use weft_api::{
    Request,
    requests::{AddEndpoint, SetNode},
    views::{Connection, Removed},
};

use super::{Engine, answer, attach, bench, teardown, views};
use crate::{
    datapath::{conntrack, netlink::Netlink, netns, resolv, sysctl},
    error::{Error, Result},
    model::{
        Endpoint, Model, endpoint, network,
        node::{self, UplinkFacts},
        publish, remote, service,
    },
};

pub(super) async fn handle(engine: &mut Engine, request: Request) -> Result<serde_json::Value> {
    match request {
        Request::CreateNetwork(req) => {
            let (model, net) = engine.plan(|m| network::create(m, &req)).await?;
            let model = engine.commit_model(model).await?;
            answer(&views::network(&net, &model))
        }
        Request::RemoveNetwork(req) => {
            let model = engine.plan(|m| network::remove(m, &req.name)).await?;
            engine.commit_model(model).await?;
            answer(&Removed { removed: req.name })
        }
        Request::ConnectNetworks(req) => {
            let model = engine.plan(|m| network::connect(m, &req.a, &req.b)).await?;
            engine.commit_model(model).await?;
            answer(&Connection {
                networks: [req.a, req.b],
                connected: true,
            })
        }
        Request::DisconnectNetworks(req) => {
            let model = engine
                .plan(|m| network::disconnect(m, &req.a, &req.b))
                .await?;
            engine.commit_model(model).await?;
            answer(&Connection {
                networks: [req.a, req.b],
                connected: false,
            })
        }
        Request::AddEndpoint(req) => answer(&add_endpoint(engine, &req).await?),
        Request::RemoveEndpoint(req) => {
            let (model, ep) = engine.plan(|m| endpoint::remove(m, &req.name)).await?;
            engine.commit_model(model).await?;
            resolv::remove(&ep.netns);
            answer(&Removed { removed: req.name })
        }
        Request::LabelEndpoint(req) => {
            let (model, ep) = engine.plan(|m| endpoint::label(m, &req)).await?;
            engine.commit_model(model).await?;
            answer(&ep)
        }
        Request::DrainEndpoint(req) => {
            let (model, ep) = engine
                .plan(|m| endpoint::drain(m, &req.name, req.terminating))
                .await?;
            engine.commit_model(model).await?;
            answer(&ep)
        }
        Request::CreateService(req) => {
            let (model, svc) = engine.plan(|m| service::create(m, &req)).await?;
            let model = engine.commit_model(model).await?;
            answer(&views::service(&svc, &model))
        }
        Request::RemoveService(req) => {
            let model = engine.plan(|m| service::remove(m, &req.name)).await?;
            engine.commit_model(model).await?;
            answer(&Removed { removed: req.name })
        }
        Request::SetServiceConfig(req) => {
            let model = engine.plan(|m| service::configure(m, &req)).await?;
            let model = engine.commit_model(model).await?;
            answer(&model.service_config())
        }
        Request::SetNode(req) => {
            set_node(engine, &req).await?;
            answer(&views::node(&engine.paths, engine.model()))
        }
        Request::UnsetNode(_) => {
            let model = engine.plan(node::unset).await?;
            engine.commit_model(model).await?;
            let flushed = conntrack::flush(&engine.paths, None)?;
            log::info!("node unset: {flushed} conntrack entries removed");
            answer(&views::node(&engine.paths, engine.model()))
        }
        Request::AddNode(req) => {
            let (model, node) = engine.plan(|m| remote::add(m, &req)).await?;
            let model = engine.commit_model(model).await?;
            answer(&views::remote_node(&node, &model))
        }
        Request::RemoveNode(req) => {
            let model = engine.plan(|m| remote::remove(m, &req.name)).await?;
            engine.commit_model(model).await?;
            answer(&Removed { removed: req.name })
        }
        Request::Publish(req) => {
            let (model, added) = engine.plan(|m| publish::publish(m, &req)).await?;
            let model = engine.commit_model(model).await?;
            let shown: Vec<_> = added
                .iter()
                .map(|p| views::publication(&model, p))
                .collect();
            answer(&shown)
        }
        Request::Unpublish(req) => {
            let (model, removed) = engine.plan(|m| publish::unpublish(m, &req)).await?;
            // Shown as they were, with the endpoint's address.
            let shown: Vec<_> = removed
                .iter()
                .map(|p| views::publication(engine.model(), p))
                .collect();
            engine.commit_model(model).await?;
            answer(&shown)
        }
        Request::GcConntrack(req) => {
            engine.plan(|_| Ok(())).await?;
            let limit = engine.model().node.as_ref().and_then(|n| n.conntrack_max);
            let idle = req.older_than.map(|s| s.saturating_mul(1_000_000_000));
            answer(&conntrack::gc(&engine.paths, idle, limit)?)
        }
        Request::AttachContainer(req) => answer(&attach::attach(engine, &req).await?),
        Request::DetachContainer(req) => answer(&attach::detach(engine, &req).await?),
        Request::GcAttachments(req) => answer(&attach::gc(engine, &req).await?),
        Request::BenchProgram(req) => answer(&bench::program(engine, req.count).await?),
        Request::BenchRemove(_) => answer(&bench::remove(engine).await?),
        Request::BenchServices(req) => {
            answer(&bench::program_services(engine, req.count, req.backends).await?)
        }
        Request::BenchRemoveServices(_) => answer(&bench::program_services(engine, 0, 0).await?),
        Request::Teardown(_) => {
            engine.plan(|_| Ok(())).await?;
            answer(&teardown::run(engine).await?)
        }
        read => Err(Error::Invalid(format!(
            "{read:?} changes nothing; this is a bug in weft"
        ))),
    }
}

impl Engine {
    /// The agent's health checks hold exactly `down` of service
    /// `service`'s backends down: a model change like any other (rendered,
    /// applied), though what it changes is never saved.
    pub async fn set_backend_health(
        &mut self,
        service: &str,
        down: &std::collections::BTreeSet<String>,
    ) -> Result<()> {
        let model = self.plan(|m| service::set_health(m, service, down)).await?;
        if model != self.snapshot.model {
            self.commit_model(model).await?;
        }
        Ok(())
    }

    /// Applies and commits `model` (the synthetic endpoints unchanged).
    pub(super) async fn commit_model(&mut self, model: Model) -> Result<Model> {
        let synthetic = self.synthetic.clone();
        self.transact(model, synthetic).await
    }
}

/// Plugs a container namespace into a network.
async fn add_endpoint(engine: &mut Engine, req: &AddEndpoint) -> Result<Endpoint> {
    let (model, ep) = engine
        .plan(|m| {
            let planned = endpoint::add(m, req)?;
            netns::open(&req.netns)?;
            Ok(planned)
        })
        .await?;
    ensure_free(&ep).await?;
    let model = engine.commit_model(model).await?;
    if model.service_config().dns
        && let Some(net) = model.network(&ep.network)
    {
        // The endpoint is there either way; a resolver file is a
        // convenience its container can live without.
        if let Err(e) = resolv::write(&ep.netns, net.gateway, weft_api::records::DNS_ZONE) {
            log::warn!("endpoint '{}': {}", ep.name, crate::error::chain(&e));
        }
    }
    model
        .endpoint(&ep.name)
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("endpoint '{}' vanished; a bug", ep.name)))
}

/// Refuses endpoint `ep` when its host interface exists in the node
/// namespace or its interface in the container's.
pub(super) async fn ensure_free(ep: &Endpoint) -> Result<()> {
    let nl = Netlink::connect()?;
    if nl.link_index(&ep.host_ifname).await?.is_some() {
        return Err(Error::Conflict(format!(
            "interface {} already exists in the node namespace (left over from endpoint \
             '{}'?); delete it or run `weft teardown`",
            ep.host_ifname, ep.name
        )));
    }
    let ns = netns::open(&ep.netns)?;
    let ifname = ep.ifname.clone();
    let taken = netns::run_in(&ns, || async move {
        let nl = Netlink::connect()?;
        nl.link_index(&ifname).await.map(|i| i.is_some())
    })?;
    if taken {
        return Err(Error::Conflict(format!(
            "interface {} already exists in network namespace '{}'; pass another --ifname",
            ep.ifname, ep.netns
        )));
    }
    Ok(())
}

/// Sets (or replaces) the node's uplink.
async fn set_node(engine: &mut Engine, req: &SetNode) -> Result<()> {
    let (parsed, subnets) = engine
        .plan(|m| {
            let parsed = node::parse(req)?;
            let subnets = node::check(m, &parsed)?;
            Ok((parsed, subnets))
        })
        .await?;
    let nl = Netlink::connect()?;
    let ifindex = nl.link_index(&parsed.uplink).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "interface '{}' does not exist in the node namespace (see `ip link`)",
            parsed.uplink
        ))
    })?;
    if !nl.has_address(ifindex, parsed.ip).await? {
        return Err(Error::Invalid(format!(
            "{} is not an address of {}; give one of its own (see `ip -4 addr show {}`)",
            parsed.ip, parsed.uplink, parsed.uplink
        )));
    }
    let local_ports = sysctl::local_port_range()?;
    let facts = UplinkFacts {
        ifindex,
        mtu: nl.link_mtu(ifindex).await?,
        local_ports,
        forwarding: sysctl::read(sysctl::FORWARDING)?,
    };
    let model = node::set(engine.model(), &parsed, subnets, &facts)?;
    let model = engine.commit_model(model).await?;
    // The limit counts from now, with the connections that exist.
    let limit = model.node.as_ref().and_then(|n| n.conntrack_max);
    conntrack::refresh_budget(&engine.paths, limit)
}

//! Requests that change nothing: answered from the model and the pinned
//! maps, without loading the datapath or taking the writer lock.

use weft_api::{Request, views::StatusView};
use weft_common::maps::{CT_DIR_ORIGINAL, PROG_FROM_CONTAINER};

use super::{Engine, answer, views};
use crate::{
    apply,
    datapath::{Datapath, conntrack, netlink::Netlink},
    error::{Error, Result},
};

pub(super) async fn handle(engine: &mut Engine, request: Request) -> Result<serde_json::Value> {
    // An in-process read sees what the last writer committed.
    if engine.writer.is_none() {
        engine.snapshot = engine.store.read().await?;
    }
    let model = &engine.snapshot.model;
    let paths = &engine.paths;
    match request {
        Request::Status(_) => answer(&status(engine).await?),
        Request::ListNetworks(_) => answer(&views::networks(model)),
        Request::InspectNetwork(req) => answer(&views::network_detail(model, &req.name)?),
        Request::ListEndpoints(_) => answer(&model.endpoints),
        Request::Stats(_) => answer(&views::stats(paths, model)?),
        Request::ShowNode(_) => answer(&views::node(paths, model)),
        Request::ListNodes(_) => {
            let nodes: Vec<_> = model
                .remote_nodes
                .iter()
                .map(|n| views::remote_node(n, model))
                .collect();
            answer(&nodes)
        }
        Request::ListConntrack(_) => answer(&views::connections(paths)?),
        Request::Nat(_) => answer(&views::nat(paths, model)?),
        Request::ListPublished(_) => {
            let list: Vec<_> = model
                .publications
                .iter()
                .map(|p| views::publication(model, p))
                .collect();
            answer(&list)
        }
        Request::ListServices(_) => {
            let list: Vec<_> = model
                .services
                .iter()
                .map(|s| views::service(s, model))
                .collect();
            answer(&list)
        }
        Request::InspectService(req) => answer(&views::service_detail(paths, model, &req.name)?),
        Request::ShowServiceConfig(_) => answer(&model.service_config()),
        Request::ClusterStatus(_) => Err(Error::Invalid(
            "this node is not in cluster mode: no agent runs with --etcd (start one with \
             `weft agent --etcd URL`)"
                .into(),
        )),
        Request::CheckAttachment(req) => answer(&super::attach::check(engine, &req).await?),
        change => Err(Error::Invalid(format!(
            "{change:?} is a change, not a read; this is a bug in weft"
        ))),
    }
}

/// Whether an agent runs, what the model holds, and whether the kernel
/// matches it (the drift check, read-only).
async fn status(engine: &Engine) -> Result<StatusView> {
    let model = &engine.snapshot.model;
    let nl = Netlink::connect()?;
    let drift = apply::check(&engine.paths, &nl, model, &engine.synthetic).await?;
    let startup = engine.startup();
    Ok(StatusView {
        agent: if startup.is_some() {
            "running"
        } else {
            "not running"
        }
        .into(),
        pid: startup.map(|s| s.pid),
        started_at: startup.map(|s| s.started_at),
        networks: model.networks.len(),
        endpoints: model.endpoints.len(),
        routes: views::managed_routes(model),
        flows: conntrack::snapshot(&engine.paths)?
            .iter()
            .filter(|(_, e)| e.direction == CT_DIR_ORIGINAL)
            .count(),
        program_id: Datapath::program_id(&engine.paths, PROG_FROM_CONTAINER),
        kernel_matches_state: drift.is_empty(),
        drift: serde_json::to_value(&drift).unwrap_or_default(),
        repaired_at_start: startup.and_then(|s| serde_json::to_value(&s.repaired).ok()),
        migrated_at_start: startup.and_then(|s| serde_json::to_value(&s.migrated).ok()),
    })
}

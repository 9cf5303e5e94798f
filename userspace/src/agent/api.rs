//! The agent's HTTP+JSON API on a unix socket: everything the CLI does
//! except `teardown`, which removes the very state and pins the agent
//! serves and so stays CLI-only (run directly, best with the agent
//! stopped). Only the socket's owner (root) can connect.
//!
//! | route | body / answer |
//! |---|---|
//! | `GET /v1/status` | [`StatusView`] |
//! | `GET /v1/networks`, `POST /v1/networks` | list; `{"name","subnet","gateway"?,"flood"?}` -> 201 network |
//! | `GET`, `DELETE /v1/networks/{name}` | `network inspect`; `{"removed": name}` |
//! | `POST /v1/networks/{a}/connect/{b}`, `.../disconnect/{b}` | `{"networks": [a, b], "connected": bool}` |
//! | `GET /v1/endpoints`, `POST /v1/endpoints` | list; `{"network","netns","ip"?,"name"?,"ifname"?,"mtu"?}` -> 201 endpoint |
//! | `DELETE /v1/endpoints/{name}` | `{"removed": name}` |
//! | `GET /v1/stats` | counters |
//! | `GET`, `PUT`, `DELETE /v1/node` | `node show`; `{"uplink","ip","ports"?,"encap"?,"subnets"?,"vtep_mac"?}` -> node; `node unset` |
//! | `GET /v1/nodes`, `POST /v1/nodes` | `node ls`; `{"name","underlay","subnets"?,"vtep_mac"?}` -> 201 node |
//! | `DELETE /v1/nodes/{name}` | `{"removed": name}` |
//! | `GET /v1/conntrack`, `POST /v1/conntrack/gc[?older_than=S]` | `ct ls`; `ct gc` |
//! | `GET /v1/nat` | `nat ls` |
//! | `GET`, `POST`, `DELETE /v1/publish` | `publish ls`; `{"endpoint","spec"}` -> 201 publication; `{"endpoint"?,"spec"}` -> the removed publication |
//! | `POST /v1/bench/endpoints`, `DELETE` | `{"count": N}` -> [`bench::Timing`]: synthetic endpoints in the maps only, for benchmarking map programming ([`bench`]) |
//!
//! Reads and `endpoint add` answer the JSON the CLI prints with `-o json`;
//! `network create` answers the network as `network ls -o json` shows it;
//! errors are
//! `{"error": "..."}` with 400 (invalid input; 422 for a well-formed body of
//! the wrong shape), 404 (not found), 409 (conflict) or 500. Every answer
//! carries `x-weft-agent: <pid>`.
//!
//! Endpoint adds and removals run concurrently across networks and one at
//! a time within one (each holds its network's lock, and the state lock
//! only to plan and commit; see [`crate::objlock`]); other mutations run
//! one at a time, in arrival order. Each runs on a blocking thread
//! with its own runtime: the library takes the state's `flock`, which blocks
//! the calling thread (a weft command run directly may hold it) and is held
//! across netlink awaits, so it must never run on the agent's single
//! runtime thread. A mutation that fails rolls back in the library, as it
//! does from the CLI.

use std::{future::Future, path::Path, sync::Arc};

use axum::{
    Json, Router,
    extract::{FromRequest, Path as UrlPath, Request, State},
    http::{HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;
use weft_common::maps::CT_DIR_ORIGINAL;

use super::{Startup, bench, client::AGENT_HEADER, drift};
use crate::{
    cmd::{ct, endpoint, network, node, nodes, publish, stats},
    error::{Error, Result, chain},
    output::Render,
    paths::Paths,
    state,
};

struct Shared {
    paths: Paths,
    startup: Startup,
    /// Queues mutations; the state lock alone would also serialize them,
    /// but by parking one blocking thread per waiting request.
    mutating: Arc<Mutex<()>>,
}

/// `POST /v1/networks`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default)]
    pub flood: bool,
    /// Default: on.
    #[serde(default = "default_masquerade")]
    pub masquerade: bool,
    /// VXLAN network identifier; default: the network id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

fn default_masquerade() -> bool {
    true
}

/// `POST /v1/conntrack/gc` query.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<u64>,
}

/// `POST /v1/endpoints`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddEndpoint {
    pub network: String,
    /// A name in /run/netns or an absolute path (relative paths resolve
    /// against the agent's working directory, so the CLI sends absolute
    /// ones).
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// `POST /v1/publish`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishPort {
    pub endpoint: String,
    /// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
    pub spec: String,
}

/// `DELETE /v1/publish`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpublishPort {
    /// Only remove the publication if it is this endpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `[HOST_IP:]HOST_PORT[:CONTAINER_PORT][/tcp|udp]`.
    pub spec: String,
}

/// The answer to a removal.
#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
}

/// The answer to connect and disconnect.
#[derive(Debug, Serialize, Deserialize)]
pub struct Connection {
    pub networks: [String; 2],
    pub connected: bool,
}

/// Binds the socket (replacing a stale one: the caller holds the agent
/// lock) and returns the server future.
pub fn serve(
    paths: Paths,
    startup: Startup,
    socket: &Path,
) -> Result<impl std::future::Future<Output = std::io::Result<()>>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("cannot listen on {}", socket.display()), e))?;
    let pid = HeaderValue::from(startup.pid);
    let shared = Arc::new(Shared {
        paths,
        startup,
        mutating: Arc::default(),
    });
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/networks", get(networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
        .route("/v1/networks/{a}/connect/{b}", post(connect))
        .route("/v1/networks/{a}/disconnect/{b}", post(disconnect))
        .route("/v1/endpoints", get(endpoints).post(add_endpoint))
        .route(
            "/v1/endpoints/{name}",
            axum::routing::delete(remove_endpoint),
        )
        .route("/v1/stats", get(stats_handler))
        .route("/v1/node", get(show_node).put(set_node).delete(unset_node))
        .route("/v1/nodes", get(list_nodes).post(add_node))
        .route("/v1/nodes/{name}", axum::routing::delete(remove_node))
        .route("/v1/conntrack", get(conntrack_list))
        .route("/v1/conntrack/gc", post(conntrack_gc))
        .route("/v1/nat", get(nat_list))
        .route(
            "/v1/publish",
            get(publish_list).post(publish_port).delete(unpublish_port),
        )
        .route(
            "/v1/bench/endpoints",
            post(bench_program).delete(bench_remove),
        )
        .fallback(not_found)
        .with_state(shared)
        .layer(middleware::map_response(move |mut r: Response| {
            let pid = pid.clone();
            async move {
                r.headers_mut().insert(AGENT_HEADER, pid);
                r
            }
        }));
    Ok(async move { axum::serve(listener, app).await })
}

/// `weft status`: whether an agent is up and whether the kernel matches
/// the saved state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// "running" or "not running".
    pub agent: String,
    pub pid: Option<u32>,
    pub started_at: Option<u64>,
    pub networks: usize,
    pub endpoints: usize,
    /// Routes weft manages: overlay routes once there are any, else each
    /// network's subnet plus each direction of each network link.
    #[serde(default)]
    pub routes: usize,
    /// Masqueraded connections in conntrack (each holds two entries).
    #[serde(default)]
    pub flows: usize,
    pub program_id: Option<u32>,
    pub kernel_matches_state: bool,
    pub drift: serde_json::Value,
    /// What the agent repaired when it started.
    pub repaired_at_start: Option<serde_json::Value>,
    /// What the agent migrated when it started (map layouts, programs).
    #[serde(default)]
    pub migrated_at_start: Option<serde_json::Value>,
}

impl Render for StatusView {
    fn table(&self) -> String {
        let mut out = format!("agent: {}", self.agent);
        if let Some(pid) = self.pid {
            out.push_str(&format!(" (pid {pid})"));
        }
        out.push('\n');
        out.push_str(&format!(
            "networks: {}\nendpoints: {}\nroutes: {}\nflows: {}\nprogram id: {}\n\
             kernel matches state: {}\n",
            self.networks,
            self.endpoints,
            self.routes,
            self.flows,
            self.program_id
                .map_or("not loaded".into(), |id| id.to_string()),
            if self.kernel_matches_state {
                "yes".to_owned()
            } else {
                format!("no: {}", self.drift)
            }
        ));
        out
    }
}

/// The status as seen from here, without an agent.
pub async fn local_status(paths: &Paths, agent: &str) -> Result<StatusView> {
    let st = state::read(paths)?;
    let found = drift::check(paths).await?;
    Ok(StatusView {
        agent: agent.into(),
        pid: None,
        started_at: None,
        networks: st.networks.len(),
        endpoints: st.endpoints.len(),
        routes: managed_routes(&st),
        flows: crate::conntrack::snapshot(paths)?
            .iter()
            .filter(|(_, e)| e.direction == CT_DIR_ORIGINAL)
            .count(),
        program_id: drift::program_id(paths),
        kernel_matches_state: found.is_empty(),
        drift: serde_json::to_value(&found).unwrap_or_default(),
        repaired_at_start: None,
        migrated_at_start: None,
    })
}

/// Each network's subnet route plus each direction of each network link.
fn managed_routes(st: &state::State) -> usize {
    st.networks.iter().map(|n| 1 + n.connected.len()).sum()
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    respond(local_status(&s.paths, "running").await.map(|mut v| {
        v.pid = Some(s.startup.pid);
        v.started_at = Some(s.startup.started_at);
        v.repaired_at_start = serde_json::to_value(&s.startup.repaired).ok();
        v.migrated_at_start = serde_json::to_value(&s.startup.migrated).ok();
        v
    }))
}

async fn networks(State(s): State<Arc<Shared>>) -> Response {
    respond(network::list(&s.paths))
}

async fn endpoints(State(s): State<Arc<Shared>>) -> Response {
    respond(endpoint::list(&s.paths))
}

async fn stats_handler(State(s): State<Arc<Shared>>) -> Response {
    respond(stats::stats(&s.paths))
}

async fn inspect_network(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    respond(network::inspect(&s.paths, &name))
}

async fn create_network(State(s): State<Arc<Shared>>, Body(req): Body<CreateNetwork>) -> Response {
    let args = network::CreateArgs {
        name: req.name,
        subnet: req.subnet,
        gateway: req.gateway,
        flood: req.flood,
        masquerade: req.masquerade,
        vni: req.vni,
    };
    created(
        mutate(
            &s,
            move |paths| async move { network::create(&paths, &args) },
        )
        .await,
    )
}

async fn remove_network(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    respond(
        mutate(&s, move |paths| async move {
            network::remove(&paths, &name).map(|()| Removed { removed: name })
        })
        .await,
    )
}

async fn connect(
    State(s): State<Arc<Shared>>,
    UrlPath((a, b)): UrlPath<(String, String)>,
) -> Response {
    respond(
        mutate(&s, move |paths| async move {
            network::connect(&paths, &a, &b).map(|()| Connection {
                networks: [a, b],
                connected: true,
            })
        })
        .await,
    )
}

async fn disconnect(
    State(s): State<Arc<Shared>>,
    UrlPath((a, b)): UrlPath<(String, String)>,
) -> Response {
    respond(
        mutate(&s, move |paths| async move {
            network::disconnect(&paths, &a, &b).map(|()| Connection {
                networks: [a, b],
                connected: false,
            })
        })
        .await,
    )
}

async fn add_endpoint(State(s): State<Arc<Shared>>, Body(req): Body<AddEndpoint>) -> Response {
    let args = endpoint::AddArgs {
        network: req.network,
        netns: req.netns,
        ip: req.ip,
        name: req.name,
        ifname: req.ifname,
        mtu: req.mtu,
    };
    created(
        mutate_network(&s, move |paths| async move {
            endpoint::add_holding(&paths, &args, endpoint::Hold::PerNetwork).await
        })
        .await,
    )
}

async fn remove_endpoint(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    respond(
        mutate_network(&s, move |paths| async move {
            endpoint::remove_holding(&paths, &name, endpoint::Hold::PerNetwork)
                .await
                .map(|()| Removed { removed: name })
        })
        .await,
    )
}

async fn show_node(State(s): State<Arc<Shared>>) -> Response {
    respond(node::show(&s.paths))
}

async fn set_node(State(s): State<Arc<Shared>>, Body(req): Body<node::SetArgs>) -> Response {
    respond(
        mutate(
            &s,
            move |paths| async move { node::set(&paths, &req).await },
        )
        .await,
    )
}

async fn list_nodes(State(s): State<Arc<Shared>>) -> Response {
    respond(nodes::list(&s.paths))
}

async fn add_node(State(s): State<Arc<Shared>>, Body(req): Body<nodes::AddArgs>) -> Response {
    created(mutate(&s, move |paths| async move { nodes::add(&paths, &req) }).await)
}

async fn remove_node(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    respond(
        mutate(&s, move |paths| async move {
            nodes::remove(&paths, &name).map(|()| Removed { removed: name })
        })
        .await,
    )
}

async fn unset_node(State(s): State<Arc<Shared>>) -> Response {
    respond(mutate(&s, move |paths| async move { node::unset(&paths).await }).await)
}

async fn conntrack_list(State(s): State<Arc<Shared>>) -> Response {
    respond(ct::list(&s.paths))
}

async fn conntrack_gc(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<GcQuery>,
) -> Response {
    respond(ct::gc(&s.paths, q.older_than))
}

async fn nat_list(State(s): State<Arc<Shared>>) -> Response {
    respond(ct::nat(&s.paths))
}

async fn publish_list(State(s): State<Arc<Shared>>) -> Response {
    respond(publish::list(&s.paths))
}

async fn publish_port(State(s): State<Arc<Shared>>, Body(req): Body<PublishPort>) -> Response {
    created(
        mutate(&s, move |paths| async move {
            publish::publish(&paths, &req.endpoint, &req.spec)
        })
        .await,
    )
}

async fn unpublish_port(State(s): State<Arc<Shared>>, Body(req): Body<UnpublishPort>) -> Response {
    respond(
        mutate(&s, move |paths| async move {
            publish::unpublish(&paths, req.endpoint.as_deref(), &req.spec)
        })
        .await,
    )
}

async fn bench_program(State(s): State<Arc<Shared>>, Body(req): Body<bench::Program>) -> Response {
    respond(
        mutate(
            &s,
            move |paths| async move { bench::program(&paths, req.count) },
        )
        .await,
    )
}

async fn bench_remove(State(s): State<Arc<Shared>>) -> Response {
    respond(mutate(&s, move |paths| async move { bench::remove(&paths) }).await)
}

/// Runs one mutation after those before it, on a blocking thread with its
/// own runtime (see the module docs). The queue slot travels with the work,
/// so a client that hangs up does not let the next mutation start early:
/// the work runs to its end (or its rollback) regardless.
async fn mutate<T, F, Fut>(s: &Shared, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Paths) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let turn = Arc::clone(&s.mutating).lock_owned().await;
    run_blocking(s, turn, work).await
}

/// Runs an endpoint change outside the queue, at once: it serializes
/// itself on its network's lock and holds the state lock only to plan and
/// commit (see [`crate::objlock`]), so changes in different networks
/// proceed together. The state lock still orders it against queued
/// mutations.
async fn mutate_network<T, F, Fut>(s: &Shared, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Paths) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    run_blocking(s, (), work).await
}

/// Runs `work` on a blocking thread with its own runtime, holding `turn`
/// until it ends (also when the client hangs up).
async fn run_blocking<T, F, Fut, G>(s: &Shared, turn: G, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Paths) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    G: Send + 'static,
{
    let paths = s.paths.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start a runtime for the request", e))?
            .block_on(work(paths))
    });
    task.await.unwrap_or_else(|e| {
        Err(Error::io(
            "the request's worker thread failed",
            std::io::Error::other(e.to_string()),
        ))
    })
}

/// A JSON request body whose rejections (malformed JSON, wrong types,
/// unknown or missing fields, wrong content type) are `{"error": ...}`
/// answers naming what was wrong, with axum's status (400, 415 or 422).
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> std::result::Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(error_response(
                rejection.status(),
                &format!("bad request body: {}", rejection.body_text()),
            )),
        }
    }
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such route; the API serves /v1/status, /v1/networks[/{name}[/connect|disconnect/{other}]], \
         /v1/endpoints[/{name}], /v1/stats, /v1/node, /v1/nodes[/{name}], /v1/conntrack[/gc], \
         /v1/nat and /v1/publish",
    )
}

fn created<T: Serialize>(result: Result<T>) -> Response {
    match result {
        Ok(value) => (StatusCode::CREATED, Json(value)).into_response(),
        Err(e) => error(&e),
    }
}

fn respond<T: Serialize>(result: Result<T>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => error(&e),
    }
}

/// The whole cause chain, so the CLI prints through the agent what it
/// prints without one.
fn error(e: &Error) -> Response {
    if status_of(e) == StatusCode::INTERNAL_SERVER_ERROR {
        log::warn!("api: {}", chain(e));
    }
    error_response(status_of(e), &chain(e))
}

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(code: StatusCode, message: &str) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

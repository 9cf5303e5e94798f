//! The agent's HTTP+JSON API on a unix socket: every request of
//! [`weft_api::requests`] on its route, queued to the engine. Only the
//! socket's owner (root) can connect.
//!
//! Answers are the JSON of each request's answer type (201 for creations);
//! errors are `{"error": message, "kind": kind}` with the kind's status
//! (400 invalid input, 422 a well-formed body of the wrong shape, 404, 409,
//! 503, 500). Every answer carries `x-weft-agent: <pid>`.

use std::path::Path;

use axum::{
    Json, Router,
    extract::{FromRequest, Path as UrlPath, Query, Request as HttpRequest, State},
    http::{HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::de::DeserializeOwned;
use weft_api::{
    AGENT_HEADER, ApiError, ErrorKind, Request,
    error::ErrorBody,
    requests::{
        BenchRemove, ClusterStatus, ConnectNetworks, DisconnectNetworks, GcConntrack,
        InspectNetwork, InspectService, ListConntrack, ListEndpoints, ListNetworks, ListNodes,
        ListPublished, ListServices, Nat, RemoveEndpoint, RemoveNetwork, RemoveNode, RemoveService,
        ShowNode, ShowServiceConfig, Stats, Status, UnsetNode,
    },
};

use crate::{
    agent::queue::EngineHandle,
    error::{Error, Result},
};

/// Binds the socket (replacing a stale one: the caller holds the agent
/// lock) and returns the server future.
pub fn serve(
    engine: EngineHandle,
    socket: &Path,
) -> Result<impl std::future::Future<Output = std::io::Result<()>>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("cannot listen on {}", socket.display()), e))?;
    let pid = HeaderValue::from(engine.startup.pid);
    let app = Router::new()
        .route("/v1/status", get(bare::<Status>))
        .route("/v1/cluster", get(bare::<ClusterStatus>))
        .route(
            "/v1/networks",
            get(bare::<ListNetworks>).post(created::<weft_api::requests::CreateNetwork>),
        )
        .route(
            "/v1/networks/{name}",
            get(named::<InspectNetwork>).delete(named::<RemoveNetwork>),
        )
        .route(
            "/v1/networks/{a}/connect/{b}",
            post(pair::<ConnectNetworks>),
        )
        .route(
            "/v1/networks/{a}/disconnect/{b}",
            post(pair::<DisconnectNetworks>),
        )
        .route(
            "/v1/endpoints",
            get(bare::<ListEndpoints>).post(created::<weft_api::requests::AddEndpoint>),
        )
        .route("/v1/endpoints/{name}", delete(named::<RemoveEndpoint>))
        .route(
            "/v1/endpoints/{name}/labels",
            post(named_body::<weft_api::requests::LabelEndpoint>),
        )
        .route(
            "/v1/endpoints/{name}/drain",
            post(named_body::<weft_api::requests::DrainEndpoint>),
        )
        .route(
            "/v1/services",
            get(bare::<ListServices>).post(created::<weft_api::requests::CreateService>),
        )
        .route(
            "/v1/services/{name}",
            get(named::<InspectService>).delete(named::<RemoveService>),
        )
        .route(
            "/v1/service-config",
            get(bare::<ShowServiceConfig>).put(body::<weft_api::requests::SetServiceConfig>),
        )
        .route("/v1/stats", get(bare::<Stats>))
        .route(
            "/v1/node",
            get(bare::<ShowNode>)
                .put(body::<weft_api::requests::SetNode>)
                .delete(bare::<UnsetNode>),
        )
        .route(
            "/v1/nodes",
            get(bare::<ListNodes>).post(created::<weft_api::requests::AddNode>),
        )
        .route("/v1/nodes/{name}", delete(named::<RemoveNode>))
        .route("/v1/conntrack", get(bare::<ListConntrack>))
        .route("/v1/conntrack/gc", post(gc))
        .route("/v1/nat", get(bare::<Nat>))
        .route(
            "/v1/publish",
            get(bare::<ListPublished>)
                .post(created::<weft_api::requests::Publish>)
                .delete(body::<weft_api::requests::Unpublish>),
        )
        .route(
            "/v1/attachments",
            post(created::<weft_api::requests::AttachContainer>),
        )
        .route(
            "/v1/attachments/gc",
            post(body::<weft_api::requests::GcAttachments>),
        )
        .route(
            "/v1/attachments/{container_id}/{ifname}",
            get(pair::<weft_api::requests::CheckAttachment>)
                .delete(pair::<weft_api::requests::DetachContainer>),
        )
        .route(
            "/v1/bench/endpoints",
            post(body::<weft_api::requests::BenchProgram>).delete(bare::<BenchRemove>),
        )
        .route(
            "/v1/bench/services",
            post(body::<weft_api::requests::BenchServices>)
                .delete(bare::<weft_api::requests::BenchRemoveServices>),
        )
        .fallback(not_found)
        .with_state(engine)
        .layer(middleware::map_response(move |mut r: Response| {
            let pid = pid.clone();
            async move {
                r.headers_mut().insert(AGENT_HEADER, pid);
                r
            }
        }));
    Ok(async move { axum::serve(listener, app).await })
}

/// The engine's answer to `request` with `status` on success.
async fn answer(engine: &EngineHandle, request: Request, status: StatusCode) -> Response {
    match engine.call(request).await {
        Ok(value) => (status, Json(value)).into_response(),
        Err(e) => error_response(&e),
    }
}

/// A request without arguments.
async fn bare<R: Default + Into<Request>>(State(engine): State<EngineHandle>) -> Response {
    answer(&engine, R::default().into(), StatusCode::OK).await
}

/// A request that is its JSON body.
async fn body<R: DeserializeOwned + Into<Request>>(
    State(engine): State<EngineHandle>,
    Body(req): Body<R>,
) -> Response {
    answer(&engine, req.into(), StatusCode::OK).await
}

/// A creation: its JSON body; 201 on success.
async fn created<R: DeserializeOwned + Into<Request>>(
    State(engine): State<EngineHandle>,
    Body(req): Body<R>,
) -> Response {
    answer(&engine, req.into(), StatusCode::CREATED).await
}

/// A request naming one object in the path.
async fn named<R: From<String> + Into<Request>>(
    State(engine): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    answer(&engine, R::from(name).into(), StatusCode::OK).await
}

/// A request naming one object in the path, with the rest in its body.
async fn named_body<R: DeserializeOwned + Into<Request> + Named>(
    State(engine): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Body(mut req): Body<R>,
) -> Response {
    req.set_name(name);
    answer(&engine, req.into(), StatusCode::OK).await
}

/// A request body whose object is named by the path.
trait Named {
    fn set_name(&mut self, name: String);
}

impl Named for weft_api::requests::LabelEndpoint {
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

impl Named for weft_api::requests::DrainEndpoint {
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
}

/// A request naming two networks in the path.
/// A request naming two objects in the path (two networks; a container
/// and its interface).
async fn pair<R: From<(String, String)> + Into<Request>>(
    State(engine): State<EngineHandle>,
    UrlPath(names): UrlPath<(String, String)>,
) -> Response {
    answer(&engine, R::from(names).into(), StatusCode::OK).await
}

async fn gc(State(engine): State<EngineHandle>, Query(q): Query<GcConntrack>) -> Response {
    answer(&engine, q.into(), StatusCode::OK).await
}

/// A JSON request body whose rejections (malformed JSON, wrong types,
/// unknown or missing fields, wrong content type) are error answers naming
/// what was wrong, with axum's status (400, 415 or 422).
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: HttpRequest, state: &S) -> std::result::Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let kind = if status == StatusCode::UNPROCESSABLE_ENTITY {
                    ErrorKind::BadShape
                } else {
                    ErrorKind::BadEncoding
                };
                let e = ApiError::new(kind, format!("bad request body: {}", rejection.body_text()));
                Err(with_status(status, &e))
            }
        }
    }
}

async fn not_found() -> Response {
    error_response(&ApiError::new(
        ErrorKind::NotFound,
        "no such route; the API serves /v1/status, /v1/networks[/{name}[/connect|disconnect/{other}]], \
         /v1/endpoints[/{name}], /v1/stats, /v1/node, /v1/nodes[/{name}], /v1/conntrack[/gc], \
         /v1/nat, /v1/publish, /v1/services[/{name}] and /v1/service-config",
    ))
}

fn error_response(e: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_status(status, e)
}

fn with_status(status: StatusCode, e: &ApiError) -> Response {
    let body = ErrorBody {
        error: e.message.clone(),
        kind: Some(e.kind),
    };
    (status, Json(body)).into_response()
}

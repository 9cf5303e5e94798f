//! The agent's HTTP+JSON API on a unix socket (read side for now: status,
//! networks, endpoints, stats). Only the socket's owner (root) can connect.

use std::{path::Path, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::{Startup, drift};
use crate::{
    cmd::{endpoint, network, stats},
    error::{Error, Result},
    output::Render,
    paths::Paths,
    state,
};

struct Shared {
    paths: Paths,
    startup: Startup,
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
    let shared = Arc::new(Shared { paths, startup });
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/networks", get(networks))
        .route("/v1/endpoints", get(endpoints))
        .route("/v1/stats", get(stats_handler))
        .fallback(not_found)
        .with_state(shared);
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
    pub program_id: Option<u32>,
    pub kernel_matches_state: bool,
    pub drift: serde_json::Value,
    /// What the agent repaired when it started.
    pub repaired_at_start: Option<serde_json::Value>,
}

impl Render for StatusView {
    fn table(&self) -> String {
        let mut out = format!("agent: {}", self.agent);
        if let Some(pid) = self.pid {
            out.push_str(&format!(" (pid {pid})"));
        }
        out.push('\n');
        out.push_str(&format!(
            "networks: {}\nendpoints: {}\nprogram id: {}\nkernel matches state: {}\n",
            self.networks,
            self.endpoints,
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
        program_id: drift::program_id(paths),
        kernel_matches_state: found.is_empty(),
        drift: serde_json::to_value(&found).unwrap_or_default(),
        repaired_at_start: None,
    })
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    respond(local_status(&s.paths, "running").await.map(|mut v| {
        v.pid = Some(s.startup.pid);
        v.started_at = Some(s.startup.started_at);
        v.repaired_at_start = serde_json::to_value(&s.startup.repaired).ok();
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

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such endpoint; try /v1/status, /v1/networks, /v1/endpoints or /v1/stats",
    )
}

fn respond<T: Serialize>(result: Result<T>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => error_response(status_of(&e), &e.to_string()),
    }
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

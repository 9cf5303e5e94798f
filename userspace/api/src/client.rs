//! The client of the agent's API: HTTP/1.1 over its unix socket, with
//! hyper. The CLI, the tests and xtask all use it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request as HttpRequest, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::{
    error::{ApiError, ErrorBody, ErrorKind},
    requests::{Call, Request},
};

/// The response header naming the agent process that answered.
pub const AGENT_HEADER: &str = "x-weft-agent";

/// Why a call got no answer from the engine.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket (absent, or connection refused).
    #[error("no weft agent answers on {}", .0.display())]
    NoAgent(PathBuf),
    /// The engine refused or failed the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The connection broke, or the answer is not what this weft expects.
    #[error("{what}")]
    Transport {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClientError {
    fn transport(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Transport {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// An HTTP answer as it came.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// The pid in [`AGENT_HEADER`], if the agent sent one.
    pub agent_pid: Option<u32>,
    pub body: Bytes,
}

impl RawAnswer {
    /// The body as JSON (`null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client of one agent socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and parses its answer.
    pub async fn call<C: Call>(&self, request: C) -> Result<C::Answer, ClientError> {
        let request: Request = request.into();
        let answer = self.send(&request).await?;
        serde_json::from_slice(&answer.body).map_err(|e| {
            ClientError::transport(
                format!("the agent's answer to {request:?} is not what this weft expects"),
                e,
            )
        })
    }

    /// Sends `request`; an error answer becomes [`ClientError::Api`] with the
    /// kind the agent named.
    pub async fn send(&self, request: &Request) -> Result<RawAnswer, ClientError> {
        let route = request.route().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Invalid,
                format!("{request:?} runs only in-process, never through the agent"),
            )
        })?;
        let body = route
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default());
        let content_type = body.as_ref().map(|_| "application/json");
        let answer = self
            .raw(
                route.method,
                &route.path,
                content_type,
                body.as_deref().unwrap_or_default(),
            )
            .await?;
        log::debug!(
            "{} {}: {} from the weft agent (pid {})",
            route.method,
            route.path,
            answer.status,
            answer.agent_pid.map_or("?".to_owned(), |p| p.to_string())
        );
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
        let (message, kind) = match parsed {
            Some(b) => (b.error, b.kind),
            None => (
                format!(
                    "the agent answered {} to {} {}: {}",
                    answer.status,
                    route.method,
                    route.path,
                    String::from_utf8_lossy(&answer.body).trim()
                ),
                None,
            ),
        };
        let kind = kind.unwrap_or_else(|| ErrorKind::from_http_status(answer.status));
        Err(ApiError::new(kind, message).into())
    }

    /// One HTTP exchange, whatever its status: for tests of the API itself
    /// (malformed bodies, unknown routes).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<RawAnswer, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|_| ClientError::NoAgent(self.socket.clone()))?;
        let broken = |e: hyper::Error| {
            ClientError::transport(
                format!("talking to the agent at {}", self.socket.display()),
                e,
            )
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(broken)?;
        let driver = tokio::spawn(connection);
        let mut builder = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "weft");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| ClientError::transport(format!("cannot build {method} {path}"), e))?;
        let response = sender.send_request(request).await.map_err(broken)?;
        let status = response.status().as_u16();
        let agent_pid = response
            .headers()
            .get(AGENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(broken)?
            .to_bytes();
        driver.abort();
        Ok(RawAnswer {
            status,
            agent_pid,
            body,
        })
    }

    /// [`Self::call`] from synchronous code (tests, xtask), on a runtime of
    /// its own.
    pub fn call_blocking<C: Call>(&self, request: C) -> Result<C::Answer, ClientError> {
        block_on(self.call(request))
    }

    /// [`Self::raw`] from synchronous code.
    pub fn raw_blocking(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<RawAnswer, ClientError> {
        block_on(self.raw(method, path, content_type, body))
    }
}

fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::transport("cannot start a runtime for the API call", e))?
        .block_on(work)
}

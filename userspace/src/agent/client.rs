//! The CLI's side of the agent API: one HTTP/1.1 request over the unix
//! socket. Small on purpose: requests are tiny and the agent answers every
//! request with a length and closes the connection, so no HTTP client
//! library is needed.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use crate::error::{Error, Result};

/// The response header naming the agent process that answered.
pub const AGENT_HEADER: &str = "x-weft-agent";

/// `GET path` from the agent behind `socket`: `Ok(None)` when no agent
/// listens there, the body when it answered 2xx, an error otherwise.
pub async fn get(socket: &Path, path: &str) -> Result<Option<String>> {
    request(socket, "GET", path, None).await
}

/// `method path` with `body` as JSON, the answer parsed as `T`: `Ok(None)`
/// when no agent listens on `socket` (absent, or nobody accepts), so the
/// caller works directly; the agent's own error when it refused.
pub async fn call<T: DeserializeOwned>(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<Option<T>> {
    let body = body
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Invalid(format!("cannot encode the request to {path}: {e}")))?;
    let Some(text) = request(socket, method, path, body.as_deref()).await? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::io(
            format!("the agent's answer to {method} {path} is not what this weft expects"),
            std::io::Error::other(e),
        )
    })
}

async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Option<String>> {
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return Ok(None);
    };
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    let io = |e| Error::io(format!("talking to the agent at {}", socket.display()), e);
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        Error::io(
            format!("the agent sent a malformed response to {method} {path}"),
            std::io::Error::other(text.to_string()),
        )
    })?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let agent = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(AGENT_HEADER))
        .map_or("?", |(_, pid)| pid.trim());
    log::debug!("{method} {path}: {code} from the weft agent (pid {agent})");
    if (200..300).contains(&code) {
        return Ok(Some(body.to_owned()));
    }
    // The agent's `{"error": ...}` carries the library's message; keep its
    // kind so the CLI fails the same way with or without an agent.
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            format!(
                "the agent answered {code} to {method} {path}: {}",
                body.trim()
            )
        });
    Err(match code {
        400 | 422 => Error::Invalid(message),
        404 => Error::NotFound(message),
        409 => Error::Conflict(message),
        _ => Error::io("the weft agent failed", std::io::Error::other(message)),
    })
}

/// `segment` for a URL path: everything outside `A-Z a-z 0-9 - _`
/// percent-encoded, so any name (even `..` or one with a `/`) stays one
/// segment and reaches the library's own validation.
pub fn segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! The CLI's side of the agent API: one HTTP/1.1 request over the unix
//! socket. Small on purpose: requests are tiny and responses are JSON with a
//! length, so no HTTP client library is needed.

use std::path::Path;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

use crate::error::{Error, Result};

/// `GET path` from the agent behind `socket`: `Ok(None)` when no agent
/// listens there, the body when it answered 2xx, an error otherwise.
pub async fn get(socket: &Path, path: &str) -> Result<Option<String>> {
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return Ok(None);
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n");
    let io = |e| Error::io(format!("talking to the agent at {}", socket.display()), e);
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Invalid(format!("the agent sent a malformed response to {path}")))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if !(200..300).contains(&code) {
        return Err(Error::Invalid(format!(
            "the agent answered {code} to {path}: {}",
            body.trim()
        )));
    }
    Ok(Some(body.to_owned()))
}

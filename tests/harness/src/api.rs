//! HTTP/1.1 calls to a node's agent over its unix socket, as the tests and
//! the bench make them. Hand-written on purpose for now: a typed API client
//! will replace these (issue 10), with these signatures until then.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::node::Node;

/// Bound on one answer (10,000 published ports in one request take long).
const ANSWER: Duration = Duration::from_secs(120);

/// One request on `socket` (`Connection: close`): the status and the body.
/// Without a body there is no Content-Length either.
fn exchange(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the agent at {}", socket.display()))?;
    s.set_read_timeout(Some(ANSWER))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len())),
        None => req.push_str("\r\n"),
    }
    s.write_all(req.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed answer: {text}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in: {head}"))?;
    Ok((code, body.to_owned()))
}

impl Node {
    /// One raw HTTP/1.1 request to the agent's socket: (status, JSON body).
    pub fn api_raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(u16, Value)> {
        let (code, body) = exchange(&self.agent_socket(), method, path, content_type, Some(body))?;
        let json =
            serde_json::from_str(&body).with_context(|| format!("body is not JSON: {body}"))?;
        Ok((code, json))
    }

    /// A JSON request to the agent's API that must answer `want`; returns
    /// the answer's body.
    pub fn api(&self, method: &str, path: &str, body: &Value, want: u16) -> Result<Value> {
        let (code, answer) =
            self.api_raw(method, path, Some("application/json"), &body.to_string())?;
        if code != want {
            bail!("{method} {path} {body}: expected {want}, got {code}: {answer}");
        }
        Ok(answer)
    }
}

/// One request to the agent at `socket`, with a JSON `body` if any; the
/// body of a 2xx answer.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    let content_type = body.map(|_| "application/json");
    let (code, answer) = exchange(socket, method, path, content_type, body)?;
    if !(200..300).contains(&code) {
        bail!("{method} {path}: {code} {answer}");
    }
    Ok(answer)
}

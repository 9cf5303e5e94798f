//! A node's agent API, through weft-api's typed client (hyper over the
//! agent's unix socket): typed calls for what tests and the bench ask, and
//! raw exchanges for tests of the API itself (malformed bodies, routes).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft_api::{Call, Client};

use crate::node::Node;

impl Node {
    /// The typed client of this node's agent.
    pub fn client(&self) -> Client {
        Client::new(self.agent_socket())
    }

    /// Sends `request` to this node's agent and returns its answer.
    pub fn call<C: Call>(&self, request: C) -> Result<C::Answer> {
        self.client()
            .call_blocking(request)
            .context("calling the agent's API")
    }

    /// One raw HTTP request to the agent's socket: (status, JSON body).
    pub fn api_raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(u16, Value)> {
        let answer = self
            .client()
            .raw_blocking(method, path, content_type, body.as_bytes())
            .with_context(|| format!("{method} {path}"))?;
        let json = serde_json::from_slice(&answer.body).with_context(|| {
            format!(
                "body is not JSON: {}",
                String::from_utf8_lossy(&answer.body)
            )
        })?;
        Ok((answer.status, json))
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

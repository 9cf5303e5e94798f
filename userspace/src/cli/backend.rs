//! Where a command's request goes: to the agent when one answers on its
//! socket, else to an engine in this process (also with `--direct`). Both
//! answer with the same types and fail with the same [`ApiError`]s, so a
//! command prints the same either way.

use std::path::PathBuf;

use weft_api::{ApiError, Call, Client, ClientError, Request};

use crate::{
    datapath::paths::Paths,
    engine::{Engine, Role},
    error::Error,
};

pub struct Backend {
    paths: Paths,
    agent: Option<Client>,
    engine: Option<Engine>,
}

impl Backend {
    /// Requests go to the agent on `socket` if it answers (`None`: never).
    pub fn new(paths: Paths, socket: Option<PathBuf>) -> Self {
        Self {
            paths,
            agent: socket.map(Client::new),
            engine: None,
        }
    }

    /// Sends `request` to the agent, or runs it in-process when none
    /// answers.
    pub async fn call<C: Call + Clone>(&mut self, request: C) -> Result<C::Answer, ApiError> {
        if let Some(client) = &self.agent {
            match client.call(request.clone()).await {
                Err(ClientError::NoAgent(_)) => {}
                Err(ClientError::Api(e)) => return Err(e),
                Err(e) => {
                    return Err(ApiError::from(&Error::io(
                        "the weft agent failed",
                        std::io::Error::other(crate::error::chain(&e)),
                    )));
                }
                Ok(answer) => return Ok(answer),
            }
        }
        self.in_process(request).await
    }

    /// Runs `request` by an engine in this process.
    pub async fn in_process<C: Call>(&mut self, request: C) -> Result<C::Answer, ApiError> {
        let engine = match &mut self.engine {
            Some(e) => e,
            None => {
                let engine = Engine::new(&self.paths, Role::InProcess)
                    .await
                    .map_err(|e| ApiError::from(&e))?;
                self.engine.insert(engine)
            }
        };
        let request: Request = request.into();
        let value = engine
            .handle(request)
            .await
            .map_err(|e| ApiError::from(&e))?;
        serde_json::from_value(value).map_err(|e| {
            ApiError::from(&Error::io(
                "the engine's answer does not parse; this is a bug in weft",
                std::io::Error::other(e),
            ))
        })
    }
}

//! `weft agent` for a node: started with the node's paths, ready once
//! `weft status` says it runs, killed on drop (SIGKILL, as in a crash: the
//! datapath must not need it).

use std::{
    io::Read,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{node::Node, proc};

/// How long an agent may take to serve its API.
const READY: Duration = Duration::from_secs(15);

/// Where the agent's log (its stderr) goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentLog {
    /// Kept for [`Agent::kill_and_log`] and a failed start's error; for
    /// short-lived agents, since nothing drains the pipe while it runs.
    Captured,
    /// Thrown away: for agents that run long (the bench's).
    Discarded,
    /// Appended to this file: for long-running agents whose log a failed
    /// test shows (the cluster tests').
    File(std::path::PathBuf),
}

/// A running `weft agent`, killed on drop.
pub struct Agent {
    child: Child,
}

impl Node {
    /// Starts `weft agent` for this node and waits until its API answers.
    pub fn start_agent(&self) -> Result<Agent> {
        self.start_agent_with(&[])
    }

    /// Starts `weft agent ARGS` (e.g. `--config FILE`) for this node and
    /// waits until its API answers.
    pub fn start_agent_with(&self, args: &[&str]) -> Result<Agent> {
        self.start_agent_logging(args, AgentLog::Captured)
    }

    /// [`Node::start_agent_with`], its log going where `log` says.
    pub fn start_agent_logging(&self, args: &[&str], log: AgentLog) -> Result<Agent> {
        self.start_agent_env(args, &[], log)
    }

    /// [`Node::start_agent_logging`] with more environment variables.
    pub fn start_agent_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        log: AgentLog,
    ) -> Result<Agent> {
        let mut all = vec!["agent"];
        all.extend(args);
        let child = self
            .weft_command(&all)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match &log {
                AgentLog::Captured => Stdio::piped(),
                AgentLog::Discarded => Stdio::null(),
                AgentLog::File(path) => path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                    })
                    .with_context(|| format!("opening the agent log {}", path.display()))?
                    .into(),
            })
            .spawn()
            .context("starting weft agent")?;
        let mut agent = Agent { child };
        let deadline = Instant::now() + READY;
        loop {
            if let Ok(status) = self.weft_json(&["status"])
                && status["agent"] == "running"
            {
                return Ok(agent);
            }
            if let Some(exit) = agent.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = agent.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("weft agent exited ({exit}) before serving: {err}");
            }
            if Instant::now() > deadline {
                bail!("weft agent did not answer within {} s", READY.as_secs());
            }
            proc::sleep(Duration::from_millis(50))?;
        }
    }
}

impl Agent {
    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then everything the agent logged (its stderr, when
    /// [`AgentLog::Captured`]).
    pub fn kill_and_log(mut self) -> Result<String> {
        self.child.kill()?;
        self.child.wait()?;
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut log)?;
        }
        Ok(log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

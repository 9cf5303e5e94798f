//! weft nodes in cluster mode: a node on the underlay whose agent runs with
//! `--etcd` (a real [`crate::etcd::Etcd`]), its overlay turned on through
//! the agent without `--subnet` (the agent claims its pod subnets), and
//! polls for what the agent learns from the store.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    agent::{Agent, AgentLog},
    proc,
    underlay::{Underlay, UnderlayNode},
};

/// A weft node whose agent is in cluster mode. Its agent's log goes to
/// `agent.log` in the node's state dir; set `WEFT_TEST_AGENT_LOGS=1` to
/// have it printed when the node is dropped.
pub struct ClusterNode {
    /// Declared first so it is dropped first: the node's teardown refuses
    /// to run while an agent owns the datapath.
    agent: Option<Agent>,
    pub node: UnderlayNode,
    pub name: String,
    /// `weft agent` flags (`--etcd ... --node-name ...`).
    args: Vec<String>,
}

impl ClusterNode {
    /// A node on `underlay` named `name`, its agent started with
    /// `--etcd URLS --node-name NAME --lease-ttl TTL` plus `extra`; the
    /// overlay is not turned on (see [`ClusterNode::set_overlay`]).
    pub fn start(
        underlay: &Underlay,
        urls: &str,
        name: &str,
        ttl: u32,
        extra: &[&str],
    ) -> Result<Self> {
        let node = underlay.weft_node()?;
        let mut args: Vec<String> = [
            "--etcd",
            urls,
            "--node-name",
            name,
            "--lease-ttl",
            &ttl.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut n = Self {
            node,
            name: name.to_owned(),
            args,
            agent: None,
        };
        n.start_agent()?;
        Ok(n)
    }

    /// [`ClusterNode::start`], then the overlay on with `encap`, then
    /// waits until the node holds a pod subnet of every network in `nets`.
    pub fn join(
        underlay: &Underlay,
        urls: &str,
        name: &str,
        ttl: u32,
        encap: &str,
        nets: &[&str],
    ) -> Result<Self> {
        let n = Self::start(underlay, urls, name, ttl, &[])?;
        n.set_overlay(encap)?;
        for net in nets {
            n.wait_subnet(net, Duration::from_secs(15))?;
        }
        Ok(n)
    }

    /// Starts the agent (again).
    pub fn start_agent(&mut self) -> Result<()> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.agent = Some(
            self.node
                .node
                .start_agent_logging(&args, AgentLog::File(self.log_path()))?,
        );
        Ok(())
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.node.node.state_dir().join("agent.log")
    }

    /// Everything the node's agents logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The running agent's pid.
    pub fn agent_pid(&self) -> Result<u32> {
        self.agent
            .as_ref()
            .map(Agent::pid)
            .context("the agent is not running")
    }

    /// Sends the agent signal `name` (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal_agent(&self, name: &str) -> Result<()> {
        let pid = self
            .agent
            .as_ref()
            .map(Agent::pid)
            .context("the agent is not running")?;
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed ({status})");
        }
        Ok(())
    }

    /// SIGKILLs the agent (the datapath keeps forwarding).
    pub fn kill_agent(&mut self) -> Result<()> {
        match self.agent.take() {
            Some(a) => a.kill(),
            None => Ok(()),
        }
    }

    /// `weft node set --uplink underlay --ip IP --encap ENCAP` (no
    /// `--subnet`: the agent claims them).
    pub fn set_overlay(&self, encap: &str) -> Result<()> {
        self.node.set_overlay(encap, &[])
    }

    /// This node's pod subnet of `network`, once it holds one.
    pub fn wait_subnet(&self, network: &str, within: Duration) -> Result<String> {
        let end = Instant::now() + within;
        loop {
            let shown = self.node.node.weft_json(&["node", "show"])?;
            if let Some(cidr) = shown["subnets"].as_array().and_then(|subnets| {
                subnets
                    .iter()
                    .find(|s| s["network"] == network)
                    .and_then(|s| s["cidr"].as_str().map(str::to_owned))
            }) {
                return Ok(cidr);
            }
            if Instant::now() > end {
                bail!(
                    "node {} holds no pod subnet of '{network}' after {} s: {shown}",
                    self.name,
                    within.as_secs()
                );
            }
            proc::sleep(Duration::from_millis(50))?;
        }
    }

    /// `weft node ls -o json`.
    pub fn nodes(&self) -> Result<Vec<Value>> {
        let v = self.node.node.weft_json(&["node", "ls"])?;
        v.as_array().cloned().context("node ls is not a list")
    }

    /// Waits until `done` holds for `node ls`.
    pub fn wait_nodes(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let nodes = self.nodes()?;
            if done(&nodes) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                bail!(
                    "node {}: {what} not seen within {} s; node ls: {nodes:?}",
                    self.name,
                    within.as_secs()
                );
            }
            proc::sleep(Duration::from_millis(20))?;
        }
    }

    /// Names of the nodes `node ls` shows as learned from the cluster.
    pub fn cluster_peers(&self) -> Result<Vec<String>> {
        Ok(self
            .nodes()?
            .iter()
            .filter(|n| n["source"] == "cluster")
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// `weft cluster status -o json`.
    pub fn status(&self) -> Result<Value> {
        self.node.node.weft_json(&["cluster", "status"])
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.agent = None;
        if std::env::var_os("WEFT_TEST_AGENT_LOGS").is_some() {
            eprintln!("---- agent log of node {} ----\n{}", self.name, self.log());
        }
    }
}

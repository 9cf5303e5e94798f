//! `cargo xtask bench`, CNI section: container network setup time as the
//! runtime sees it. Each plugin is run as libcni runs it (a process per
//! command, configuration on stdin, the environment only), timed from
//! spawn to exit: [`ADDS`] ADDs one after another, each into a fresh
//! namespace made beforehand, then as many DELs. Two plugins doing the
//! same job (a veth into the container with an address, a default route
//! via a gateway) in the same run, one ADD of each per step so machine
//! drift hits both alike:
//! - `weft`: `weft-cni` (release) asking the node's agent (release);
//! - `bridge`: the reference `bridge` plugin with `host-local` IPAM, the
//!   default of most CNI setups (podman's own default network is this).
//!
//! Both run from a thread inside the node namespace (the bridge plugin
//! builds its bridge where it runs). Target: weft's ADD p50 at most 0.8x
//! the bridge plugin's.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_harness::{
    cni::{PluginRun, REFERENCE_PLUGINS, invoke_in, plugin_binary},
    netns::NetNs,
    node::{AgentLog, Node},
    proc,
    run::unique_name,
};

use crate::bench::Target;

/// Sequential ADDs (then DELs) per plugin.
pub const ADDS: usize = 200;
const WEFT_SUBNET: &str = "10.215.0.0/22";
const BRIDGE_SUBNET: &str = "10.216.0.0/22";
/// The ADD p50 ratio weft must stay under.
const GOAL: f64 = 0.8;

/// The section's figures: its JSON, its targets and the lines it printed.
pub struct CniBench {
    pub json: Value,
    pub targets: Vec<Target>,
}

/// p50, p99 and max of one command's times, in ms.
#[derive(Clone, Copy, Debug)]
struct Times {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Times {
    fn of(mut ms: Vec<f64>) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
        Some(Self {
            p50: at(0.50),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        })
    }

    fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p99_ms": self.p99, "max_ms": self.max})
    }
}

/// One plugin under test: how to run its commands.
struct Plugin {
    name: &'static str,
    binary: PathBuf,
    conf: Value,
    cni_path: String,
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
}

impl Plugin {
    fn run(&self, node: &NetNs, command: &str, id: &str, netns: &str) -> Result<PluginRun> {
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", self.cni_path.as_str()),
        ];
        let run = invoke_in(node, &self.binary, &env, self.conf.to_string().as_bytes())?;
        if !run.success {
            bail!(
                "{} {command} {id} failed: {} {}",
                self.name,
                run.stdout_text.trim(),
                run.stderr.trim()
            );
        }
        Ok(run)
    }
}

/// Builds `weft-cni` in release (beside the release `weft` the bench
/// runs), then measures both plugins.
pub fn run() -> Result<CniBench> {
    println!("\n== CNI: {ADDS} sequential ADDs then DELs, weft-cni vs bridge + host-local");
    proc::run(
        &mut proc::cmd("cargo", &["build", "--release", "--package", "weft-cni"]),
        Duration::from_secs(30 * 60),
    )?;
    let node = Node::new()?;
    let agent = node.start_agent_logging(&[], AgentLog::Discarded)?;
    node.weft(&["network", "create", "cnibench", "--subnet", WEFT_SUBNET])?;
    let data_dir = std::env::temp_dir().join(unique_name("weft-bench-hostlocal-"));
    let result = measure(&node, &data_dir);
    drop(agent);
    drop(node);
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

fn measure(node: &Node, data_dir: &std::path::Path) -> Result<CniBench> {
    let mut plugins = [
        Plugin {
            name: "weft",
            binary: plugin_binary()?,
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "cnibench",
                "type": "weft",
                "socket": node.agent_socket(),
            }),
            cni_path: String::new(),
            add_ms: Vec::new(),
            del_ms: Vec::new(),
        },
        Plugin {
            name: "bridge",
            binary: PathBuf::from(REFERENCE_PLUGINS).join("bridge"),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "cnibench",
                "type": "bridge",
                "bridge": "cnibr0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": BRIDGE_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir,
                },
            }),
            cni_path: REFERENCE_PLUGINS.to_owned(),
            add_ms: Vec::new(),
            del_ms: Vec::new(),
        },
    ];
    let mut containers = Vec::with_capacity(ADDS);
    for i in 0..ADDS {
        proc::check_interrupted()?;
        let mut spaces = Vec::new();
        for p in &mut plugins {
            let ns = NetNs::new("wbcni")?;
            let id = format!("bench-{}-{i}", p.name);
            let path = format!("/run/netns/{}", ns.name());
            let run = p.run(&node.ns, "ADD", &id, &path)?;
            if run.stdout["ips"][0]["address"].as_str().is_none() {
                bail!("{} ADD {id} gave no address: {}", p.name, run.stdout);
            }
            p.add_ms.push(run.elapsed.as_secs_f64() * 1e3);
            spaces.push((ns, id, path));
        }
        containers.push(spaces);
    }
    for spaces in &containers {
        proc::check_interrupted()?;
        for (p, (_, id, path)) in plugins.iter_mut().zip(spaces) {
            let run = p.run(&node.ns, "DEL", id, path)?;
            p.del_ms.push(run.elapsed.as_secs_f64() * 1e3);
        }
    }
    drop(containers);

    let times = |p: &Plugin| -> Result<(Times, Times)> {
        let add = Times::of(p.add_ms.clone()).context("no ADD timed")?;
        let del = Times::of(p.del_ms.clone()).context("no DEL timed")?;
        Ok((add, del))
    };
    let (weft_add, weft_del) = times(&plugins[0])?;
    let (bridge_add, bridge_del) = times(&plugins[1])?;
    let add_ratio = weft_add.p50 / bridge_add.p50;
    let del_ratio = weft_del.p50 / bridge_del.p50;
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>12}",
        "plugin", "ADD p50 ms", "ADD p99 ms", "DEL p50 ms", "DEL p99 ms"
    );
    for (name, add, del) in [
        ("weft", weft_add, weft_del),
        ("bridge", bridge_add, bridge_del),
    ] {
        println!(
            "{name:<8} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
            add.p50, add.p99, del.p50, del.p99
        );
    }
    println!("weft/bridge: ADD p50 {add_ratio:.2}x, DEL p50 {del_ratio:.2}x");
    Ok(CniBench {
        json: json!({
            "adds": ADDS,
            "weft": {"add": weft_add.json(), "del": weft_del.json()},
            "bridge_host_local": {"add": bridge_add.json(), "del": bridge_del.json()},
            "add_p50_ratio_weft_to_bridge": add_ratio,
            "del_p50_ratio_weft_to_bridge": del_ratio,
            "method": "each plugin run as libcni runs it (process per command, config on stdin, environment only) from a thread in the node namespace, timed spawn to exit; ADDs sequential into namespaces made beforehand (one weft, then one bridge, per step), then the DELs in the same order; weft-cni and the agent in release; bridge + host-local from Debian's containernetworking-plugins, isGateway, no ipMasq",
        }),
        targets: targets(Some(add_ratio)),
    })
}

/// The section's targets; `None` when it did not run.
pub fn targets(add_ratio: Option<f64>) -> Vec<Target> {
    vec![Target {
        what: "cni: ADD p50 weft/bridge+host-local".into(),
        value: add_ratio,
        unit: "x",
        at_least: false,
        goal: GOAL,
    }]
}

//! CNI tests' shared pieces: a node with an agent and a weft network, the
//! plugin run by hand as libcni would, conflists, and "nothing changed"
//! (the store and the node's interfaces as before).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
pub use weft_harness::cni::*;

use crate::{netns::NetNs, node::Node};

/// The weft network the CNI tests use.
pub const NETWORK: &str = "blue";
pub const SUBNET: &str = "10.1.0.0/24";

/// A node with its agent up and network [`NETWORK`].
pub struct CniNode {
    pub agent: Option<crate::node::Agent>,
    pub node: Node,
}

impl CniNode {
    pub fn new() -> Result<Self> {
        let node = Node::new()?;
        let agent = node.start_agent()?;
        node.weft(&["network", "create", NETWORK, "--subnet", SUBNET])?;
        Ok(Self {
            agent: Some(agent),
            node,
        })
    }

    /// One plugin's configuration for CNI network `name` (libcni's view:
    /// the list's name and version merged in).
    pub fn conf(&self, name: &str, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "name": name,
            "type": "weft",
            "network": NETWORK,
            "socket": self.node.agent_socket(),
        })
    }

    /// A conflist of weft then `chained` for network `name`.
    pub fn conflist(&self, name: &str, capabilities: Value, chained: &[Value]) -> Value {
        let mut weft = json!({
            "type": "weft",
            "network": NETWORK,
            "socket": self.node.agent_socket(),
        });
        if !capabilities.is_null() {
            weft["capabilities"] = capabilities;
        }
        let mut plugins = vec![weft];
        plugins.extend(chained.iter().cloned());
        json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins})
    }

    /// What must not change when a request is refused: the store's bytes
    /// and the node's interfaces.
    pub fn snapshot(&self) -> Result<(String, String)> {
        let state = std::fs::read_to_string(self.node.state_file()).unwrap_or_default();
        let links = self.node.ns.exec(&["ip", "-o", "link", "show"])?;
        let names: Vec<String> = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
            .collect();
        Ok((state, names.join(",")))
    }

    /// The endpoints as `weft endpoint ls -o json` shows them.
    pub fn endpoints(&self) -> Result<Vec<Value>> {
        let list = self.node.weft_json(&["endpoint", "ls"])?;
        list.as_array()
            .cloned()
            .with_context(|| format!("endpoint ls printed {list}"))
    }

    /// The endpoint of container `id`, if any.
    pub fn endpoint_of(&self, id: &str) -> Result<Option<Value>> {
        Ok(self
            .endpoints()?
            .into_iter()
            .find(|e| e["container_id"] == id))
    }
}

/// The plugin and one invocation's environment, as libcni sets it.
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: &'a str) -> Self {
        Self {
            command,
            container_id,
            netns,
            ifname: "eth0",
            args: "",
        }
    }

    /// Runs the plugin with this environment (unset variables left out)
    /// and `conf` on stdin.
    pub fn run(&self, conf: &Value) -> Result<PluginRun> {
        self.run_raw(conf.to_string().as_bytes())
    }

    pub fn run_raw(&self, stdin: &[u8]) -> Result<PluginRun> {
        let mut env = vec![("CNI_PATH", "/opt/cni/bin")];
        for (k, v) in [
            ("CNI_COMMAND", self.command),
            ("CNI_CONTAINERID", self.container_id),
            ("CNI_NETNS", self.netns),
            ("CNI_IFNAME", self.ifname),
            ("CNI_ARGS", self.args),
        ] {
            if !v.is_empty() {
                env.push((k, v));
            }
        }
        invoke(&plugin_binary()?, &env, stdin)
    }
}

/// `/run/netns/NAME` of a namespace.
pub fn netns_path(ns: &NetNs) -> String {
    format!("/run/netns/{}", ns.name())
}

/// Fails unless `run` failed with CNI error `code`, printed as the spec
/// says (cniVersion, code, msg); returns the message.
pub fn expect_error(run: &PluginRun, code: u64, what: &str) -> Result<String> {
    if run.success || run.code() != Some(code) {
        bail!(
            "{what}: expected CNI error {code}, got success={} stdout {} stderr {}",
            run.success,
            run.stdout_text.trim(),
            run.stderr.trim()
        );
    }
    let msg = run.stdout["msg"].as_str().unwrap_or_default().to_owned();
    if msg.is_empty() || run.stdout["cniVersion"].as_str().is_none() {
        bail!("{what}: the error lacks msg or cniVersion: {}", run.stdout);
    }
    Ok(msg)
}

/// Where the run's `weft-cni` is, for error messages.
pub fn plugin_path() -> PathBuf {
    plugin_binary().unwrap_or_default()
}

/// `GET /` of the HTTP server at `addr` from a thread in `ns`: the whole
/// response (status line, headers, body).
pub fn http_get(ns: &NetNs, addr: &str) -> Result<String> {
    use std::{
        io::{Read, Write},
        net::TcpStream,
        time::Duration,
    };
    let addr: std::net::SocketAddr = addr.parse()?;
    let worker = ns.run_in(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: weft\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .with_context(|| format!("reading from {addr}"))?;
        Ok(out)
    })?;
    crate::traffic::join(worker)
}

/// The machine's own CNI, container storage and runtime directories, each file
/// with its size and modification time: equal before and after a test
/// shows the test wrote none of them.
pub fn machine_paths() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            out.push(format!("{} (absent)", dir.display()));
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            let modified = meta.modified().ok();
            out.push(format!(
                "{} {} {modified:?}",
                e.path().display(),
                meta.len()
            ));
            if meta.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for dir in [
        "/etc/cni",
        "/var/lib/cni",
        "/var/lib/containers",
        "/opt/cni",
    ] {
        walk(std::path::Path::new(dir), &mut out);
    }
    out
}

/// The root namespace's links, routes and firewall rules (the machine's
/// own): equal before and after a test shows it touched none of them.
pub fn root_namespace() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for argv in [
        &["ip", "-o", "link", "show"][..],
        &["ip", "route", "show", "table", "all"],
        &["iptables-save"],
    ] {
        let o = crate::netns::run(argv[0], &argv[1..])?;
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                // Counters and the dump's timestamps move on their own.
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    let l = l.split(" link/").next().unwrap_or(l);
                    match l.split_once(" [") {
                        Some((chain, _)) if l.starts_with(':') => chain.to_owned(),
                        _ => l.to_owned(),
                    }
                }),
        );
    }
    Ok(out)
}

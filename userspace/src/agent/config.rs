//! The agent's settings: a TOML file, every key also a flag (flags win).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::cluster::ClusterConfig;
use crate::{
    datapath::paths::Paths,
    error::{Error, Result},
};

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9965";

/// Settings as read from a config file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The API's unix socket. Default: `<state dir>/agent.sock`.
    pub socket: Option<PathBuf>,
    /// Where `/metrics` is served. Default: 127.0.0.1:9965.
    pub metrics_addr: Option<String>,
    /// Seconds between drift repairs (the kernel made to match the model
    /// again). Default: 30.
    pub reconcile_interval_seconds: Option<u64>,
    /// Milliseconds between two health checks of a service backend
    /// (`--health tcp:PORT`); a check times out after this or 1 s,
    /// whichever is shorter. Default: 2000.
    pub health_interval_milliseconds: Option<u64>,
    /// Cluster mode: etcd URLs, comma-separated (`--etcd`).
    pub etcd: Option<String>,
    /// Key prefix in etcd (`--etcd-prefix`). Default: `/weft`, or
    /// `/coreos.com/network` with schema `flannel`.
    pub etcd_prefix: Option<String>,
    /// `weft` or `flannel` (`--cluster-schema`). Default: weft.
    pub cluster_schema: Option<String>,
    /// Schema `flannel`: the name of Flannel's network here. Default: flannel.
    pub flannel_network: Option<String>,
    /// This node's name in the cluster (`--node-name`). Default: the hostname.
    pub node_name: Option<String>,
    /// TTL of the node's etcd lease (`--lease-ttl`). Default: 30.
    pub lease_ttl_seconds: Option<i64>,
}

/// Cluster mode's flags (each also a config file key; flags win).
#[derive(Debug, Default, Clone)]
pub struct ClusterFlags {
    pub etcd: Option<String>,
    pub etcd_prefix: Option<String>,
    pub cluster_schema: Option<String>,
    pub flannel_network: Option<String>,
    pub node_name: Option<String>,
    pub lease_ttl_seconds: Option<i64>,
}

/// Settings in force.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub socket: Option<PathBuf>,
    pub metrics_addr: SocketAddr,
    pub reconcile_interval: std::time::Duration,
    /// Service backends' health checks.
    pub health: super::health::Settings,
    /// Cluster mode, when `--etcd` (or `etcd` in the file) is given.
    pub cluster: Option<ClusterConfig>,
}

/// Default seconds between drift repairs.
pub const DEFAULT_RECONCILE_SECONDS: u64 = 30;

impl AgentConfig {
    /// Merges a config file (if any) under command-line flags.
    pub fn load(
        file: Option<&Path>,
        socket: Option<PathBuf>,
        metrics_addr: Option<String>,
    ) -> Result<Self> {
        Self::load_with(
            file,
            socket,
            metrics_addr,
            ClusterFlags::default(),
            Path::new("."),
        )
    }

    /// [`AgentConfig::load`] with cluster mode's flags; the lease id is
    /// kept in `state_dir`.
    pub fn load_with(
        file: Option<&Path>,
        socket: Option<PathBuf>,
        metrics_addr: Option<String>,
        flags: ClusterFlags,
        state_dir: &Path,
    ) -> Result<Self> {
        let from_file = match file {
            Some(path) => parse_file(path)?,
            None => FileConfig::default(),
        };
        let addr_text = metrics_addr
            .or(from_file.metrics_addr)
            .unwrap_or_else(|| DEFAULT_METRICS_ADDR.into());
        let metrics_addr = addr_text.parse().map_err(|_| {
            Error::Invalid(format!(
                "invalid metrics address '{addr_text}': expected IP:PORT, e.g. {DEFAULT_METRICS_ADDR}"
            ))
        })?;
        let reconcile = from_file
            .reconcile_interval_seconds
            .unwrap_or(DEFAULT_RECONCILE_SECONDS);
        if reconcile == 0 {
            return Err(Error::Invalid(
                "reconcile_interval_seconds must be at least 1".into(),
            ));
        }
        let health = match from_file.health_interval_milliseconds {
            None => super::health::Settings::default(),
            Some(0) => {
                return Err(Error::Invalid(
                    "health_interval_milliseconds must be at least 1".into(),
                ));
            }
            Some(ms) => {
                let interval = std::time::Duration::from_millis(ms);
                super::health::Settings {
                    interval,
                    timeout: interval.min(super::health::Settings::default().timeout),
                    ..super::health::Settings::default()
                }
            }
        };
        let cluster = match flags.etcd.or(from_file.etcd) {
            Some(etcd) => Some(ClusterConfig::new(
                &etcd,
                flags.cluster_schema.or(from_file.cluster_schema).as_deref(),
                flags.etcd_prefix.or(from_file.etcd_prefix).as_deref(),
                flags
                    .flannel_network
                    .or(from_file.flannel_network)
                    .as_deref(),
                flags.node_name.or(from_file.node_name),
                flags.lease_ttl_seconds.or(from_file.lease_ttl_seconds),
                state_dir,
            )?),
            None => None,
        };
        Ok(Self {
            socket: socket.or(from_file.socket),
            metrics_addr,
            reconcile_interval: std::time::Duration::from_secs(reconcile),
            health,
            cluster,
        })
    }

    /// The API socket: configured, or `<state dir>/agent.sock`.
    pub fn socket_path(&self, paths: &Paths) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| default_socket(paths))
    }
}

/// Where the CLI looks for the agent when no socket is configured.
pub fn default_socket(paths: &Paths) -> PathBuf {
    paths.state_dir.join("agent.sock")
}

fn parse_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read config file {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "config file {} is not valid: {}",
            path.display(),
            e.to_string().trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file removed on drop, without pulling in a temp-file crate.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("weft-agent-config-{}-{n}.toml", std::process::id()));
                std::fs::write(&p, text).expect("temp dir is writable");
                Self(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn flags_override_the_file() {
        let f = write("metrics_addr = \"127.0.0.1:1000\"\nsocket = \"/tmp/a.sock\"\n");
        let c = AgentConfig::load(Some(&f.0), None, Some("127.0.0.1:2000".into())).unwrap();
        assert_eq!(c.metrics_addr.port(), 2000);
        assert_eq!(c.socket.as_deref(), Some(Path::new("/tmp/a.sock")));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let f = write("metricz_addr = \"x\"\n");
        let err = AgentConfig::load(Some(&f.0), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("metricz_addr"), "{err}");
        let f = write("metrics_addr = \"not an address\"\n");
        let err = AgentConfig::load(Some(&f.0), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an address"), "{err}");
        let err = AgentConfig::load(Some(Path::new("/nonexistent/weft.toml")), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/weft.toml"), "{err}");
    }

    #[test]
    fn cluster_mode_from_the_file_and_flags() {
        let f = write("etcd = \"http://10.0.0.1:2379, http://10.0.0.2:2379\"\nnode_name = \"a\"\n");
        let c = AgentConfig::load_with(
            Some(&f.0),
            None,
            None,
            ClusterFlags {
                lease_ttl_seconds: Some(5),
                ..ClusterFlags::default()
            },
            Path::new("/tmp"),
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.endpoints.len(), 2);
        assert_eq!((cluster.lease_ttl, cluster.node_name.as_str()), (5, "a"));
        assert_eq!(cluster.schema.prefix, "/weft");
        let err = AgentConfig::load_with(
            None,
            None,
            None,
            ClusterFlags {
                etcd: Some("http://x:1".into()),
                node_name: Some("a".into()),
                cluster_schema: Some("calico".into()),
                ..ClusterFlags::default()
            },
            Path::new("/tmp"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'calico'"), "{err}");
        assert!(
            AgentConfig::load(None, None, None)
                .unwrap()
                .cluster
                .is_none()
        );
    }
}

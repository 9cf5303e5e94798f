//! The network configuration on stdin: the fields weft reads, the version
//! checks, and the runtime's dynamic arguments (`runtimeConfig`).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{
    CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNSUPPORTED_FIELD,
};

/// The CNI versions weft speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The newest, for answers that have no version to follow.
pub const LATEST: &str = "1.1.0";

/// Where the agent listens unless the configuration says: the default
/// state directory's socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/weft/agent.sock";

/// One plugin's configuration as libcni hands it over.
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The network configuration's name (a conflist's `name`).
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The weft network to attach to; default: `name`.
    #[serde(default)]
    pub network: Option<String>,
    /// The agent's API socket; default [`DEFAULT_SOCKET`].
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The container interface's MTU; default the agent's (1500, or the
    /// overlay's inner MTU).
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// The capabilities weft declares, as the runtime fills them in.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMapping>,
    /// A list of names, or (podman) a map of network name to names.
    #[serde(default)]
    pub aliases: Option<Value>,
    /// Requested addresses (`ips` capability), `A.B.C.D[/N]`.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Requested MAC (`mac` capability).
    #[serde(default)]
    pub mac: Option<String>,
}

/// One `portMappings` entry.
#[derive(Clone, Debug, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// Parses stdin.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::new(
                DECODE_FAILURE,
                "no network configuration on stdin (expected a JSON object)",
            ));
        }
        let conf: Self = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                DECODE_FAILURE,
                format!("the network configuration on stdin is not valid: {e}"),
            )
        })?;
        conf.check_version()?;
        if conf.name.is_empty() {
            return Err(CniError::new(
                INVALID_CONFIG,
                "the network configuration has no \"name\"",
            ));
        }
        if let Some(ipam) = &conf.ipam {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                format!(
                    "unsupported field \"ipam\": {ipam}: weft allocates addresses itself (ask \
                     for one with CNI_ARGS IP=)"
                ),
            ));
        }
        Ok(conf)
    }

    fn check_version(&self) -> Result<(), CniError> {
        if SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Ok(());
        }
        let given = if self.cni_version.is_empty() {
            "no cniVersion".to_owned()
        } else {
            format!("cniVersion {}", self.cni_version)
        };
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI version: the configuration has {given}; weft speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }

    /// Whether the configuration's version is at least 1.1.0 (STATUS, GC).
    pub fn at_least_1_1(&self) -> bool {
        self.cni_version == "1.1.0"
    }

    /// The weft network to attach to.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The DNS names asked for: a list, or the entry of this network in a
    /// map of network names.
    pub fn aliases(&self) -> Result<Vec<String>, CniError> {
        let bad = || {
            CniError::new(
                DECODE_FAILURE,
                "runtimeConfig.aliases must be a list of names or a map of network name to \
                 names",
            )
        };
        let names = |v: &Value| -> Result<Vec<String>, CniError> {
            v.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|n| n.as_str().map(str::to_owned).ok_or_else(bad))
                .collect()
        };
        match &self.runtime_config.aliases {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v @ Value::Array(_)) => names(v),
            Some(Value::Object(map)) => map.get(&self.name).map_or(Ok(Vec::new()), names),
            Some(_) => Err(bad()),
        }
    }

    /// The port mappings as `weft publish` specs.
    pub fn publish_specs(&self) -> Result<Vec<String>, CniError> {
        self.runtime_config
            .port_mappings
            .iter()
            .map(|p| {
                let proto = p.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
                if proto != "tcp" && proto != "udp" {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!(
                            "port mapping {}:{}/{proto}: weft publishes tcp and udp only",
                            p.host_port, p.container_port
                        ),
                    ));
                }
                Ok(match p.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                    Some(ip) => format!("{ip}:{}:{}/{proto}", p.host_port, p.container_port),
                    None => format!("{}:{}/{proto}", p.host_port, p.container_port),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_and_their_errors() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"blue","type":"weft"}"#).unwrap();
        assert_eq!(
            (c.network(), c.socket()),
            ("blue", PathBuf::from(DEFAULT_SOCKET))
        );
        let code = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err().code;
        assert_eq!(
            code(r#"{"cniVersion":"0.3.1","name":"b"}"#),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(code(r#"{"name":"b"}"#), INCOMPATIBLE_VERSION);
        assert_eq!(code("{garbage"), DECODE_FAILURE);
        assert_eq!(code(""), DECODE_FAILURE);
        assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"b","ipam":{"type":"host-local"}}"#),
            UNSUPPORTED_FIELD
        );
    }

    #[test]
    fn runtime_config_as_podman_sends_it() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"blue","network":"b2","runtimeConfig":{
                "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""},
                                {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"198.18.0.1"}],
                "aliases":{"blue":["web","www"],"other":["x"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.network(), "b2");
        assert_eq!(
            c.publish_specs().unwrap(),
            ["8080:80/tcp", "198.18.0.1:53:53/udp"]
        );
        assert_eq!(c.aliases().unwrap(), ["web", "www"]);
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"b","runtimeConfig":{"aliases":["a"],
                "portMappings":[{"hostPort":1,"containerPort":1,"protocol":"sctp"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.aliases().unwrap(), ["a"]);
        assert_eq!(c.publish_specs().unwrap_err().code, INVALID_CONFIG);
    }
}

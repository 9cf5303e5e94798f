//! The runtime's environment: `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` (`CNI_PATH` is not needed: weft
//! delegates to no other plugin).

use std::net::Ipv4Addr;

use crate::error::{CniError, INVALID_ENV};

/// The commands of CNI 1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// The environment of one invocation, as given.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    /// From a lookup (the process environment, or a test's map); empty
    /// values count as unset, as libcni sets them.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        Self {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
        }
    }

    pub fn command(&self) -> Result<Command, CniError> {
        match self.command.as_deref() {
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("VERSION") => Ok(Command::Version),
            Some("STATUS") => Ok(Command::Status),
            Some("GC") => Ok(Command::Gc),
            Some(other) => Err(CniError::new(
                INVALID_ENV,
                format!(
                    "unknown CNI_COMMAND '{other}': weft implements ADD, DEL, CHECK, VERSION, \
                     STATUS and GC"
                ),
            )),
            None => Err(CniError::new(
                INVALID_ENV,
                "CNI_COMMAND is not set: weft-cni is a CNI plugin, run by container runtimes \
                 (install it with `weft-cni install`)",
            )),
        }
    }

    /// A variable the command needs.
    pub fn require<'a>(
        &'a self,
        value: &'a Option<String>,
        name: &str,
        command: &str,
    ) -> Result<&'a str, CniError> {
        value
            .as_deref()
            .ok_or_else(|| CniError::new(INVALID_ENV, format!("{name} is required for {command}")))
    }

    /// `CNI_CONTAINERID`, checked: CNI allows letters, digits, `-`, `_`
    /// and `.`, starting with a letter or digit.
    pub fn container_id(&self, command: &str) -> Result<&str, CniError> {
        let id = self.require(&self.container_id, "CNI_CONTAINERID", command)?;
        let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(CniError::new(
                INVALID_ENV,
                format!(
                    "invalid CNI_CONTAINERID '{id}': use letters, digits, '-', '_' and '.', \
                     starting with a letter or digit"
                ),
            ));
        }
        Ok(id)
    }

    pub fn ifname(&self, command: &str) -> Result<&str, CniError> {
        self.require(&self.ifname, "CNI_IFNAME", command)
    }

    /// `CNI_ARGS` (`K=V;K=V`): the keys weft honours. Unknown keys are an
    /// error unless `IgnoreUnknown=1` (or `true`) is among them, as the
    /// reference plugins do.
    pub fn cni_args(&self) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        let Some(text) = self.args.as_deref() else {
            return Ok(out);
        };
        let bad = |msg: String| CniError::new(INVALID_ENV, format!("CNI_ARGS '{text}': {msg}"));
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("'{pair}' is not KEY=VALUE")))?;
            match k {
                "IgnoreUnknown" => {
                    ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true");
                }
                "IP" => {
                    let ip: Ipv4Addr = v
                        .parse()
                        .map_err(|_| bad(format!("IP={v} is not an IPv4 address")))?;
                    out.ip = Some(ip);
                }
                "MAC" => out.mac = Some(v.to_owned()),
                "K8S_POD_NAME"
                | "K8S_POD_NAMESPACE"
                | "K8S_POD_INFRA_CONTAINER_ID"
                | "K8S_POD_UID" => {}
                _ => unknown.push(k.to_owned()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(bad(format!(
                "unknown key(s) {}: weft takes IP and MAC (add IgnoreUnknown=1 to pass others)",
                unknown.join(", ")
            )));
        }
        Ok(out)
    }
}

/// What `CNI_ARGS` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(args: &str) -> Env {
        Env {
            args: Some(args.into()),
            ..Env::default()
        }
    }

    #[test]
    fn cni_args_as_podman_sends_them() {
        let a = env("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.0.9;MAC=02:42:ac:11:00:09")
            .cni_args()
            .unwrap();
        assert_eq!(a.ip, Some(Ipv4Addr::new(10, 1, 0, 9)));
        assert_eq!(a.mac.as_deref(), Some("02:42:ac:11:00:09"));
        assert!(env("FOO=1;IgnoreUnknown=true").cni_args().is_ok());
        let e = env("FOO=1").cni_args().unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.contains("FOO"), "{}", e.msg);
        assert!(
            env("IP=10.1.0")
                .cni_args()
                .unwrap_err()
                .msg
                .contains("IPv4")
        );
        assert!(env("IP").cni_args().unwrap_err().msg.contains("KEY=VALUE"));
    }

    #[test]
    fn commands_and_container_ids() {
        let e = Env::from_lookup(|k| (k == "CNI_COMMAND").then(|| "FROB".to_owned()));
        assert_eq!(e.command().unwrap_err().code, INVALID_ENV);
        let e = Env::from_lookup(|_| Some(String::new()));
        assert!(e.command().unwrap_err().msg.contains("not set"));
        let e = Env {
            container_id: Some("-x".into()),
            ..Env::default()
        };
        assert_eq!(e.container_id("ADD").unwrap_err().code, INVALID_ENV);
    }
}

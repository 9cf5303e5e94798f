//! weft's CNI plugin: container runtimes (podman, containerd, anything
//! speaking CNI 0.4.0, 1.0.0 or 1.1.0) run it to put containers on weft
//! networks. It is a thin client of the node's agent: every command is one
//! request to the agent's API socket, which owns the datapath, so a
//! runtime's ADD never races the agent and the plugin never touches the
//! kernel. Without an agent ADD fails (code 50) and says so.
//!
//! | command | request | success |
//! |---|---|---|
//! | ADD | `AttachContainer` (endpoint + published ports, all or nothing) | the result |
//! | DEL | `DetachContainer` (nothing to remove is fine) | nothing |
//! | CHECK | `CheckAttachment`, and the previous result compared | nothing |
//! | STATUS | `Status` + `InspectNetwork` | nothing |
//! | GC | `GcAttachments` of the configuration's name | nothing |
//! | VERSION | none | the versions |
//!
//! Installed as `weft` in a CNI plugin directory (`weft-cni install`), it is
//! the plugin of `"type": "weft"`; see [`install`] for the conflist.

pub mod config;
pub mod env;
pub mod error;
pub mod install;
pub mod result;

use std::{io::Read, os::unix::fs::MetadataExt, path::Path, time::Duration};

use serde_json::{Value, json};
use weft_api::{
    Call, Client,
    attach::AttachmentRef,
    requests::{
        AttachContainer, CheckAttachment, DetachContainer, GcAttachments, InspectNetwork, Status,
    },
};

use crate::{
    config::{LATEST, NetConf, SUPPORTED_VERSIONS},
    env::{Command, Env},
    error::{
        CHECK_FAILED, CniError, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV, IO_FAILURE,
        LIMITED_CONNECTIVITY, NOT_AVAILABLE, TRY_AGAIN,
    },
};

/// How long the agent may take to answer one request.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A failure with the version to report it in.
pub type Failure = (CniError, String);

/// The binary: a subcommand (`install`, `conflist`, `version`) when given
/// arguments, else the plugin. Returns the exit status.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return install::cli(&args);
    }
    let env = Env::from_lookup(|k| std::env::var(k).ok());
    let outcome = env
        .command()
        .map_err(|e| (e, LATEST.to_owned()))
        .and_then(|_| {
            let mut stdin = Vec::new();
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
                (
                    CniError::new(IO_FAILURE, format!("cannot read stdin: {e}")),
                    LATEST.to_owned(),
                )
            })?;
            handle(&env, &stdin)
        });
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            0
        }
        Ok(None) => 0,
        Err((e, version)) => {
            println!("{}", e.to_json(&version));
            1
        }
    }
}

/// Runs one CNI command: its output on success (`None`: nothing to print).
pub fn handle(env: &Env, stdin: &[u8]) -> Result<Option<Value>, Failure> {
    let latest = |e: CniError| (e, LATEST.to_owned());
    let command = env.command().map_err(latest)?;
    if command == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let conf = NetConf::parse(stdin).map_err(latest)?;
    let in_version = |e: CniError| (e, conf.cni_version.clone());
    match command {
        Command::Add => add(env, &conf).map(Some),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => check(env, &conf).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Gc => gc(&conf).map(|()| None),
        Command::Version => unreachable_version(),
    }
    .map_err(in_version)
}

fn unreachable_version() -> Result<Option<Value>, CniError> {
    Err(CniError::new(INVALID_ENV, "VERSION was answered above"))
}

/// VERSION: the versions weft speaks; `cniVersion` is the one asked in, if
/// weft speaks it.
fn version(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()));
    json!({
        "cniVersion": asked.as_deref().unwrap_or(LATEST),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// Sends one request to the agent of `conf`.
fn call<C: Call>(conf: &NetConf, request: C) -> Result<C::Answer, CniError> {
    let socket = conf.socket();
    let client = Client::new(&socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(IO_FAILURE, format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        match tokio::time::timeout(AGENT_TIMEOUT, client.call(request)).await {
            Ok(answer) => answer.map_err(|e| CniError::from_client(e, &socket)),
            Err(_) => Err(CniError::new(
                TRY_AGAIN,
                format!(
                    "the weft agent on {} did not answer within {} s",
                    socket.display(),
                    AGENT_TIMEOUT.as_secs()
                ),
            )),
        }
    })
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let container_id = env.container_id("ADD")?;
    let ifname = env.ifname("ADD")?;
    let netns = env.require(&env.netns, "CNI_NETNS", "ADD")?;
    if std::fs::metadata(netns).is_err() {
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_NETNS {netns} does not exist"),
        ));
    }
    let netns = absolute(netns)?;
    let args = env.cni_args()?;
    let ip = match (args.ip, conf.runtime_config.ips.as_slice()) {
        (Some(ip), _) => Some(ip.to_string()),
        (None, []) => None,
        (None, [one]) => Some(one.split('/').next().unwrap_or(one).to_owned()),
        (None, more) => {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!(
                    "runtimeConfig.ips asks for {} addresses; a weft endpoint has one",
                    more.len()
                ),
            ));
        }
    };
    let request = AttachContainer {
        network: conf.network().to_owned(),
        netns: netns.clone(),
        container_id: container_id.to_owned(),
        ifname: ifname.to_owned(),
        cni_network: Some(conf.name.clone()),
        ip,
        mac: args.mac.or_else(|| conf.runtime_config.mac.clone()),
        mtu: conf.mtu,
        aliases: conf.aliases()?,
        publish: conf.publish_specs()?,
    };
    let attachment = call(conf, request).map_err(|e| {
        // The namespace was checked above, so what is not found is the
        // configuration's network.
        if e.details == "weft agent: not_found" {
            CniError {
                code: INVALID_CONFIG,
                ..e
            }
        } else {
            e
        }
    })?;
    Ok(result::render(&attachment, &conf.cni_version, &netns))
}

/// A namespace path the agent (whose working directory is not ours) can
/// open.
fn absolute(netns: &str) -> Result<String, CniError> {
    if netns.starts_with('/') {
        return Ok(netns.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        CniError::new(
            IO_FAILURE,
            format!("cannot resolve the relative CNI_NETNS {netns}: {e}"),
        )
    })?;
    Ok(cwd.join(netns).to_string_lossy().into_owned())
}

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id("DEL")?;
    let ifname = env.ifname("DEL")?;
    let request = DetachContainer {
        container_id: container_id.to_owned(),
        ifname: ifname.to_owned(),
    };
    match call(conf, request) {
        Ok(_) => Ok(()),
        // The endpoint stays until a DEL reaches an agent; say so.
        Err(e) if e.code == NOT_AVAILABLE => Err(CniError::new(
            TRY_AGAIN,
            format!(
                "{}; the container's weft endpoint stays until DEL is repeated with the agent \
                 up (or `weft endpoint rm`)",
                e.msg
            ),
        )),
        Err(e) => Err(e),
    }
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id("CHECK")?;
    let ifname = env.ifname("CHECK")?;
    let netns = env.require(&env.netns, "CNI_NETNS", "CHECK")?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "CHECK needs the previous result (prevResult) in the configuration",
        )
    })?;
    let found = call(
        conf,
        CheckAttachment {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        },
    )
    .map_err(|e| {
        if e.details == "weft agent: not_found" {
            CniError::new(CHECK_FAILED, e.msg)
        } else {
            e
        }
    })?;
    let mut problems = found.problems;
    let ep = &found.attachment.endpoint;
    if ep.network != conf.network() {
        problems.push(format!(
            "{ifname} is on weft network '{}', the configuration names '{}'",
            ep.network,
            conf.network()
        ));
    }
    if !same_file(netns, &ep.netns) {
        problems.push(format!(
            "weft attached {ifname} in namespace {}, CHECK names {netns}",
            ep.netns
        ));
    }
    problems.extend(result::compare(prev, &found.attachment, ifname));
    if problems.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        CHECK_FAILED,
        format!(
            "container {container_id} {ifname} differs from what weft made: {}",
            problems.join("; ")
        ),
    ))
}

/// Whether two paths name the same file (namespace files have their own
/// inodes); `false` when either cannot be read.
fn same_file(a: &str, b: &str) -> bool {
    let id = |p: &str| {
        std::fs::metadata(Path::new(p))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
}

/// STATUS and GC are CNI 1.1.0 commands.
fn need_1_1(conf: &NetConf, command: &str) -> Result<(), CniError> {
    if conf.at_least_1_1() {
        return Ok(());
    }
    Err(CniError::new(
        INCOMPATIBLE_VERSION,
        format!(
            "{command} needs cniVersion 1.1.0; the configuration has {}",
            conf.cni_version
        ),
    ))
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    need_1_1(conf, "STATUS")?;
    let status = call(conf, Status)?;
    if let Err(e) = call(
        conf,
        InspectNetwork {
            name: conf.network().to_owned(),
        },
    ) {
        return Err(if e.details == "weft agent: not_found" {
            CniError::new(
                NOT_AVAILABLE,
                format!("{}: ADD would fail until it is created", e.msg),
            )
        } else {
            e
        });
    }
    if !status.kernel_matches_state {
        return Err(CniError::new(
            LIMITED_CONNECTIVITY,
            "the weft datapath does not match the agent's state; existing containers may lose \
             connectivity until it is repaired (`weft status` shows the drift; the agent \
             repairs map entries and program links every 30 s)",
        )
        .with_details(status.drift.to_string()));
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    need_1_1(conf, "GC")?;
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments (the attachments to keep)",
        )
    })?;
    let valid = valid
        .iter()
        .map(|a| AttachmentRef {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
        })
        .collect();
    call(
        conf,
        GcAttachments {
            cni_network: conf.name.clone(),
            valid,
        },
    )
    .map(drop)
}

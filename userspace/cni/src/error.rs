//! CNI errors: `{"cniVersion", "code", "msg", "details"}` on stdout and a
//! non-zero exit (CNI spec, section "Error"). Codes 1-99 are the spec's;
//! 100 and up are weft's own.

use serde_json::{Value, json};
use weft_api::{ApiError, ClientError, ErrorKind};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Invalid necessary environment variables (`CNI_COMMAND`, `CNI_NETNS`,
/// `CNI_ARGS`, ...).
pub const INVALID_ENV: u32 = 4;
/// I/O failure (reading stdin).
pub const IO_FAILURE: u32 = 5;
/// The configuration is not JSON of the expected shape.
pub const DECODE_FAILURE: u32 = 6;
/// Invalid network configuration (a required field missing, a weft
/// network that does not exist).
pub const INVALID_CONFIG: u32 = 7;
/// Try again later (the agent went away while DEL needed it).
pub const TRY_AGAIN: u32 = 11;
/// The plugin cannot serve ADD: no agent answers, or the network is gone.
pub const NOT_AVAILABLE: u32 = 50;
/// Not available, and existing containers may have limited connectivity:
/// the datapath does not match what the agent holds.
pub const LIMITED_CONNECTIVITY: u32 = 51;
/// weft: the agent refused the request (an address in use, a port already
/// published, a bad `IP=`); nothing changed.
pub const REFUSED: u32 = 100;
/// weft: the agent failed to apply the change (kernel or store) and put
/// everything back.
pub const FAILED: u32 = 101;
/// weft: CHECK found the container's network differs from what weft made.
pub const CHECK_FAILED: u32 = 102;

/// A CNI error, as the plugin prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }

    /// What a failed call to the agent on `socket` means for the runtime.
    pub fn from_client(e: ClientError, socket: &std::path::Path) -> Self {
        match e {
            ClientError::NoAgent(_) => Self::no_agent(socket),
            ClientError::Api(e) => Self::from_api(e),
            ClientError::Transport { what, source } => {
                Self::new(TRY_AGAIN, format!("{what}: {source}"))
            }
        }
    }

    /// No agent answers on `socket`.
    pub fn no_agent(socket: &std::path::Path) -> Self {
        Self::new(
            NOT_AVAILABLE,
            format!(
                "no weft agent answers on {}: start it (`weft agent`), or point the network \
                 configuration's \"socket\" at its socket",
                socket.display()
            ),
        )
    }

    pub fn from_api(e: ApiError) -> Self {
        let code = match e.kind {
            ErrorKind::Invalid
            | ErrorKind::BadShape
            | ErrorKind::BadEncoding
            | ErrorKind::NotFound
            | ErrorKind::Conflict => REFUSED,
            ErrorKind::Unavailable => NOT_AVAILABLE,
            ErrorKind::Kernel | ErrorKind::Store | ErrorKind::Internal => FAILED,
        };
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self::new(code, e.message).with_details(format!("weft agent: {kind}"))
    }
}

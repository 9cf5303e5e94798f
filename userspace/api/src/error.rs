//! Typed failures of API requests: one kind per way a request can fail,
//! mapped once to an HTTP status (agent) and an exit status (CLI). The
//! message says what was wrong and what to do; it travels unchanged, so a
//! command fails the same way through the agent as in-process.

use serde::{Deserialize, Serialize};

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Invalid input: the message says what to change.
    Invalid,
    /// A well-formed request body of the wrong shape (unknown or missing
    /// fields, wrong types).
    BadShape,
    /// The request body is not JSON, or not declared as JSON.
    BadEncoding,
    /// A named object does not exist.
    NotFound,
    /// The request clashes with what exists.
    Conflict,
    /// The kernel refused a change (netlink, bpf, bpffs); nothing was left
    /// half done.
    Kernel,
    /// The store cannot be read or written.
    Store,
    /// Whatever is needed to answer (the agent, the datapath) is not there.
    Unavailable,
    /// A bug or an unexpected system failure.
    Internal,
}

impl ErrorKind {
    /// The HTTP status the agent answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::BadShape => 422,
            ErrorKind::BadEncoding => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Kernel | ErrorKind::Store | ErrorKind::Internal => 500,
        }
    }

    /// The kind an HTTP error status stands for, when the answer carried
    /// none (an older agent, or a proxy).
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 | 415 => ErrorKind::Invalid,
            422 => ErrorKind::BadShape,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            503 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    /// The CLI's exit status: 1 for every refused or failed command, as
    /// scripts expect (2 stays clap's, for malformed command lines).
    pub fn exit_code(self) -> i32 {
        1
    }
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The JSON body of an error answer: `{"error": message, "kind": kind}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

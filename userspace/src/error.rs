//! The library's error type.
//!
//! Every variant's message says what was wrong; the `source` chain (printed by
//! the binary as `a: b: c`) says why the kernel or the filesystem refused.

use std::{io, path::PathBuf};

use weft_api::{ApiError, ErrorKind};

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a weft operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something invalid; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// A named network, endpoint or namespace does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what already exists.
    #[error("{0}")]
    Conflict(String),
    /// A filesystem or system call failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A netlink request failed (the source carries the kernel's errno).
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Loading the eBPF object or creating its pinned maps failed.
    #[error("{what}")]
    Ebpf {
        what: String,
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A map operation failed.
    #[error("{what}")]
    Map {
        what: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Loading, pinning or attaching the program failed.
    #[error("{what}")]
    Program {
        what: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Pinning an object on bpffs failed.
    #[error("{what}")]
    Pin {
        what: String,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// A link could not be converted or opened.
    #[error("{what}")]
    Link {
        what: String,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// What the request needs is not there (an agent owns the datapath, or
    /// none runs where one must).
    #[error("{0}")]
    Unavailable(String),
    /// A failure a test asked for (`WEFT_FAIL_AT`), standing for a kernel
    /// refusal at that step.
    #[error("{0}")]
    Injected(String),
    /// The saved state file is unreadable.
    #[error(
        "state file {} is corrupt; fix or remove it (then run `weft teardown`)",
        path.display()
    )]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// An [`Error::Io`] from a nix errno.
    pub fn sys(what: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::io(what, io::Error::from(errno))
    }

    /// An [`Error::Netlink`], keeping the kernel's errno when there is one.
    pub fn netlink(what: impl Into<String>, err: rtnetlink::Error) -> Self {
        Self::Netlink {
            what: what.into(),
            source: netlink_io_error(&err),
        }
    }

    pub fn map(what: impl Into<String>, source: aya::maps::MapError) -> Self {
        Self::Map {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub fn program(what: impl Into<String>, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub fn pin(what: impl Into<String>, source: aya::pin::PinError) -> Self {
        Self::Pin {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub fn link(what: impl Into<String>, source: aya::programs::links::LinkError) -> Self {
        Self::Link {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// The errno inside a netlink error, as an `io::Error` (readable as
/// "File exists (os error 17)"), or the error's own text.
pub fn netlink_io_error(err: &rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// The raw errno of a netlink error, if the kernel sent one.
pub fn netlink_errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

impl Error {
    /// The API's kind of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::CorruptState { .. } => ErrorKind::Store,
            Error::Io { .. } => ErrorKind::Internal,
            Error::Netlink { .. }
            | Error::Ebpf { .. }
            | Error::Map { .. }
            | Error::Program { .. }
            | Error::Pin { .. }
            | Error::Link { .. }
            | Error::Injected(_) => ErrorKind::Kernel,
        }
    }
}

/// The API's form of a failure: its kind and the whole cause chain, so a
/// command prints through the agent what it prints in-process.
impl From<&Error> for ApiError {
    fn from(e: &Error) -> Self {
        ApiError::new(e.kind(), chain(e))
    }
}

/// `err` and its sources joined by ": ", for log lines.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

//! weft's API: the model's records (what a node's store holds), the
//! requests the engine takes and the answers it gives, typed errors, and
//! the client of the agent's unix-socket API.
//!
//! Everything here is plain data, so the CLI, the agent, the tests and
//! xtask share one definition of every operation; none of it needs the
//! eBPF toolchain.

pub mod attach;
pub mod client;
pub mod error;
pub mod mac;
pub mod records;
pub mod requests;
pub mod views;

pub use client::{AGENT_HEADER, Client, ClientError, RawAnswer};
pub use error::{ApiError, ErrorKind};
pub use mac::Mac;
pub use requests::{Call, Request};

//! weft's userspace library: loading and pinning the datapath, typed map
//! access, netlink, saved state, and one module per CLI command family.
//!
//! The `weft` binary only parses arguments and calls into [`cmd`].

pub mod agent;
pub mod cmd;
pub mod conntrack;
pub mod ct_budget;
pub mod datapath;
pub mod error;
pub mod ipam;
pub mod logging;
pub mod mac;
pub mod migrate;
pub mod monitor;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod object;
pub mod objlock;
pub mod output;
pub mod overlay;
pub mod paths;
pub mod reconcile;
pub mod rollback;
pub mod state;

pub use error::{Error, Result};
pub use paths::Paths;

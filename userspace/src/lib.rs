//! weft's userspace library, in layers, each importing only those below:
//!
//! - [`model`]: networks, endpoints, the node, publications, IPAM, as
//!   pure data and rules;
//! - [`render`]: the kernel state a model describes;
//! - [`datapath`]: kernel access (pins, migrations, typed maps, program
//!   links, netlink, namespaces, sysctls);
//! - [`apply`]: the smallest kernel change from one rendered state to
//!   another, and drift checks and repairs;
//! - [`store`]: where the model is kept (a trait; the local file);
//! - [`engine`]: the one owner of a node's kernel state, taking requests;
//! - [`agent`]: the engine with its API server, metrics and timers;
//! - [`cli`]: the command line, a client of the API.

pub mod agent;
pub mod apply;
pub mod cli;
pub mod datapath;
pub mod engine;
pub mod error;
pub mod logging;
pub mod model;
pub mod render;
pub mod store;

pub use error::{Error, Result};

//! One module per CLI command family. Each command validates everything
//! before touching the kernel, and rolls back on failure, so a failed command
//! leaves kernel state, maps and `state.json` as they were.

pub mod ct;
pub mod endpoint;
pub mod network;
pub mod node;
pub mod nodes;
pub mod publish;
pub mod stats;
pub mod teardown;

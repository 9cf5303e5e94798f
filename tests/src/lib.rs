//! weft's test harness.
//!
//! - [`fixture`]: the real datapath object loaded into the kernel, its
//!   maps programmed from a model by weft's own render and apply, packets
//!   run through `BPF_PROG_TEST_RUN`.
//! - [`frames`]: frames built independently of the datapath code;
//!   [`nat_frames`]: what NAT must make of them.
//! - [`topology`]: the models (networks, endpoints, node) the tables and
//!   cost tool use.
//! - [`node`]: end-to-end tests through the real `weft` binary, and the
//!   kernel ids of a node's pins; [`load`]: traffic across agent restarts.
//! - From [`weft_harness`], shared with xtask: [`api`] calls to the agent,
//!   its [`metrics`], [`bpffs`] pin directories,
//!   [`netns`] namespaces, [`traffic`] (real ICMP, TCP and UDP), [`outside`]
//!   (a namespace beyond the node's uplink, for masquerade), [`underlay`]
//!   (nodes on an underlay switch, kernel-VXLAN and routed peers) and
//!   [`overlay`] (a weft overlay cluster).

pub use weft_harness::{
    api, bpffs, cluster, etcd, metrics, netns, outside, overlay, traffic, underlay,
};

pub mod cni;
pub mod fixture;
pub mod frames;
pub mod load;
pub mod nat_frames;
pub mod node;
pub mod overlay_frames;
pub mod table;
pub mod topology;

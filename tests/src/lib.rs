//! weft's test harness.
//!
//! - [`bpffs`]: bpffs pin directories unique to the run, removed on drop.
//! - [`fixture`]: the real datapath object loaded into the kernel, its
//!   maps programmed from a model by weft's own render and apply, packets
//!   run through `BPF_PROG_TEST_RUN`.
//! - [`frames`]: frames built independently of the datapath code;
//!   [`nat_frames`]: what NAT must make of them.
//! - [`topology`]: the models (networks, endpoints, node) the tables and
//!   cost tool use.
//! - [`netns`], [`node`], [`traffic`]: end-to-end tests in namespaces,
//!   through the real `weft` binary, with real ICMP, TCP and UDP;
//!   [`outside`]: a namespace beyond the node's uplink, for masquerade.
//! - [`underlay`]: nodes joined by an underlay switch for overlay tests,
//!   kernel-VXLAN (Flannel-style) and plain routed peer nodes.

pub mod bpffs;
pub mod fixture;
pub mod frames;
pub mod load;
pub mod nat_frames;
pub mod netns;
pub mod node;
pub mod outside;
pub mod overlay;
pub mod overlay_frames;
pub mod table;
pub mod topology;
pub mod traffic;
pub mod underlay;

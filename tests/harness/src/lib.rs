//! weft's namespace harness, shared by the end-to-end tests (`weft-tests`)
//! and `cargo xtask` (demo, bench). It drives everything from outside
//! (`ip`, the traffic tools, the `weft` binary), so it needs no eBPF
//! toolchain and xtask builds with stable Rust alone before setup.
//!
//! Everything it builds lives in network namespaces it created, named
//! uniquely for the run and removed on drop, also when a test panics or
//! xtask is interrupted; pins live in run-unique bpffs directories. The
//! root namespace's interfaces, addresses, routes and firewall are never
//! touched.
//!
//! - [`run`]: this process's run: names, IPv6, which `weft`; stale leftovers.
//! - [`proc`]: child processes bounded in time, Ctrl-C, background servers.
//! - [`netns`]: namespace guards, commands and threads inside them.
//! - [`links`]: veth pairs, bridges, addresses, routes, uplinks.
//! - [`bpffs`], [`state_dir`]: a node's pin and state directories.
//! - [`node`], [`agent`], [`api`], [`metrics`]: the `weft` binary against
//!   a node, its agent, HTTP calls to the agent, its /metrics.
//! - [`outside`]: a namespace beyond a node's uplink, for NAT.
//! - [`underlay`], [`peer`], [`overlay`]: nodes on an underlay switch,
//!   kernel-VXLAN and routed peers, a weft overlay cluster.
//! - [`traffic`]: ping, iperf3, sockperf, echo servers and clients, probes.
//! - [`mac`], [`snmp`]: MAC text, a namespace's IPv4 counters.
//! - [`etcd`], [`cluster`]: a real etcd on the underlay, weft nodes whose
//!   agents run in cluster mode.

pub mod agent;
pub mod api;
pub mod bpffs;
pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod links;
pub mod mac;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod outside;
pub mod overlay;
pub mod peer;
pub mod proc;
pub mod run;
pub mod snmp;
pub mod state_dir;
pub mod traffic;
pub mod underlay;

//! Kernel access: where pins live, loading the eBPF object once and
//! migrating pinned maps, typed map access, program links, counters and
//! conntrack tables, netlink, namespaces and sysctls. Nothing here knows
//! the model; the layers above decide what to write.

pub mod conntrack;
pub mod counters;
pub mod ct_budget;
pub mod links;
pub mod loader;
pub mod maps;
pub mod migrate;
pub mod netlink;
pub mod netns;
pub mod object;
pub mod paths;
pub mod pins;
pub mod resolv;
pub mod sysctl;

pub use self::{
    loader::Datapath,
    maps::{MapSet, ip_be, ip_of},
    paths::Paths,
};

//! weft's userspace library: loading and pinning the datapath, typed map
//! access, netlink, saved state, and one module per CLI command family.

pub mod object;

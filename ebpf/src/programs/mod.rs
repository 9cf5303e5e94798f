//! One module per attach point: the programs userspace loads and attaches
//! (or installs as tail-call targets), each a thin entry over `helpers`.

mod calibrate;
mod from_container;
mod from_uplink;
mod from_vxlan;
mod nat_egress;
mod overlay_encap;
mod xdp_underlay;

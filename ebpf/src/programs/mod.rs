//! One module per attach point: the programs userspace loads and attaches
//! (or installs as tail-call targets), each an entry that knows its
//! direction and hands the packet to `helpers`, with one exit that counts
//! a drop (`verdict::drop_packet`).
//!
//! - `from_container`: TC ingress of every endpoint's host-side veth;
//! - `nat_egress`, `overlay_encap`: tail calls of `from_container`
//!   (masquerade, VXLAN encapsulation);
//! - `from_uplink`: TC ingress of the uplink, also the overlay's underlay;
//! - `from_vxlan`: TC ingress of the collect-metadata vxlan device;
//! - `xdp_underlay`: XDP early drops on the underlay;
//! - `calibrate`: a no-op for measuring test-run overhead.

mod calibrate;
mod from_container;
mod from_uplink;
mod from_vxlan;
mod nat_egress;
mod overlay_encap;
mod xdp_underlay;

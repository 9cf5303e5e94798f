//! Which way a packet travels through weft. Every program knows it from
//! where it is attached, and everything that depends on it takes it from
//! there: the counters it is kept under (`weft_common::maps::DIR_*`) and
//! which side of a connection NAT translates.

use weft_common::maps::{DIR_FROM_CONTAINER, DIR_FROM_UPLINK};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by a container: `weft_from_container` and its tail calls.
    /// NAT translates the source (the container's address and port).
    FromContainer,
    /// Arrived on the uplink, which is also the overlay's underlay:
    /// `weft_from_uplink`, `weft_from_vxlan`, `weft_xdp_underlay`. NAT
    /// translates the destination (the node's address and port).
    FromUplink,
}

impl Direction {
    /// The block of the drop and forward counters this direction is kept
    /// under.
    #[inline(always)]
    pub const fn counters(self) -> u32 {
        match self {
            Self::FromContainer => DIR_FROM_CONTAINER,
            Self::FromUplink => DIR_FROM_UPLINK,
        }
    }
}

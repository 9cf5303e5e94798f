//! Masquerade egress as its own program, entered by tail call from
//! `weft_from_container` for packets to addresses outside every weft
//! network. A separate program keeps NAT's larger stack and register needs
//! off the bridging/routing fast path (a BPF-to-BPF call would share the
//! 512-byte stack: 264 + 344 bytes did not fit).

use aya_ebpf::{macros::classifier, programs::TcContext};
use network_types::ip::Ipv4Hdr;
use weft_common::events::PROGRAM_NAT_EGRESS;

use crate::helpers::{
    access::load,
    direction::Direction,
    nat,
    parse::IP_OFF,
    tail,
    verdict::{Verdict, drop_packet},
};

#[classifier]
pub fn weft_nat_egress(ctx: TcContext) -> i32 {
    match try_nat_egress(&ctx) {
        Ok(action) => action,
        Err(dropped) => drop_packet(&ctx, dropped, PROGRAM_NAT_EGRESS, Direction::FromContainer),
    }
}

/// `weft_from_container` validated the frame, counted it and handed over
/// the sender (`tail::sender`); the IPv4 header is read again, since NAT
/// rewrites it.
#[inline(always)]
fn try_nat_egress(ctx: &TcContext) -> Verdict {
    let ip: Ipv4Hdr = load(ctx, IP_OFF).ok_or(drop_here!(TruncatedIpv4))?;
    let src = tail::sender(ctx, &ip);
    nat::egress(ctx, &src, &ip)
}

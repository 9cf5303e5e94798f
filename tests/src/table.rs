//! The row check every packet table uses: run a frame through a program
//! and require the expected verdict, the exact output bytes, exactly one
//! counter moving, and the delivery counted on the destination endpoint.

use anyhow::Result;
use weft_common::{
    maps::{DIR_FROM_CONTAINER, DIR_FROM_UPLINK, DIRECTIONS},
    reason::{Drop, Forward},
};

use crate::fixture::{Datapath, TC_ACT_SHOT};

/// What a row must produce.
pub enum Expect {
    /// Forwarded: action, the one forward counter that moves, exact output,
    /// and the endpoint the packet was delivered into (if any).
    Forward {
        action: u32,
        kind: Forward,
        output: Vec<u8>,
        delivered_to: Option<u32>,
    },
    /// Dropped (TC_ACT_SHOT), frame untouched, this reason counted once.
    Drop(Drop),
}

/// Which program a row runs through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `weft_from_container`, sent by the endpoint at the test-run ifindex.
    Container,
    /// `weft_from_uplink`.
    Uplink,
}

impl Hook {
    /// The direction its counters are kept under.
    fn direction(self) -> &'static str {
        let index = match self {
            Self::Container => DIR_FROM_CONTAINER,
            Self::Uplink => DIR_FROM_UPLINK,
        };
        DIRECTIONS[index as usize]
    }
}

/// Runs `frame` through `hook` and checks verdict, bytes and that exactly
/// one counter moved; panics with what was expected and what came. Returns
/// the program's output.
pub fn check(
    dp: &mut Datapath,
    what: &str,
    hook: Hook,
    frame: &[u8],
    expect: &Expect,
) -> Result<Vec<u8>> {
    let before = dp.all_counters()?;
    let rx_before = match expect {
        Expect::Forward {
            delivered_to: Some(ifindex),
            ..
        } => dp.endpoint_stats(*ifindex)?.rx_packets,
        _ => 0,
    };
    let got = match hook {
        Hook::Container => dp.run(frame)?,
        Hook::Uplink => dp.run_uplink(frame)?,
    };
    let after = dp.all_counters()?;
    let moved: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| format!("{} +{}", b.0, a.1 - b.1))
        .collect();

    let (want_action, want_counter, want_output) = match expect {
        Expect::Forward {
            action,
            kind,
            output,
            ..
        } => (
            *action,
            format!("{} forward:{} +1", hook.direction(), kind.name()),
            output.clone(),
        ),
        Expect::Drop(reason) => (
            TC_ACT_SHOT,
            format!("{} drop:{} +1", hook.direction(), reason.name()),
            frame.to_vec(),
        ),
    };
    assert_eq!(
        got.action, want_action,
        "{what}: expected action {want_action}, got {} (counters moved: {moved:?})",
        got.action
    );
    assert_eq!(
        moved,
        vec![want_counter.clone()],
        "{what}: expected only {want_counter} to move"
    );
    assert_eq!(
        got.output,
        want_output,
        "{what}: output bytes differ\n  want {}\n  got  {}",
        hex(&want_output),
        hex(&got.output)
    );
    if let Expect::Forward {
        delivered_to: Some(ifindex),
        ..
    } = expect
    {
        assert_eq!(
            dp.endpoint_stats(*ifindex)?.rx_packets,
            rx_before + 1,
            "{what}: expected endpoint {ifindex} rx to count the delivery"
        );
    }
    Ok(got.output)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The datapath's own log lines (aya-log, written by the eBPF programs on
//! rare paths only, e.g. a failed tail call) forwarded into the agent's log.
//!
//! Each load of the eBPF object has its own `AYA_LOGS` ring buffer (it is
//! not pinned), and the pinned programs may come from different loads
//! (`endpoint add` pins `weft_from_container` and `weft_nat_egress`, `node
//! set` later `weft_from_uplink`). The agent reads every distinct ring the
//! pinned programs use, checking again every [`RESCAN`] for programs pinned
//! since (e.g. by the first `endpoint add`).

use std::{collections::HashSet, time::Duration};

use aya::{maps::MapInfo, programs::ProgramInfo};
use aya_log::EbpfLogger;
use weft_common::maps::{PROG_FROM_CONTAINER, PROG_FROM_UPLINK, PROG_NAT_EGRESS};

use crate::datapath::paths::Paths;

/// How often the agent looks for rings of newly pinned programs.
pub const RESCAN: Duration = Duration::from_secs(2);
/// How often it drains the rings it reads.
pub const DRAIN: Duration = Duration::from_millis(250);

/// aya-log's ring buffer map name.
const LOG_MAP: &str = "AYA_LOGS";

/// Forwards every pinned program's log ring into `log` until dropped.
/// Rings are drained every [`DRAIN`]: reading one is a look at its
/// memory-mapped positions, no system call, so polling costs next to
/// nothing and needs no fd registration.
pub async fn forward(paths: Paths) {
    let mut seen = HashSet::new();
    let mut loggers = Vec::new();
    let mut tick = tokio::time::interval(DRAIN);
    let rescan_every = (RESCAN.as_millis() / DRAIN.as_millis()).max(1);
    for n in 0u128.. {
        tick.tick().await;
        if n % rescan_every == 0 {
            for (program, ring) in rings(&paths) {
                if !seen.insert(ring) {
                    continue;
                }
                match EbpfLogger::init_from_id(program) {
                    Ok(logger) => {
                        log::debug!("reading the datapath's log ring #{ring}");
                        loggers.push(logger);
                    }
                    Err(e) => log::warn!("cannot read the datapath's log ring #{ring}: {e}"),
                }
            }
        }
        for logger in &mut loggers {
            logger.flush();
        }
    }
}

/// (program id, log ring id) of each pinned program that logs.
fn rings(paths: &Paths) -> Vec<(u32, u32)> {
    [PROG_FROM_CONTAINER, PROG_NAT_EGRESS, PROG_FROM_UPLINK]
        .into_iter()
        .filter_map(|name| {
            let info = ProgramInfo::from_pin(paths.prog_pin(name)).ok()?;
            let ring =
                info.map_ids().ok()??.into_iter().find(|&id| {
                    MapInfo::from_id(id).is_ok_and(|m| m.name_as_str() == Some(LOG_MAP))
                })?;
            Some((info.id(), ring))
        })
        .collect()
}

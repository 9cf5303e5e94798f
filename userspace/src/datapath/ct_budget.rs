//! The conntrack table's connection budget (`WEFT_CT_BUDGET`, see
//! `weft_common::maps::MAP_CT_BUDGET`): the datapath counts every
//! connection it creates and every TCP connection it sees close, and
//! refuses new ones (`conntrack_full`) while `created - closed - removed`
//! is at the limit; this side writes `removed` (so that estimate is the
//! open connections a GC just counted), the time of that count, and the
//! limit (`node set --conntrack-max`).
//!
//! The count is refreshed by every conntrack GC (the agent's, every 10 s,
//! and `weft ct gc`), by `node set` and by a flush. Connections the
//! datapath creates while a count runs may be counted twice until the
//! next one: the estimate errs on the side of refusing early.

use aya::{
    maps::{MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use weft_common::maps::{
    CT_BUDGET_CLOSED, CT_BUDGET_CREATED, CT_BUDGET_LIMIT, CT_BUDGET_REFRESHED, CT_BUDGET_REMOVED,
    CT_DEFAULT_LIMIT, MAP_CT_BUDGET,
};

use crate::{
    datapath::{conntrack::now_ns, maps::open_pinned, paths::Paths},
    error::{Error, Result},
};

type BudgetMap = PerCpuArray<MapData, u64>;

/// The pinned budget, or `None` when nothing was ever set up.
fn open(paths: &Paths) -> Result<Option<BudgetMap>> {
    open_pinned(paths, MAP_CT_BUDGET)?
        .map(|m| {
            PerCpuArray::try_from(m)
                .map_err(|e| Error::map(format!("map {MAP_CT_BUDGET} has an unexpected type"), e))
        })
        .transpose()
}

/// Connections the datapath has created less those it saw close so far,
/// all CPUs together (0 without a pinned map): read before counting the
/// open ones, for [`record`].
pub fn created_not_closed(paths: &Paths) -> Result<u64> {
    let Some(map) = open(paths)? else {
        return Ok(0);
    };
    let sum = |slot: u32| -> Result<u64> {
        let per_cpu = map
            .get(&slot, 0)
            .map_err(|e| Error::map(format!("cannot read {MAP_CT_BUDGET}"), e))?;
        Ok(per_cpu.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)))
    };
    Ok(sum(CT_BUDGET_CREATED)?.wrapping_sub(sum(CT_BUDGET_CLOSED)?))
}

/// Records that `live` connections were open when the datapath's
/// created-not-closed count was `created_before` (read before counting),
/// and the limit: `limit` connections (`None`: the default).
pub fn record(paths: &Paths, created_before: u64, live: u64, limit: Option<u32>) -> Result<()> {
    let Some(mut map) = open(paths)? else {
        return Ok(());
    };
    let cpus = nr_cpus().map_err(|(what, e)| Error::io(format!("cannot read {what}"), e))?;
    // The same value on every CPU: the datapath reads its own CPU's copy.
    let write = |map: &mut BudgetMap, slot: u32, value: u64| {
        let values = PerCpuValues::try_from(vec![value; cpus])
            .map_err(|e| Error::io(format!("cannot size the per-CPU {MAP_CT_BUDGET}"), e))?;
        map.set(slot, values, 0)
            .map_err(|e| Error::map(format!("cannot write {MAP_CT_BUDGET}"), e))
    };
    write(&mut map, CT_BUDGET_LIMIT, limit.map_or(0, u64::from))?;
    write(
        &mut map,
        CT_BUDGET_REMOVED,
        created_before.saturating_sub(live),
    )?;
    write(&mut map, CT_BUDGET_REFRESHED, now_ns())
}

/// The connection limit in force for a node configured with `limit`.
pub fn effective_limit(limit: Option<u32>) -> u64 {
    limit.map_or(CT_DEFAULT_LIMIT, u64::from)
}

//! `weft stats`: the datapath's counters, summed over CPUs.

use crate::{
    datapath::read_counters,
    error::Result,
    output::{Ordered, StatsView},
    paths::Paths,
    state,
};

/// Reads every drop/forward counter and each endpoint's counters. Reads the
/// pinned maps only; with nothing set up yet every counter is zero.
pub fn stats(paths: &Paths) -> Result<StatsView> {
    let st = state::read(paths)?;
    let slots: Vec<u32> = st.endpoints.iter().map(|e| e.stats_slot).collect();
    let counters = read_counters(paths, &slots)?;
    Ok(StatsView {
        drops: Ordered(
            counters
                .drops
                .iter()
                .map(|(r, c)| (r.name().to_string(), (*c).into()))
                .collect(),
        ),
        forwards: Ordered(
            counters
                .forwards
                .iter()
                .map(|(r, c)| (r.name().to_string(), (*c).into()))
                .collect(),
        ),
        endpoints: Ordered(
            st.endpoints
                .iter()
                .zip(&counters.endpoints)
                .map(|(ep, (_, s))| (ep.name.clone(), (*s).into()))
                .collect(),
        ),
    })
}

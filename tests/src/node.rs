//! A weft node for end-to-end tests ([`weft_harness::node`]), and what
//! only the tests read with aya: the kernel ids of the node's pins.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use aya::{
    maps::MapInfo,
    programs::{
        ProgramInfo,
        links::{FdLink, PinnedLink},
    },
};
pub use weft_harness::node::*;

/// The kernel ids behind a node's pins.
pub trait PinnedIds {
    /// The kernel id of every pinned program, map and link of this node,
    /// by pin path: a reload, recreation or re-attachment changes one.
    fn pinned_ids(&self) -> Result<BTreeMap<String, u32>>;
}

impl PinnedIds for Node {
    fn pinned_ids(&self) -> Result<BTreeMap<String, u32>> {
        let mut ids = BTreeMap::new();
        let mut walk = |dir: &str, id: &dyn Fn(&Path) -> Result<u32>| -> Result<()> {
            let path = self.pin_dir().join(dir);
            let entries = std::fs::read_dir(&path)
                .with_context(|| format!("reading pins in {}", path.display()))?;
            for entry in entries {
                let entry = entry?;
                let pin = entry.path();
                let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
                ids.insert(
                    name,
                    id(&pin).with_context(|| format!("{}", pin.display()))?,
                );
            }
            Ok(())
        };
        walk("progs", &|p| Ok(ProgramInfo::from_pin(p)?.id()))?;
        walk("maps", &|p| Ok(MapInfo::from_pin(p)?.id()))?;
        walk("links", &|p| {
            Ok(FdLink::from(PinnedLink::from_pin(p)?).info()?.id())
        })?;
        Ok(ids)
    }
}

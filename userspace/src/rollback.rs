//! Undo lists: a command that changes several kernel objects records how to
//! undo each step, and on failure undoes them in reverse order so the node
//! is left exactly as it was.

use crate::{datapath::Datapath, error::Result};

type MapStep = Box<dyn FnOnce(&mut Datapath) -> Result<()>>;

/// Undo steps for map writes.
#[derive(Default)]
pub struct MapUndo {
    steps: Vec<(String, MapStep)>,
}

impl MapUndo {
    /// Records how to undo the step just done (`what` is for the log).
    pub fn push(
        &mut self,
        what: impl Into<String>,
        undo: impl FnOnce(&mut Datapath) -> Result<()> + 'static,
    ) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// Undoes everything recorded, newest first. Failures are logged, not
    /// returned: the caller reports the original error.
    pub fn run(self, dp: &mut Datapath) {
        for (what, undo) in self.steps.into_iter().rev() {
            if let Err(e) = undo(dp) {
                log::warn!("rollback: could not {what}: {}", crate::error::chain(&e));
            }
        }
    }

    /// Forgets the steps (the command succeeded).
    pub fn commit(self) {}
}

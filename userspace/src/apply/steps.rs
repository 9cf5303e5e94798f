//! Counting the kernel changes an apply makes, so a test can make the Nth
//! one fail (`WEFT_FAIL_AT=N`, or the engine's fault setting) and check
//! that the engine puts everything back.

use crate::error::{Error, Result};

/// The changes made so far, and the one that must fail.
#[derive(Clone, Debug)]
pub struct Steps {
    started: std::time::Instant,
    done: u32,
    fail_at: Option<u32>,
    /// What each change was, for the log and the failure message.
    pub log: Vec<String>,
}

impl Steps {
    /// Counts changes; the `fail_at`th (1-based) fails instead of running.
    pub fn failing_at(fail_at: Option<u32>) -> Self {
        Self {
            started: std::time::Instant::now(),
            done: 0,
            fail_at,
            log: Vec::new(),
        }
    }

    /// Called before each kernel change.
    pub fn step(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        self.done += 1;
        if self.fail_at == Some(self.done) {
            let what = what();
            return Err(Error::Injected(format!(
                "injected failure at step {} ({what})",
                self.done
            )));
        }
        if log::log_enabled!(log::Level::Debug) {
            let what = what();
            let at = self.started.elapsed().as_micros();
            log::debug!("apply step {} at {at} us: {what}", self.done);
            self.log.push(what);
        }
        Ok(())
    }

    /// When the apply began.
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    pub fn count(&self) -> u32 {
        self.done
    }
}

impl Default for Steps {
    fn default() -> Self {
        Self::failing_at(None)
    }
}

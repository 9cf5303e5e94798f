//! The agent's TCP health checks of service backends: the up/down state
//! machine, kept apart from the probing so it is testable without root.
//!
//! A backend flips only after several results in a row agree (like
//! Kubernetes' failureThreshold/successThreshold), so one lost SYN does not
//! reshuffle a Maglev table; each flip is what the engine receives as an
//! input (the model changes, render and apply follow), never a map write.

use std::time::Duration;

/// Probe settings; the defaults are Kubernetes-like but faster, since a
/// flip only swaps a Maglev table and established flows keep going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row that mark an up backend down.
    pub fall: u32,
    /// Successes in a row that mark a down backend up.
    pub rise: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
        }
    }
}

/// One backend's health as the checker tracks it. A new backend starts up:
/// a service being created should not refuse clients until the first
/// probes come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    down: bool,
    /// Results in a row that disagree with the current state.
    streak: u32,
}

/// What a probe result did to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    WentUp,
}

impl Tracker {
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Counts one probe result; says whether the state flipped.
    pub fn record(&mut self, ok: bool, s: &Settings) -> Transition {
        if ok != self.down {
            // The result agrees with the state: any streak is broken.
            self.streak = 0;
            return Transition::None;
        }
        self.streak += 1;
        let needed = if self.down { s.rise } else { s.fall }.max(1);
        if self.streak < needed {
            return Transition::None;
        }
        self.streak = 0;
        self.down = !self.down;
        if self.down {
            Transition::WentDown
        } else {
            Transition::WentUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Tracker, results: &[bool]) -> Vec<Transition> {
        let s = Settings::default();
        results.iter().map(|&ok| t.record(ok, &s)).collect()
    }

    #[test]
    fn falls_after_three_failures_in_a_row_and_rises_after_two_successes() {
        use Transition::*;
        let mut t = Tracker::default();
        assert!(!t.is_down(), "a new backend starts up");
        assert_eq!(run(&mut t, &[false, false]), [None, None]);
        assert_eq!(run(&mut t, &[false]), [WentDown]);
        assert!(t.is_down());
        assert_eq!(run(&mut t, &[false, true]), [None, None]);
        assert_eq!(run(&mut t, &[true]), [WentUp]);
        assert!(!t.is_down());
    }

    #[test]
    fn a_broken_streak_starts_over() {
        let mut t = Tracker::default();
        let got = run(&mut t, &[false, false, true, false, false, true]);
        assert!(got.iter().all(|x| *x == Transition::None), "{got:?}");
        assert!(!t.is_down(), "never three failures in a row");
        run(&mut t, &[false, false, false]);
        let got = run(&mut t, &[true, false, true]);
        assert!(got.iter().all(|x| *x == Transition::None), "{got:?}");
        assert!(t.is_down(), "never two successes in a row");
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let s = Settings {
            fall: 0,
            rise: 0,
            ..Settings::default()
        };
        let mut t = Tracker::default();
        assert_eq!(t.record(false, &s), Transition::WentDown);
        assert_eq!(t.record(true, &s), Transition::WentUp);
    }
}

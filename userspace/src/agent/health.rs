//! The agent's TCP health checks of service backends (`service create
//! --health tcp:PORT`): a prober that connects from the node namespace to
//! each backend's address and port every interval, and the up/down state
//! machine it feeds, kept apart from the probing so it is testable
//! without root.
//!
//! A backend flips only after several results in a row agree (like
//! Kubernetes' failureThreshold/successThreshold), so one lost SYN does not
//! reshuffle a Maglev table; each flip is what the engine receives as an
//! input (the model changes, render and apply follow), never a map write.
//! The verdicts are this node's and live only while the agent does: the
//! model never saves them, and a restarted agent starts every backend up
//! and probes again.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddrV4,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::queue::EngineHandle;
use crate::{error::chain, model::Model};

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

/// One health check: a backend of a service, at its health port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub service: String,
    pub endpoint: String,
    pub addr: SocketAddrV4,
}

/// Every check `model` asks for, in service then backend order.
pub fn targets(model: &Model) -> Vec<Target> {
    let mut out = Vec::new();
    for svc in &model.services {
        let Some(port) = svc.health_port else {
            continue;
        };
        for ep in model.members(svc) {
            out.push(Target {
                service: svc.name.clone(),
                endpoint: ep.name.clone(),
                addr: SocketAddrV4::new(ep.ip, port),
            });
        }
    }
    out
}

/// The trackers of the checks in force. A check that went (backend
/// removed, address changed) forgets its state; a new one starts up.
#[derive(Debug, Default)]
pub struct Checker {
    settings: Settings,
    trackers: BTreeMap<Target, Tracker>,
}

impl Checker {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            trackers: BTreeMap::new(),
        }
    }

    /// Folds in one round of `results` (every check in force, with
    /// whether it connected); returns the flips.
    pub fn record(&mut self, results: &[(Target, bool)]) -> Vec<(Target, Transition)> {
        let mut kept = BTreeMap::new();
        let mut flips = Vec::new();
        for (target, ok) in results {
            let mut t = self.trackers.remove(target).unwrap_or_default();
            let flip = t.record(*ok, &self.settings);
            if flip != Transition::None {
                flips.push((target.clone(), flip));
            }
            kept.insert(target.clone(), t);
        }
        self.trackers = kept;
        flips
    }

    /// What is down, for every service with checks in force (an empty
    /// set: all up).
    pub fn down(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (target, t) in &self.trackers {
            let set = out.entry(target.service.clone()).or_default();
            if t.is_down() {
                set.insert(target.endpoint.clone());
            }
        }
        out
    }
}

/// Flips counted since the agent started, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// (service, "down" | "up") -> flips.
    transitions: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Stats {
    fn count(&self, flips: &[(Target, Transition)]) {
        let Ok(mut map) = self.transitions.lock() else {
            return;
        };
        for (target, flip) in flips {
            let to = if *flip == Transition::WentDown {
                "down"
            } else {
                "up"
            };
            *map.entry((target.service.clone(), to)).or_default() += 1;
        }
    }

    /// `weft_service_unhealthy_backends` (from the model in force) and
    /// `weft_service_health_transitions_total`.
    pub fn register(&self, model: &Model, registry: &mut Registry) {
        let unhealthy = Family::<Vec<(String, String)>, Gauge<i64>>::default();
        for svc in model.services.iter().filter(|s| s.health_port.is_some()) {
            let n = model.unhealthy.get(&svc.name).map_or(0, BTreeSet::len);
            unhealthy
                .get_or_create(&vec![("service".to_owned(), svc.name.clone())])
                .set(n as i64);
        }
        registry.register(
            "service_unhealthy_backends",
            "Backends failing this node's health checks, per service",
            unhealthy,
        );
        let flips = Family::<Vec<(String, String)>, Counter>::default();
        if let Ok(map) = self.transitions.lock() {
            for ((service, to), n) in map.iter() {
                let l = vec![
                    ("service".to_owned(), service.clone()),
                    ("to".to_owned(), (*to).to_owned()),
                ];
                flips.get_or_create(&l).inc_by(*n);
            }
        }
        registry.register(
            "service_health_transitions",
            "Backends the health checks marked down or up again, per service",
            flips,
        );
    }
}

/// Whether a TCP connection to `addr` is accepted within `timeout`.
async fn probe(addr: SocketAddrV4, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Probes every check in force, all at once, each bounded by the timeout.
async fn round(targets: Vec<Target>, timeout: Duration) -> Vec<(Target, bool)> {
    let probes = targets.into_iter().map(|t| async move {
        let ok = probe(t.addr, timeout).await;
        (t, ok)
    });
    futures::future::join_all(probes).await
}

/// Runs the health checks for as long as the agent does: each interval,
/// one round of probes of what the committed model asks for; a service
/// whose set of down backends differs from the model's goes to the engine.
pub async fn run(engine: EngineHandle, settings: Settings, stats: Arc<Stats>) {
    let mut checker = Checker::new(settings);
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets = targets(&engine.model.borrow().clone());
        if targets.is_empty() && checker.trackers.is_empty() {
            continue;
        }
        let results = round(targets, settings.timeout).await;
        let flips = checker.record(&results);
        for (target, flip) in &flips {
            log::info!(
                "service '{}': backend '{}' ({}) is {}",
                target.service,
                target.endpoint,
                target.addr,
                if *flip == Transition::WentDown {
                    "down"
                } else {
                    "up again"
                }
            );
        }
        stats.count(&flips);
        let model = engine.model.borrow().clone();
        for (service, down) in checker.down() {
            if model.unhealthy.get(&service).cloned().unwrap_or_default() == down {
                continue;
            }
            if let Err(e) = engine.set_health(&service, down).await {
                // The service may have gone meanwhile; the next round
                // sees the model as it is then.
                log::warn!("health of service '{service}': {}", chain(&e));
            }
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

    fn target(endpoint: &str) -> Target {
        Target {
            service: "web".into(),
            endpoint: endpoint.into(),
            addr: SocketAddrV4::new(std::net::Ipv4Addr::new(10, 1, 0, 2), 8080),
        }
    }

    #[test]
    fn the_checker_follows_the_checks_in_force() {
        let mut c = Checker::new(Settings::default());
        let (a, b) = (target("a"), target("b"));
        for _ in 0..2 {
            assert!(
                c.record(&[(a.clone(), false), (b.clone(), true)])
                    .is_empty()
            );
        }
        let flips = c.record(&[(a.clone(), false), (b.clone(), true)]);
        assert_eq!(flips, [(a.clone(), Transition::WentDown)]);
        assert_eq!(c.down()["web"], BTreeSet::from(["a".to_owned()]));
        // `a` left the service: its verdict goes with it, and back it
        // starts up.
        c.record(&[(b.clone(), true)]);
        assert!(c.down()["web"].is_empty());
        c.record(&[(a.clone(), false), (b.clone(), true)]);
        assert!(c.down()["web"].is_empty(), "one failure is not three");
        // No checks left: no service to report.
        c.record(&[]);
        assert!(c.down().is_empty());
    }
}

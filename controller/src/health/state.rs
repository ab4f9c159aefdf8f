//! The health of one probed target, from consecutive check results (pure; time is a
//! parameter so tests need no clock).
//!
//! * A target starts `Unknown`.
//! * From `Unknown`, one passing check makes it `Healthy` (there is no earlier verdict to
//!   protect), while `unhealthyThreshold` consecutive failures make it `Unhealthy` (one
//!   blip at start-up does not condemn it).
//! * `Healthy` → `Unhealthy` after `unhealthyThreshold` consecutive failures;
//!   `Unhealthy` → `Healthy` after `healthyThreshold` consecutive passes. That second
//!   transition is a *recovery*: each scheme then reports the target Healthy only once it
//!   has stayed Healthy for the scheme's `failback.stableFor` ([`TargetState::effective`]).

use crate::model::HealthCheck;
use detour_filter::health::Health;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, PartialEq)]
pub struct TargetState {
    pub health: Health,
    /// When `health` last changed (or the checker started).
    pub since: Instant,
    /// The same moment on the wall clock, for people.
    pub since_wall: SystemTime,
    /// The current Healthy run follows an Unhealthy one (failback damping applies).
    pub recovered: bool,
    /// Checks done so far.
    pub checks: u64,
    /// What the last check saw, for logs and `explain`.
    pub last: Option<String>,
    successes: u32,
    failures: u32,
}

/// A change of health, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

impl TargetState {
    pub fn new(now: Instant) -> TargetState {
        TargetState {
            health: Health::Unknown,
            since: now,
            since_wall: SystemTime::now(),
            recovered: false,
            checks: 0,
            last: None,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one check result; returns the transition it caused, if any.
    pub fn observe(
        &mut self,
        passed: bool,
        policy: &HealthCheck,
        now: Instant,
    ) -> Option<Transition> {
        self.checks += 1;
        let from = self.health;
        let to = if passed {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            match from {
                Health::Unknown => Health::Healthy,
                Health::Unhealthy if self.successes >= policy.healthy_threshold => Health::Healthy,
                other => other,
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            match from {
                Health::Unknown | Health::Healthy
                    if self.failures >= policy.unhealthy_threshold =>
                {
                    Health::Unhealthy
                }
                other => other,
            }
        };
        if to == from {
            return None;
        }
        self.recovered = from == Health::Unhealthy && to == Health::Healthy;
        self.health = to;
        self.since = now;
        self.since_wall = SystemTime::now();
        Some(Transition { from, to })
    }

    /// The health a scheme with `stable_for` reports now, and when that may change by
    /// itself (the end of the damping window).
    pub fn effective(&self, stable_for: Duration, now: Instant) -> (Health, Option<Instant>) {
        if self.health == Health::Healthy && self.recovered {
            let until = self.since + stable_for;
            if now < until {
                return (Health::Unhealthy, Some(until));
            }
        }
        (self.health, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn policy(unhealthy: u32, healthy: u32) -> HealthCheck {
        HealthCheck {
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            ..HealthCheck::default()
        }
    }

    /// Feeds results one second apart; returns the health after each.
    fn run(
        state: &mut TargetState,
        start: Instant,
        results: &[bool],
        p: &HealthCheck,
    ) -> Vec<Health> {
        results
            .iter()
            .enumerate()
            .map(|(i, &ok)| {
                state.observe(ok, p, start + Duration::from_secs(i as u64));
                state.health
            })
            .collect()
    }

    #[test]
    fn one_pass_decides_an_unknown_target() {
        let t0 = Instant::now();
        let mut s = TargetState::new(t0);
        assert_eq!(s.health, Unknown);
        let change = s.observe(true, &policy(2, 2), t0);
        assert_eq!(
            change,
            Some(Transition {
                from: Unknown,
                to: Healthy
            })
        );
        assert!(!s.recovered, "the first verdict is not a recovery");
        assert_eq!(s.effective(Duration::from_secs(10), t0), (Healthy, None));
    }

    #[test]
    fn failures_need_the_threshold_even_from_unknown() {
        let t0 = Instant::now();
        let mut s = TargetState::new(t0);
        let p = policy(3, 2);
        assert_eq!(
            run(&mut s, t0, &[false, false, false], &p),
            [Unknown, Unknown, Unhealthy]
        );
        let mut s = TargetState::new(t0);
        assert_eq!(
            run(
                &mut s,
                t0,
                &[true, false, false, true, false, false, false],
                &p
            ),
            [
                Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy
            ],
            "a pass resets the failure count"
        );
    }

    #[test]
    fn recovery_needs_the_healthy_threshold() {
        let t0 = Instant::now();
        let mut s = TargetState::new(t0);
        let p = policy(1, 3);
        assert_eq!(
            run(
                &mut s,
                t0,
                &[true, false, true, true, false, true, true, true],
                &p
            ),
            [
                Healthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy
            ]
        );
        assert!(s.recovered);
        assert_eq!(s.checks, 8);
    }

    #[test]
    fn a_recovered_target_is_damped_per_scheme() {
        let t0 = Instant::now();
        let mut s = TargetState::new(t0);
        let p = policy(1, 1);
        s.observe(true, &p, t0);
        s.observe(false, &p, t0 + Duration::from_secs(1));
        let back = t0 + Duration::from_secs(2);
        s.observe(true, &p, back);
        assert_eq!(s.health, Healthy);
        let ten = Duration::from_secs(10);
        assert_eq!(
            s.effective(ten, back + Duration::from_secs(9)),
            (Unhealthy, Some(back + ten))
        );
        assert_eq!(s.effective(ten, back + ten), (Healthy, None));
        // Another scheme with no damping sees it Healthy at once.
        assert_eq!(s.effective(Duration::ZERO, back), (Healthy, None));
    }
}

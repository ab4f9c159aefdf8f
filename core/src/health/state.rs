//! The health of one probed target, from consecutive check results (pure; time is a
//! parameter so tests need no clock).
//!
//! * A target starts `Unknown`.
//! * From `Unknown`, one passing check makes it `Healthy` (there is no earlier verdict to
//!   protect), while `unhealthyThreshold` consecutive failures make it `Unhealthy` (one
//!   blip at start-up does not condemn it) — but only once its gateway has answered at
//!   least once: a gateway that is not listening yet (everything started together) says
//!   nothing about the service behind it, so the target stays `Unknown`.
//! * `Healthy` → `Unhealthy` after `unhealthyThreshold` consecutive failures;
//!   `Unhealthy` → `Healthy` after `healthyThreshold` consecutive passes. That second
//!   transition is a *recovery* when the Unhealthy verdict had moved traffic away: it
//!   replaced Healthy, or an Unknown that was already the target's verdict (its gateway
//!   had not answered; the filter sends Unknown targets their traffic). Each scheme then
//!   reports it Healthy only once it has stayed Healthy for the scheme's
//!   `failback.stableFor` ([`TargetState::effective`]). A target's first verdict is never
//!   held back: Unhealthy first and then Healthy is a service that was still starting.
//! * Each failure has a [`Cause`]: the gateway gave no answer (the path from other
//!   clusters is down), or it answered that the service failed. The target's own cluster
//!   reaches the service without that gateway, so only the second kind concerns it
//!   ([`TargetState::failed_behind_gateway`]).

use crate::model::HealthCheck;
use detour_filter::health::Health;
use std::time::{Duration, Instant, SystemTime};

/// One check's result as the state machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Passed,
    Failed(Cause),
}

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No answer from the gateway (connection refused or reset, TLS refused, timeout).
    Gateway,
    /// The gateway answered, and the answer says the service failed.
    Service,
}

impl From<bool> for Check {
    /// A plain pass or fail: a failure the gateway answered.
    fn from(passed: bool) -> Check {
        if passed {
            Check::Passed
        } else {
            Check::Failed(Cause::Service)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetState {
    pub health: Health,
    /// When `health` last changed (or the checker started).
    pub since: Instant,
    /// The same moment on the wall clock, for people.
    pub since_wall: SystemTime,
    /// The current Healthy run ends an Unhealthy verdict that had moved traffic away
    /// (failback damping applies).
    pub recovered: bool,
    /// Why the latest failures failed (kept through a recovery, so that a target whose
    /// only trouble was its gateway is not held back in its own cluster either).
    pub cause: Option<Cause>,
    /// Some check got an answer from the gateway.
    answered: bool,
    /// The latest Unhealthy verdict replaced one traffic followed: Healthy, or Unknown
    /// once that was the target's verdict. Its end is a recovery.
    unhealthy_moved_traffic: bool,
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
            cause: None,
            answered: false,
            unhealthy_moved_traffic: false,
            checks: 0,
            last: None,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one check result; returns the transition it caused, if any.
    pub fn observe(
        &mut self,
        check: impl Into<Check>,
        policy: &HealthCheck,
        now: Instant,
    ) -> Option<Transition> {
        let check = check.into();
        let had_verdict = self.has_first_verdict(policy);
        self.checks += 1;
        self.answered |= check != Check::Failed(Cause::Gateway);
        let from = self.health;
        let to = if let Check::Failed(cause) = check {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            self.cause = Some(match (self.failures, self.cause) {
                // A run of failures is the service's if any of them says so.
                (2.., Some(Cause::Service)) => Cause::Service,
                _ => cause,
            });
            match from {
                Health::Unknown | Health::Healthy
                    if self.failures >= policy.unhealthy_threshold && self.answered =>
                {
                    Health::Unhealthy
                }
                other => other,
            }
        } else {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            match from {
                Health::Unknown => Health::Healthy,
                Health::Unhealthy if self.successes >= policy.healthy_threshold => Health::Healthy,
                other => other,
            }
        };
        if to == from {
            return None;
        }
        if to == Health::Unhealthy {
            self.unhealthy_moved_traffic = had_verdict;
        }
        self.recovered =
            from == Health::Unhealthy && to == Health::Healthy && self.unhealthy_moved_traffic;
        self.health = to;
        self.since = now;
        self.since_wall = SystemTime::now();
        Some(Transition { from, to })
    }

    /// The service had no ready endpoint (published Unhealthy whatever its checks said)
    /// and has some again at `at`: a recovery like one the checks see, so failback
    /// damping holds it back from `at` — unless its checks say it is not Healthy now
    /// (their own recovery will be damped, and a target never Healthy has no recovery
    /// to hold back). Returns whether the state changed.
    pub fn endpoints_returned(&mut self, at: Instant, at_wall: SystemTime) -> bool {
        // Only `observe` changes the health: Healthy now means the checks pass.
        if self.health != Health::Healthy {
            return false;
        }
        self.recovered = true;
        // The service itself had no instance: its own cluster's traffic could not reach
        // it either.
        self.cause = Some(Cause::Service);
        self.since = at;
        self.since_wall = at_wall;
        true
    }

    /// The target has its first verdict: Healthy or Unhealthy, or as many checks as it
    /// takes to call it Unhealthy (one whose gateway never answers stays Unknown, and
    /// that is its verdict). A restarted controller publishes no table before every
    /// target has one.
    pub fn has_first_verdict(&self, policy: &HealthCheck) -> bool {
        self.health != Health::Unknown
            || self.checks >= u64::from(policy.unhealthy_threshold.max(1))
    }

    /// The checks failed (or the target is recovering from failures) only because its
    /// gateway gave no answer: the service itself was never seen failing. Its own
    /// cluster's Envoy reaches it directly, so its traffic need not move.
    pub fn failed_behind_gateway(&self) -> bool {
        self.health != Health::Healthy && self.cause == Some(Cause::Gateway)
            || self.recovered && self.cause == Some(Cause::Gateway)
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
    fn a_first_verdict_takes_one_pass_or_a_threshold_of_failures() {
        let p = policy(2, 2);
        let now = Instant::now();
        let mut passing = TargetState::new(now);
        assert!(!passing.has_first_verdict(&p));
        run(&mut passing, now, &[true], &p);
        assert!(passing.has_first_verdict(&p));
        let mut failing = TargetState::new(now);
        run(&mut failing, now, &[false], &p);
        assert!(
            !failing.has_first_verdict(&p),
            "one failure decides nothing"
        );
        run(&mut failing, now, &[false], &p);
        assert!(failing.has_first_verdict(&p));
        // A gateway that never answers: Unknown is the verdict after as many checks.
        let mut silent = TargetState::new(now);
        for _ in 0..2 {
            silent.observe(Check::Failed(Cause::Gateway), &p, now);
        }
        assert_eq!(silent.health, Unknown);
        assert!(silent.has_first_verdict(&p));
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

    #[test]
    fn a_gateway_that_never_answered_leaves_the_target_unknown() {
        let t0 = Instant::now();
        let p = policy(2, 2);
        let mut s = TargetState::new(t0);
        let gateway_down = Check::Failed(Cause::Gateway);
        for i in 0..5 {
            s.observe(gateway_down, &p, t0 + Duration::from_secs(i));
        }
        assert_eq!(s.health, Unknown);
        assert!(s.failed_behind_gateway());
        // Then it answers: the first Healthy verdict, not held back by damping.
        s.observe(true, &p, t0 + Duration::from_secs(6));
        assert_eq!(s.health, Healthy);
        assert!(!s.recovered);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(s.effective(Duration::from_secs(10), later), (Healthy, None));
    }

    #[test]
    fn a_first_healthy_verdict_after_a_failing_service_is_not_damped() {
        let t0 = Instant::now();
        let p = policy(2, 1);
        let mut s = TargetState::new(t0);
        // The gateway answers, the service behind it is not up yet: Unhealthy...
        run(&mut s, t0, &[false, false], &p);
        assert_eq!(s.health, Unhealthy);
        // ...then up: Healthy at once, never having been Healthy before.
        s.observe(true, &p, t0 + Duration::from_secs(3));
        assert_eq!(
            s.effective(Duration::from_secs(10), t0 + Duration::from_secs(3)),
            (Healthy, None)
        );
    }

    #[test]
    fn a_service_failing_after_its_unknown_verdict_is_damped_when_back() {
        // Its gateway is not listening yet: Unknown becomes its verdict (published; the
        // filter sends Unknown targets their traffic).
        let t0 = Instant::now();
        let p = policy(2, 1);
        let mut s = TargetState::new(t0);
        let gateway_down = Check::Failed(Cause::Gateway);
        s.observe(gateway_down, &p, t0);
        s.observe(gateway_down, &p, t0 + Duration::from_secs(1));
        assert_eq!(s.health, Unknown);
        assert!(s.has_first_verdict(&p));
        // The gateway answers: the service behind it has died. Traffic moves away...
        s.observe(false, &p, t0 + Duration::from_secs(2));
        assert_eq!(s.health, Unhealthy);
        // ...and returns only after stableFor, as after any other failure.
        let back = t0 + Duration::from_secs(3);
        s.observe(true, &p, back);
        assert!(s.recovered);
        let ten = Duration::from_secs(10);
        assert_eq!(s.effective(ten, back), (Unhealthy, Some(back + ten)));
    }

    #[test]
    fn a_gateway_going_down_is_not_the_services_failure() {
        let t0 = Instant::now();
        let p = policy(2, 1);
        let mut s = TargetState::new(t0);
        s.observe(true, &p, t0);
        let gateway_down = Check::Failed(Cause::Gateway);
        s.observe(gateway_down, &p, t0 + Duration::from_secs(1));
        s.observe(gateway_down, &p, t0 + Duration::from_secs(2));
        // Other clusters cannot reach it: Unhealthy for them...
        assert_eq!(s.health, Unhealthy);
        // ...but the service was never seen failing.
        assert!(s.failed_behind_gateway());
        // Back: a recovery (damped for the others), still the gateway's doing.
        s.observe(true, &p, t0 + Duration::from_secs(3));
        assert!(s.recovered);
        assert!(s.failed_behind_gateway());
        // The service itself fails: that is the service's.
        s.observe(false, &p, t0 + Duration::from_secs(4));
        s.observe(gateway_down, &p, t0 + Duration::from_secs(5));
        assert_eq!(s.health, Unhealthy);
        assert!(!s.failed_behind_gateway());
    }

    #[test]
    fn endpoints_that_return_are_a_recovery_only_for_a_target_once_healthy() {
        let t0 = Instant::now();
        let p = policy(1, 1);
        let stable = Duration::from_secs(5);
        let mut state = TargetState::new(t0);
        // Never Healthy yet: nothing to hold back.
        assert!(!state.endpoints_returned(t0, SystemTime::now()));
        run(&mut state, t0, &[true], &p);
        assert_eq!(
            state.effective(stable, t0 + Duration::from_secs(2)),
            (Healthy, None)
        );
        let back = t0 + Duration::from_secs(10);
        assert!(state.endpoints_returned(back, SystemTime::now()));
        assert_eq!(
            state.effective(stable, back + Duration::from_secs(1)),
            (Unhealthy, Some(back + stable))
        );
        assert_eq!(state.effective(stable, back + stable), (Healthy, None));
        assert!(
            !state.failed_behind_gateway(),
            "the service had no instance"
        );
    }
}

//! What each scheme is doing right now: the group that takes its traffic — decided by the
//! filter's own selection code (`detour_filter::select`) over the health the tables carry
//! — and every target's health with the time it began.
//!
//! Pure (time is a parameter). [`crate::decide`] computes the views; the Kubernetes
//! status writer reports them on each FailoverScheme, and [`crate::report`] turns them
//! into the status API's document (what `/ui` and `detour status` show).

use crate::model::TargetRef;
use crate::tables::HealthBasis;
use detour_filter::health::Health;
use detour_filter::select::Why;
use std::time::SystemTime;

/// One scheme's live state.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemeView {
    /// `namespace/name`.
    pub id: String,
    /// 0 = the primary, n = the nth failover group: where a request goes now.
    pub active_group: usize,
    pub why: Why,
    /// The primary, then every failover target in priority order.
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetView {
    /// 0 = the primary, n = the nth failover group.
    pub group: usize,
    pub target: TargetRef,
    pub weight: u32,
    pub health: Health,
    pub basis: HealthBasis,
}

impl SchemeView {
    /// The targets of group `group`.
    pub fn group(&self, group: usize) -> impl Iterator<Item = &TargetView> {
        self.targets.iter().filter(move |t| t.group == group)
    }

    /// True when every target has a verdict. A choice made while some target has none
    /// is provisional: at start-up (or for a new scheme) targets are checked one after
    /// the other, and the group moves as each first verdict lands. Neither the event log
    /// nor Kubernetes status reports such moves.
    pub fn settled(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.basis != HealthBasis::Unchecked)
    }
}

/// When a target's reported health began: carried over from the previous report while
/// the health stays the same (so a restart or a new leader does not reset it), else the
/// moment the checks reached that verdict when they did, else `now` (the health changed
/// for another reason: endpoints vanished, a damping window ended).
pub fn since(
    previous: Option<(Health, SystemTime)>,
    view: &TargetView,
    now: SystemTime,
) -> SystemTime {
    match previous {
        Some((health, since)) if health == view.health => since,
        _ => match view.basis {
            HealthBasis::Checked { since } => since,
            _ => now,
        },
    }
}

/// A short account of a view for events and logs: `group 1 (west: Healthy)`.
pub fn describe_group(view: &SchemeView, group: usize) -> String {
    let place = if group == 0 {
        "the primary".to_string()
    } else {
        format!("failover group {group}")
    };
    let members: Vec<String> = view
        .group(group)
        .map(|t| format!("{} in {}: {}", t.target.service, t.target.cluster, t.health))
        .collect();
    format!("{place} ({})", members.join(", "))
}

/// Why `view.active_group` takes the traffic, in a sentence.
pub fn routing_message(view: &SchemeView) -> String {
    match view.why {
        Why::PrimaryHealthy => "the primary takes the traffic".to_string(),
        Why::FailedOver => format!(
            "failed over: {} takes the traffic",
            describe_group(view, view.active_group)
        ),
        Why::NothingHealthyTryingUnknown => format!(
            "no target is Healthy; {} is tried first (health Unknown)",
            describe_group(view, view.active_group)
        ),
        Why::AllUnhealthyTryingPrimary => {
            "every target is Unhealthy; the primary is tried as the last resort".to_string()
        }
    }
}

/// Traffic leaving a scheme's group for another: the one transition both the event log
/// and Kubernetes Events report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub to: usize,
    /// To a later group (a failover), or back to an earlier one (a failback).
    pub failover: bool,
    /// [`move_message`].
    pub message: String,
}

/// The move from group `from` to where `view` sends the traffic now; `None` when it
/// stays. Callers decide which earlier group counts (what they last saw or reported).
pub fn traffic_move(view: &SchemeView, from: usize) -> Option<Move> {
    let to = view.active_group;
    (from != to).then(|| Move {
        from,
        to,
        failover: to > from,
        message: move_message(view, from, to),
    })
}

/// A move of the traffic from group `from` to group `to`, in a sentence (Kubernetes
/// Events and the status API's event log say the same).
pub fn move_message(view: &SchemeView, from: usize, to: usize) -> String {
    format!(
        "traffic for {} moves from {} to {}",
        view.id,
        describe_group(view, from),
        describe_group(view, to)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decide;
    use crate::health::HealthMap;
    use crate::health::state::TargetState;
    use crate::model::Model;
    use crate::testing::example_model;
    use std::collections::HashMap;
    use std::time::Duration;
    use std::time::Instant;

    /// Sets `cluster`'s target to `health` (by checks at `at`).
    fn set(model: &Model, board: &mut HealthMap, cluster: &str, healthy: bool, at: Instant) {
        let scheme = &model.schemes[0];
        let target = scheme.targets().find(|t| t.cluster == cluster).unwrap();
        let spec = model.probe_spec(scheme, target).unwrap();
        let p = spec.check.clone();
        let state = board.entry(spec).or_insert_with(|| TargetState::new(at));
        for _ in 0..p.unhealthy_threshold.max(p.healthy_threshold) {
            state.observe(healthy, &p, at);
        }
    }

    #[test]
    fn the_active_group_is_the_filters_choice() {
        let model = example_model();
        let mut board = HashMap::new();
        let t0 = Instant::now();
        let view = decide(&model, &board, t0).views.remove(0);
        assert_eq!(view.id, "apps/foo");
        assert_eq!(view.active_group, 0, "nothing checked: the first Unknown");
        assert_eq!(view.why, Why::NothingHealthyTryingUnknown);
        assert_eq!(view.targets.len(), 3);
        assert!(
            view.targets
                .iter()
                .all(|t| t.basis == HealthBasis::Unchecked)
        );

        for c in ["east", "west", "south"] {
            set(&model, &mut board, c, true, t0);
        }
        let view = decide(&model, &board, t0).views.remove(0);
        assert_eq!((view.active_group, view.why), (0, Why::PrimaryHealthy));

        set(&model, &mut board, "east", false, t0);
        let view = decide(&model, &board, t0).views.remove(0);
        assert_eq!((view.active_group, view.why), (1, Why::FailedOver));
        assert_eq!(
            describe_group(&view, 1),
            "failover group 1 (apps/foo in west: Healthy)"
        );
        set(&model, &mut board, "west", false, t0);
        let view = decide(&model, &board, t0).views.remove(0);
        assert_eq!(view.active_group, 2);

        // The primary recovers: damped for stableFor, then the traffic returns.
        let back = t0 + Duration::from_secs(5);
        set(&model, &mut board, "east", true, back);
        let view = decide(&model, &board, back).views.remove(0);
        assert_eq!(view.active_group, 2);
        assert!(matches!(
            view.targets[0].basis,
            HealthBasis::Recovering { .. }
        ));
        let later = back + model.schemes[0].failback.stable_for;
        let view = decide(&model, &board, later).views.remove(0);
        assert_eq!(view.active_group, 0);
    }

    #[test]
    fn a_service_without_endpoints_is_unhealthy_at_once() {
        let mut model = example_model();
        let mut board = HashMap::new();
        let t0 = Instant::now();
        for c in ["east", "west", "south"] {
            set(&model, &mut board, c, true, t0);
        }
        let foo = crate::model::ServiceName::new("apps", "foo");
        if let Some(east) = model.clusters.get_mut("east") {
            east.services.get_mut(&foo).unwrap().endpoints.clear();
        }
        let view = decide(&model, &board, t0).views.remove(0);
        assert_eq!(view.active_group, 1);
        assert_eq!(view.targets[0].health, Health::Unhealthy);
        assert_eq!(view.targets[0].basis, HealthBasis::NoReadyEndpoints);
        // The tables say the same.
        let built = decide(&model, &board, t0);
        assert_eq!(
            built.tables["east"].schemes[0].groups[0][0].health,
            Health::Unhealthy
        );
    }

    #[test]
    fn since_carries_over_while_the_health_stays() {
        let model = example_model();
        let view = decide(&model, &HashMap::new(), Instant::now())
            .views
            .remove(0);
        let t = &view.targets[0];
        let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000);
        assert_eq!(since(Some((Health::Unknown, then)), t, now), then);
        assert_eq!(since(Some((Health::Healthy, then)), t, now), now);
        assert_eq!(since(None, t, now), now);
        let checked = TargetView {
            basis: HealthBasis::Checked { since: then },
            health: Health::Healthy,
            ..t.clone()
        };
        assert_eq!(since(None, &checked, now), then);
    }
}

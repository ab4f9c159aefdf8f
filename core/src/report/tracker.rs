//! The controller's state at one moment → the status API's document, remembering what
//! it saw before: since when each target has had its health, since when each scheme's
//! active group has taken the traffic, and what changed in between (the event log).
//!
//! Pure: the caller passes the time, so tests need no clock. Which group is active is
//! [`crate::decide`]' answer, i.e. the filter's own selection code.

use super::events::{Event, EventKind, EventLog};
use super::{
    Basis, ClusterReport, ConfigOutcome, ConfigState, ControllerInfo, Protection, Role,
    STATUS_API_VERSION, SchemeReport, ServiceReport, StatusReport, Summary, TargetId, TargetReport,
    rfc3339_ms,
};
use crate::decide::Decided;
use crate::health::HealthMap;
use crate::health::state::TargetState;
use crate::model::{Catalogue, Model, Protocol, Scheme, ServiceName, TargetRef};
use crate::tables::{HealthBasis, TableSet};
use crate::views::{SchemeView, TargetView, routing_message, since, traffic_move};
use detour_filter::health::Health;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

/// Names listed in one event before "and N more".
const LISTED: usize = 5;

/// What the controller knows at one moment.
pub struct Inputs<'a> {
    /// The moment's decision, and the model and health it was made on.
    pub decided: &'a Decided,
    /// The tables as published (their versions).
    pub tables: &'a TableSet,
    /// The source's word on the last configuration load (file mode).
    pub config: Option<&'a ConfigState>,
    pub ready: bool,
    /// Every service of each member cluster, where the model holds only those a scheme
    /// names (Kubernetes); `None`: the model's are all there are (files).
    pub catalogue: Option<&'a Catalogue>,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    group: usize,
    since: SystemTime,
    settled: bool,
}

pub struct Tracker {
    /// `files` or `kubernetes`.
    source: &'static str,
    log: EventLog,
    model: Option<Arc<Model>>,
    config: Option<ConfigState>,
    /// Per scheme and target: the health reported and since when.
    since: HashMap<(String, TargetRef), (Health, SystemTime)>,
    /// Per scheme: the active group, since when, and whether every target had been
    /// checked when it was chosen.
    active: HashMap<String, Active>,
    /// The checks' verdict on each target, for [`EventKind::HealthChanged`].
    verdicts: HashMap<TargetRef, Health>,
    /// Per cluster: how its table's size stood (0 fine, 1 near the limit, 2 over).
    table_sizes: HashMap<String, u8>,
}

impl Tracker {
    pub fn new(source: &'static str, log: EventLog) -> Tracker {
        Tracker {
            source,
            log,
            model: None,
            config: None,
            since: HashMap::new(),
            active: HashMap::new(),
            verdicts: HashMap::new(),
            table_sizes: HashMap::new(),
        }
    }

    /// The document for this moment (`version` and `generatedAt` left empty: the
    /// publisher stamps them when the content changed), logging what changed since the
    /// last call. The first call logs nothing: there is no "before" yet.
    pub fn observe(&mut self, inputs: &Inputs<'_>) -> StatusReport {
        let decided = inputs.decided;
        let wall = decided.wall;
        let at = rfc3339_ms(wall);
        let model = &decided.model;
        let board: &HealthMap = &decided.board;
        let model_changed = self.model_events(model, inputs.config, &at);
        self.config_events(inputs.config, model_changed, &at);
        self.health_events(board, &at);
        self.table_events(inputs.tables, &at);

        let mut summary = Summary {
            clusters: model.clusters.len(),
            schemes: model.schemes.len(),
            ..Summary::default()
        };
        let mut schemes = Vec::with_capacity(model.schemes.len());
        let mut seen_targets = BTreeSet::new();
        for (scheme, view) in model.schemes.iter().zip(&decided.decision.views) {
            let report = self.scheme_report(model, scheme, view, board, wall, &at);
            if report.active_group > 0 {
                summary.failed_over += 1;
            }
            for t in report.groups.iter().flatten() {
                summary.targets.add(t.health);
            }
            seen_targets.extend(
                view.targets
                    .iter()
                    .map(|t| (view.id.clone(), t.target.clone())),
            );
            schemes.push(report);
        }
        let services = service_reports(model, inputs.catalogue);
        summary.services.protected = services.iter().filter(|s| s.is_protected()).count();
        summary.services.unprotected = services.len() - summary.services.protected;
        // Forget schemes and targets that are gone: back later, they start afresh.
        self.since.retain(|k, _| seen_targets.contains(k));
        self.active
            .retain(|id, _| schemes.iter().any(|s| &s.name == id));

        StatusReport {
            api_version: STATUS_API_VERSION.to_string(),
            version: String::new(),
            generated_at: String::new(),
            controller: ControllerInfo {
                source: self.source.to_string(),
                ready: inputs.ready,
                config: inputs.config.cloned(),
                certificates: Vec::new(),
            },
            summary,
            clusters: model
                .clusters
                .values()
                .map(|c| {
                    let size = inputs.tables.size(&c.name);
                    ClusterReport {
                        name: c.name.clone(),
                        gateway: c.gateway.to_string(),
                        services: c.services.len(),
                        primaries: model.schemes_of(&c.name).count(),
                        table_version: inputs.tables.get(&c.name).map(|t| t.version().to_string()),
                        table_bytes: size.map(|s| s.bytes),
                        table_max_bytes: size.map(|s| s.max),
                        table_warning: size.and_then(|s| s.warning(&c.name)),
                    }
                })
                .collect(),
            schemes,
            services,
            events: self.log.newest_first(),
        }
    }

    /// A table that grows past 80% of the limit, or over it, is news once (until it
    /// shrinks back).
    fn table_events(&mut self, tables: &TableSet, at: &str) {
        for (cluster, size) in &tables.sizes {
            let now = if size.over_limit() {
                2
            } else {
                u8::from(size.near_limit())
            };
            let before = self.table_sizes.insert(cluster.clone(), now).unwrap_or(0);
            if now > before
                && let Some(message) = size.warning(cluster)
            {
                let kind = if now == 2 {
                    EventKind::TableRefused
                } else {
                    EventKind::TableNearLimit
                };
                let mut event = Event::new(kind, message);
                event.cluster = Some(cluster.clone());
                self.log.push(at, event);
            }
        }
        self.table_sizes
            .retain(|cluster, _| tables.sizes.contains_key(cluster));
    }

    fn scheme_report(
        &mut self,
        model: &Model,
        scheme: &Scheme,
        view: &SchemeView,
        board: &HealthMap,
        wall: SystemTime,
        at: &str,
    ) -> SchemeReport {
        // Moves of a provisional choice are not news; a move between two choices made on
        // checked health is.
        let settled = view.settled();
        let previous = self.active.get(&view.id).copied();
        let active_since = match previous {
            Some(p) if p.group == view.active_group => p.since,
            Some(p) => {
                if p.settled
                    && settled
                    && let Some(moved) = traffic_move(view, p.group)
                {
                    let kind = if moved.failover {
                        EventKind::FailedOver
                    } else {
                        EventKind::FailedBack
                    };
                    let mut event = Event::new(kind, moved.message);
                    event.scheme = Some(view.id.clone());
                    event.from_group = Some(moved.from);
                    event.to_group = Some(moved.to);
                    self.log.push(at, event);
                }
                wall
            }
            None => wall,
        };
        self.active.insert(
            view.id.clone(),
            Active {
                group: view.active_group,
                since: active_since,
                settled,
            },
        );

        let mut groups: Vec<Vec<TargetReport>> = vec![Vec::new(); scheme.groups.len() + 1];
        for t in &view.targets {
            let key = (view.id.clone(), t.target.clone());
            let since = since(self.since.get(&key).copied(), t, wall);
            self.since.insert(key, (t.health, since));
            if let Some(group) = groups.get_mut(t.group) {
                group.push(target_report(model, scheme, t, since, board));
            }
        }
        SchemeReport {
            name: view.id.clone(),
            primary: TargetId {
                cluster: scheme.primary.cluster.clone(),
                service: scheme.primary.service.to_string(),
            },
            active_group: view.active_group,
            reason: view.why.label().to_string(),
            message: routing_message(view),
            active_since: rfc3339_ms(active_since),
            stable_for_ms: u64::try_from(scheme.failback.stable_for.as_millis())
                .unwrap_or(u64::MAX),
            groups,
        }
    }

    /// Logs a new model's changes to schemes and clusters; true when the model changed.
    /// Changes of services and endpoints alone are not logged: in Kubernetes they
    /// follow every rollout.
    fn model_events(&mut self, model: &Arc<Model>, config: Option<&ConfigState>, at: &str) -> bool {
        let Some(previous) = self.model.replace(model.clone()) else {
            return false;
        };
        if Arc::ptr_eq(&previous, model) || *previous == **model {
            return false;
        }
        let changes = model_changes(&previous, model);
        if !changes.is_empty() {
            let mut message = format!("configuration applied: {}", changes.join("; "));
            if let Some(ConfigState { at: read, .. }) = config {
                message.push_str(&format!(" (read at {read})"));
            }
            self.log
                .push(at, Event::new(EventKind::ConfigApplied, message));
        }
        true
    }

    fn config_events(&mut self, config: Option<&ConfigState>, model_changed: bool, at: &str) {
        let previous = std::mem::replace(&mut self.config, config.cloned());
        let Some(config) = config else { return };
        if previous.as_ref() == Some(config) || previous.is_none() {
            return;
        }
        match config.outcome {
            ConfigOutcome::Refused => {
                let problems = config.message.as_deref().unwrap_or("invalid");
                self.log.push(
                    at,
                    Event::new(
                        EventKind::ConfigRefused,
                        format!(
                            "configuration refused; the last good one keeps serving: {problems}"
                        ),
                    ),
                );
            }
            // A valid configuration after a refused one, identical to the one in use:
            // nothing else would say that the trouble is over.
            ConfigOutcome::Applied
                if !model_changed
                    && previous.is_some_and(|p| p.outcome == ConfigOutcome::Refused) =>
            {
                self.log.push(
                    at,
                    Event::new(
                        EventKind::ConfigApplied,
                        "the configuration is valid again (the one in use is unchanged)".into(),
                    ),
                );
            }
            ConfigOutcome::Applied => {}
        }
    }

    fn health_events(&mut self, board: &HealthMap, at: &str) {
        let verdicts = checks_verdicts(board);
        for (target, state) in &verdicts {
            let Some(&before) = self.verdicts.get(target) else {
                continue;
            };
            let now = state.health;
            // Every target's first Healthy verdict is start-up, not news.
            if before == now
                || now == Health::Unknown
                || before == Health::Unknown && now == Health::Healthy
            {
                continue;
            }
            let last = state
                .last
                .as_deref()
                .map(|l| format!(" (last check: {l})"))
                .unwrap_or_default();
            let mut event = Event::new(
                EventKind::HealthChanged,
                format!(
                    "{} in {}: {before} → {now}{last}",
                    target.service, target.cluster
                ),
            );
            event.cluster = Some(target.cluster.clone());
            event.service = Some(target.service.to_string());
            event.from = Some(before);
            event.to = Some(now);
            self.log.push(at, event);
        }
        self.verdicts = verdicts
            .into_iter()
            .map(|(target, state)| (target, state.health))
            .collect();
    }
}

/// The checks' verdict on each target. A target checked under two policies (two
/// schemes with different `healthCheck`s) has two states: the latest verdict counts.
fn checks_verdicts(board: &HealthMap) -> HashMap<TargetRef, &TargetState> {
    let mut out: HashMap<TargetRef, &TargetState> = HashMap::new();
    for (spec, state) in board {
        match out.get(&spec.target) {
            Some(seen) if seen.since >= state.since => {}
            _ => {
                out.insert(spec.target.clone(), state);
            }
        }
    }
    out
}

/// Every service of every member cluster of the model (the catalogue's and the model's
/// own), with the schemes naming each.
fn service_reports(model: &Model, catalogue: Option<&Catalogue>) -> Vec<ServiceReport> {
    let mut all: BTreeMap<(&str, &ServiceName), (u16, Protocol)> = BTreeMap::new();
    for cluster in model.clusters.values() {
        for s in cluster.services.values() {
            all.insert((cluster.name.as_str(), &s.name), (s.port, s.protocol));
        }
    }
    // A catalogue's cluster without a valid MemberCluster is not a member cluster.
    for (cluster, list) in catalogue.into_iter().flatten() {
        if let Some((name, _)) = model.clusters.get_key_value(cluster) {
            for s in list {
                all.entry((name.as_str(), &s.name))
                    .or_insert((s.port, s.protocol));
            }
        }
    }
    let mut protection: HashMap<(&str, &ServiceName), Vec<Protection>> = HashMap::new();
    for scheme in &model.schemes {
        let primary = std::iter::once((&scheme.primary, Role::Primary, 0));
        let targets = scheme
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, group)| group.iter().map(move |t| (&t.target, Role::Target, i + 1)));
        for (target, role, group) in primary.chain(targets) {
            protection
                .entry((target.cluster.as_str(), &target.service))
                .or_default()
                .push(Protection {
                    scheme: scheme.id(),
                    role,
                    group,
                });
        }
    }
    all.into_iter()
        .map(|((cluster, name), (port, protocol))| ServiceReport {
            cluster: cluster.to_string(),
            service: name.to_string(),
            port,
            protocol: protocol.as_str().to_string(),
            protection: protection.remove(&(cluster, name)).unwrap_or_default(),
        })
        .collect()
}

fn target_report(
    model: &Model,
    scheme: &Scheme,
    t: &TargetView,
    since: SystemTime,
    board: &HealthMap,
) -> TargetReport {
    let state = |board: &HealthMap| {
        model
            .probe_spec(scheme, &t.target)
            .and_then(|spec| board.get(&spec).cloned())
    };
    let (basis, recovering_until) = match t.basis {
        HealthBasis::Checked { .. } => (Basis::Checked, None),
        HealthBasis::Unchecked => (Basis::Unchecked, None),
        HealthBasis::NoReadyEndpoints => (Basis::NoReadyEndpoints, None),
        // The window ends stableFor after the checks' Healthy verdict: from the board's
        // wall-clock time, so that the value is the same at every rebuild.
        HealthBasis::Recovering { .. } => (
            Basis::Recovering,
            state(board).map(|s| rfc3339_ms(s.since_wall + scheme.failback.stable_for)),
        ),
    };
    let last_check = match t.basis {
        HealthBasis::Checked { .. } if t.health != Health::Healthy => {
            state(board).and_then(|s| s.last)
        }
        _ => None,
    };
    TargetReport {
        cluster: t.target.cluster.clone(),
        service: t.target.service.to_string(),
        weight: t.weight,
        health: t.health,
        since: rfc3339_ms(since),
        basis,
        recovering_until,
        last_check,
    }
}

/// What changed in schemes and clusters, e.g. `schemes added: apps/bar`.
fn model_changes(before: &Model, after: &Model) -> Vec<String> {
    let mut out = Vec::new();
    let schemes = |m: &Model| -> HashMap<String, Scheme> {
        m.schemes.iter().map(|s| (s.id(), s.clone())).collect()
    };
    let (old, new) = (schemes(before), schemes(after));
    let mut section = |what: &str, mut names: Vec<String>| {
        if names.is_empty() {
            return;
        }
        names.sort();
        let more = names.len().saturating_sub(LISTED);
        names.truncate(LISTED);
        let mut text = format!("{what}: {}", names.join(", "));
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        out.push(text);
    };
    section(
        "schemes added",
        new.keys()
            .filter(|k| !old.contains_key(*k))
            .cloned()
            .collect(),
    );
    section(
        "schemes removed",
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect(),
    );
    section(
        "schemes changed",
        new.iter()
            .filter(|(k, s)| old.get(*k).is_some_and(|o| o != *s))
            .map(|(k, _)| k.clone())
            .collect(),
    );
    let (old, new) = (&before.clusters, &after.clusters);
    section(
        "member clusters added",
        new.keys()
            .filter(|k| !old.contains_key(*k))
            .cloned()
            .collect(),
    );
    section(
        "member clusters removed",
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect(),
    );
    section(
        "gateways changed",
        new.iter()
            .filter(|(k, c)| old.get(*k).is_some_and(|o| o.gateway != c.gateway))
            .map(|(k, c)| format!("{k} ({})", c.gateway))
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests;

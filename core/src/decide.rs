//! One build, one truth: (model, health, now) → every member cluster's table, every
//! scheme's view (active group, why, each target's health and its basis) and the next
//! moment this changes by itself (a failback damping window ending).
//!
//! [`decide`] is the only place this is computed. The controller runs it once per change
//! and shares the [`Decided`] result: the table API serves its tables, the status API,
//! Kubernetes status and Events report its views, all as of the same clock.

use crate::health::HealthMap;
use crate::model::{Model, Scheme};
use crate::tables::{published_health, scheme_doc, target_health};
use crate::views::{SchemeView, TargetView};
use detour_filter::select::{Why, select};
use detour_filter::table::wire::{SchemeDoc, TableDoc};
use detour_filter::table::{TABLE_API_VERSION, Table};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What the model and the health decide at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Every member cluster's table (unversioned: the publisher stamps versions).
    pub tables: BTreeMap<String, TableDoc>,
    /// Every scheme's view, in the model's order.
    pub views: Vec<SchemeView>,
    /// When the tables change by themselves next (a damping window ending).
    pub next_change: Option<Instant>,
}

impl Decision {
    /// The view of the scheme `namespace/name`.
    pub fn view(&self, id: &str) -> Option<&SchemeView> {
        self.views.iter().find(|v| v.id == id)
    }
}

/// Decides every table and view of `model` on `board` as of `now`.
pub fn decide(model: &Model, board: &HealthMap, now: Instant) -> Decision {
    let mut next_change: Option<Instant> = None;
    // Each cluster's table holds the schemes whose primary runs in it, in the model's
    // order: filled in one pass over the schemes (not one per cluster).
    let mut tables: BTreeMap<String, TableDoc> = model
        .clusters
        .keys()
        .map(|cluster| {
            let table = TableDoc {
                api_version: TABLE_API_VERSION.to_string(),
                cluster: cluster.clone(),
                version: String::new(),
                schemes: Vec::new(),
            };
            (cluster.clone(), table)
        })
        .collect();
    let mut views = Vec::with_capacity(model.schemes.len());
    for scheme in &model.schemes {
        let doc = scheme_doc(model, scheme, |target| {
            let effective = published_health(model, scheme, target, board, now);
            if let crate::tables::HealthBasis::Recovering { until } = effective.why {
                next_change = Some(next_change.map_or(until, |n| n.min(until)));
            }
            effective.health
        });
        views.push(view(model, scheme, &doc, board, now));
        if let Some(table) = tables.get_mut(&scheme.primary.cluster) {
            table.schemes.push(doc);
        }
    }
    for table in tables.values_mut() {
        drop_shared_names(&mut table.schemes);
    }
    Decision {
        tables,
        views,
        next_change,
    }
}

/// Leaves out of one table's schemes every alias of a primary (any name but the first,
/// detour's own) that another scheme of the table has too: Gloo Edge's discovered names
/// `NAMESPACE-NAME-PORT` can be one for two services (`a-b/c`, `a/b-c`), and a name that
/// two schemes claim identifies neither (the filter would refuse the whole table).
fn drop_shared_names(schemes: &mut [SchemeDoc]) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in schemes.iter() {
        for name in &s.envoy_clusters {
            *count.entry(name.clone()).or_default() += 1;
        }
    }
    for s in schemes.iter_mut() {
        let mut index = 0;
        s.envoy_clusters.retain(|name| {
            index += 1;
            index == 1 || count[name] < 2
        });
    }
}

/// `scheme`'s view: the group the filter's own selection code picks on the health its
/// table publishes (`doc`), and each target with the health its checks give it. The
/// doc lists the scheme's targets in the scheme's own order, so they pair by position.
fn view(
    model: &Model,
    scheme: &Scheme,
    doc: &SchemeDoc,
    board: &HealthMap,
    now: Instant,
) -> SchemeView {
    let places = doc
        .groups
        .iter()
        .enumerate()
        .flat_map(|(group, members)| members.iter().map(move |m| (group, m.weight)));
    let targets = scheme
        .targets()
        .zip(places)
        .map(|(target, (group, weight))| {
            let effective = target_health(model, scheme, target, board, now);
            TargetView {
                group,
                target: target.clone(),
                weight,
                health: effective.health,
                basis: effective.why,
            }
        })
        .collect();
    // The filter's code decides, on the table the filter would receive.
    let table = Table::compile(TableDoc {
        api_version: TABLE_API_VERSION.to_string(),
        cluster: scheme.primary.cluster.clone(),
        version: String::new(),
        schemes: vec![doc.clone()],
    });
    let decision = table.ok().and_then(|table| {
        let compiled = table.schemes.first()?;
        select(compiled, |t| t.health, None, 0).map(|d| (d.group, d.why))
    });
    // A compiled scheme always has a primary, so there is always a decision; were there
    // none, the primary is where the filter would send the request anyway.
    let (active_group, why) = decision.unwrap_or((0, Why::AllUnhealthyTryingPrimary));
    SchemeView {
        id: scheme.id(),
        active_group,
        why,
        targets,
    }
}

/// One decision as the controller shares it: what it was decided on, when, and what it
/// decided. Everything that reports routing reads this, never its own clock.
#[derive(Debug, Clone)]
pub struct Decided {
    pub model: Arc<Model>,
    /// The health it was decided on (a copy of the board at that moment).
    pub board: Arc<HealthMap>,
    pub at: Instant,
    pub wall: SystemTime,
    pub decision: Decision,
}

impl Decided {
    pub fn new(model: Arc<Model>, board: Arc<HealthMap>, at: Instant, wall: SystemTime) -> Decided {
        let decision = decide(&model, &board, at);
        Decided {
            model,
            board,
            at,
            wall,
            decision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::example_model;

    #[test]
    fn one_decision_gives_every_table_and_every_view() {
        let model = example_model();
        let decision = decide(&model, &HealthMap::new(), Instant::now());
        assert_eq!(
            decision.tables.keys().collect::<Vec<_>>(),
            model.clusters.keys().collect::<Vec<_>>()
        );
        assert_eq!(decision.views.len(), model.schemes.len());
        for (scheme, view) in model.schemes.iter().zip(&decision.views) {
            assert_eq!(view.id, scheme.id());
            // The view's targets are the scheme's, in its order, each in its group.
            let targets: Vec<_> = view.targets.iter().map(|t| &t.target).collect();
            assert_eq!(targets, scheme.targets().collect::<Vec<_>>());
            let doc = &decision.tables[&scheme.primary.cluster].schemes[0];
            let places: Vec<_> = doc
                .groups
                .iter()
                .enumerate()
                .flat_map(|(g, m)| m.iter().map(move |t| (g, t.weight)))
                .collect();
            let seen: Vec<_> = view.targets.iter().map(|t| (t.group, t.weight)).collect();
            assert_eq!(seen, places);
        }
        assert_eq!(decision.next_change, None);
        assert!(decision.view(&model.schemes[0].id()).is_some());
    }

    /// Gloo Edge's discovered name `a-b-c-8080_gloo-system` is both `a-b/c`'s and
    /// `a/b-c`'s: east's table names neither by it (else the filter refuses the table and
    /// protects nothing), and keeps every other name of both.
    #[test]
    fn a_gloo_name_two_primaries_share_names_neither() {
        // Both clusters run both services; each service is a primary in east.
        let member = |name: &str, octet: u8| {
            format!(
                r#"apiVersion: detour.dev/v1alpha1
kind: MemberCluster
metadata: {{name: {name}}}
spec:
  gateway: {{address: 127.0.{octet}.1, port: 15443}}
  services:
  - {{name: c, namespace: a-b, port: 8080, endpoints: ["127.0.{octet}.10:8080"]}}
  - {{name: b-c, namespace: a, port: 8080, endpoints: ["127.0.{octet}.11:8080"]}}
"#
            )
        };
        let scheme = |namespace: &str, name: &str| {
            format!(
                r#"apiVersion: detour.dev/v1alpha1
kind: FailoverScheme
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  primary: {{cluster: east, name: {name}, namespace: {namespace}}}
  failoverGroups:
  - priorityGroup:
    - {{cluster: west, services: [{{name: {name}, namespace: {namespace}}}]}}
"#
            )
        };
        let yaml = [
            member("east", 1),
            member("west", 2),
            scheme("a-b", "c"),
            scheme("a", "b-c"),
        ]
        .join("---\n");
        let (docs, problems) = crate::docs::load::parse_file("t.yaml", &yaml);
        assert!(problems.is_empty(), "{problems:?}");
        let model = crate::validate::build_model(&docs).unwrap();
        let decision = decide(&model, &HealthMap::new(), Instant::now());
        let east = &decision.tables["east"];
        let names: Vec<Vec<&str>> = east
            .schemes
            .iter()
            .map(|s| s.envoy_clusters.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            names,
            [
                vec![
                    "detour|east|a|b-c",
                    "outbound|8080||b-c.a.svc.cluster.local",
                    "kube-svc:a-b-c-8080_a",
                    "kube-svc:a-b-c-8080_a_a_b-c_8080",
                    "kube_a_b-c_8080"
                ],
                vec![
                    "detour|east|a-b|c",
                    "outbound|8080||c.a-b.svc.cluster.local",
                    "kube-svc:a-b-c-8080_a-b",
                    "kube-svc:a-b-c-8080_a-b_a-b_c_8080",
                    "kube_a-b_c_8080"
                ],
            ]
        );
        let table = Table::compile(east.clone()).unwrap();
        assert!(table.scheme_for("a-b-c-8080_gloo-system").is_none());
        assert_eq!(
            table.scheme_for("kube_a_b-c_8080").map(|s| s.name.as_str()),
            Some("a/b-c")
        );
    }
}

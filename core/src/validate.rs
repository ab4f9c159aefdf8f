//! Documents → [`Model`], refusing anything detour could not serve faithfully.
//!
//! Every check reports into one list, so `detour check` shows all problems at once, each
//! with its document and field path. In file mode a model is built only when the list is
//! empty ([`build_model`]): one bad edit changes nothing. In Kubernetes every object has
//! its own status, so [`build_partial`] serves every valid document and reports the rest.

use crate::docs::{
    Document, FailoverSchemeSpec, GatewaySpec, MemberClusterSpec, Object, ObjectRef, Origin,
    Problem, ProblemKind, ServiceSpec,
};
use crate::model::{
    Address, CheckKind, Cluster, DEFAULT_HEALTH_PATH, Failback, HealthCheck, Host, Model, Protocol,
    Replay, Scheme, Service, ServiceName, TargetRef, WeightedTarget, parse_host,
};
use detour_filter::duration::parse_duration;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What the operator lets a FailoverScheme ask for, beyond what the documents can say
/// themselves: a scheme is written by whoever may write in its namespace, but it steers a
/// primary's traffic, replays its requests and sends health checks through every gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Which schemes may protect a primary in another namespace than their own (none by
    /// default: a scheme protects only its own namespace's primaries).
    pub cross_namespace: Vec<CrossNamespace>,
    /// Largest `replay.maxBodyBytes`: each replayable request is buffered up to it in
    /// every Envoy it passes.
    pub max_replay_body_bytes: u64,
    /// Shortest `healthCheck.interval`: each target is checked through its cluster's
    /// gateway at this pace.
    pub min_health_check_interval: Duration,
}

/// Default of [`Policy::max_replay_body_bytes`] (1 MiB).
pub const DEFAULT_MAX_REPLAY_BODY_BYTES: u64 = 1 << 20;
/// Default of [`Policy::min_health_check_interval`].
pub const DEFAULT_MIN_HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            cross_namespace: Vec::new(),
            max_replay_body_bytes: DEFAULT_MAX_REPLAY_BODY_BYTES,
            min_health_check_interval: DEFAULT_MIN_HEALTH_CHECK_INTERVAL,
        }
    }
}

impl Policy {
    fn allows(&self, scheme_namespace: &str, primary_namespace: &str) -> bool {
        scheme_namespace == primary_namespace
            || self.cross_namespace.iter().any(|c| {
                c.scheme_namespace == scheme_namespace
                    && c.primary_namespace
                        .as_deref()
                        .is_none_or(|p| p == primary_namespace)
            })
    }
}

/// Schemes in `scheme_namespace` may protect primaries in `primary_namespace` (any
/// namespace when `None`). Written `SCHEME_NS=PRIMARY_NS` or `SCHEME_NS=*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossNamespace {
    pub scheme_namespace: String,
    pub primary_namespace: Option<String>,
}

impl CrossNamespace {
    pub fn parse(text: &str) -> Result<CrossNamespace, String> {
        let (from, to) = text.split_once('=').ok_or_else(|| {
            format!("{text:?}: expected SCHEME_NAMESPACE=PRIMARY_NAMESPACE (or =* for any)")
        })?;
        let namespace = |ns: &str| dns_name(ns, 63, false).map_err(|e| format!("{text:?}: {e}"));
        namespace(from)?;
        let primary_namespace = match to {
            "*" => None,
            to => {
                namespace(to)?;
                Some(to.to_string())
            }
        };
        Ok(CrossNamespace {
            scheme_namespace: from.to_string(),
            primary_namespace,
        })
    }
}

impl std::fmt::Display for CrossNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = self.primary_namespace.as_deref().unwrap_or("*");
        write!(f, "{}={to}", self.scheme_namespace)
    }
}

/// How the message of a [`ProblemKind::UnknownService`] problem begins.
const UNKNOWN_SERVICE: &str = "unknown service";

/// Where the documents come from, which changes what a MemberCluster's services mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Files list each service with its endpoints; a service without any is a mistake.
    #[default]
    Files,
    /// Services are discovered from the member cluster: one with no ready endpoint is
    /// real (scaled to zero, all pods failing) and makes its targets Unhealthy.
    Kubernetes,
}

/// Validates every document together and builds the model, or says everything wrong
/// (under the default [`Policy`]).
pub fn build_model(docs: &[Document]) -> Result<Model, Vec<Problem>> {
    build_model_in(docs, Mode::Files, &Policy::default())
}

/// [`build_model`] for documents of `mode`, under `policy`.
pub fn build_model_in(
    docs: &[Document],
    mode: Mode,
    policy: &Policy,
) -> Result<Model, Vec<Problem>> {
    let (model, problems) = validate(docs, mode, policy, false);
    if problems.is_empty() {
        Ok(model)
    } else {
        Err(problems)
    }
}

/// The model of every valid document, and the problems of the others. A scheme naming a
/// member cluster whose own document is invalid is left out too, with a problem saying
/// so (in [`build_model`] the cluster's problem alone is enough).
pub fn build_partial(docs: &[Document], mode: Mode, policy: &Policy) -> (Model, Vec<Problem>) {
    validate(docs, mode, policy, true)
}

fn validate(
    docs: &[Document],
    mode: Mode,
    policy: &Policy,
    partial: bool,
) -> (Model, Vec<Problem>) {
    let mut v = Validator {
        mode,
        policy: policy.clone(),
        ..Validator::default()
    };
    for doc in docs {
        if let Object::MemberCluster { name, spec } = &doc.object {
            v.member_cluster(doc, name, spec);
        }
    }
    let mut schemes = Vec::new();
    for doc in docs {
        if let Object::FailoverScheme {
            namespace,
            name,
            spec,
        } = &doc.object
            && let Some(s) = v.scheme(doc, namespace, name, spec)
        {
            schemes.push(s);
        }
    }
    schemes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut problems = v.problems;
    if partial {
        problems.extend(v.blocked);
    }
    (
        Model {
            clusters: v.clusters,
            schemes,
        },
        problems,
    )
}

#[derive(Default)]
struct Validator {
    mode: Mode,
    policy: Policy,
    problems: Vec<Problem>,
    /// Schemes left out only because a member cluster they name is invalid.
    blocked: Vec<Problem>,
    clusters: BTreeMap<String, Cluster>,
    /// Where each cluster, gateway, scheme and primary was first defined.
    cluster_docs: HashMap<String, Origin>,
    gateways: HashMap<Address, String>,
    scheme_docs: HashMap<(String, String), Origin>,
    primaries: HashMap<TargetRef, String>,
}

/// Reports problems of one document.
struct At<'a> {
    doc: &'a Document,
    object: ObjectRef,
}

impl At<'_> {
    fn problem(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        self.problem_of(ProblemKind::Invalid, path, message)
    }

    fn problem_of(
        &self,
        kind: ProblemKind,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            kind,
            origin: self.doc.origin.clone(),
            object: Some(self.object.clone()),
            path: Some(path.into()),
            message: message.into(),
        }
    }
}

impl Validator {
    fn report(&mut self, at: &At, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(at.problem(path, message));
    }

    fn member_cluster(&mut self, doc: &Document, name: &str, spec: &MemberClusterSpec) {
        let at = At {
            doc,
            object: doc.object_ref(),
        };
        let before = self.problems.len();
        if let Err(e) = dns_name(name, 253, true) {
            self.report(&at, "metadata.name", e);
        }
        if let Some(first) = self.cluster_docs.get(name) {
            let msg = format!("MemberCluster {name:?} is already defined in {first}");
            self.report(&at, "metadata.name", msg);
            return;
        }
        self.cluster_docs
            .insert(name.to_string(), doc.origin.clone());

        let gateways = self.gateways(&at, name, &spec.gateway);

        let mut services = BTreeMap::new();
        for (i, s) in spec.services.iter().enumerate() {
            let path = format!("spec.services[{i}]");
            if let Some(service) = self.service(&at, &path, s) {
                if services.contains_key(&service.name) {
                    let msg = format!("service {} is listed twice", service.name);
                    self.report(&at, path, msg);
                } else {
                    services.insert(service.name.clone(), service);
                }
            }
        }
        if self.problems.len() == before
            && let Some((gateway, more_gateways)) = gateways
        {
            self.clusters.insert(
                name.to_string(),
                Cluster {
                    name: name.to_string(),
                    gateway,
                    more_gateways,
                    services,
                },
            );
        }
    }

    /// The gateway's instances (`address`, or `addresses`): the first, and the others.
    fn gateways(
        &mut self,
        at: &At,
        name: &str,
        spec: &GatewaySpec,
    ) -> Option<(Address, Vec<Address>)> {
        let listed: Vec<(String, &str)> = match (&spec.address, spec.addresses.as_slice()) {
            (Some(a), []) => vec![("spec.gateway.address".to_string(), a.as_str())],
            (None, many) if !many.is_empty() => many
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("spec.gateway.addresses[{i}]"), a.as_str()))
                .collect(),
            (None, _) => {
                self.report(at, "spec.gateway", "needs `address` (or `addresses`)");
                return None;
            }
            (Some(_), _) => {
                self.report(
                    at,
                    "spec.gateway",
                    "`address` and `addresses` are two ways to say the same: give one",
                );
                return None;
            }
        };
        let mut found = Vec::new();
        for (path, text) in listed {
            let address = match reachable_host(text).and_then(|h| Address::new(h, spec.port)) {
                Ok(a) => a,
                Err(e) => {
                    let path = if spec.port == 0 {
                        "spec.gateway.port".to_string()
                    } else {
                        path
                    };
                    self.report(at, path, e);
                    continue;
                }
            };
            if let Some(other) = self.gateways.get(&address) {
                let msg = if other == name {
                    format!("{address} is listed twice")
                } else {
                    format!(
                        "{address} is already the gateway of MemberCluster {other:?}; each cluster needs its own"
                    )
                };
                self.report(
                    at,
                    if other == name {
                        path
                    } else {
                        "spec.gateway".into()
                    },
                    msg,
                );
                continue;
            }
            self.gateways.insert(address.clone(), name.to_string());
            found.push(address);
        }
        let mut found = found.into_iter();
        let first = found.next()?;
        Some((first, found.collect()))
    }

    fn service(&mut self, at: &At, path: &str, s: &ServiceSpec) -> Option<Service> {
        let before = self.problems.len();
        if let Err(e) = dns_name(&s.name, 63, false) {
            self.report(at, format!("{path}.name"), e);
        }
        if let Err(e) = dns_name(&s.namespace, 63, false) {
            self.report(at, format!("{path}.namespace"), e);
        }
        if s.port == 0 {
            self.report(at, format!("{path}.port"), "must be from 1 to 65535");
        }
        if s.endpoints.is_empty() && self.mode == Mode::Files {
            self.report(
                at,
                format!("{path}.endpoints"),
                "at least one HOST:PORT is required in file mode",
            );
        }
        let protocol = match s.protocol.as_deref().map(|p| (p, Protocol::parse(p))) {
            None => Protocol::default(),
            Some((_, Some(p))) => p,
            Some((text, None)) => {
                let known: Vec<&str> = Protocol::ALL.iter().map(Protocol::as_str).collect();
                self.report(
                    at,
                    format!("{path}.protocol"),
                    format!(
                        "{text:?} is not a protocol detour knows ({})",
                        known.join(", ")
                    ),
                );
                Protocol::default()
            }
        };
        let mut endpoints: Vec<Address> = Vec::new();
        for (j, e) in s.endpoints.iter().enumerate() {
            let epath = format!("{path}.endpoints[{j}]");
            match Address::parse(e).and_then(|a| connectable(&a.host).map(|()| a)) {
                Ok(a) if endpoints.contains(&a) => {
                    self.report(at, epath, format!("{a} is listed twice"));
                }
                Ok(a) => endpoints.push(a),
                Err(msg) => self.report(at, epath, msg),
            }
        }
        (self.problems.len() == before).then(|| Service {
            name: ServiceName::new(&s.namespace, &s.name),
            port: s.port,
            endpoints,
            protocol,
        })
    }

    fn scheme(
        &mut self,
        doc: &Document,
        namespace: &str,
        name: &str,
        spec: &FailoverSchemeSpec,
    ) -> Option<Scheme> {
        let at = At {
            doc,
            object: doc.object_ref(),
        };
        let before = self.problems.len();
        let blocked_before = self.blocked.len();
        if let Err(e) = dns_name(namespace, 63, false) {
            self.report(&at, "metadata.namespace", e);
        }
        if let Err(e) = dns_name(name, 253, true) {
            self.report(&at, "metadata.name", e);
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(first) = self.scheme_docs.get(&key) {
            let msg = format!("FailoverScheme {namespace}/{name} is already defined in {first}");
            self.report(&at, "metadata.name", msg);
            return None;
        }
        self.scheme_docs.insert(key, doc.origin.clone());

        let p = &spec.primary;
        let primary = TargetRef {
            cluster: p.cluster.clone(),
            service: ServiceName::new(&p.namespace, &p.name),
        };
        if !self.policy.allows(namespace, &p.namespace) {
            let msg = format!(
                "the primary is in namespace {:?}: a FailoverScheme protects only a primary in its own namespace ({namespace:?}); \
                 write the scheme in {:?}, or start the controller with --allow-cross-namespace {namespace}={}",
                p.namespace, p.namespace, p.namespace
            );
            self.report(&at, "spec.primary.namespace", msg);
        }
        // Reported here when wrong; the targets are judged either way.
        let _ = self.cluster_exists(&at, "spec.primary.cluster", &primary.cluster)
            && self.service_exists(&at, "spec.primary", &primary);
        if let Some(other) = self.primaries.get(&primary) {
            let msg =
                format!("{primary} is already the primary of {other}; one primary has one scheme");
            self.report(&at, "spec.primary", msg);
        } else {
            self.primaries
                .insert(primary.clone(), format!("{} ({})", at.object, doc.origin));
        }

        let groups = self.groups(&at, &primary, spec);
        let health_check = self.health_check(&at, spec);
        let failback = self.failback(&at, spec);
        let replay = self.replay(&at, spec);
        if self.problems.len() != before || self.blocked.len() != blocked_before {
            return None;
        }
        Some(Scheme {
            namespace: namespace.to_string(),
            name: name.to_string(),
            primary,
            groups,
            health_check: health_check?,
            failback: failback?,
            replay: replay?,
        })
    }

    /// Reports an unknown cluster (at `cluster_path`); true when the cluster is usable.
    fn cluster_exists(&mut self, at: &At, cluster_path: &str, cluster: &str) -> bool {
        if self.clusters.contains_key(cluster) {
            return true;
        }
        // A cluster whose own document is invalid is known, and already reported.
        if self.cluster_docs.contains_key(cluster) {
            let msg = format!("MemberCluster {cluster:?} is invalid (see its own problems)");
            self.blocked.push(at.problem(cluster_path, msg));
        } else {
            let mut known: Vec<&str> = self.cluster_docs.keys().map(String::as_str).collect();
            known.sort_unstable();
            let msg = format!(
                "unknown cluster {cluster:?} (MemberClusters: {})",
                list(known)
            );
            self.report(at, cluster_path, msg);
        }
        false
    }

    /// Reports a service its (known) cluster does not declare, at `path`.
    fn service_exists(&mut self, at: &At, path: &str, t: &TargetRef) -> bool {
        let Some(cluster) = self.clusters.get(&t.cluster) else {
            return false;
        };
        if cluster.services.contains_key(&t.service) {
            return true;
        }
        let msg = match self.mode {
            Mode::Files => {
                let declared: Vec<String> =
                    cluster.services.keys().map(|s| s.to_string()).collect();
                format!(
                    "{UNKNOWN_SERVICE} {} in cluster {:?} (its MemberCluster declares: {})",
                    t.service,
                    t.cluster,
                    list(declared)
                )
            }
            Mode::Kubernetes => format!(
                "{UNKNOWN_SERVICE} {} in cluster {:?}: that cluster has no such Service",
                t.service, t.cluster
            ),
        };
        self.problems
            .push(at.problem_of(ProblemKind::UnknownService, path, msg));
        false
    }

    fn groups(
        &mut self,
        at: &At,
        primary: &TargetRef,
        spec: &FailoverSchemeSpec,
    ) -> Vec<Vec<WeightedTarget>> {
        if spec.failover_groups.is_empty() {
            self.report(
                at,
                "spec.failoverGroups",
                "at least one priority group is required (a scheme without one fails over nowhere)",
            );
        }
        let mut seen: HashMap<TargetRef, String> = HashMap::new();
        let mut groups = Vec::new();
        for (i, g) in spec.failover_groups.iter().enumerate() {
            let gpath = format!("spec.failoverGroups[{i}].priorityGroup");
            if g.priority_group.is_empty() {
                self.report(at, &gpath, "a priority group needs at least one target");
            }
            let mut group = Vec::new();
            for (j, t) in g.priority_group.iter().enumerate() {
                let tpath = format!("{gpath}[{j}]");
                let weight = t.weight.unwrap_or(1);
                if weight == 0 {
                    self.report(
                        at,
                        format!("{tpath}.weight"),
                        "must be at least 1 (remove the target to give it no traffic)",
                    );
                }
                let cluster_ok = self.cluster_exists(at, &format!("{tpath}.cluster"), &t.cluster);
                if t.services.is_empty() {
                    self.report(
                        at,
                        format!("{tpath}.services"),
                        "at least one service is required",
                    );
                }
                for (k, s) in t.services.iter().enumerate() {
                    let spath = format!("{tpath}.services[{k}]");
                    let target = TargetRef {
                        cluster: t.cluster.clone(),
                        service: ServiceName::new(&s.namespace, &s.name),
                    };
                    if target == *primary {
                        self.report(
                            at,
                            spath,
                            format!("fails over to itself: {target} is the primary"),
                        );
                        continue;
                    }
                    // Another service is a target only in another cluster: the ingress
                    // reaches a local service with the client's own authority, while a
                    // remote one gets its name from the gateway (`x-detour-target`).
                    if target.cluster == primary.cluster && target.service != primary.service {
                        let msg = format!(
                            "{target}: a failover target of another service than the primary must be in another cluster than the primary's ({})",
                            primary.cluster
                        );
                        self.report(at, spath, msg);
                        continue;
                    }
                    if !cluster_ok || !self.service_exists(at, &spath, &target) {
                        continue;
                    }
                    if let Some(first) = seen.get(&target) {
                        let msg = format!("{target} is already a target at {first}");
                        self.report(at, spath, msg);
                        continue;
                    }
                    seen.insert(target.clone(), spath);
                    group.push(WeightedTarget { target, weight });
                }
            }
            groups.push(group);
        }
        groups
    }

    fn health_check(&mut self, at: &At, spec: &FailoverSchemeSpec) -> Option<HealthCheck> {
        let default = HealthCheck::default();
        let Some(h) = &spec.health_check else {
            return Some(default);
        };
        let before = self.problems.len();
        let kind = match (&h.path, &h.grpc) {
            (Some(_), Some(_)) => {
                self.report(
                    at,
                    "spec.healthCheck.grpc",
                    "a check is either an HTTP GET of `path` or a gRPC `grpc` check, not both: remove one",
                );
                None
            }
            (_, Some(grpc)) => Some(CheckKind::Grpc {
                service_name: grpc.service_name.clone().unwrap_or_default(),
            }),
            (path, None) => {
                let path = path.as_deref().unwrap_or(DEFAULT_HEALTH_PATH);
                if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
                    self.report(
                        at,
                        "spec.healthCheck.path",
                        format!("{path:?} must start with '/' and hold no spaces"),
                    );
                }
                Some(CheckKind::Http {
                    path: path.to_string(),
                })
            }
        };
        let interval = self.duration(
            at,
            "spec.healthCheck.interval",
            h.interval.as_deref(),
            default.interval,
        );
        let timeout = self.duration(
            at,
            "spec.healthCheck.timeout",
            h.timeout.as_deref(),
            default.timeout,
        );
        let min = self.policy.min_health_check_interval;
        if let Some(i) = interval
            && i < min
        {
            let msg = format!(
                "{i:?} is shorter than the controller allows: must be at least {min:?} (--min-health-check-interval)"
            );
            self.report(at, "spec.healthCheck.interval", msg);
        }
        if let Some(t) = timeout
            && t.is_zero()
        {
            self.report(at, "spec.healthCheck.timeout", "must be positive");
        }
        if let (Some(i), Some(t)) = (interval, timeout)
            && t > i
        {
            self.report(
                at,
                "spec.healthCheck.timeout",
                "must not be longer than the interval (checks of one target never overlap)",
            );
        }
        let unhealthy = h.unhealthy_threshold.unwrap_or(default.unhealthy_threshold);
        let healthy = h.healthy_threshold.unwrap_or(default.healthy_threshold);
        for (field, value) in [
            ("unhealthyThreshold", unhealthy),
            ("healthyThreshold", healthy),
        ] {
            if value == 0 {
                self.report(
                    at,
                    format!("spec.healthCheck.{field}"),
                    "must be at least 1",
                );
            }
        }
        if self.problems.len() != before {
            return None;
        }
        Some(HealthCheck {
            kind: kind?,
            interval: interval?,
            timeout: timeout?,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        })
    }

    fn failback(&mut self, at: &At, spec: &FailoverSchemeSpec) -> Option<Failback> {
        let default = Failback::default();
        let text = spec.failback.as_ref().and_then(|f| f.stable_for.as_deref());
        let stable_for = self.duration(at, "spec.failback.stableFor", text, default.stable_for)?;
        Some(Failback { stable_for })
    }

    fn replay(&mut self, at: &At, spec: &FailoverSchemeSpec) -> Option<Replay> {
        let default = Replay::default();
        let Some(r) = &spec.replay else {
            return Some(default);
        };
        let mut ok = true;
        let mut methods: Vec<String> = Vec::new();
        for (i, m) in r
            .methods
            .as_ref()
            .unwrap_or(&default.methods)
            .iter()
            .enumerate()
        {
            let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
            if !valid {
                self.report(
                    at,
                    format!("spec.replay.methods[{i}]"),
                    format!("{m:?} is not an HTTP method"),
                );
                ok = false;
                continue;
            }
            let m = m.to_ascii_uppercase();
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        let per_try_timeout = match r.per_try_timeout.as_deref() {
            None => None,
            Some(text) => {
                let timeout =
                    self.duration(at, "spec.replay.perTryTimeout", Some(text), Duration::ZERO)?;
                if timeout.is_zero() {
                    self.report(
                        at,
                        "spec.replay.perTryTimeout",
                        "must be positive".to_string(),
                    );
                    return None;
                }
                Some(timeout)
            }
        };
        let max_body_bytes = r.max_body_bytes.unwrap_or(default.max_body_bytes);
        let max = self.policy.max_replay_body_bytes;
        if max_body_bytes > max {
            let msg = format!(
                "{max_body_bytes} is over the controller's limit of {max} bytes (--max-replay-body-bytes): \
                 a replayable request is buffered up to it in every Envoy"
            );
            self.report(at, "spec.replay.maxBodyBytes", msg);
            ok = false;
        }
        ok.then_some(Replay {
            methods,
            max_body_bytes,
            per_try_timeout,
        })
    }

    fn duration(
        &mut self,
        at: &At,
        path: &str,
        text: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        match text.map(parse_duration) {
            None => Some(default),
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                self.report(at, path, e.to_string());
                None
            }
        }
    }
}

/// A host other clusters (or this cluster's Envoy) can connect to.
fn reachable_host(text: &str) -> Result<Host, String> {
    let host = parse_host(text)?;
    connectable(&host)?;
    Ok(host)
}

/// Refuses `0.0.0.0` and `::`: addresses to listen on, not to connect to.
fn connectable(host: &Host) -> Result<(), String> {
    match host {
        Host::Ip(ip) if ip.is_unspecified() => Err(format!(
            "{ip} is a listening address, not one that can be connected to"
        )),
        _ => Ok(()),
    }
}

/// An RFC 1123 label (`dots = false`) or subdomain (`dots = true`), as Kubernetes names
/// are: lower-case letters, digits and '-', starting and ending alphanumeric. detour
/// builds Envoy cluster names (`detour|C|NS|NAME`) and host names from them.
pub fn dns_name(name: &str, max: usize, dots: bool) -> Result<(), String> {
    let what = if dots { "DNS subdomain" } else { "DNS label" };
    let parts_ok = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    };
    let ok = !name.is_empty()
        && name.len() <= max
        && if dots {
            name.split('.').all(parts_ok)
        } else {
            parts_ok(name)
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: a {what} of at most {max} characters, lower-case letters, digits and '-'"
        ))
    }
}

fn list<S: AsRef<str>>(items: Vec<S>) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::load::parse_file;
    use crate::testing::{EXAMPLE, example_model};

    /// Problems of the example with `from` replaced by `to` (`from` must occur).
    fn problems(from: &str, to: &str) -> Vec<String> {
        assert!(EXAMPLE.contains(from), "{from:?} is not in the example");
        let text = EXAMPLE.replacen(from, to, 1);
        problems_of(&text)
    }

    fn problems_of(text: &str) -> Vec<String> {
        let (docs, parse) = parse_file("c.yaml", text);
        assert!(parse.is_empty(), "{parse:?}");
        match build_model(&docs) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_one(problems: &[String], expected: &str) {
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains(expected),
            "{problems:#?}\nwanted: {expected}"
        );
    }

    const FOO: &str = "c.yaml: document 4 (FailoverScheme apps/foo): ";

    #[test]
    fn the_example_is_valid_and_complete() {
        let (docs, _) = parse_file("c.yaml", EXAMPLE);
        let m = build_model(&docs).unwrap();
        let s = &m.schemes[0];
        assert_eq!(s.id(), "apps/foo");
        assert_eq!(s.groups.len(), 2);
        assert_eq!(s.groups[0][0].target.cluster, "west");
        assert_eq!(s.health_check, HealthCheck::default());
        assert_eq!(s.failback, Failback::default());
        assert_eq!(s.replay, Replay::default());
        assert_eq!(m.clusters["west"].gateway.to_string(), "127.0.2.1:15443");
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let text = EXAMPLE.replace(
            "  healthCheck: {path: /healthz, interval: 1s, timeout: 500ms,\n                unhealthyThreshold: 2, healthyThreshold: 2}\n  failback: {stableFor: 10s}                         # hysteresis before returning\n  replay: {methods: [GET, HEAD, OPTIONS, PUT, DELETE], maxBodyBytes: 65536}\n",
            "  healthCheck: {interval: 100ms, timeout: 50ms}\n",
        );
        let (docs, _) = parse_file("c.yaml", &text);
        let s = build_model(&docs).unwrap().schemes.remove(0);
        assert_eq!(s.health_check.interval, Duration::from_millis(100));
        assert_eq!(
            s.health_check.kind,
            CheckKind::Http {
                path: "/healthz".into()
            }
        );
        assert_eq!(s.failback.stable_for, Duration::from_secs(10));
        assert_eq!(s.replay.methods.len(), 5);
    }

    #[test]
    fn protocols_default_to_http_and_grpc_checks_are_read() {
        let m = example_model();
        assert_eq!(
            m.clusters["west"].services[&ServiceName::new("apps", "foo")].protocol,
            Protocol::Http
        );
        let text = EXAMPLE
            .replacen(
                "port: 8080, endpoints",
                "port: 8080, protocol: grpc, endpoints",
                1,
            )
            .replacen(
                "port: 8080, endpoints: [\"127.0.2.10",
                "port: 8080, protocol: http2, endpoints: [\"127.0.2.10",
                1,
            )
            .replacen("{path: /healthz,", "{grpc: {serviceName: foo.v1.Foo},", 1);
        let (docs, problems) = parse_file("c.yaml", &text);
        assert!(problems.is_empty(), "{problems:?}");
        let m = build_model(&docs).unwrap();
        let foo = ServiceName::new("apps", "foo");
        assert_eq!(m.clusters["east"].services[&foo].protocol, Protocol::Grpc);
        assert_eq!(m.clusters["west"].services[&foo].protocol, Protocol::Http2);
        assert_eq!(
            m.schemes[0].health_check.kind,
            CheckKind::Grpc {
                service_name: "foo.v1.Foo".into()
            }
        );
        // `grpc: {}` checks the server as a whole.
        let text = EXAMPLE.replacen("{path: /healthz,", "{grpc: {},", 1);
        let (docs, _) = parse_file("c.yaml", &text);
        assert_eq!(
            build_model(&docs).unwrap().schemes[0].health_check.kind,
            CheckKind::Grpc {
                service_name: String::new()
            }
        );
    }

    #[test]
    fn an_unknown_protocol_is_one_problem_at_its_field() {
        assert_one(
            &problems(
                "port: 8080, endpoints",
                "port: 8080, protocol: h2c, endpoints",
            ),
            "c.yaml: document 1 (MemberCluster east): spec.services[0].protocol: \"h2c\" is not a protocol detour knows (http, http2, grpc)",
        );
    }

    #[test]
    fn a_check_is_http_or_grpc_not_both() {
        assert_one(
            &problems(
                "{path: /healthz,",
                "{path: /healthz, grpc: {serviceName: \"\"},",
            ),
            &format!(
                "{FOO}spec.healthCheck.grpc: a check is either an HTTP GET of `path` or a gRPC `grpc` check, not both"
            ),
        );
    }

    #[test]
    fn unknown_cluster() {
        assert_one(
            &problems(
                "- {cluster: west, services",
                "- {cluster: nowhere, services",
            ),
            &format!(
                "{FOO}spec.failoverGroups[0].priorityGroup[0].cluster: unknown cluster \"nowhere\" (MemberClusters: east, south, west)"
            ),
        );
        assert_one(
            &problems("primary: {cluster: east", "primary: {cluster: nowhere"),
            &format!("{FOO}spec.primary.cluster: unknown cluster \"nowhere\""),
        );
    }

    #[test]
    fn unknown_service() {
        let text = EXAMPLE.replacen(
            "  - {name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.3.10:8080\"]}",
            "  - {name: bar, namespace: apps, port: 8080, endpoints: [\"127.0.3.10:8080\"]}",
            1,
        );
        assert_one(
            &problems_of(&text),
            &format!(
                "{FOO}spec.failoverGroups[1].priorityGroup[0].services[0]: unknown service apps/foo in cluster \"south\" (its MemberCluster declares: apps/bar)"
            ),
        );
        assert_one(
            &problems(
                "primary: {cluster: east, name: foo",
                "primary: {cluster: east, name: nope",
            ),
            &format!("{FOO}spec.primary: unknown service apps/nope in cluster \"east\""),
        );
    }

    #[test]
    fn problems_carry_their_kind_and_object() {
        let (docs, _) = parse_file(
            "c.yaml",
            &EXAMPLE.replacen(
                "primary: {cluster: east, name: foo",
                "primary: {cluster: east, name: nope",
                1,
            ),
        );
        let problems = build_model(&docs).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, ProblemKind::UnknownService);
        assert_eq!(
            problems[0]
                .object
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("FailoverScheme apps/foo")
        );
        assert_eq!(problems[0].path.as_deref(), Some("spec.primary"));
        let (docs, _) = parse_file("c.yaml", &EXAMPLE.replacen("port: 15443", "port: 0", 1));
        let problems = build_model(&docs).unwrap_err();
        assert!(
            problems.iter().all(|p| p.kind == ProblemKind::Invalid),
            "{problems:?}"
        );
    }

    #[test]
    fn a_scheme_that_fails_over_to_itself() {
        assert_one(
            &problems("- {cluster: west, services", "- {cluster: east, services"),
            &format!(
                "{FOO}spec.failoverGroups[0].priorityGroup[0].services[0]: fails over to itself: apps/foo in cluster east is the primary"
            ),
        );
    }

    #[test]
    fn another_service_in_another_cluster_is_a_target() {
        let text = EXAMPLE
            .replacen(
                "{name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.2.10:8080\"]}",
                "{name: green, namespace: web, port: 8080, endpoints: [\"127.0.2.10:8080\"]}",
                1,
            )
            .replacen(
                "{cluster: west, services: [{name: foo, namespace: apps",
                "{cluster: west, services: [{name: green, namespace: web",
                1,
            );
        assert_ne!(text, EXAMPLE);
        assert_eq!(problems_of(&text), Vec::<String>::new());
    }

    #[test]
    fn another_service_in_the_primarys_cluster_is_refused() {
        let text = EXAMPLE.replacen(
            "{name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.1.10:8080\"]}",
            "{name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.1.10:8080\"]}\n  - {name: green, namespace: web, port: 8080, endpoints: [\"127.0.1.11:8080\"]}",
            1,
        );
        let text = text.replacen(
            "{cluster: west, services: [{name: foo, namespace: apps",
            "{cluster: east, services: [{name: green, namespace: web",
            1,
        );
        assert_one(
            &problems_of(&text),
            "services[0]: web/green in cluster east: a failover target of another service than the primary must be in another cluster than the primary's (east)",
        );
    }

    #[test]
    fn two_schemes_for_one_primary() {
        let scheme = &EXAMPLE[EXAMPLE
            .find("apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme")
            .unwrap()..];
        let text = format!(
            "{EXAMPLE}---\n{}",
            scheme.replace(
                "{name: foo, namespace: apps}\nspec",
                "{name: foo-too, namespace: apps}\nspec"
            )
        );
        assert_one(
            &problems_of(&text),
            "c.yaml: document 5 (FailoverScheme apps/foo-too): spec.primary: apps/foo in cluster east is already the primary of FailoverScheme apps/foo (c.yaml: document 4)",
        );
        // The same name twice is a duplicate document instead.
        let text = format!("{EXAMPLE}---\n{scheme}");
        assert_one(
            &problems_of(&text),
            "document 5 (FailoverScheme apps/foo): metadata.name: FailoverScheme apps/foo is already defined in c.yaml: document 4",
        );
    }

    #[test]
    fn bad_durations_and_numbers() {
        assert_one(
            &problems("interval: 1s", "interval: 1 sec"),
            &format!("{FOO}spec.healthCheck.interval: invalid duration \"1 sec\""),
        );
        assert_one(
            &problems("stableFor: 10s", "stableFor: soon"),
            &format!("{FOO}spec.failback.stableFor: invalid duration \"soon\""),
        );
        assert_one(
            &problems("timeout: 500ms", "timeout: 2s"),
            "spec.healthCheck.timeout: must not be longer than the interval",
        );
        assert_one(
            &problems(
                "interval: 1s, timeout: 500ms",
                "interval: 1ms, timeout: 1ms",
            ),
            "spec.healthCheck.interval: 1ms is shorter than the controller allows: must be at least 100ms (--min-health-check-interval)",
        );
        assert_one(
            &problems("unhealthyThreshold: 2", "unhealthyThreshold: 0"),
            "spec.healthCheck.unhealthyThreshold: must be at least 1",
        );
        assert_one(
            &problems("weight: 1", "weight: 0"),
            "spec.failoverGroups[0].priorityGroup[0].weight: must be at least 1",
        );
        assert_one(
            &problems("path: /healthz", "path: healthz"),
            "spec.healthCheck.path: \"healthz\" must start with '/'",
        );
        assert_one(
            &problems("methods: [GET,", "methods: [\"GET /\","),
            "spec.replay.methods[0]: \"GET /\" is not an HTTP method",
        );
    }

    /// The example's scheme, with its metadata's namespace `namespace`, validated under
    /// `policy`.
    fn scheme_in(namespace: &str, policy: &Policy) -> Vec<String> {
        let text = EXAMPLE.replacen(
            "{name: foo, namespace: apps}\nspec",
            &format!("{{name: foo, namespace: {namespace}}}\nspec"),
            1,
        );
        assert!(text.contains(&format!("metadata: {{name: foo, namespace: {namespace}}}")));
        let (docs, parse) = parse_file("c.yaml", &text);
        assert!(parse.is_empty(), "{parse:?}");
        match build_model_in(&docs, Mode::Kubernetes, policy) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_scheme_protects_only_a_primary_of_its_own_namespace_unless_allowed() {
        let strict = Policy::default();
        assert_eq!(scheme_in("apps", &strict), Vec::<String>::new());
        assert_one(
            &scheme_in("team-b", &strict),
            "document 4 (FailoverScheme team-b/foo): spec.primary.namespace: the primary is in namespace \"apps\": a FailoverScheme protects only a primary in its own namespace (\"team-b\"); write the scheme in \"apps\", or start the controller with --allow-cross-namespace team-b=apps",
        );
        let allow = |entries: &[&str]| Policy {
            cross_namespace: entries
                .iter()
                .map(|e| CrossNamespace::parse(e).unwrap())
                .collect(),
            ..Policy::default()
        };
        assert!(scheme_in("team-b", &allow(&["team-b=apps"])).is_empty());
        assert!(scheme_in("team-b", &allow(&["team-b=*"])).is_empty());
        // An entry for another namespace, or towards another one, allows nothing here.
        assert_eq!(scheme_in("team-b", &allow(&["team-c=*"])).len(), 1);
        assert_eq!(scheme_in("team-b", &allow(&["team-b=web"])).len(), 1);
    }

    #[test]
    fn allow_list_entries_are_read_and_written_alike() {
        for text in ["platform=*", "team-b=apps"] {
            assert_eq!(CrossNamespace::parse(text).unwrap().to_string(), text);
        }
        for bad in ["platform", "Team=apps", "team=", "=apps"] {
            assert!(CrossNamespace::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn replay_bodies_and_check_intervals_are_bounded_by_the_controller() {
        assert_one(
            &problems("maxBodyBytes: 65536", "maxBodyBytes: 1048577"),
            &format!(
                "{FOO}spec.replay.maxBodyBytes: 1048577 is over the controller's limit of 1048576 bytes (--max-replay-body-bytes)"
            ),
        );
        assert!(problems("maxBodyBytes: 65536", "maxBodyBytes: 1048576").is_empty());
        assert!(
            problems(
                "interval: 1s, timeout: 500ms",
                "interval: 100ms, timeout: 50ms"
            )
            .is_empty()
        );
        // The controller's own bounds, looser or tighter.
        let (docs, _) = parse_file(
            "c.yaml",
            &EXAMPLE.replacen(
                "interval: 1s, timeout: 500ms",
                "interval: 20ms, timeout: 20ms",
                1,
            ),
        );
        let loose = Policy {
            min_health_check_interval: Duration::from_millis(10),
            ..Policy::default()
        };
        assert!(build_model_in(&docs, Mode::Files, &loose).is_ok());
        let tight = Policy {
            max_replay_body_bytes: 1024,
            ..loose
        };
        let refused = build_model_in(&docs, Mode::Files, &tight).unwrap_err();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].path.as_deref(), Some("spec.replay.maxBodyBytes"));
    }

    #[test]
    fn empty_groups() {
        let text = EXAMPLE.replace(
            "  - priorityGroup:\n    - {cluster: south, services: [{name: foo, namespace: apps}]}\n",
            "  - priorityGroup: []\n",
        );
        assert_one(
            &problems_of(&text),
            "spec.failoverGroups[1].priorityGroup: a priority group needs at least one target",
        );
        assert_one(
            &problems(
                "services: [{name: foo, namespace: apps}], weight",
                "services: [], weight",
            ),
            "spec.failoverGroups[0].priorityGroup[0].services: at least one service is required",
        );
        let start = EXAMPLE.find("  failoverGroups:").unwrap();
        let end = EXAMPLE.find("  healthCheck:").unwrap();
        let text = format!(
            "{}  failoverGroups: []\n{}",
            &EXAMPLE[..start],
            &EXAMPLE[end..]
        );
        assert_one(
            &problems_of(&text),
            "spec.failoverGroups: at least one priority group is required",
        );
    }

    #[test]
    fn member_cluster_problems() {
        assert_one(
            &problems("address: 127.0.2.1", "address: 127.0.2.1.7"),
            "c.yaml: document 2 (MemberCluster west): spec.gateway.address: \"127.0.2.1.7\" is neither an IP address nor a DNS name",
        );
        assert_one(
            &problems("address: 127.0.2.1", "address: 0.0.0.0"),
            "spec.gateway.address: 0.0.0.0 is a listening address",
        );
        assert_one(
            &problems(
                "{address: 127.0.2.1, port: 15443}",
                "{address: 127.0.2.1, port: 0}",
            ),
            "spec.gateway.port: port 0 is not a port",
        );
        assert_one(
            &problems("address: 127.0.2.1", "address: 127.0.1.1"),
            "document 2 (MemberCluster west): spec.gateway: 127.0.1.1:15443 is already the gateway of MemberCluster \"east\"",
        );
        assert_one(
            &problems("\"127.0.2.10:8080\"", "\"127.0.2.10\""),
            "spec.services[0].endpoints[0]: \"127.0.2.10\" is not HOST:PORT",
        );
        assert_one(
            &problems("endpoints: [\"127.0.2.10:8080\"]", "endpoints: []"),
            "spec.services[0].endpoints: at least one HOST:PORT is required",
        );
        // Renaming west also leaves the scheme's reference to it unknown: two problems.
        let renamed = problems("metadata: {name: west}", "metadata: {name: West_1}");
        assert!(
            renamed[0].contains("metadata.name: \"West_1\" is not a valid name"),
            "{renamed:#?}"
        );
        assert!(
            renamed[1].contains("unknown cluster \"west\""),
            "{renamed:#?}"
        );
        let twice =
            "  - {name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.2.10:8080\"]}\n";
        assert_one(
            &problems(twice, &format!("{twice}{twice}")),
            "document 2 (MemberCluster west): spec.services[1]: service apps/foo is listed twice",
        );
        // Several gateway instances: `addresses`, never both forms, never one twice.
        let several =
            EXAMPLE.replacen("address: 127.0.2.1", "addresses: [127.0.2.1, 127.0.2.2]", 1);
        let (docs, _) = parse_file("c.yaml", &several);
        let model = build_model(&docs).unwrap();
        let west = &model.clusters["west"];
        assert_eq!(
            west.gateways().map(ToString::to_string).collect::<Vec<_>>(),
            ["127.0.2.1:15443", "127.0.2.2:15443"]
        );
        let spec = model.probe_spec(&model.schemes[0], &model.schemes[0].groups[0][0].target);
        assert_eq!(spec.unwrap().gateways.len(), 2);
        assert_one(
            &problems(
                "address: 127.0.2.1",
                "address: 127.0.2.1, addresses: [127.0.2.2]",
            ),
            "document 2 (MemberCluster west): spec.gateway: `address` and `addresses` are two ways",
        );
        assert_one(
            &problems("address: 127.0.2.1", "addresses: [127.0.2.1, 127.0.2.1]"),
            "spec.gateway.addresses[1]: 127.0.2.1:15443 is listed twice",
        );
        assert_one(
            &problems("address: 127.0.2.1", "addresses: [127.0.2.1, 127.0.1.1]"),
            "spec.gateway: 127.0.1.1:15443 is already the gateway of MemberCluster \"east\"",
        );
        assert_one(
            &problems("address: 127.0.2.1", "addresses: []"),
            "spec.gateway: needs `address` (or `addresses`)",
        );
        let west = "apiVersion: detour.dev/v1alpha1\nkind: MemberCluster\nmetadata: {name: west}\nspec:\n  gateway: {address: 127.0.9.1}\n";
        let found = problems_of(&format!("{EXAMPLE}---\n{west}"));
        assert_one(
            &found,
            "c.yaml: document 5 (MemberCluster west): metadata.name: MemberCluster \"west\" is already defined in c.yaml: document 2",
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = EXAMPLE
            .replacen("interval: 1s", "interval: 1 sec", 1)
            .replacen(
                "- {cluster: west, services",
                "- {cluster: nowhere, services",
                1,
            )
            .replacen("address: 127.0.3.1", "address: bad_host", 1);
        let found = problems_of(&text);
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn an_invalid_cluster_does_not_also_make_its_name_unknown() {
        // West's own problem is reported; the scheme's reference to west is not.
        assert_one(
            &problems("address: 127.0.2.1", "address: 0.0.0.0"),
            "(MemberCluster west)",
        );
    }
}

//! Gloo documents → detour documents, keeping their meaning, and saying what could not
//! be kept.
//!
//! - A FailoverScheme's primary and each priority-group entry name Upstreams by
//!   cluster, namespace and name; each becomes the Service behind it (`kube`), or a
//!   service of its own name with the Upstream's hosts as endpoints (`static`). An
//!   Upstream not among the documents is read by Gloo discovery's `NS-NAME-PORT` naming.
//! - The primary Upstream's first `healthChecks` entry becomes the scheme's
//!   `healthCheck`: in Gloo it is the primary's Envoy cluster, failover endpoints
//!   included, that is checked, so targets' own checks play no part there either.
//! - `localityWeight` becomes the entry's `weight`.
//! - Every cluster becomes a MemberCluster whose gateway comes from `--gateway`, and
//!   (file mode) which lists the services the schemes name in it.

use super::Problem;
use super::health;
use super::naming::discovered;
use super::read::{
    Backend, CheckKind, GlooDoc, GlooObject, KubeCluster, Scheme, Upstream, UpstreamRef,
};
use super::uncarried::uncarried_notes;
use detour_core::docs::{
    FailoverGroupSpec, FailoverSchemeSpec, GatewaySpec, GroupTargetSpec, HealthCheckSpec,
    KubeconfigSecretRef, MemberClusterSpec, Origin, PrimarySpec, ServiceRefSpec, ServiceSpec,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Kubernetes' default DNS domain, when a KubernetesCluster does not name one.
const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// How to write the documents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Each cluster's east-west gateway: host and port (`--gateway CLUSTER=HOST:PORT`).
    pub gateways: BTreeMap<String, (String, u16)>,
    /// For `detour serve --kubernetes`: MemberClusters list no services (they are
    /// discovered) and carry the KubernetesCluster's kubeconfig Secret.
    pub kubernetes: bool,
}

/// The detour documents, and the report of what was not carried, per Gloo document.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub clusters: Vec<(String, MemberClusterSpec)>,
    /// `(namespace, name, spec)`, in the order the Gloo schemes were read.
    pub schemes: Vec<(String, String, FailoverSchemeSpec)>,
    pub report: Vec<Problem>,
}

/// Converts every document read; refuses (with every reason) when one cannot be.
pub fn convert(docs: &[GlooDoc], opts: &Options) -> Result<Imported, Vec<Problem>> {
    let mut c = Converter::new(docs, opts);
    let mut schemes = Vec::new();
    for doc in docs {
        if let GlooObject::Scheme(scheme) = &doc.object
            && let Some(s) = c.scheme(doc, scheme)
        {
            schemes.push(s);
        }
    }
    let clusters = c.member_clusters();
    c.report_upstreams();
    if c.refused.is_empty() {
        Ok(Imported {
            clusters,
            schemes,
            report: c.report,
        })
    } else {
        Err(c.refused)
    }
}

/// A service written into a MemberCluster, and which Gloo field asked for it.
struct Listed {
    spec: ServiceSpec,
    from: String,
}

struct Converter<'a> {
    docs: &'a [GlooDoc],
    opts: &'a Options,
    /// Upstreams by `(metadata.clusterName, namespace/name)`.
    upstreams: HashMap<(Option<&'a str>, UpstreamRef), usize>,
    /// Every cluster named, with its KubernetesCluster when one was read.
    clusters: BTreeMap<String, Option<&'a GlooDoc>>,
    /// The services each cluster must list, by `(namespace, name)`.
    services: BTreeMap<String, BTreeMap<(String, String), Listed>>,
    /// Namespaces of the Services behind the Upstreams read, to split discovery names.
    service_namespaces: BTreeSet<String>,
    /// Upstreams that a scheme resolved to (their fields are then reported).
    used: BTreeSet<usize>,
    /// Upstreams that are a scheme's primary (their health checks are then used).
    primaries: BTreeSet<usize>,
    report: Vec<Problem>,
    refused: Vec<Problem>,
    /// Where each scheme is written, `(namespace, name)`, and the Gloo document it came
    /// from.
    written: BTreeMap<(String, String), String>,
}

/// A problem with the command line rather than a document.
fn flag(message: String) -> Problem {
    Problem {
        origin: Origin {
            source: "--gateway".into(),
            document: None,
        },
        subject: None,
        path: None,
        message,
    }
}

impl<'a> Converter<'a> {
    fn new(docs: &'a [GlooDoc], opts: &'a Options) -> Converter<'a> {
        let mut c = Converter {
            docs,
            opts,
            upstreams: HashMap::new(),
            clusters: BTreeMap::new(),
            services: BTreeMap::new(),
            service_namespaces: BTreeSet::new(),
            used: BTreeSet::new(),
            primaries: BTreeSet::new(),
            report: Vec::new(),
            refused: Vec::new(),
            written: BTreeMap::new(),
        };
        for (i, doc) in docs.iter().enumerate() {
            match &doc.object {
                GlooObject::Upstream(u) => c.index_upstream(i, doc, u),
                GlooObject::Cluster(_) => {
                    if let Some(Some(first)) = c.clusters.get(&doc.name) {
                        let msg = format!(
                            "KubernetesCluster {} is already defined in {}",
                            doc.name, first.origin
                        );
                        c.refused.push(doc.problem("metadata.name", msg));
                    } else {
                        c.clusters.insert(doc.name.clone(), Some(doc));
                    }
                }
                GlooObject::Scheme(_) => {}
            }
        }
        c
    }

    fn index_upstream(&mut self, i: usize, doc: &'a GlooDoc, upstream: &Upstream) {
        let Some(namespace) = &doc.namespace else {
            self.refused.push(doc.problem(
                "metadata.namespace",
                "required (FailoverSchemes name Upstreams by namespace and name)",
            ));
            return;
        };
        if let Backend::Kube { service, .. } = &upstream.backend {
            self.service_namespaces.insert(service.namespace.clone());
        }
        let key = (
            doc.cluster_name.as_deref(),
            UpstreamRef {
                namespace: namespace.clone(),
                name: doc.name.clone(),
            },
        );
        if let Some(first) = self.upstreams.get(&key) {
            let msg = format!(
                "Upstream {} is already defined in {}{}",
                key.1,
                self.docs[*first].origin,
                match key.0 {
                    Some(cluster) => format!(" for cluster {cluster}"),
                    None => " (give each copy its metadata.clusterName)".into(),
                }
            );
            self.refused.push(doc.problem("metadata.name", msg));
            return;
        }
        self.upstreams.insert(key, i);
    }

    fn scheme(
        &mut self,
        doc: &'a GlooDoc,
        scheme: &Scheme,
    ) -> Option<(String, String, FailoverSchemeSpec)> {
        let refused_before = self.refused.len();
        let namespace = doc.namespace.clone().or_else(|| {
            self.refused.push(doc.problem(
                "metadata.namespace",
                "required (a FailoverScheme lives in a namespace)",
            ));
            None
        });
        self.report.extend(uncarried_notes(doc, &[]));
        let primary = self.resolve(
            doc,
            "spec.primary",
            &scheme.primary_cluster,
            &scheme.primary,
        );
        let mut groups = Vec::new();
        for entries in &scheme.groups {
            let mut group = Vec::new();
            for entry in entries {
                let mut services = Vec::new();
                for (path, upstream) in &entry.upstreams {
                    if let Some(r) = self.resolve(doc, path, &entry.cluster, upstream) {
                        services.push(r.service);
                    }
                }
                let weight = match entry.locality_weight {
                    Some(0) => {
                        self.refused.push(doc.problem(&format!("{}.localityWeight", entry.path),
                            "0 gives these upstreams no traffic, which a detour weight cannot say: remove the entry",
                        ));
                        None
                    }
                    w => w,
                };
                group.push(GroupTargetSpec {
                    cluster: entry.cluster.clone(),
                    services,
                    weight,
                });
            }
            groups.push(FailoverGroupSpec {
                priority_group: group,
            });
        }
        if groups.is_empty() {
            self.refused.push(doc.problem(
                "spec.failoverGroups",
                "required: a scheme without a failover group fails over nowhere",
            ));
        }
        let health_check = primary.as_ref().and_then(|p| self.health_check(doc, p));
        let (gloo_namespace, primary) = (namespace?, primary?);
        // A detour scheme protects only a primary of its own namespace (unless the
        // controller allows more), so it is written there, wherever Gloo kept it.
        let namespace = primary.service.namespace.clone();
        if namespace != gloo_namespace {
            self.report.push(doc.problem(
                "metadata.namespace",
                format!(
                    "written in namespace {namespace:?}, its primary's, not {gloo_namespace:?}: a detour FailoverScheme protects only a primary in its own namespace"
                ),
            ));
        }
        let key = (namespace.clone(), doc.name.clone());
        if let Some(first) = self.written.get(&key) {
            self.refused.push(doc.problem(
                "metadata.name",
                format!(
                    "{first} is also written as FailoverScheme {namespace}/{} (each is written in its primary's namespace): rename one",
                    doc.name
                ),
            ));
        }
        if self.refused.len() != refused_before {
            return None;
        }
        self.written
            .insert(key, format!("{} ({})", doc.origin, doc.subject()));
        let spec = FailoverSchemeSpec {
            primary: PrimarySpec {
                cluster: scheme.primary_cluster.clone(),
                name: primary.service.name,
                namespace: primary.service.namespace,
            },
            failover_groups: groups,
            health_check,
            failback: None,
            replay: None,
        };
        Some((namespace, doc.name.clone(), spec))
    }

    /// The Service an Upstream named at `path` of `doc` stands for in `cluster`, listed
    /// in that cluster's MemberCluster.
    fn resolve(
        &mut self,
        doc: &'a GlooDoc,
        path: &str,
        cluster: &str,
        upstream: &UpstreamRef,
    ) -> Option<Resolved> {
        self.clusters.entry(cluster.to_string()).or_insert(None);
        let found = self
            .upstreams
            .get(&(Some(cluster), upstream.clone()))
            .or_else(|| self.upstreams.get(&(None, upstream.clone())))
            .copied();
        let Some(i) = found else {
            return self.resolve_by_name(doc, path, cluster, upstream);
        };
        let source = &self.docs[i];
        let GlooObject::Upstream(u) = &source.object else {
            return None;
        };
        self.used.insert(i);
        let (service, port, endpoints) = match &u.backend {
            Backend::Kube { service, port } => {
                let endpoint = self.service_endpoint(cluster, service, *port);
                (service.clone(), *port, vec![endpoint])
            }
            Backend::Static { hosts } => {
                // The service's port: a static Upstream has none of its own, but its
                // hosts (read only when there is at least one) have.
                let (_, port) = hosts.first()?;
                let endpoints = hosts
                    .iter()
                    .map(|(addr, port)| host_port(addr, *port))
                    .collect();
                (upstream.clone(), *port, endpoints)
            }
            Backend::Other(kind) => {
                let kind = match kind {
                    Some(kind) => format!("is of type `{kind}`"),
                    None => "has no upstream type detour knows".into(),
                };
                let msg = format!(
                    "Upstream {upstream} {kind}: detour fails over between Kubernetes Services (`kube`) and fixed hosts (`static`) only"
                );
                self.refused.push(doc.problem(path, msg));
                return None;
            }
        };
        let spec = ServiceSpec {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
            port,
            endpoints,
            protocol: protocol(u),
        };
        self.list_service(doc, path, cluster, spec);
        Some(Resolved {
            service: ServiceRefSpec {
                name: service.name,
                namespace: service.namespace,
            },
            upstream: Some(i),
        })
    }

    /// An Upstream not among the documents: by Gloo discovery's naming,
    /// `NAMESPACE-NAME-PORT` of the Service it found.
    fn resolve_by_name(
        &mut self,
        doc: &'a GlooDoc,
        path: &str,
        cluster: &str,
        upstream: &UpstreamRef,
    ) -> Option<Resolved> {
        let Some((service, port)) = discovered(&upstream.name, &self.service_namespaces) else {
            let msg = format!(
                "Upstream {upstream} (cluster {cluster}) is not among the documents read, and its name is not Gloo discovery's NAMESPACE-NAME-PORT: add the Upstream to --from"
            );
            self.refused.push(doc.problem(path, msg));
            return None;
        };
        self.report.push(doc.problem(path,
            format!(
                "Upstream {upstream} (cluster {cluster}) is not among the documents read: taken as Service {service} port {port}, by Gloo discovery's NAMESPACE-NAME-PORT naming (add the Upstream to --from to be exact)"
            ),
        ));
        let spec = ServiceSpec {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
            port,
            endpoints: vec![self.service_endpoint(cluster, &service, port)],
            protocol: None,
        };
        self.list_service(doc, path, cluster, spec);
        Some(Resolved {
            service: ServiceRefSpec {
                name: service.name,
                namespace: service.namespace,
            },
            upstream: None,
        })
    }

    /// In file mode a Kubernetes Service is reached at its cluster DNS name: the
    /// cluster's Envoy resolves it to the Service's address.
    fn service_endpoint(&self, cluster: &str, service: &UpstreamRef, port: u16) -> String {
        let domain = self
            .clusters
            .get(cluster)
            .and_then(|d| d.map(|d| &d.object))
            .and_then(|o| match o {
                GlooObject::Cluster(KubeCluster { cluster_domain, .. }) => {
                    cluster_domain.as_deref()
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_CLUSTER_DOMAIN);
        format!("{}.{}.svc.{domain}:{port}", service.name, service.namespace)
    }

    /// Lists `spec` in `cluster`'s MemberCluster, unless it is there already; refuses
    /// one service listed with two ports or sets of endpoints.
    fn list_service(&mut self, doc: &GlooDoc, path: &str, cluster: &str, spec: ServiceSpec) {
        let from = format!("{} ({}): {path}", doc.origin, doc.subject());
        let listed = self.services.entry(cluster.to_string()).or_default();
        let key = (spec.namespace.clone(), spec.name.clone());
        match listed.get(&key) {
            Some(first) if first.spec != spec => {
                let msg = format!(
                    "Service {}/{} in cluster {cluster} is reached here by port {} at {:?}, and by port {} at {:?} at {}: one service has one port and one set of endpoints",
                    spec.namespace,
                    spec.name,
                    spec.port,
                    spec.endpoints,
                    first.spec.port,
                    first.spec.endpoints,
                    first.from
                );
                self.refused.push(doc.problem(path, msg));
            }
            Some(_) => {}
            None => {
                listed.insert(key, Listed { spec, from });
            }
        }
    }

    /// The primary Upstream's first health check, as the scheme's.
    fn health_check(&mut self, doc: &GlooDoc, primary: &Resolved) -> Option<HealthCheckSpec> {
        let default = "detour checks every target anyway, with its default (GET /healthz every 1s): add spec.healthCheck if the service answers elsewhere";
        let Some(i) = primary.upstream else {
            self.report.push(doc.problem(
                "spec.primary",
                format!("its Upstream was not read, nor its healthChecks: {default}"),
            ));
            return None;
        };
        self.primaries.insert(i);
        let source = &self.docs[i];
        let GlooObject::Upstream(upstream) = &source.object else {
            return None;
        };
        let Some((check, others)) = upstream.health_checks.split_first() else {
            self.report.push(doc.problem(
                "spec.primary",
                format!("{} has no healthChecks: {default}", source.subject()),
            ));
            return None;
        };
        for other in others {
            self.report.push(source.problem(
                &other.path,
                "not carried: a detour scheme has one health check (the first is used)",
            ));
        }
        health::health_check(source, check, &mut self.report, &mut self.refused)
    }

    /// One MemberCluster per cluster named, each with its `--gateway`.
    fn member_clusters(&mut self) -> Vec<(String, MemberClusterSpec)> {
        let mut out = Vec::new();
        let missing: Vec<&str> = self
            .clusters
            .keys()
            .filter(|c| !self.opts.gateways.contains_key(*c))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let example: Vec<String> = missing
                .iter()
                .map(|c| format!("--gateway {c}=HOST:PORT"))
                .collect();
            self.refused.push(flag(format!(
                "no gateway for cluster(s) {}: add {} (where the other clusters reach its east-west gateway; port 15443 when left out)",
                missing.join(", "),
                example.join(" ")
            )));
        }
        for name in self.opts.gateways.keys() {
            if !self.clusters.contains_key(name) {
                let known: Vec<&str> = self.clusters.keys().map(String::as_str).collect();
                self.refused.push(flag(format!(
                    "{name}: no KubernetesCluster or FailoverScheme read names this cluster (clusters: {})",
                    known.join(", ")
                )));
            }
        }
        for (name, cluster_doc) in &self.clusters {
            let Some((host, port)) = self.opts.gateways.get(name) else {
                continue;
            };
            let services = if self.opts.kubernetes {
                Vec::new()
            } else {
                self.services
                    .get(name)
                    .map(|s| s.values().map(|l| l.spec.clone()).collect())
                    .unwrap_or_default()
            };
            let mut kubeconfig_secret = None;
            if let Some(doc) = cluster_doc {
                self.report.extend(cluster_notes(doc, self.opts.kubernetes));
                if let GlooObject::Cluster(KubeCluster {
                    secret_name: Some(secret),
                    ..
                }) = &doc.object
                    && self.opts.kubernetes
                {
                    kubeconfig_secret = Some(KubeconfigSecretRef {
                        name: secret.clone(),
                        key: None,
                    });
                }
            }
            out.push((
                name.clone(),
                MemberClusterSpec {
                    gateway: GatewaySpec {
                        address: Some(host.clone()),
                        addresses: Vec::new(),
                        port: *port,
                    },
                    services,
                    kubeconfig_secret,
                },
            ));
        }
        out
    }

    /// The fields of every Upstream used that were not carried, and the Upstreams no
    /// scheme used.
    fn report_upstreams(&mut self) {
        for (i, doc) in self.docs.iter().enumerate() {
            let GlooObject::Upstream(u) = &doc.object else {
                continue;
            };
            if !self.used.contains(&i) {
                self.report
                    .push(doc.problem("", "not named by any FailoverScheme read: not imported"));
                continue;
            }
            if self.opts.kubernetes
                && let Backend::Static { .. } = u.backend
            {
                self.report.push(doc.problem("spec.static.hosts", format!(
                    "not carried: in Kubernetes mode detour discovers a service's endpoints from its Service, so a Service {}/{} must exist in each cluster that has it (or import without --kubernetes)",
                    doc.namespace.as_deref().unwrap_or_default(), doc.name
                )));
            }
            // Checks not used are reported whole, not field by field: past the first of
            // a primary, and all of an Upstream that is only ever a target.
            let skipped: Vec<String> = if self.primaries.contains(&i) {
                u.health_checks
                    .iter()
                    .skip(1)
                    .map(|c| c.path.clone())
                    .collect()
            } else if u.health_checks.is_empty() {
                Vec::new()
            } else {
                self.report.push(doc.problem("spec.healthChecks", "not carried: a scheme is checked with its primary Upstream's checks (in Gloo too: they cover its failover endpoints), and this Upstream is only a target"));
                vec!["spec.healthChecks".to_string()]
            };
            self.report.extend(uncarried_notes(doc, &skipped));
        }
    }
}

/// What the import notes about a KubernetesCluster.
fn cluster_notes(doc: &GlooDoc, kubernetes: bool) -> Vec<Problem> {
    let mut notes: Vec<Problem> = uncarried_notes(doc, &[]).collect();
    if let GlooObject::Cluster(KubeCluster {
        secret_name: Some(secret),
        ..
    }) = &doc.object
    {
        let ns = doc.namespace.as_deref().unwrap_or("its namespace");
        notes.push(doc.problem("spec.secretName",
            if kubernetes {
                format!("written as spec.kubeconfigSecret: detour reads the Secret {secret} (key `kubeconfig`) from its own namespace, so copy it there from {ns}")
            } else {
                "not carried: file mode reaches no cluster's API (with --kubernetes it becomes spec.kubeconfigSecret)".to_string()
            },
        ));
    }
    notes
}

/// `HOST:PORT`, with an IPv6 address in brackets.
fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// What the service speaks, as far as the Upstream says: gRPC when it is checked with
/// gRPC, HTTP/2 with `useHttp2`.
fn protocol(u: &Upstream) -> Option<String> {
    if u.health_checks
        .iter()
        .any(|c| matches!(c.kind, CheckKind::Grpc { .. }))
    {
        Some("grpc".into())
    } else if u.http2 {
        Some("http2".into())
    } else {
        None
    }
}

/// An Upstream resolved to a detour service.
struct Resolved {
    service: ServiceRefSpec,
    /// The Upstream document, when one was read.
    upstream: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("10.0.0.1", 80), "10.0.0.1:80");
    }
}

//! Gloo Federation's documents as the import needs them: `FailoverScheme`
//! (fed.solo.io/v1), `Upstream` (gloo.solo.io/v1, kube and static) and
//! `KubernetesCluster` (multicluster.solo.io/v1alpha1). Other documents are skipped
//! and said so; a `List` (`kubectl get -o yaml`) is read item by item.
//!
//! Every field read is checked for its type here, so that the conversion only decides
//! meaning; every field left unread is kept, with its path, to be reported as not
//! carried ([`Uncarried`]).

use super::Problem;
use super::fields::{FieldError, Fields, Read};
use detour_core::docs::Origin;
use serde::Deserialize;
use serde_norway::Value;

pub const SCHEME_API: &str = "fed.solo.io/v1";
pub const UPSTREAM_API: &str = "gloo.solo.io/v1";
pub const CLUSTER_API: &str = "multicluster.solo.io/v1alpha1";

/// One Gloo document that was read.
#[derive(Debug, Clone, PartialEq)]
pub struct GlooDoc {
    pub origin: Origin,
    pub name: String,
    pub namespace: Option<String>,
    /// `metadata.clusterName`: the member cluster an Upstream was read from, as Gloo
    /// Federation's multicluster clients mark objects (absent: any cluster).
    pub cluster_name: Option<String>,
    pub object: GlooObject,
    /// Where the document sits in its file's document: `""`, or `items[i].` in a List.
    pub prefix: String,
    /// Fields read past, to report when the document is used.
    pub uncarried: Vec<Uncarried>,
}

/// A field the import does not carry: where it is (`spec.sslConfig`) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncarried {
    pub path: String,
    pub field: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GlooObject {
    Scheme(Scheme),
    Upstream(Upstream),
    Cluster(KubeCluster),
}

impl GlooDoc {
    pub fn kind(&self) -> &'static str {
        match self.object {
            GlooObject::Scheme(_) => "FailoverScheme",
            GlooObject::Upstream(_) => "Upstream",
            GlooObject::Cluster(_) => "KubernetesCluster",
        }
    }

    /// The full path of a field of this document (`None` for the document itself).
    pub fn field_path(&self, path: &str) -> Option<String> {
        let full = format!("{}{path}", self.prefix);
        let full = full.trim_end_matches('.');
        (!full.is_empty()).then(|| full.to_string())
    }

    /// A note or refusal about field `path` of this document (`""`: the whole of it).
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        Problem {
            origin: self.origin.clone(),
            subject: Some(self.subject()),
            path: self.field_path(path),
            message: message.into(),
        }
    }

    /// `Upstream gloo-system/foo`, for messages.
    pub fn subject(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name),
            None => format!("{} {}", self.kind(), self.name),
        }
    }
}

/// A reference to an Upstream by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for UpstreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scheme {
    pub primary_cluster: String,
    pub primary: UpstreamRef,
    pub groups: Vec<Vec<GroupEntry>>,
}

/// One entry of a priority group: upstreams in one cluster, with a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    /// `spec.failoverGroups[i].priorityGroup[j]`.
    pub path: String,
    pub cluster: String,
    /// Each upstream with its path.
    pub upstreams: Vec<(String, UpstreamRef)>,
    pub locality_weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub backend: Backend,
    pub health_checks: Vec<HealthCheck>,
    /// `useHttp2`: the service speaks HTTP/2.
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// `spec.kube`: a Kubernetes Service.
    Kube { service: UpstreamRef, port: u16 },
    /// `spec.static`: fixed `addr:port` hosts.
    Static { hosts: Vec<(String, u16)> },
    /// Any other upstream type (`aws`, `consul`, ...), by its field name when it is
    /// one Gloo has.
    Other(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// `spec.healthChecks[i]`.
    pub path: String,
    pub timeout: Option<String>,
    pub interval: Option<String>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `httpHealthCheck.path`.
    Http { path: Option<String> },
    /// `grpcHealthCheck.serviceName`.
    Grpc { service_name: Option<String> },
    /// `tcpHealthCheck`, `customHealthCheck`, ...: by field name, or none at all.
    Other(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct KubeCluster {
    /// `spec.clusterDomain` (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// `spec.secretName`: the kubeconfig Secret Gloo Federation registered.
    pub secret_name: Option<String>,
}

/// A document that could not be read: where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub origin: Origin,
    /// `Kind namespace/name` when known.
    pub subject: Option<String>,
    pub error: FieldError,
}

/// What one file held.
#[derive(Debug, Default)]
pub struct FileContents {
    pub docs: Vec<GlooDoc>,
    /// Documents of other kinds: origin and `Kind name`, for the report.
    pub skipped: Vec<(Origin, String)>,
    pub refused: Vec<Refused>,
}

/// Reads every document of one file (`source` names it in messages).
pub fn read_file(source: &str, text: &str) -> FileContents {
    let mut out = FileContents::default();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin::file(source, i + 1);
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(value) => read_value(&origin, &value, "", &mut out),
            Err(e) => {
                // The YAML stream is broken here; nothing after it can be trusted.
                out.refused.push(Refused {
                    origin,
                    subject: None,
                    error: FieldError {
                        path: String::new(),
                        message: format!("invalid YAML: {e}"),
                    },
                });
                break;
            }
        }
    }
    out
}

/// Reads one document, or each item of a `List` (whose fields are then `items[i].`...).
fn read_value(origin: &Origin, value: &Value, prefix: &str, out: &mut FileContents) {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let (api, kind) = (text("apiVersion"), text("kind"));
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let subject = name.map(|n| {
        let name = match namespace {
            Some(ns) => format!("{ns}/{n}"),
            None => n.to_string(),
        };
        if kind.is_empty() {
            name
        } else {
            format!("{kind} {name}")
        }
    });
    let at = |path: &str| {
        if path.is_empty() {
            prefix.trim_end_matches('.').to_string()
        } else {
            format!("{prefix}{path}")
        }
    };
    if api.is_empty() || kind.is_empty() {
        out.refused.push(Refused {
            origin: origin.clone(),
            subject,
            error: FieldError {
                path: at(if api.is_empty() { "apiVersion" } else { "kind" }),
                message: "required: every document names its apiVersion and kind".into(),
            },
        });
        return;
    }
    let read = match (api, kind) {
        (SCHEME_API, "FailoverScheme") => read_doc(value, read_scheme),
        (UPSTREAM_API, "Upstream") => read_doc(value, read_upstream),
        (CLUSTER_API, "KubernetesCluster") => read_doc(value, read_cluster),
        (_, "List") if value.get("items").is_some_and(Value::is_sequence) => {
            let items = value.get("items").and_then(Value::as_sequence);
            for (i, item) in items.into_iter().flatten().enumerate() {
                read_value(origin, item, &format!("{prefix}items[{i}]."), out);
            }
            return;
        }
        _ => {
            let what = subject.unwrap_or_else(|| kind.to_string());
            out.skipped
                .push((origin.clone(), format!("{what} ({api})")));
            return;
        }
    };
    match read {
        Ok(mut doc) => {
            doc.origin = origin.clone();
            doc.prefix = prefix.to_string();
            out.docs.push(doc);
        }
        Err(mut error) => {
            error.path = at(&error.path);
            out.refused.push(Refused {
                origin: origin.clone(),
                subject,
                error,
            });
        }
    }
}

/// The parts every document has, and its spec read by `spec`.
fn read_doc(
    value: &Value,
    spec: impl FnOnce(&mut Fields, &mut Vec<Uncarried>) -> Read<GlooObject>,
) -> Read<GlooDoc> {
    let mut doc = Fields::of(value, "")?;
    doc.get("apiVersion");
    doc.get("kind");
    doc.get("status"); // Gloo's to write
    let mut meta = doc.mapping("metadata")?.ok_or_else(|| FieldError {
        path: "metadata".into(),
        message: "required".into(),
    })?;
    let name = meta.required_string("name")?;
    let namespace = meta.string("namespace")?;
    let cluster_name = meta.string("clusterName")?;
    let mut uncarried = Vec::new();
    let mut spec_fields = doc.mapping("spec")?.ok_or_else(|| FieldError {
        path: "spec".into(),
        message: "required".into(),
    })?;
    let object = spec(&mut spec_fields, &mut uncarried)?;
    keep_rest(&spec_fields, &mut uncarried);
    keep_rest(&doc, &mut uncarried);
    // Metadata other than the names (labels, uid, ...) means nothing to detour.
    Ok(GlooDoc {
        origin: Origin::file("", 0),
        name,
        namespace,
        cluster_name,
        object,
        prefix: String::new(),
        uncarried,
    })
}

fn keep_rest(fields: &Fields, uncarried: &mut Vec<Uncarried>) {
    uncarried.extend(
        fields
            .rest()
            .into_iter()
            .map(|(path, field)| Uncarried { path, field }),
    );
}

fn read_scheme(spec: &mut Fields, uncarried: &mut Vec<Uncarried>) -> Read<GlooObject> {
    let mut primary = spec.mapping("primary")?.ok_or_else(|| FieldError {
        path: spec.path("primary"),
        message: "required (the Upstream that fails over)".into(),
    })?;
    let primary_cluster = primary.required_string("clusterName")?;
    let primary_ref = UpstreamRef {
        namespace: primary.required_string("namespace")?,
        name: primary.required_string("name")?,
    };
    keep_rest(&primary, uncarried);
    let mut groups = Vec::new();
    for (gpath, group) in spec.list("failoverGroups")? {
        let mut group = Fields::of(group, &gpath)?;
        let mut entries = Vec::new();
        for (epath, entry) in group.list("priorityGroup")? {
            let mut entry = Fields::of(entry, &epath)?;
            let cluster = entry.required_string("cluster")?;
            let mut upstreams = Vec::new();
            for (upath, upstream) in entry.list("upstreams")? {
                let mut u = Fields::of(upstream, &upath)?;
                upstreams.push((
                    upath.clone(),
                    UpstreamRef {
                        namespace: u.required_string("namespace")?,
                        name: u.required_string("name")?,
                    },
                ));
                keep_rest(&u, uncarried);
            }
            if upstreams.is_empty() {
                return Err(FieldError {
                    path: entry.path("upstreams"),
                    message: "required: at least one Upstream".into(),
                });
            }
            let locality_weight = entry.uint("localityWeight")?;
            keep_rest(&entry, uncarried);
            entries.push(GroupEntry {
                path: epath,
                cluster,
                upstreams,
                locality_weight,
            });
        }
        keep_rest(&group, uncarried);
        groups.push(entries);
    }
    Ok(GlooObject::Scheme(Scheme {
        primary_cluster,
        primary: primary_ref,
        groups,
    }))
}

fn read_upstream(spec: &mut Fields, uncarried: &mut Vec<Uncarried>) -> Read<GlooObject> {
    let backend = if let Some(mut kube) = spec.mapping("kube")? {
        let port = port(&mut kube, "servicePort")?;
        let service = UpstreamRef {
            namespace: kube.required_string("serviceNamespace")?,
            name: kube.required_string("serviceName")?,
        };
        keep_rest(&kube, uncarried);
        Backend::Kube { service, port }
    } else if let Some(mut fixed) = spec.mapping("static")? {
        let mut hosts = Vec::new();
        for (hpath, host) in fixed.list("hosts")? {
            let mut host = Fields::of(host, &hpath)?;
            hosts.push((host.required_string("addr")?, port(&mut host, "port")?));
            keep_rest(&host, uncarried);
        }
        if hosts.is_empty() {
            return Err(FieldError {
                path: fixed.path("hosts"),
                message: "required: at least one host".into(),
            });
        }
        keep_rest(&fixed, uncarried);
        Backend::Static { hosts }
    } else {
        Backend::Other(upstream_type(spec))
    };
    let mut health_checks = Vec::new();
    for (path, check) in spec.list("healthChecks")? {
        let mut check = Fields::of(check, &path)?;
        health_checks.push(read_health_check(&mut check, path, uncarried)?);
    }
    let http2 = spec.boolean("useHttp2")?.unwrap_or(false);
    Ok(GlooObject::Upstream(Upstream {
        backend,
        health_checks,
        http2,
    }))
}

/// The upstream type of an Upstream that is neither kube nor static: the first spec
/// field named after one (Gloo's upstream types are a oneof of such fields).
fn upstream_type(spec: &Fields) -> Option<String> {
    const TYPES: &[&str] = &["aws", "awsEc2", "azure", "consul", "gcp", "pipe"];
    spec.rest()
        .into_iter()
        .map(|(_, field)| field)
        .find(|f| TYPES.contains(&f.as_str()))
}

fn read_health_check(
    check: &mut Fields,
    path: String,
    uncarried: &mut Vec<Uncarried>,
) -> Read<HealthCheck> {
    let timeout = check.string("timeout")?;
    let interval = check.string("interval")?;
    let unhealthy_threshold = check.uint("unhealthyThreshold")?;
    let healthy_threshold = check.uint("healthyThreshold")?;
    let kind = if let Some(mut http) = check.mapping("httpHealthCheck")? {
        let path = http.string("path")?;
        keep_rest(&http, uncarried);
        CheckKind::Http { path }
    } else if let Some(mut grpc) = check.mapping("grpcHealthCheck")? {
        let service_name = grpc.string("serviceName")?;
        keep_rest(&grpc, uncarried);
        CheckKind::Grpc { service_name }
    } else {
        let other = check
            .rest()
            .into_iter()
            .map(|(_, f)| f)
            .find(|f| f.ends_with("HealthCheck"));
        CheckKind::Other(other)
    };
    keep_rest(check, uncarried);
    Ok(HealthCheck {
        path,
        timeout,
        interval,
        unhealthy_threshold,
        healthy_threshold,
        kind,
    })
}

fn read_cluster(spec: &mut Fields, _: &mut Vec<Uncarried>) -> Read<GlooObject> {
    Ok(GlooObject::Cluster(KubeCluster {
        cluster_domain: spec.string("clusterDomain")?,
        secret_name: spec.string("secretName")?,
    }))
}

/// A port: 1 to 65535.
fn port(fields: &mut Fields, key: &'static str) -> Read<u16> {
    let path = fields.path(key);
    match fields.uint(key)? {
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| FieldError {
                path,
                message: format!("{p} is not a port (1 to 65535)"),
            }),
        None => Err(FieldError {
            path,
            message: "required".into(),
        }),
    }
}

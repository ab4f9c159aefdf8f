//! `detour explain`: where a request for a service would go now, and why, decided by the
//! filter's own selection code (`detour_filter::select`).
//!
//! Health comes from a running controller's table (`--controller`), or else from probing
//! every target of the scheme once, now, exactly as the checker does.
//!
//! With `certs` (a `detour certs init` directory) both speak mTLS: probes present the
//! controller's probe certificate, and the controller is asked with the table
//! certificate of the cluster being explained (the only one it lets read that table).

use crate::client::{Connections, HttpClient};
use crate::health::probe::{ProbeResult, Prober};
use crate::tls::client::{mtls_client, probe_files, table_files};
use crate::tls::config::TlsConfigError;
use detour_core::model::{Model, ServiceName, TargetRef};
use detour_core::pki::layout::Layout;
use detour_core::tables::scheme_doc;
use detour_filter::health::Health;
use detour_filter::select::{Explanation, select};
use detour_filter::table::wire::TableDoc;
use detour_filter::table::{DEFAULT_MAX_TABLE_BYTES, TABLE_API_VERSION, Table, TableError};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `explain` waits for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ExplainOptions {
    pub cluster: String,
    pub service: ServiceName,
    /// Base URL of a running controller (`http://127.0.0.1:8080`, or `HOST:PORT`).
    pub controller: Option<String>,
    /// A `detour certs init` directory: use mTLS for probes and the controller.
    pub certs: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("unknown cluster {name:?} (MemberClusters: {known})")]
    UnknownCluster { name: String, known: String },
    #[error(
        "no FailoverScheme has {service} in cluster {cluster} as its primary, so detour leaves its requests alone (schemes with a primary in {cluster}: {others})"
    )]
    NoScheme {
        service: ServiceName,
        cluster: String,
        others: String,
    },
    #[error("cannot fetch the table from the controller at {url}: {why}")]
    Controller { url: String, why: String },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("the controller's table: {0}")]
    Table(#[from] TableError),
    #[error(
        "the controller's table for {cluster} (version {version}) has no scheme for {envoy_cluster}; is it serving the same configuration?"
    )]
    NotInTable {
        cluster: String,
        version: String,
        envoy_cluster: String,
    },
}

/// Explains the decision for `opts.service` in `opts.cluster`; returns the text to print.
pub async fn explain(model: &Model, opts: &ExplainOptions) -> Result<String, ExplainError> {
    if model.cluster(&opts.cluster).is_none() {
        return Err(ExplainError::UnknownCluster {
            name: opts.cluster.clone(),
            known: model
                .clusters
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let Some(scheme) = model.scheme_for_primary(&opts.cluster, &opts.service) else {
        let others: Vec<String> = model
            .schemes_of(&opts.cluster)
            .map(|s| s.primary.service.to_string())
            .collect();
        return Err(ExplainError::NoScheme {
            service: opts.service.clone(),
            cluster: opts.cluster.clone(),
            others: if others.is_empty() {
                "none".into()
            } else {
                others.join(", ")
            },
        });
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "FailoverScheme {}: primary {}, {} failover group(s)",
        scheme.id(),
        scheme.primary,
        scheme.groups.len()
    );
    let table = match &opts.controller {
        Some(base) => {
            let table = fetch(base, &opts.cluster, opts.certs.as_deref()).await?;
            let _ = writeln!(
                out,
                "health: from the controller at {base} (table version {})",
                table.version
            );
            table
        }
        None => {
            let prober = match &opts.certs {
                Some(dir) => Prober::tls(mtls_client(
                    &probe_files(&Layout::new(dir)),
                    Connections::Fresh,
                )?),
                None => Prober::new(),
            };
            let probed = probe_all(&prober, model, scheme).await;
            let _ = writeln!(
                out,
                "health: each target probed once just now through its cluster's east-west gateway"
            );
            for target in scheme.targets() {
                let Some((gateway, result)) = probed.get(target) else {
                    continue;
                };
                let health = if result.passed() {
                    "Healthy"
                } else {
                    "Unhealthy"
                };
                let _ = writeln!(
                    out,
                    "  {:<12} {:<24} {health:<10} {result} (through {gateway})",
                    target.cluster,
                    target.service.to_string()
                );
            }
            let doc = TableDoc {
                api_version: TABLE_API_VERSION.into(),
                cluster: opts.cluster.clone(),
                version: "probed".into(),
                schemes: vec![scheme_doc(model, scheme, |t| {
                    probed
                        .get(t)
                        .map_or(Health::Unknown, |(_, r)| match r.passed() {
                            true => Health::Healthy,
                            false => Health::Unhealthy,
                        })
                })],
            };
            Table::compile(doc)?
        }
    };
    let envoy_cluster = scheme.primary.envoy_cluster();
    let Some(compiled) = table.scheme_for(&envoy_cluster) else {
        return Err(ExplainError::NotInTable {
            cluster: opts.cluster.clone(),
            version: table.version.clone(),
            envoy_cluster,
        });
    };
    let as_reported = |t: &detour_filter::table::Target| t.health;
    let decision = select(compiled, as_reported, None, 0);
    let _ = writeln!(out, "decision:");
    let _ = write!(
        out,
        "{}",
        Explanation {
            scheme: compiled,
            decision,
            health: &as_reported,
        }
    );
    if opts.controller.is_none() && !scheme.failback.stable_for.is_zero() {
        let _ = writeln!(
            out,
            "note: one probe per target; the controller also applies healthCheck thresholds and \
             failback.stableFor ({}), so its table may still differ",
            detour_filter::duration::format_duration(scheme.failback.stable_for)
        );
    }
    Ok(out)
}

/// Probes every target of the scheme concurrently.
async fn probe_all(
    prober: &Prober,
    model: &Model,
    scheme: &detour_core::model::Scheme,
) -> BTreeMap<TargetRef, (String, ProbeResult)> {
    let mut tasks = Vec::new();
    for target in scheme.targets() {
        let Some(spec) = model.probe_spec(scheme, target) else {
            continue;
        };
        let prober = prober.clone();
        tasks.push(tokio::spawn(async move {
            let result = prober.probe(&spec).await;
            {
                let gateways = spec.gateway_list();
                (spec.target, (gateways, result))
            }
        }));
    }
    let mut out = BTreeMap::new();
    for task in tasks {
        if let Ok((target, result)) = task.await {
            out.insert(target, result);
        }
    }
    out
}

async fn fetch(base: &str, cluster: &str, certs: Option<&Path>) -> Result<Table, ExplainError> {
    let base = base.trim_end_matches('/');
    let base = match (base.contains("://"), certs) {
        (true, _) => base.to_string(),
        (false, None) => format!("http://{base}"),
        (false, Some(_)) => format!("https://{base}"),
    };
    let url = format!("{base}/v1/tables/{cluster}");
    let failed = |why: String| ExplainError::Controller {
        url: url.clone(),
        why,
    };
    let client = match certs {
        Some(dir) => mtls_client(&table_files(&Layout::new(dir), cluster), Connections::Fresh)?,
        None => HttpClient::fresh_connections(),
    };
    let (resp, body) = client
        .get_body(&url, &[], CONTROLLER_TIMEOUT, DEFAULT_MAX_TABLE_BYTES)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(failed(format!(
            "HTTP {}: {}",
            resp.status(),
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(Table::parse(&body, cluster, DEFAULT_MAX_TABLE_BYTES)?)
}

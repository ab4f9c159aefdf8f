//! The mTLS Secret writer: the pure rotation plan, and the writes against the mock API.

use super::*;
use crate::testing::{ApiServer, mock_client};
use serde_json::json;
use std::sync::Mutex;

const DAY: Duration = Duration::from_secs(24 * 3600);
const GATEWAY: &str = "/api/v1/namespaces/detour-system/secrets/detour-mtls-gateway";
const CLIENT: &str = "/api/v1/namespaces/detour-system/secrets/detour-mtls-client";

fn at(days: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000) + DAY * u32::try_from(days).unwrap()
}

/// Issues 90-day material from day `issued`, and counts the issues.
struct FakeIssuer {
    issued: Mutex<Vec<String>>,
    from_day: u64,
}

impl Issuer for FakeIssuer {
    fn subject(&self, cluster: &str, gateway: &Host) -> String {
        subject(cluster, gateway)
    }

    fn issue(&self, cluster: &str, _gateway: &Host, _now: SystemTime) -> Result<Material, String> {
        if cluster == "broken" {
            return Err("no CA loaded".into());
        }
        self.issued.lock().unwrap().push(cluster.to_string());
        Ok(Material {
            data: BTreeMap::from([
                ("ca.crt".to_string(), b"CA PEM".to_vec()),
                (
                    "gateway.key".to_string(),
                    format!("{cluster} gateway PEM").into_bytes(),
                ),
                (
                    "envoy.key".to_string(),
                    format!("{cluster} envoy PEM").into_bytes(),
                ),
            ]),
            not_before: at(self.from_day),
            not_after: at(self.from_day + 90),
        })
    }
}

fn subject(cluster: &str, gateway: &Host) -> String {
    format!("{cluster} at {gateway}")
}

fn gateway() -> Host {
    Host::Name("gw.west.example".into())
}

fn issuer(from_day: u64) -> Arc<FakeIssuer> {
    Arc::new(FakeIssuer {
        issued: Mutex::new(Vec::new()),
        from_day,
    })
}

/// `mount`'s Secret as written for 90-day material from day `from_day`.
fn existing(mount: Mount, cluster: &str, from_day: u64) -> Secret {
    let material = Material {
        data: BTreeMap::new(),
        not_before: at(from_day),
        not_after: at(from_day + 90),
    };
    secret(
        mount,
        DEFAULT_NAMESPACE,
        cluster,
        &subject(cluster, &gateway()),
        &material,
    )
}

#[test]
fn renewed_two_thirds_into_its_validity() {
    let west = subject("west", &gateway());
    assert_eq!(renew_at(at(0), at(90)), at(60));
    assert_eq!(plan(None, "west", &west, at(0)), Plan::Write);
    let s = existing(Mount::Gateway, "west", 0);
    assert_eq!(
        plan(Some(&s), "west", &west, at(59)),
        Plan::Keep { until: at(60) }
    );
    assert_eq!(plan(Some(&s), "west", &west, at(60)), Plan::Write);
    assert_eq!(
        plan(Some(&s), "east", &west, at(1)),
        Plan::Write,
        "another cluster's material"
    );
    let moved = subject("west", &Host::Name("gw2.west.example".into()));
    assert_eq!(
        plan(Some(&s), "west", &moved, at(1)),
        Plan::Write,
        "issued for other names"
    );
    let mut unreadable = s.clone();
    unreadable.metadata.annotations = Some(BTreeMap::from([
        (NOT_AFTER.to_string(), "soon".to_string()),
        (ISSUED_FOR.to_string(), west.clone()),
    ]));
    assert_eq!(plan(Some(&unreadable), "west", &west, at(1)), Plan::Write);
}

fn writer(issuer: Arc<FakeIssuer>, leadership: Leadership) -> SecretWriter {
    SecretWriter::new(
        issuer,
        DEFAULT_NAMESPACE,
        leadership,
        Arc::new(KubeMetrics::new()),
    )
}

async fn sync_with<F, Fut>(
    w: &SecretWriter,
    cluster: &str,
    now: SystemTime,
    script: F,
) -> Result<SystemTime, Error>
where
    F: FnOnce(ApiServer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiServer> + Send + 'static,
{
    let (client, api) = mock_client();
    let server = tokio::spawn(async move {
        let mut api = script(api).await;
        api.no_more_calls().await;
    });
    let member = Member {
        gateway: gateway(),
        client,
    };
    let result = w.sync(cluster, &member, now).await;
    server.await.unwrap();
    result
}

/// The server-side apply of the Secret at `path`.
fn apply_path(path: &str) -> String {
    format!("{path}?&force=true&fieldManager=detour")
}

/// The Secret `name` as the writer applies it.
fn applied(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "detour-system",
            "labels": {"app.kubernetes.io/managed-by": "detour", "detour.dev/member-cluster": "west"},
            "annotations": {
                "detour.dev/not-before": "2025-06-15T15:06:40Z",
                "detour.dev/not-after": "2025-09-13T15:06:40Z",
                "detour.dev/issued-for": "west at gw.west.example"
            }
        },
        "type": "Opaque",
        "data": data
    })
}

/// Missing Secrets are written by server-side apply, one per mount: the gateway's key
/// only in the gateway's, the client's only in the client's, the CA in both.
#[tokio::test]
async fn missing_secrets_are_written_by_server_side_apply_one_per_mount() {
    let issuer = issuer(0);
    let w = writer(issuer.clone(), Leadership::always());
    let next = sync_with(&w, "west", at(0), |mut api| async move {
        api.expect("GET", GATEWAY).await.not_found();
        api.expect("GET", CLIENT).await.not_found();
        for (path, name, data) in [
            (
                GATEWAY,
                "detour-mtls-gateway",
                json!({"ca.crt": "Q0EgUEVN", "gateway.key": "d2VzdCBnYXRld2F5IFBFTQ=="}),
            ),
            (
                CLIENT,
                "detour-mtls-client",
                json!({"ca.crt": "Q0EgUEVN", "envoy.key": "d2VzdCBlbnZveSBQRU0="}),
            ),
        ] {
            let apply = api.expect("PATCH", &apply_path(path)).await;
            assert_eq!(apply.body, applied(name, data));
            apply.echo(200);
        }
        api
    })
    .await
    .unwrap();
    assert_eq!(next, at(60));
    assert_eq!(*issuer.issued.lock().unwrap(), ["west"]);
    // When they expire is a metric (Unix time).
    assert_eq!(expiry(&w, "west"), Some(at(90)));
}

/// `detour_kube_member_certificates_expiry_timestamp_seconds{cluster}` as a time.
fn expiry(w: &SecretWriter, cluster: &str) -> Option<SystemTime> {
    let mut registry = prometheus_client::registry::Registry::default();
    w.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text.lines().find(|l| {
        l.starts_with("kube_member_certificates_expiry_timestamp_seconds{")
            && l.contains(&format!("cluster=\"{cluster}\""))
    })?;
    let secs: u64 = line.rsplit(' ').next()?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[tokio::test]
async fn fresh_secrets_are_left_alone_and_due_ones_rotated_together() {
    let issuer = issuer(60);
    let w = writer(issuer.clone(), Leadership::always());
    let gateway = serde_json::to_value(existing(Mount::Gateway, "west", 0)).unwrap();
    let client = serde_json::to_value(existing(Mount::Client, "west", 0)).unwrap();
    let (g, c) = (gateway.clone(), client.clone());
    let next = sync_with(&w, "west", at(30), |mut api| async move {
        api.expect("GET", GATEWAY).await.reply(200, g);
        api.expect("GET", CLIENT).await.reply(200, c);
        api
    })
    .await
    .unwrap();
    assert_eq!(next, at(60));
    assert!(issuer.issued.lock().unwrap().is_empty());
    // Read from the annotations of Secrets it did not write.
    assert_eq!(expiry(&w, "west"), Some(at(90)));

    // Only the client's is gone: both are issued again, so that they never mix two issues.
    let g = gateway.clone();
    let next = sync_with(&w, "west", at(30), |mut api| async move {
        api.expect("GET", GATEWAY).await.reply(200, g);
        api.expect("GET", CLIENT).await.not_found();
        for path in [GATEWAY, CLIENT] {
            let apply = api.expect("PATCH", &apply_path(path)).await;
            assert_eq!(
                apply.body["metadata"]["annotations"]["detour.dev/not-after"],
                "2025-11-12T15:06:40Z"
            );
            apply.echo(200);
        }
        api
    })
    .await
    .unwrap();
    assert_eq!(next, at(120));
    assert_eq!(*issuer.issued.lock().unwrap(), ["west"]);

    let next = sync_with(&w, "west", at(60), |mut api| async move {
        api.expect("GET", GATEWAY).await.reply(200, gateway);
        api.expect("GET", CLIENT).await.reply(200, client);
        for path in [GATEWAY, CLIENT] {
            let apply = api.expect("PATCH", &apply_path(path)).await;
            apply.echo(200);
        }
        api
    })
    .await
    .unwrap();
    assert_eq!(next, at(120));
    assert_eq!(*issuer.issued.lock().unwrap(), ["west", "west"]);
}

#[tokio::test]
async fn no_write_without_the_lease_nor_without_material() {
    let not_leading = Leadership::new(Arc::new(crate::lease::SystemClock));
    let w = writer(issuer(0), not_leading);
    let result = sync_with(&w, "west", at(0), |api| async move { api }).await;
    assert!(matches!(result, Err(Error::NotLeader)));

    let w = writer(issuer(0), Leadership::always());
    let result = sync_with(&w, "broken", at(0), |mut api| async move {
        api.expect("GET", GATEWAY).await.not_found();
        api.expect("GET", CLIENT).await.not_found();
        api
    })
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.metric_label(), "material");
    assert_eq!(
        e.to_string(),
        "mTLS material for member cluster broken: no CA loaded"
    );
}

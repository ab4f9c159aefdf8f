//! Test helpers of the Kubernetes side: builders of plain objects, the example
//! configuration as the API server would hold it, and a mock API server
//! (`tower_test::mock::pair` as the kube client's transport) that asserts every call and
//! answers it.

use detour_core::docs::load::parse_file;
use detour_core::docs::{FailoverScheme, MemberCluster, Object};
use detour_core::testing::EXAMPLE;
use http::{Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use super::discovery::SERVICE_NAME_LABEL;
use super::index::{Change, KubeIndex};

/// Metadata as the API server sets it: a uid, a generation, a creation time (`age` in
/// seconds after an arbitrary epoch orders objects).
pub fn meta(namespace: Option<&str>, name: &str, generation: i64, age: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        uid: Some(format!("uid-{}-{name}", namespace.unwrap_or("cluster"))),
        generation: Some(generation),
        resource_version: Some("1".into()),
        creation_timestamp: Timestamp::from_second(1_700_000_000 + age).ok().map(Time),
        ..ObjectMeta::default()
    }
}

/// A Service with `(name, port)` TCP ports.
pub fn mk_service(namespace: &str, name: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: meta(Some(namespace), name, 1, 0),
        spec: Some(ServiceSpec {
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: *p,
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// An IPv4/IPv6 EndpointSlice of `service` with `(name, port)` ports and
/// `(address, ready)` endpoints.
pub fn mk_slice(
    namespace: &str,
    service: &str,
    slice: &str,
    ports: &[(&str, i32)],
    endpoints: &[(&str, Option<bool>)],
) -> EndpointSlice {
    let mut m = meta(Some(namespace), slice, 1, 0);
    m.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        service.to_string(),
    )]));
    let v6 = endpoints.first().is_some_and(|(a, _)| a.contains(':'));
    EndpointSlice {
        metadata: m,
        address_type: if v6 { "IPv6" } else { "IPv4" }.to_string(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(*p),
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(a, ready)| Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
    }
}

/// The example configuration as Kubernetes holds it: MemberClusters without services
/// (they are discovered), FailoverSchemes, and per cluster the Services and
/// EndpointSlices that hold what the example files list.
pub struct Example {
    pub clusters: Vec<MemberCluster>,
    pub schemes: Vec<FailoverScheme>,
    pub discovered: BTreeMap<String, (Vec<Service>, Vec<EndpointSlice>)>,
}

pub fn example() -> Example {
    objects_of(EXAMPLE)
}

/// [`example`] for any file text.
pub fn objects_of(text: &str) -> Example {
    let (docs, problems) = parse_file("example.yaml", text);
    assert!(problems.is_empty(), "{problems:?}");
    let mut out = Example {
        clusters: Vec::new(),
        schemes: Vec::new(),
        discovered: BTreeMap::new(),
    };
    for (age, doc) in docs.into_iter().enumerate() {
        let age = i64::try_from(age).unwrap();
        match doc.object {
            Object::MemberCluster { name, mut spec } => {
                let (services, slices) = out.discovered.entry(name.clone()).or_default();
                for s in std::mem::take(&mut spec.services) {
                    services.push(mk_service(
                        &s.namespace,
                        &s.name,
                        &[("http", i32::from(s.port))],
                    ));
                    // One slice per endpoint port, as the endpoints controller would make.
                    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
                    for e in &s.endpoints {
                        let a = detour_core::model::Address::parse(e).unwrap();
                        let host = match a.host {
                            detour_core::model::Host::Ip(ip) => ip.to_string(),
                            detour_core::model::Host::Name(n) => n,
                        };
                        by_port.entry(a.port).or_default().push(host);
                    }
                    for (i, (port, hosts)) in by_port.iter().enumerate() {
                        let eps: Vec<(&str, Option<bool>)> =
                            hosts.iter().map(|h| (h.as_str(), Some(true))).collect();
                        slices.push(mk_slice(
                            &s.namespace,
                            &s.name,
                            &format!("{}-{i}", s.name),
                            &[("http", i32::from(*port))],
                            &eps,
                        ));
                    }
                }
                let mut c = MemberCluster::new(&name, spec);
                c.metadata = meta(None, &name, 1, age);
                out.clusters.push(c);
            }
            Object::FailoverScheme {
                namespace,
                name,
                spec,
            } => {
                let mut s = FailoverScheme::new(&name, *spec);
                s.metadata = meta(Some(&namespace), &name, 1, age);
                out.schemes.push(s);
            }
        }
    }
    out
}

/// An index holding `ex`, every member cluster connected and listed.
pub fn loaded(ex: &Example) -> KubeIndex {
    let mut index = KubeIndex::new();
    index.secrets(Change::Reset(vec![]));
    index.clusters(Change::Reset(ex.clusters.clone()));
    index.schemes(Change::Reset(ex.schemes.clone()));
    for (cluster, (services, slices)) in &ex.discovered {
        let epoch = index.connect(cluster);
        index.services(cluster, epoch, Change::Reset(services.clone()));
        index.slices(cluster, epoch, Change::Reset(slices.clone()));
    }
    index
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A kube client whose every request goes to the returned [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

/// The other end of [`mock_client`]: the test plays the API server, call by call.
pub struct ApiServer {
    handle: Handle,
}

/// One call received; answer it with [`Exchange::reply`].
pub struct Exchange {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl Exchange {
    /// Answers with `status` and a JSON body.
    pub fn reply(self, status: u16, body: Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.send.send_response(response);
    }

    /// Answers as the API server does when the object does not exist.
    pub fn not_found(self) {
        self.reply(404, status_body(404, "NotFound", "not found"));
    }

    /// Answers as the API server does when a write loses a race.
    pub fn conflict(self) {
        self.reply(
            409,
            status_body(409, "Conflict", "the object has been modified"),
        );
    }

    /// Answers with the request's own body: what the API server returns after a create.
    pub fn echo(self, status: u16) {
        let body = self.body.clone();
        self.reply(status, body);
    }
}

/// A `metav1.Status` failure.
pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "message": message, "code": code
    })
}

impl ApiServer {
    /// The next call, asserted to be `method` on `uri` (path and query, exactly).
    pub async fn expect(&mut self, method: &str, uri: &str) -> Exchange {
        let next = tokio::time::timeout(Duration::from_secs(5), self.handle.next_request()).await;
        let Ok(Some((request, send))) = next else {
            panic!("expected {method} {uri}, but no call came");
        };
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let exchange = Exchange {
            method: parts.method.to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            body,
            send,
        };
        assert_eq!(
            (exchange.method.as_str(), exchange.uri.as_str()),
            (method, uri),
            "unexpected call; its body: {}",
            exchange.body
        );
        exchange
    }

    /// The next call, whatever it is; `None` when the client is gone.
    pub async fn next_any(&mut self) -> Option<Exchange> {
        let (request, send) = self.handle.next_request().await?;
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.ok()?.to_bytes();
        Some(Exchange {
            method: parts.method.to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            send,
        })
    }

    /// Asserts that no call comes (the code under test has returned, so a call would
    /// already be waiting).
    pub async fn no_more_calls(&mut self) {
        let next =
            tokio::time::timeout(Duration::from_millis(50), self.handle.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected call: {} {}", request.method(), request.uri());
        }
    }
}

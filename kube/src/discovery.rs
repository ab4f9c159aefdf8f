//! The services of one member cluster, from its Services and EndpointSlices
//! (`discovery.k8s.io/v1`), as the [`ServiceSpec`]s a file would list for it.
//!
//! * A Service's port is the one named `http`, else its first TCP port: detour's model has
//!   one port per service, the one Istio names the primary's Envoy cluster after.
//! * Its endpoints are the ready endpoints of every EndpointSlice labelled
//!   `kubernetes.io/service-name` with its name: each endpoint's first address (the API
//!   says consumers use the first) and the slice's port of the same name as the Service's
//!   (the resolved `targetPort`). An unknown readiness counts as ready, as the API says
//!   consumers should assume; terminating endpoints are not ready.
//! * ExternalName Services have no endpoints to fail over between and are skipped.
//! * Its protocol comes from that port, as Istio reads it: the port's `appProtocol`
//!   (`kubernetes.io/h2c` or `http2` → http2, `grpc` → grpc, `http` → http), else the
//!   port's name (`grpc` or `grpc-*` → grpc, `http2` or `http2-*` → http2), else http.
//!
//! Pure: apply/delete/reset of plain objects, as the watches deliver them.

use detour_core::docs::ServiceSpec;
use detour_core::model::{Address, Host, KnownService, Protocol, ServiceName};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name` of an object.
type Key = (String, String);

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

#[derive(Debug, Default, Clone)]
pub struct ClusterServices {
    services: BTreeMap<Key, Service>,
    /// By slice namespace and name.
    slices: BTreeMap<Key, EndpointSlice>,
}

impl ClusterServices {
    pub fn apply_service(&mut self, service: Service) {
        self.services.insert(key(&service.metadata), service);
    }

    pub fn delete_service(&mut self, service: &Service) {
        self.services.remove(&key(&service.metadata));
    }

    pub fn reset_services(&mut self, services: Vec<Service>) {
        self.services = services
            .into_iter()
            .map(|s| (key(&s.metadata), s))
            .collect();
    }

    pub fn apply_slice(&mut self, slice: EndpointSlice) {
        self.slices.insert(key(&slice.metadata), slice);
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        self.slices.remove(&key(&slice.metadata));
    }

    pub fn reset_slices(&mut self, slices: Vec<EndpointSlice>) {
        self.slices = slices.into_iter().map(|s| (key(&s.metadata), s)).collect();
    }

    /// The services `wanted` selects, as a file would list them (sorted by namespace and
    /// name). Selecting only the services some scheme names keeps unrelated churn in a
    /// big cluster from rebuilding anything.
    pub fn specs(&self, wanted: impl Fn(&ServiceName) -> bool) -> Vec<ServiceSpec> {
        self.ports()
            .filter(|(name, _, _)| wanted(name))
            .map(|(name, port, number)| ServiceSpec {
                endpoints: self.ready_endpoints(&name.namespace, &name.name, port.name.as_deref()),
                protocol: Some(port_protocol(port).as_str().to_string()),
                name: name.name,
                namespace: name.namespace,
                port: number,
            })
            .collect()
    }

    /// Every service detour could fail over, named by a scheme or not (sorted by
    /// namespace and name), without endpoints: what the status API lists of the cluster.
    pub fn known(&self) -> Vec<KnownService> {
        self.ports()
            .map(|(name, port, number)| KnownService {
                name,
                port: number,
                protocol: port_protocol(port),
            })
            .collect()
    }

    /// Each Service with the port detour uses, and its number; ExternalName Services,
    /// and those without a usable port, are left out.
    fn ports(&self) -> impl Iterator<Item = (ServiceName, &ServicePort, u16)> {
        self.services
            .iter()
            .filter_map(|((namespace, name), service)| {
                let spec = service.spec.as_ref()?;
                if spec.type_.as_deref() == Some("ExternalName") {
                    return None;
                }
                let port = service_port(spec.ports.as_deref().unwrap_or_default())?;
                let number = u16::try_from(port.port).ok()?;
                Some((ServiceName::new(namespace, name), port, number))
            })
    }

    /// `HOST:PORT` of every ready endpoint of a Service's port, sorted, without repeats
    /// (two slices may list one endpoint while it moves between them).
    fn ready_endpoints(&self, namespace: &str, name: &str, port_name: Option<&str>) -> Vec<String> {
        let mut found = BTreeSet::new();
        for slice in self.slices.values() {
            let meta = &slice.metadata;
            let labelled = meta
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|n| n == name);
            if meta.namespace.as_deref() != Some(namespace) || !labelled {
                continue;
            }
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue; // FQDN slices are deprecated and name no pod
            }
            let port = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name.unwrap_or("")
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            });
            let Some(port) = port
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                if ready && let Ok(address) = Address::new(Host::Ip(ip), port) {
                    found.insert(address);
                }
            }
        }
        found.into_iter().map(|a| a.to_string()).collect()
    }

    /// How many Services are known (for the MemberCluster's status).
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// The port detour uses: the one named `http`, else the first TCP one.
fn service_port(ports: &[ServicePort]) -> Option<&ServicePort> {
    let tcp = |p: &&ServicePort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    ports
        .iter()
        .filter(tcp)
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| ports.iter().find(tcp))
}

/// What a Service port speaks: its `appProtocol` when detour knows it, else what its
/// name says (Istio's convention, `PROTOCOL` or `PROTOCOL-suffix`), else HTTP/1.1. Both
/// are compared without case, as Istio does.
fn port_protocol(port: &ServicePort) -> Protocol {
    let app = port.app_protocol.as_deref().map(str::to_ascii_lowercase);
    match app.as_deref() {
        Some("kubernetes.io/h2c" | "http2") => return Protocol::Http2,
        Some("grpc") => return Protocol::Grpc,
        Some("http") => return Protocol::Http,
        // Anything else (`kubernetes.io/ws`, a vendor's name...): the name may say more.
        _ => {}
    }
    let name = port.name.as_deref().unwrap_or("").to_ascii_lowercase();
    let prefix = name.split('-').next().unwrap_or("");
    match prefix {
        "grpc" => Protocol::Grpc,
        "http2" => Protocol::Http2,
        _ => Protocol::Http,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{mk_service, mk_slice};

    fn all(_: &ServiceName) -> bool {
        true
    }

    #[test]
    fn ready_endpoints_of_the_services_port() {
        let mut c = ClusterServices::default();
        c.apply_service(mk_service("apps", "foo", &[("grpc", 9090), ("http", 8080)]));
        c.apply_slice(mk_slice(
            "apps",
            "foo",
            "foo-a",
            &[("grpc", 9091), ("http", 80)],
            &[
                ("10.0.0.2", Some(true)),
                ("10.0.0.1", None),
                ("10.0.0.3", Some(false)),
            ],
        ));
        c.apply_slice(mk_slice(
            "apps",
            "foo",
            "foo-b",
            &[("http", 80)],
            &[("10.0.0.1", Some(true)), ("fd00::1", Some(true))],
        ));
        // Another service's slice, and the same name in another namespace.
        c.apply_slice(mk_slice(
            "apps",
            "bar",
            "bar-a",
            &[("http", 80)],
            &[("10.9.9.9", None)],
        ));
        c.apply_slice(mk_slice(
            "other",
            "foo",
            "foo-x",
            &[("http", 80)],
            &[("10.8.8.8", None)],
        ));
        let specs = c.specs(all);
        assert_eq!(
            specs,
            [ServiceSpec {
                name: "foo".into(),
                namespace: "apps".into(),
                port: 8080,
                endpoints: vec![
                    "10.0.0.1:80".into(),
                    "10.0.0.2:80".into(),
                    "[fd00::1]:80".into()
                ],
                protocol: Some("http".into()),
            }]
        );
    }

    fn port(name: &str, app_protocol: Option<&str>) -> ServicePort {
        ServicePort {
            name: (!name.is_empty()).then(|| name.to_string()),
            app_protocol: app_protocol.map(str::to_string),
            port: 80,
            ..ServicePort::default()
        }
    }

    #[test]
    fn the_protocol_comes_from_app_protocol_then_the_port_name() {
        use Protocol::{Grpc, Http, Http2};
        for (name, app, expected) in [
            // appProtocol wins over the name.
            ("", Some("kubernetes.io/h2c"), Http2),
            ("grpc", Some("kubernetes.io/h2c"), Http2),
            ("web", Some("grpc"), Grpc),
            ("grpc-api", Some("http"), Http),
            ("", Some("HTTP2"), Http2),
            // An appProtocol detour does not know leaves it to the name.
            ("grpc-api", Some("kubernetes.io/ws"), Grpc),
            ("grpc", None, Grpc),
            ("grpc-api", None, Grpc),
            ("GRPC-Api", None, Grpc),
            ("http2", None, Http2),
            ("http2-web", None, Http2),
            ("http", None, Http),
            ("http-web", None, Http),
            ("grpcweb", None, Http),
            ("web-grpc", None, Http),
            ("", None, Http),
        ] {
            assert_eq!(
                port_protocol(&port(name, app)),
                expected,
                "name {name:?}, appProtocol {app:?}"
            );
        }
    }

    #[test]
    fn a_services_protocol_is_its_chosen_ports() {
        let mut c = ClusterServices::default();
        let mut svc = mk_service("apps", "foo", &[("grpc-api", 9090)]);
        c.apply_service(svc.clone());
        assert_eq!(c.specs(all)[0].protocol.as_deref(), Some("grpc"));
        if let Some(p) = svc.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            p[0].app_protocol = Some("kubernetes.io/h2c".into());
        }
        c.apply_service(svc);
        assert_eq!(c.specs(all)[0].protocol.as_deref(), Some("http2"));
        // With an `http` port, that is the one used, and what it says.
        c.apply_service(mk_service("apps", "foo", &[("grpc", 9090), ("http", 8080)]));
        assert_eq!(c.specs(all)[0].protocol.as_deref(), Some("http"));
    }

    #[test]
    fn deletes_and_resets_change_the_specs() {
        let mut c = ClusterServices::default();
        let foo = mk_service("apps", "foo", &[("", 8080)]);
        let slice = mk_slice("apps", "foo", "foo-a", &[("", 8080)], &[("10.0.0.1", None)]);
        c.apply_service(foo.clone());
        c.apply_slice(slice.clone());
        assert_eq!(c.specs(all)[0].endpoints, ["10.0.0.1:8080"]);
        c.delete_slice(&slice);
        assert!(
            c.specs(all)[0].endpoints.is_empty(),
            "no endpoints, still a service"
        );
        c.reset_slices(vec![slice]);
        assert_eq!(c.specs(all)[0].endpoints.len(), 1);
        c.delete_service(&foo);
        assert!(c.specs(all).is_empty());
        c.reset_services(vec![foo]);
        assert_eq!(c.len(), 1);
        assert!(
            c.specs(|s| s.name != "foo").is_empty(),
            "only what is wanted"
        );
    }

    #[test]
    fn external_names_and_udp_only_services_are_skipped() {
        let mut c = ClusterServices::default();
        let mut ext = mk_service("apps", "ext", &[("http", 80)]);
        if let Some(spec) = ext.spec.as_mut() {
            spec.type_ = Some("ExternalName".into());
        }
        c.apply_service(ext);
        let mut dns = mk_service("apps", "dns", &[("dns", 53)]);
        if let Some(p) = dns.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            p[0].protocol = Some("UDP".into());
        }
        c.apply_service(dns);
        assert!(c.specs(all).is_empty());
    }
}

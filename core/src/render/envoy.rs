//! `detour render envoy`: a complete Envoy v3 bootstrap for one member cluster, with the
//! names and listeners of docs/internals.md:
//!
//! * admin on `--admin`;
//! * **ingress** on `--ingress`: the detour filter, then the router; one virtual host per
//!   service of the cluster (`NAME.NS`, `NAME.NS:*`) with two routes: requests carrying the
//!   route header go to the Envoy cluster it names, the rest to the local service;
//! * **gateway** on the MemberCluster's gateway address: no filter (a request that
//!   crossed clusters never fails over again); virtual hosts for the services of this
//!   cluster that some scheme names; adds `x-detour-via: C` on the way in and, when the
//!   gateway itself fails (Envoy answers locally with response flags),
//!   `x-detour-gateway-flags: %RESPONSE_FLAGS%` on the way out;
//! * clusters `detour|C|NS|NAME` for local services (their endpoints) and for the remote
//!   targets of this cluster's schemes (the remote gateway), and `detour_controller`.
//!
//! With `certs` (a `detour certs init` directory, see [`crate::pki::layout`]):
//!
//! * the gateway listener requires a client certificate from the federation CA naming a
//!   cluster's Envoy (`spiffe://detour.dev/cluster/*/envoy`) or the controller's probe
//!   (`spiffe://detour.dev/controller/probe`); it presents C's gateway certificate;
//! * each remote gateway cluster presents C's Envoy certificate and accepts only a
//!   certificate from the CA naming that gateway (`.../cluster/REMOTE/gateway`), sending
//!   the gateway's host as SNI when it is a DNS name (SNI cannot carry an IP address);
//! * `detour_controller` presents C's table certificate and accepts only the
//!   controller's server certificate (`spiffe://detour.dev/controller/server`).
//!
//! Every certificate (with its key) and the trust bundle come from Envoy SDS files in a
//! watched directory, one per kind of Envoy: `clusters/C/sds/gateway/` for the gateway
//! listener, `clusters/C/sds/client/` for the clusters that call out. A renewal swapped
//! into it (see [`crate::pki::layout`]) reaches the running Envoy, whose next handshakes
//! present it.
//!
//! Checking identities by URI SAN rather than by address keeps one gateway from
//! impersonating another even when they share a load balancer's address.

use super::clusters::{Upstream, harden};
use super::routes::{GatewayMatch, GatewayReplay, gateway_routes, local_route, scheme_routes};
use crate::model::{
    Address, CONTROLLER_CLUSTER, Host, Model, Protocol, Scheme, ServiceName, TargetRef,
};
use crate::pki::identity::{ClusterRole, ControllerRole, Identity, TRUST_DOMAIN};
use crate::pki::layout::{Layout, Mount, SDS_TRUST};
use detour_filter::config::{
    DEFAULT_ROUTE_HEADER, GATEWAY_FLAGS_HEADER, INTERNAL_HEADER_PREFIX, VIA_HEADER,
};
use detour_filter::request::ENVOY_STEERING_HEADERS;
use serde_norway::{Mapping, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where a path to the filter points when `--wasm` is not given: where
/// `cargo build -p detour-filter --target wasm32-wasip1 --release` puts it.
pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/detour_filter.wasm";

/// Connecting to a local service, a remote gateway or the controller: loopback or one
/// network hop, so a second is long; failing fast is what lets the router go on.
const CONNECT_TIMEOUT: &str = "1s";
/// Response header telling a client why Envoy answered a request itself (its response
/// flags), on the ingress; a gateway's says which gateway.
pub const REASON_HEADER: &str = "x-detour-reason";

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub cluster: String,
    /// Which of the cluster's gateway addresses this Envoy's gateway listener binds
    /// (one Envoy per gateway instance); `None`: the first.
    pub gateway: Option<Address>,
    pub ingress: Address,
    pub admin: Address,
    pub controller: Address,
    pub wasm: PathBuf,
    pub certs: Option<PathBuf>,
    /// The filter's `maxTableBytes`: the same as the controller's `--max-table-bytes`,
    /// which serves no larger table.
    pub max_table_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown cluster {name:?} (MemberClusters: {known})")]
    UnknownCluster { name: String, known: String },
    #[error(
        "--gateway-address {addr} is not one of MemberCluster {cluster:?}'s gateway addresses ({known})"
    )]
    UnknownGateway {
        addr: Address,
        cluster: String,
        known: String,
    },
    #[error("{a} and {b} are both {addr}; each listener needs its own address")]
    AddressClash {
        a: &'static str,
        b: &'static str,
        addr: Address,
    },
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
}

/// The Envoy bootstrap for `opts.cluster`, as YAML.
pub fn render(model: &Model, opts: &RenderOptions) -> Result<String, RenderError> {
    let tls = opts.certs.as_ref().map(|dir| Tls {
        layout: Layout::new(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
        cluster: opts.cluster.clone(),
    });
    let Some(cluster) = model.cluster(&opts.cluster) else {
        return Err(RenderError::UnknownCluster {
            name: opts.cluster.clone(),
            known: model
                .clusters
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let gateway = match &opts.gateway {
        None => &cluster.gateway,
        Some(wanted) => cluster.gateways().find(|g| *g == wanted).ok_or_else(|| {
            RenderError::UnknownGateway {
                addr: wanted.clone(),
                cluster: cluster.name.clone(),
                known: cluster
                    .gateways()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?,
    };
    let listeners = [
        ("--ingress", &opts.ingress),
        ("--admin", &opts.admin),
        ("the MemberCluster's gateway", gateway),
    ];
    for (i, (a, x)) in listeners.iter().enumerate() {
        for (b, y) in &listeners[i + 1..] {
            if x == y {
                return Err(RenderError::AddressClash {
                    a,
                    b,
                    addr: (*x).clone(),
                });
            }
        }
    }

    let local = |service: &ServiceName| TargetRef {
        cluster: cluster.name.clone(),
        service: service.clone(),
    };

    // Ingress: every service of this cluster; a scheme's primary with a route per start
    // group (the filter names the start in the route header).
    let ingress_hosts: Vec<Value> = cluster
        .services
        .keys()
        .map(|service| {
            let envoy_cluster = local(service).envoy_cluster();
            let routes = match model.scheme_for_primary(&cluster.name, service) {
                Some(scheme) => scheme_routes(
                    scheme,
                    &envoy_cluster,
                    &hosts_per_group(model, scheme),
                    DEFAULT_ROUTE_HEADER,
                ),
                None => vec![local_route(&envoy_cluster)],
            };
            map! {
                "name" => service.authority(),
                "domains" => domains(service),
                "routes" => routes,
                // Meant for this Envoy's router, not for the client.
                "response_headers_to_remove" => vec![GATEWAY_FLAGS_HEADER],
            }
        })
        .collect();

    // Gateway: the services of this cluster that some scheme names.
    let named: BTreeSet<&ServiceName> = model
        .schemes
        .iter()
        .flat_map(|s| s.targets())
        .filter(|t| t.cluster == cluster.name)
        .map(|t| &t.service)
        .collect();
    // One virtual host: a failover request names its target in a header (the target
    // may be another service than the authority the client called), a health check by
    // its authority; every target-header route comes first.
    let replay_of = |service: &ServiceName| {
        GatewayReplay::of(model.schemes.iter().filter(|s| {
            s.targets()
                .any(|t| t.cluster == cluster.name && t.service == *service)
        }))
    };
    let gateway_routes_by = |by: GatewayMatch| {
        named.iter().flat_map(move |service| {
            gateway_routes(
                service,
                &local(service).envoy_cluster(),
                replay_of(service).as_ref(),
                by,
            )
        })
    };
    let gateway_hosts = vec![map! {
        "name" => "detour_gateway",
        "domains" => vec!["*"],
        "routes" => gateway_routes_by(GatewayMatch::TargetHeader)
            .chain(gateway_routes_by(GatewayMatch::Authority))
            .collect::<Vec<_>>(),
        "request_headers_to_add" => vec![map! {
            "header" => map! { "key" => VIA_HEADER, "value" => cluster.name.clone() },
            "append_action" => "OVERWRITE_IF_EXISTS_OR_ADD",
        }],
    }];

    let filter_config = serde_json::json!({
        "cluster": cluster.name,
        "controller": {
            "envoyCluster": CONTROLLER_CLUSTER,
            "authority": opts.controller.to_string(),
            "maxTableBytes": opts.max_table_bytes,
        },
        "routeHeader": DEFAULT_ROUTE_HEADER,
        // The ingress removes every header a client may not send before routing (below):
        // the filter need not read every request's headers.
        "envoyRemovesClientHeaders": true,
    })
    .to_string();
    let wasm = std::path::absolute(&opts.wasm).unwrap_or_else(|_| opts.wasm.clone());

    let ingress = listener(
        "detour_ingress",
        &opts.ingress,
        None,
        hcm(
            "detour_ingress",
            ingress_hosts,
            vec![
                map! {
                    "name" => "envoy.filters.http.wasm",
                    "typed_config" => map! {
                        "@type" => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config" => map! {
                            "name" => "detour",
                            "vm_config" => map! {
                                "vm_id" => "detour",
                                "runtime" => "envoy.wasm.runtime.v8",
                                "code" => map! {
                                    "local" => map! { "filename" => wasm.display().to_string() },
                                },
                            },
                            "configuration" => map! {
                                "@type" => "type.googleapis.com/google.protobuf.StringValue",
                                "value" => filter_config,
                            },
                        },
                    },
                },
                router(),
            ],
            // A client must not choose the start group (the route header), nor speak
            // for detour (`x-detour-*`), nor set the router's retries and timeouts
            // (`x-envoy-retry-on`, ...): all removed before Envoy picks the route, so the
            // filter (`envoyRemovesClientHeaders`) reads none of them.
            vec![
                (
                    "early_header_mutation_extensions",
                    early_removal(
                        &[&[DEFAULT_ROUTE_HEADER], ENVOY_STEERING_HEADERS].concat(),
                        INTERNAL_HEADER_PREFIX,
                    ),
                ),
                // When Envoy answers itself (every attempt failed, or one that may have
                // reached the service cannot be sent again), the client learns why.
                (
                    "local_reply_config",
                    flag_local_replies(&[(REASON_HEADER, "%RESPONSE_FLAGS%".to_string())]),
                ),
                ("upgrade_configs", upgrades()),
            ],
        ),
    );
    let gateway_listener = listener(
        "detour_gateway",
        gateway,
        tls.as_ref().map(Tls::gateway_listener),
        hcm(
            "detour_gateway",
            gateway_hosts,
            vec![router()],
            // Envoy's own answers (connect failure, no route, timeout...) carry response
            // flags for the calling Envoy's router; the service's answers never reach
            // this mapper.
            vec![
                (
                    "local_reply_config",
                    flag_local_replies(&[
                        (GATEWAY_FLAGS_HEADER, "%RESPONSE_FLAGS%".to_string()),
                        (
                            REASON_HEADER,
                            format!("gateway {}: %RESPONSE_FLAGS%", cluster.name),
                        ),
                    ]),
                ),
                ("upgrade_configs", upgrades()),
            ],
        ),
    );

    let mut clusters: Vec<Value> = cluster
        .services
        .values()
        .map(|s| {
            let c = envoy_cluster(&local(&s.name).envoy_cluster(), &s.endpoints, None);
            let mut c = speaking(s.protocol, c);
            harden(&mut c, Upstream::Service);
            c
        })
        .collect();
    let remote: BTreeSet<&TargetRef> = model
        .schemes_of(&cluster.name)
        .flat_map(|s| s.targets())
        .filter(|t| t.cluster != cluster.name)
        .collect();
    for t in remote {
        if let Some(there) = model.cluster(&t.cluster) {
            let gateways: Vec<Address> = there.gateways().cloned().collect();
            let c = envoy_cluster(
                &t.envoy_cluster(),
                &gateways,
                tls.as_ref().map(|tls| {
                    tls.upstream(
                        ClusterRole::Envoy,
                        &Identity::cluster(&t.cluster, ClusterRole::Gateway),
                        &there.gateway.host,
                    )
                }),
            );
            // The gateway passes requests on as they came: it must get what its
            // service speaks.
            let mut c = speaking(model.protocol(t), c);
            harden(&mut c, Upstream::Gateway { target: &t.service });
            clusters.push(c);
        }
    }
    clusters.push(envoy_cluster(
        CONTROLLER_CLUSTER,
        std::slice::from_ref(&opts.controller),
        tls.as_ref().map(|tls| {
            tls.upstream(
                ClusterRole::Table,
                &Identity::Controller(ControllerRole::Server),
                &opts.controller.host,
            )
        }),
    ));

    let bootstrap = map! {
        "node" => map! { "id" => format!("detour-{}", cluster.name), "cluster" => cluster.name.clone() },
        "admin" => map! { "address" => socket_address(&opts.admin) },
        "static_resources" => map! {
            "listeners" => vec![ingress, gateway_listener],
            "clusters" => clusters,
        },
    };
    let yaml = serde_norway::to_string(&bootstrap)?;
    let security = match &tls {
        Some(tls) => format!(
            "mTLS with certificates from {}",
            tls.layout.root().display()
        ),
        None => "plaintext (no --certs)".to_string(),
    };
    Ok(format!(
        "# Envoy bootstrap for detour member cluster {:?}, rendered by `detour render envoy`.\n\
         # Listeners: ingress {} (detour filter), gateway {}, admin {}; controller {}.\n\
         # Between clusters and to the controller: {security}.\n{yaml}",
        cluster.name, opts.ingress, gateway, opts.admin, opts.controller
    ))
}

/// How many instances each group of `scheme` reaches from its primary's cluster: the
/// primary's endpoints, then for each failover group the fewest gateway instances among
/// its targets' clusters.
fn hosts_per_group(model: &Model, scheme: &Scheme) -> Vec<usize> {
    let endpoints = model
        .cluster(&scheme.primary.cluster)
        .and_then(|c| c.services.get(&scheme.primary.service))
        .map_or(1, |s| s.endpoints.len());
    let gateways = |t: &TargetRef| {
        model
            .cluster(&t.cluster)
            .map_or(1, |c| c.gateways().count())
    };
    std::iter::once(endpoints)
        .chain(
            scheme
                .groups
                .iter()
                .map(|g| g.iter().map(|w| gateways(&w.target)).min().unwrap_or(1)),
        )
        .collect()
}

fn domains(service: &ServiceName) -> Vec<String> {
    let host = service.authority();
    vec![host.clone(), format!("{host}:*")]
}

fn socket_address(a: &Address) -> Value {
    map! {
        "socket_address" => map! { "address" => a.host.to_string(), "port_value" => a.port },
    }
}

fn listener(name: &str, address: &Address, transport_socket: Option<Value>, hcm: Value) -> Value {
    let mut chain = map! { "filters" => vec![hcm] };
    if let (Some(socket), Value::Mapping(m)) = (transport_socket, &mut chain) {
        m.insert(Value::from("transport_socket"), socket);
    }
    map! {
        "name" => name,
        "address" => socket_address(address),
        "filter_chains" => vec![chain],
    }
}

/// The certificates of one member cluster's Envoy.
struct Tls {
    layout: Layout,
    cluster: String,
}

impl Tls {
    /// An SDS config reading the `Secret` in `file`, reloaded whenever a file is
    /// renamed into its directory (a renewal by `certs init`, a Kubernetes Secret
    /// volume's `..data` swap).
    fn sds(&self, name: &str, mount: Mount, file: &std::path::Path) -> Value {
        let dir = self.layout.sds_dir(&self.cluster, mount);
        map! {
            "name" => name,
            "sds_config" => map! {
                "resource_api_version" => "V3",
                "path_config_source" => map! {
                    "path" => file.display().to_string(),
                    "watched_directory" => map! { "path" => dir.display().to_string() },
                },
            },
        }
    }

    /// `common_tls_context` presenting this cluster's `role` certificate and accepting
    /// peers from the federation CA whose URI SAN matches one of `peers`. Both the
    /// certificate and the trust bundle come from SDS files, so that renewals reach a
    /// running Envoy.
    fn context(&self, role: ClusterRole, peers: Vec<Value>) -> Value {
        // Only the mount of this role: a gateway Envoy never needs the client keys.
        let mount = Mount::of(role);
        map! {
            "tls_certificate_sds_secret_configs" => vec![self.sds(
                role.as_str(),
                mount,
                &self.layout.sds_certificate(&self.cluster, role),
            )],
            "combined_validation_context" => map! {
                "default_validation_context" => map! {
                    "match_typed_subject_alt_names" => peers,
                },
                "validation_context_sds_secret_config" => self.sds(
                    SDS_TRUST,
                    mount,
                    &self.layout.sds_trust(&self.cluster, mount),
                ),
            },
        }
    }

    fn uri_san(matcher: Value) -> Value {
        map! { "san_type" => "URI", "matcher" => matcher }
    }

    /// The gateway listener: requires a client certificate of a cluster's Envoy or of
    /// the controller's probe.
    fn gateway_listener(&self) -> Value {
        let envoys = format!(
            "^spiffe://{}/cluster/[^/]+/{}$",
            TRUST_DOMAIN.replace('.', "\\."),
            ClusterRole::Envoy.as_str()
        );
        let peers = vec![
            Tls::uri_san(map! { "safe_regex" => map! { "regex" => envoys } }),
            Tls::uri_san(map! { "exact" => Identity::Controller(ControllerRole::Probe).uri() }),
        ];
        let mut context = self.context(ClusterRole::Gateway, peers);
        // HTTP/2 for clusters (and gRPC checks) that ask for it by ALPN, HTTP/1.1 for
        // the rest; the connection manager's AUTO codec follows what was agreed.
        if let Value::Mapping(m) = &mut context {
            m.insert(
                Value::from("alpn_protocols"),
                Value::from(vec![ALPN_H2, ALPN_HTTP11]),
            );
        }
        map! {
            "name" => "envoy.transport_sockets.tls",
            "typed_config" => map! {
                "@type" => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate" => true,
                "common_tls_context" => context,
            },
        }
    }

    /// An upstream cluster presenting this cluster's `role` certificate to a server that
    /// must prove to be `server`.
    fn upstream(&self, role: ClusterRole, server: &Identity, host: &Host) -> Value {
        let peers = vec![Tls::uri_san(map! { "exact" => server.uri() })];
        let mut config = map! {
            "@type" => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context" => self.context(role, peers),
        };
        if let (Host::Name(name), Value::Mapping(m)) = (host, &mut config) {
            m.insert(Value::from("sni"), Value::from(name.clone()));
        }
        map! {
            "name" => "envoy.transport_sockets.tls",
            "typed_config" => config,
        }
    }
}

/// `early_header_mutation_extensions` removing `headers`, and every header whose name
/// starts with `prefix`, from every request before route selection and before any
/// filter runs.
fn early_removal(headers: &[&str], prefix: &str) -> Value {
    let mut mutations: Vec<Value> = headers.iter().map(|h| map! { "remove" => *h }).collect();
    mutations.push(map! {
        "remove_on_match" => map! { "key_matcher" => map! { "prefix" => prefix } },
    });
    Value::Sequence(vec![map! {
        "name" => "envoy.http.early_header_mutation.header_mutation",
        "typed_config" => map! {
            "@type" => "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
            "mutations" => mutations,
        },
    }])
}

/// `local_reply_config` adding `headers` (name, value with Envoy's substitution
/// formatter) to every answer Envoy makes itself for a failure (one with response flags).
fn flag_local_replies(headers: &[(&str, String)]) -> Value {
    let headers_to_add: Vec<Value> = headers
        .iter()
        .map(|(key, value)| {
            map! {
                "header" => map! { "key" => *key, "value" => value.clone() },
                "append_action" => "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        })
        .collect();
    map! {
        "mappers" => vec![map! {
            "filter" => map! { "response_flag_filter" => Mapping::new() },
            "headers_to_add" => headers_to_add,
        }],
    }
}

/// WebSocket upgrades pass through (the router carries them like any request).
fn upgrades() -> Value {
    Value::Sequence(vec![map! { "upgrade_type" => "websocket" }])
}

/// An HTTP connection manager with more fields of its own (`extra`: name, value).
fn hcm(
    name: &str,
    virtual_hosts: Vec<Value>,
    http_filters: Vec<Value>,
    extra: Vec<(&str, Value)>,
) -> Value {
    let mut config = map! {
        "@type" => "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix" => name,
        "codec_type" => "AUTO",
        "route_config" => map! { "name" => name, "virtual_hosts" => virtual_hosts },
        "http_filters" => http_filters,
    };
    if let Value::Mapping(m) = &mut config {
        for (key, value) in extra {
            m.insert(Value::from(key), value);
        }
    }
    map! {
        "name" => "envoy.filters.network.http_connection_manager",
        "typed_config" => config,
    }
}

fn router() -> Value {
    map! {
        "name" => "envoy.filters.http.router",
        "typed_config" => map! {
            "@type" => "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        },
    }
}

/// A cluster of fixed endpoints: STATIC when they are all IP addresses, else STRICT_DNS.
fn envoy_cluster(name: &str, endpoints: &[Address], transport_socket: Option<Value>) -> Value {
    let kind = if endpoints.iter().all(Address::is_ip) {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| map! { "endpoint" => map! { "address" => socket_address(e) } })
        .collect();
    let mut cluster = map! {
        "name" => name,
        "type" => kind,
        "connect_timeout" => CONNECT_TIMEOUT,
        "load_assignment" => map! {
            "cluster_name" => name,
            "endpoints" => vec![map! { "lb_endpoints" => lb_endpoints }],
        },
    };
    if let (Some(socket), Value::Mapping(m)) = (transport_socket, &mut cluster) {
        m.insert(Value::from("transport_socket"), socket);
    }
    cluster
}

const ALPN_H2: &str = "h2";
const ALPN_HTTP11: &str = "http/1.1";

/// `cluster` (from [`envoy_cluster`]) speaking what `protocol` needs: HTTP/2 for
/// `http2` and `grpc` (h2c, or h2 agreed by ALPN when the cluster has TLS), Envoy's
/// default HTTP/1.1 otherwise.
fn speaking(protocol: Protocol, mut cluster: Value) -> Value {
    if !protocol.is_http2() {
        return cluster;
    }
    let Value::Mapping(m) = &mut cluster else {
        return cluster;
    };
    m.insert(
        Value::from("typed_extension_protocol_options"),
        map! {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" => map! {
                "@type" => "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config" => map! { "http2_protocol_options" => Mapping::new() },
            },
        },
    );
    let tls_context = m
        .get_mut("transport_socket")
        .and_then(|t| t.get_mut("typed_config"))
        .and_then(|c| c.get_mut("common_tls_context"))
        .and_then(Value::as_mapping_mut);
    if let Some(context) = tls_context {
        context.insert(Value::from("alpn_protocols"), Value::from(vec![ALPN_H2]));
    }
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::load::parse_file;
    use crate::testing::EXAMPLE;
    use crate::testing::example_model;
    use crate::validate::build_model;
    use detour_filter::config::FilterConfig;

    fn opts(cluster: &str) -> RenderOptions {
        RenderOptions {
            cluster: cluster.into(),
            gateway: None,
            ingress: Address::parse("127.0.0.1:10000").unwrap(),
            admin: Address::parse("127.0.0.1:9901").unwrap(),
            controller: Address::parse("127.0.0.1:8080").unwrap(),
            wasm: "/opt/detour/detour_filter.wasm".into(),
            certs: None,
            max_table_bytes: detour_filter::table::DEFAULT_MAX_TABLE_BYTES,
        }
    }

    fn rendered(cluster: &str) -> Value {
        serde_norway::from_str(&render(&example_model(), &opts(cluster)).unwrap()).unwrap()
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_sequence()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn east_routes_locally_and_reaches_remote_gateways() {
        let b = rendered("east");
        let clusters = &b["static_resources"]["clusters"];
        assert_eq!(
            names(clusters),
            [
                "detour|east|apps|foo",
                "detour|south|apps|foo",
                "detour|west|apps|foo",
                "detour_controller"
            ]
        );
        let west = &clusters[2]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(west["address"].as_str(), Some("127.0.2.1"));
        assert_eq!(west["port_value"].as_u64(), Some(15443));
        let listeners = &b["static_resources"]["listeners"];
        assert_eq!(names(listeners), ["detour_ingress", "detour_gateway"]);

        let hcm = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
        let vhost = &hcm["route_config"]["virtual_hosts"][0];
        assert_eq!(vhost["domains"][1].as_str(), Some("foo.apps:*"));
        // A route per start group (routes.rs has the details): the last one, without
        // the route header, starts at east's own foo.
        let routes = vhost["routes"].as_sequence().unwrap();
        assert_eq!(
            routes[0]["match"]["headers"][0]["name"].as_str(),
            Some("x-detour-route")
        );
        let last = routes.last().unwrap();
        assert!(last["match"].get("headers").is_none());
        assert_eq!(
            last["route"]["inline_cluster_specifier_plugin"]["extension"]["typed_config"]
                ["priority_groups"][0]["clusters"][0]["cluster_name"]
                .as_str(),
            Some("detour|east|apps|foo")
        );
        // The router's business, not the client's.
        assert_eq!(
            vhost["response_headers_to_remove"][0].as_str(),
            Some("x-detour-gateway-flags")
        );
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["vm_config"]["vm_id"].as_str(), Some("detour"));
        assert_eq!(
            wasm["vm_config"]["code"]["local"]["filename"].as_str(),
            Some("/opt/detour/detour_filter.wasm")
        );
        let config = wasm["configuration"]["value"].as_str().unwrap();
        let parsed = FilterConfig::parse(config.as_bytes()).unwrap();
        assert_eq!(parsed.cluster, "east");
        assert_eq!(parsed.controller.envoy_cluster, "detour_controller");
        assert_eq!(parsed.controller.path, "/v1/tables/east");
        assert_eq!(
            hcm["http_filters"][1]["name"].as_str(),
            Some("envoy.filters.http.router")
        );
    }

    #[test]
    fn the_filter_refuses_tables_over_the_limit_the_controller_keeps() {
        // The controller serves no table over its --max-table-bytes; a filter with a
        // smaller limit would refuse tables the controller still serves.
        let mut o = opts("east");
        o.max_table_bytes = 9 * 1024 * 1024;
        let b: Value = serde_norway::from_str(&render(&example_model(), &o).unwrap()).unwrap();
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let filter = &hcm["http_filters"][0]["typed_config"]["config"]["configuration"]["value"];
        let config = FilterConfig::parse(filter.as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(config.controller.max_table_bytes, 9 * 1024 * 1024);
    }

    #[test]
    fn the_ingress_drops_a_client_route_header_before_routing() {
        let b = rendered("east");
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let early = &hcm["early_header_mutation_extensions"][0];
        assert_eq!(
            early["name"].as_str(),
            Some("envoy.http.early_header_mutation.header_mutation")
        );
        assert_eq!(
            early["typed_config"]["mutations"][0]["remove"].as_str(),
            Some("x-detour-route")
        );
        let mutations = early["typed_config"]["mutations"].as_sequence().unwrap();
        // The router's retry and timeout knobs too...
        let removed: Vec<&str> = mutations
            .iter()
            .filter_map(|m| m["remove"].as_str())
            .collect();
        assert!(removed.contains(&"x-envoy-retry-on"));
        assert!(removed.contains(&"x-envoy-upstream-rq-timeout-ms"));
        // ...and every other detour header, so the filter can rely on it.
        assert_eq!(
            mutations.last().unwrap()["remove_on_match"]["key_matcher"]["prefix"].as_str(),
            Some("x-detour-")
        );
        let filter = &hcm["http_filters"][0]["typed_config"]["config"]["configuration"]["value"];
        let config = FilterConfig::parse(filter.as_str().unwrap().as_bytes()).unwrap();
        assert!(config.envoy_removes_client_headers);
        // When Envoy answers itself, the client learns why.
        let mapper = &hcm["local_reply_config"]["mappers"][0]["headers_to_add"][0]["header"];
        assert_eq!(
            (mapper["key"].as_str(), mapper["value"].as_str()),
            (Some("x-detour-reason"), Some("%RESPONSE_FLAGS%"))
        );
    }

    #[test]
    fn the_gateway_marks_crossings_and_reports_its_own_failures() {
        let b = rendered("west");
        let gw = &b["static_resources"]["listeners"][1];
        assert_eq!(
            gw["address"]["socket_address"]["address"].as_str(),
            Some("127.0.2.1")
        );
        let hcm = &gw["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(names(&hcm["http_filters"]), ["envoy.filters.http.router"]);
        let vhost = &hcm["route_config"]["virtual_hosts"][0];
        let via = &vhost["request_headers_to_add"][0]["header"];
        assert_eq!(
            (via["key"].as_str(), via["value"].as_str()),
            (Some("x-detour-via"), Some("west"))
        );
        let mapper = &hcm["local_reply_config"]["mappers"][0]["headers_to_add"][0]["header"];
        assert_eq!(mapper["value"].as_str(), Some("%RESPONSE_FLAGS%"));
        // West is nobody's primary: only its own service and the controller.
        assert_eq!(
            names(&b["static_resources"]["clusters"]),
            ["detour|west|apps|foo", "detour_controller"]
        );
    }

    #[test]
    fn with_certs_every_hop_between_clusters_is_mtls() {
        let mut o = opts("east");
        o.certs = Some("/certs".into());
        let b: Value = serde_norway::from_str(&render(&example_model(), &o).unwrap()).unwrap();
        let listeners = &b["static_resources"]["listeners"];
        // The ingress stays plain: clients inside the cluster reach it as before.
        assert!(
            listeners[0]["filter_chains"][0]
                .get("transport_socket")
                .is_none()
        );
        let gw = &listeners[1]["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(gw["require_client_certificate"].as_bool(), Some(true));
        let ctx = &gw["common_tls_context"];
        // From SDS files in a watched directory: renewals reach a running Envoy.
        let sds = &ctx["tls_certificate_sds_secret_configs"][0];
        assert_eq!(sds["name"].as_str(), Some("gateway"));
        let source = &sds["sds_config"]["path_config_source"];
        assert_eq!(
            source["path"].as_str(),
            Some("/certs/clusters/east/sds/gateway/gateway.json")
        );
        assert_eq!(
            source["watched_directory"]["path"].as_str(),
            Some("/certs/clusters/east/sds/gateway")
        );
        let trust = &ctx["combined_validation_context"]["validation_context_sds_secret_config"];
        assert_eq!(
            trust["sds_config"]["path_config_source"]["path"].as_str(),
            Some("/certs/clusters/east/sds/gateway/ca.json")
        );
        let sans = &ctx["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"];
        assert_eq!(
            sans[0]["matcher"]["safe_regex"]["regex"].as_str(),
            Some("^spiffe://detour\\.dev/cluster/[^/]+/envoy$")
        );
        assert_eq!(
            sans[1]["matcher"]["exact"].as_str(),
            Some("spiffe://detour.dev/controller/probe")
        );

        let clusters = &b["static_resources"]["clusters"];
        // Local services: plain, as they are inside the cluster.
        assert!(clusters[0].get("transport_socket").is_none());
        let west = &clusters[2]["transport_socket"]["typed_config"];
        let certificate = |ctx: &Value| {
            ctx["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"]
                .as_str()
                .map(str::to_string)
        };
        let peer = |ctx: &Value| {
            ctx["combined_validation_context"]["default_validation_context"]
                ["match_typed_subject_alt_names"][0]["matcher"]["exact"]
                .as_str()
                .map(str::to_string)
        };
        assert_eq!(
            certificate(&west["common_tls_context"]).as_deref(),
            Some("/certs/clusters/east/sds/client/envoy.json")
        );
        assert_eq!(
            peer(&west["common_tls_context"]).as_deref(),
            Some("spiffe://detour.dev/cluster/west/gateway")
        );
        // An IP address is no SNI.
        assert!(west.get("sni").is_none());
        let controller = &clusters[3]["transport_socket"]["typed_config"]["common_tls_context"];
        assert_eq!(
            certificate(controller).as_deref(),
            Some("/certs/clusters/east/sds/client/table.json")
        );
        assert_eq!(
            peer(controller).as_deref(),
            Some("spiffe://detour.dev/controller/server")
        );

        // A gateway known by name gets it as SNI.
        let named = build_model(
            &parse_file(
                "t.yaml",
                &EXAMPLE.replace("127.0.2.1", "west-gw.example.com"),
            )
            .0,
        )
        .unwrap();
        let b: Value = serde_norway::from_str(&render(&named, &o).unwrap()).unwrap();
        assert_eq!(
            b["static_resources"]["clusters"][2]["transport_socket"]["typed_config"]["sni"]
                .as_str(),
            Some("west-gw.example.com")
        );
    }

    /// The example with `apps/foo` speaking `protocol` in the clusters named.
    fn speaking_model(protocol: &str, clusters: &[&str]) -> Model {
        let mut text = EXAMPLE.to_string();
        for c in clusters {
            let at = text.find(&format!("metadata: {{name: {c}}}")).unwrap();
            let rest = text[at..].replacen(
                "port: 8080, endpoints",
                &format!("port: 8080, protocol: {protocol}, endpoints"),
                1,
            );
            text = format!("{}{rest}", &text[..at]);
        }
        build_model(&parse_file("t.yaml", &text).0).unwrap()
    }

    fn protocol_options(cluster: &Value) -> Option<&Value> {
        cluster.get("typed_extension_protocol_options")
    }

    #[test]
    fn http2_and_grpc_services_get_http2_locally_and_through_gateways() {
        let http2 = |c: &Value| {
            let options =
                &protocol_options(c)?["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
            assert_eq!(
                options["@type"].as_str(),
                Some("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
            );
            Some(
                options["explicit_http_config"]["http2_protocol_options"]
                    .as_mapping()?
                    .is_empty(),
            )
        };
        // HTTP/1.1 services: no HTTP/2 (every cluster of a service names HTTP/1.1
        // explicitly, beside its upstream filters).
        let b = rendered("east");
        for c in b["static_resources"]["clusters"].as_sequence().unwrap() {
            assert_eq!(http2(c), None, "{c:?}");
        }
        // grpc in east and west, http2 in south: HTTP/2 to every one of them.
        let mut model = speaking_model("grpc", &["east", "west"]);
        let south = speaking_model("http2", &["south"]);
        model
            .clusters
            .insert("south".into(), south.clusters["south"].clone());
        let b: Value = serde_norway::from_str(&render(&model, &opts("east")).unwrap()).unwrap();
        let clusters = &b["static_resources"]["clusters"];
        for c in &clusters.as_sequence().unwrap()[..3] {
            assert_eq!(http2(c), Some(true), "{:?}", c["name"]);
        }
        assert!(
            protocol_options(&clusters[3]).is_none(),
            "the controller speaks HTTP/1.1"
        );

        // A remote target speaks what its service speaks in its own cluster: west's foo
        // is grpc while east's is HTTP/1.1.
        let model = speaking_model("grpc", &["west"]);
        let b: Value = serde_norway::from_str(&render(&model, &opts("east")).unwrap()).unwrap();
        let clusters = &b["static_resources"]["clusters"];
        assert_eq!(names(clusters)[0], "detour|east|apps|foo");
        assert_eq!(http2(&clusters[0]), None);
        assert_eq!(http2(&clusters[1]), None, "south's foo is HTTP/1.1");
        assert_eq!(names(clusters)[2], "detour|west|apps|foo");
        assert_eq!(http2(&clusters[2]), Some(true));
        // West's own Envoy speaks HTTP/2 to its pods (and so its gateway does).
        let b: Value = serde_norway::from_str(&render(&model, &opts("west")).unwrap()).unwrap();
        assert_eq!(http2(&b["static_resources"]["clusters"][0]), Some(true));
    }

    #[test]
    fn with_certs_http2_is_agreed_by_alpn() {
        let mut o = opts("east");
        o.certs = Some("/certs".into());
        let model = speaking_model("grpc", &["west"]);
        let b: Value = serde_norway::from_str(&render(&model, &o).unwrap()).unwrap();
        let alpn = |c: &Value| {
            c["transport_socket"]["typed_config"]["common_tls_context"]
                .get("alpn_protocols")
                .cloned()
        };
        let gw = &b["static_resources"]["listeners"][1]["filter_chains"][0];
        assert_eq!(
            alpn(gw),
            Some(Value::from(vec!["h2", "http/1.1"])),
            "the gateway offers both"
        );
        let clusters = &b["static_resources"]["clusters"];
        assert_eq!(names(clusters)[2], "detour|west|apps|foo");
        assert_eq!(alpn(&clusters[2]), Some(Value::from(vec!["h2"])));
        // Its certificates are untouched.
        assert_eq!(
            clusters[2]["transport_socket"]["typed_config"]["common_tls_context"]
                ["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]
                ["path"]
                .as_str(),
            Some("/certs/clusters/east/sds/client/envoy.json")
        );
        // HTTP/1.1 targets and the controller offer no ALPN, as before.
        assert_eq!(alpn(&clusters[1]), None);
        assert_eq!(alpn(&clusters[3]), None);
    }

    #[test]
    fn refuses_what_it_cannot_render() {
        let model = example_model();
        let err = render(&model, &opts("north")).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown cluster \"north\" (MemberClusters: east, south, west)"
        );
        let mut o = opts("east");
        o.ingress = Address::parse("127.0.1.1:15443").unwrap();
        assert!(
            render(&model, &o)
                .unwrap_err()
                .to_string()
                .contains("--ingress and the MemberCluster's gateway are both 127.0.1.1:15443")
        );
    }

    #[test]
    fn a_gateway_of_several_instances_is_reached_through_each_and_bound_by_one() {
        let text = EXAMPLE.replacen("address: 127.0.2.1", "addresses: [127.0.2.1, 127.0.2.2]", 1);
        let model = build_model(&parse_file("t.yaml", &text).0).unwrap();
        // East reaches west's gateway through both instances, and gives that group a
        // second attempt (another instance) before moving on to south.
        let b: Value = serde_norway::from_str(&render(&model, &opts("east")).unwrap()).unwrap();
        let clusters = &b["static_resources"]["clusters"];
        assert_eq!(names(clusters)[2], "detour|west|apps|foo");
        let endpoints = clusters[2]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_sequence()
            .unwrap();
        assert_eq!(endpoints.len(), 2);
        let routes = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"];
        let default = routes.as_sequence().unwrap().last().unwrap();
        let chain: Vec<&str> = default["route"]["inline_cluster_specifier_plugin"]["extension"]
            ["typed_config"]["priority_groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|g| g["clusters"][0]["cluster_name"].as_str().unwrap())
            .collect();
        assert_eq!(
            chain,
            [
                "detour|east|apps|foo",
                "detour|west|apps|foo",
                "detour|west|apps|foo",
                "detour|south|apps|foo"
            ]
        );
        // Each of west's Envoys binds one of the addresses.
        let mut o = opts("west");
        let first: Value = serde_norway::from_str(&render(&model, &o).unwrap()).unwrap();
        let bound = |b: &Value| {
            b["static_resources"]["listeners"][1]["address"]["socket_address"]["address"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(bound(&first), "127.0.2.1");
        o.gateway = Some(Address::parse("127.0.2.2:15443").unwrap());
        let second: Value = serde_norway::from_str(&render(&model, &o).unwrap()).unwrap();
        assert_eq!(bound(&second), "127.0.2.2");
        o.gateway = Some(Address::parse("127.0.2.9:15443").unwrap());
        assert_eq!(
            render(&model, &o).unwrap_err().to_string(),
            "--gateway-address 127.0.2.9:15443 is not one of MemberCluster \"west\"'s gateway addresses (127.0.2.1:15443, 127.0.2.2:15443)"
        );
    }
}

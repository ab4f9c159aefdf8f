//! East's ingress exactly as `detour render envoy` writes it (routes, early header
//! removal, local replies, clusters), started as one more Envoy next to a topology's,
//! with or without a filter: the overhead and footprint stages compare Envoys that
//! differ only in what runs before the router.

use anyhow::{Context, Result, ensure};
use detour_e2e::controller::{Detour, RenderEnvoy};
use detour_e2e::envoy::{ingress_only, merge_filter_config};
use detour_e2e::paths::filter_wasm;
use detour_e2e::topology::Topology;
use serde_norway::Value;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What runs in front of the router.
#[derive(Debug, Clone)]
pub enum Shape {
    /// No filter at all.
    NoFilter,
    /// A proxy-wasm filter (detour's, or the empty one) with detour's configuration,
    /// patched for an older build.
    Wasm(PathBuf, Option<serde_json::Value>),
    /// No filter, and the route sends to west's service through west's gateway (the
    /// cluster detour re-routes to when it fails over).
    NoFilterToWest,
}

const WASM_FILTER: &str = "envoy.filters.http.wasm";

/// East's ingress as `detour render envoy` writes it, on other addresses and without
/// the east-west gateway listener (east's own Envoy holds that address).
pub struct EastIngress {
    render: RenderEnvoy,
    detour: Detour,
}

impl EastIngress {
    pub fn of(t: &Topology) -> EastIngress {
        let layout = t.layout();
        EastIngress {
            render: RenderEnvoy {
                config: t.config_dir().to_path_buf(),
                cluster: "east".into(),
                // Set per Envoy in `config`.
                ingress: layout.controller,
                admin: layout.controller,
                controller: layout.controller,
                wasm: PathBuf::new(),
                certs: None,
                gateway_address: None,
            },
            detour: t.detour().clone(),
        }
    }

    pub fn config(&self, listen: SocketAddr, admin: SocketAddr, shape: &Shape) -> Result<String> {
        let wasm = match shape {
            Shape::Wasm(path, _) => path.clone(),
            // Rendered with detour's filter, which is then taken out.
            Shape::NoFilter | Shape::NoFilterToWest => filter_wasm()?,
        };
        let render = RenderEnvoy {
            ingress: listen,
            admin,
            wasm,
            ..self.render.clone()
        };
        let mut yaml = self.detour.render_envoy(&render)?;
        if let Shape::Wasm(_, Some(patch)) = shape {
            yaml = merge_filter_config(&yaml, patch)?;
        }
        let mut config = ingress_only(&yaml, listen, admin)?;
        let listeners = config["static_resources"]["listeners"]
            .as_sequence_mut()
            .context("the rendered config has no listeners")?;
        ensure!(listeners.len() == 1, "the ingress alone: {listeners:?}");
        let hcm = &mut listeners[0]["filter_chains"][0]["filters"][0]["typed_config"];
        if matches!(shape, Shape::NoFilter | Shape::NoFilterToWest) {
            let filters = hcm["http_filters"]
                .as_sequence_mut()
                .context("the rendered ingress has no http_filters")?;
            filters.retain(|f| f["name"].as_str() != Some(WASM_FILTER));
        }
        if matches!(shape, Shape::NoFilterToWest) {
            let mut changed = 0;
            for host in hcm["route_config"]["virtual_hosts"]
                .as_sequence_mut()
                .context("the rendered ingress has no virtual hosts")?
            {
                // Every attempt of every chain that would go to east's foo goes to west's
                // gateway instead: the route a request takes once detour failed it over,
                // without the filter.
                for route in host["routes"].as_sequence_mut().into_iter().flatten() {
                    let groups = &mut route["route"]["inline_cluster_specifier_plugin"]["extension"]
                        ["typed_config"]["priority_groups"];
                    for group in groups.as_sequence_mut().into_iter().flatten() {
                        for cluster in group["clusters"].as_sequence_mut().into_iter().flatten() {
                            let name = &mut cluster["cluster_name"];
                            if name.as_str() == Some("detour|east|apps|foo") {
                                *name = Value::from("detour|west|apps|foo");
                                changed += 1;
                            }
                        }
                    }
                }
            }
            ensure!(
                changed > 0,
                "the rendered ingress has no route to east's foo"
            );
        }
        Ok(serde_norway::to_string(&config)?)
    }
}

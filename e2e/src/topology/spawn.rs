//! Starting a topology's processes: one upstream per service instance, and the Envoys
//! of every member cluster — the one clients enter through (which is also the first
//! gateway instance unless the cluster's gateways are dedicated) and one per further
//! gateway instance, each rendered by `detour render envoy` and edited as the setup asks.

use crate::controller::{Detour, RenderEnvoy};
use crate::envoy::{Envoy, EnvoySpec, merge_filter_config};
use crate::layout::{Layout, MemberAddrs};
use crate::out::OutDir;
use crate::rendered::{remove_gateway_listener, set_route_timeouts};
use crate::setup::{Protocol, Setup};
use crate::upstream::{Upstream, UpstreamSpec};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::Path;

use super::instances::gateway_envoy_name;

/// Spawns one upstream per instance of every member's service ([`Setup::service_in`]),
/// speaking the setup's protocol, cluster by cluster and instance by instance (the order lookups rely on), without waiting for them.
pub(super) fn upstreams(setup: &Setup, layout: &Layout, out: &OutDir) -> Result<Vec<Upstream>> {
    let mut upstreams = Vec::new();
    for member in &layout.members {
        for (instance, listen) in member.services.iter().enumerate() {
            let spec = UpstreamSpec {
                cluster: member.name.clone(),
                service: setup.service_in(&member.name).qualified(),
                listen: *listen,
            };
            upstreams.push(match setup.protocol {
                Protocol::Grpc => Upstream::spawn_grpc(spec, instance, out)?,
                // The upstream binary speaks HTTP/1.1 and h2c alike.
                Protocol::Http | Protocol::Http2 => Upstream::spawn(spec, instance, out)?,
            });
        }
    }
    Ok(upstreams)
}

/// What rendering a topology's Envoy configs needs.
pub(super) struct Render<'a> {
    pub detour: &'a Detour,
    pub setup: &'a Setup,
    pub layout: &'a Layout,
    pub config_dir: &'a Path,
    pub wasm: &'a Path,
    pub certs_dir: Option<&'a Path>,
    pub out: &'a OutDir,
}

/// One Envoy of a member cluster.
struct EnvoyRole<'m> {
    member: &'m MemberAddrs,
    name: String,
    ingress: SocketAddr,
    admin: SocketAddr,
    /// The gateway address it binds (by index); `None`: none at all.
    gateway: Option<usize>,
}

impl Render<'_> {
    /// Spawns every Envoy (the config kept as `envoy-<name>.yaml`) without waiting.
    pub fn spawn_envoys(&self) -> Result<Vec<Envoy>> {
        let mut envoys = Vec::new();
        for member in &self.layout.members {
            let dedicated = self.setup.dedicated_gateway(&member.name);
            let roles = std::iter::once(EnvoyRole {
                member,
                name: member.name.clone(),
                ingress: member.ingress,
                admin: member.admin,
                gateway: (!dedicated).then_some(0),
            })
            .chain(member.gateway_envoys.iter().map(|g| EnvoyRole {
                member,
                name: gateway_envoy_name(&member.name, g.index),
                ingress: g.ingress,
                admin: g.admin,
                gateway: Some(g.index),
            }));
            for role in roles {
                let config = self.out.file(&format!("envoy-{}.yaml", role.name));
                std::fs::write(&config, self.config(&role)?)
                    .with_context(|| format!("writing {}", config.display()))?;
                envoys.push(Envoy::spawn(
                    &EnvoySpec::new(&role.name, &config, role.admin),
                    self.out,
                )?);
            }
        }
        Ok(envoys)
    }

    /// `detour render envoy` for one Envoy, with the setup's edits: the filter
    /// configuration merged in, route timeouts, no gateway listener.
    fn config(&self, role: &EnvoyRole) -> Result<String> {
        let gateway_address = match role.gateway {
            // The first address is render's default: leave the flag out, as users do.
            None | Some(0) => None,
            Some(i) => Some(*role.member.gateways.get(i).context("no such gateway")?),
        };
        let rendered = self.detour.render_envoy(&RenderEnvoy {
            config: self.config_dir.to_path_buf(),
            cluster: role.member.name.clone(),
            ingress: role.ingress,
            admin: role.admin,
            controller: self.layout.controller,
            wasm: self.wasm.to_path_buf(),
            certs: self.certs_dir.map(Path::to_path_buf),
            gateway_address,
        })?;
        let rendered = match &self.setup.filter_config {
            Some(fields) => merge_filter_config(&rendered, fields)?,
            None => rendered,
        };
        if self.setup.route_timeout.is_none() && role.gateway.is_some() {
            return Ok(rendered);
        }
        let mut config: serde_norway::Value =
            serde_norway::from_str(&rendered).context("parsing the rendered Envoy config")?;
        if let Some(timeout) = self.setup.route_timeout {
            set_route_timeouts(&mut config, timeout)?;
        }
        if role.gateway.is_none() {
            remove_gateway_listener(&mut config)?;
        }
        Ok(serde_norway::to_string(&config)?)
    }
}

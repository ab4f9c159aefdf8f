//! Failure domains smaller than a cluster: one instance of a member's service, one
//! instance of its east-west gateway. Tests kill, freeze and restart them one at a time
//! and read what each instance received.

use super::Topology;
use crate::envoy::Envoy;
use crate::upstream::{Record, Upstream};
use anyhow::{Context, Result};
use std::time::Instant;

/// The name (and log, `envoy-<name>.log`) of the Envoy that is only gateway instance
/// `index` of `cluster`.
pub fn gateway_envoy_name(cluster: &str, index: usize) -> String {
    format!("{cluster}-gw{index}")
}

impl Topology {
    /// Instance `i` (from 0) of `cluster`'s service.
    pub fn instance(&mut self, cluster: &str, i: usize) -> Result<&mut Upstream> {
        self.upstreams
            .iter_mut()
            .find(|u| u.cluster() == cluster && u.instance() == i)
            .with_context(|| format!("no instance {i} of the service in {cluster:?}"))
    }

    /// How many instances of the service `cluster` runs (dead or alive).
    pub fn instance_count(&self, cluster: &str) -> usize {
        self.upstreams
            .iter()
            .filter(|u| u.cluster() == cluster)
            .count()
    }

    /// Every upstream process of the topology, all clusters and instances.
    pub fn upstreams_mut(&mut self) -> impl Iterator<Item = &mut Upstream> {
        self.upstreams.iter_mut()
    }

    /// SIGKILLs instance `i` of `cluster`'s service; returns the moment just before.
    pub fn kill_instance(&mut self, cluster: &str, i: usize) -> Result<Instant> {
        let upstream = self.instance(cluster, i)?;
        let at = Instant::now();
        upstream.kill()?;
        Ok(at)
    }

    /// Starts instance `i` of `cluster`'s service again and waits until it serves;
    /// returns the moment just before it was started.
    pub fn restart_instance(&mut self, cluster: &str, i: usize) -> Result<Instant> {
        let upstream = self.instance(cluster, i)?;
        let at = Instant::now();
        upstream.restart()?;
        Ok(at)
    }

    /// SIGSTOPs instance `i` of `cluster`'s service: connections are accepted, nothing
    /// is answered, until [`Topology::thaw_instance`].
    pub fn freeze_instance(&mut self, cluster: &str, i: usize) -> Result<Instant> {
        let upstream = self.instance(cluster, i)?;
        let at = Instant::now();
        upstream.freeze()?;
        Ok(at)
    }

    /// SIGCONTs a frozen instance.
    pub fn thaw_instance(&mut self, cluster: &str, i: usize) -> Result<()> {
        self.instance(cluster, i)?.thaw()
    }

    /// Every request any instance of `cluster`'s service received (across restarts),
    /// with the instance that received it.
    pub fn records(&self, cluster: &str) -> Result<Vec<(usize, Record)>> {
        let mut all = Vec::new();
        for upstream in self.upstreams.iter().filter(|u| u.cluster() == cluster) {
            let i = upstream.instance();
            all.extend(upstream.records()?.into_iter().map(|r| (i, r)));
        }
        Ok(all)
    }

    /// The Envoy that holds gateway instance `index` of `cluster`: an Envoy of its own
    /// ([`gateway_envoy_name`]), or for index 0 of a cluster whose gateways are not
    /// dedicated, the cluster's own Envoy.
    pub fn gateway_envoy(&mut self, cluster: &str, index: usize) -> Result<&mut Envoy> {
        let own = gateway_envoy_name(cluster, index);
        let name = if self.envoys.iter().any(|e| e.name() == own) {
            own
        } else if index == 0 && !self.setup.dedicated_gateway(cluster) {
            cluster.to_string()
        } else {
            anyhow::bail!("{cluster} has no gateway instance {index}");
        };
        self.envoy(&name)
    }

    /// Every Envoy of the topology.
    pub fn envoys_mut(&mut self) -> impl Iterator<Item = &mut Envoy> {
        self.envoys.iter_mut()
    }
}

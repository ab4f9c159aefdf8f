//! Where every part of a topology listens. Member cluster k (from 1) gets its own
//! loopback network 127.0.k.0/24: its Envoy (ingress, east-west gateway, admin) on
//! 127.0.k.1 and its service's endpoint on 127.0.k.10, so logs and configs read like a
//! real federation. Ports are free ones, so topologies run side by side.

use crate::ports::free_addr;
use crate::setup::Setup;
use anyhow::{Context, Result, ensure};
use std::net::{Ipv4Addr, SocketAddr};

/// The addresses of one member cluster.
#[derive(Debug, Clone)]
pub struct MemberAddrs {
    pub name: String,
    /// Where clients send requests (the Envoy listener with the detour filter).
    pub ingress: SocketAddr,
    /// The east-west gateway other clusters (and the controller's checks) go through.
    pub gateway: SocketAddr,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// The service's one endpoint (the upstream process).
    pub service: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Layout {
    /// The controller's table API (mTLS when the setup says so).
    pub controller: SocketAddr,
    /// The controller's plain `/healthz`, `/readyz` and `/metrics` (`--ops-listen`).
    pub controller_ops: SocketAddr,
    pub members: Vec<MemberAddrs>,
}

/// The loopback address of the controller (outside every member's network).
pub const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

impl Layout {
    pub fn allocate(setup: &Setup) -> Result<Layout> {
        ensure!(
            (1..=254).contains(&setup.clusters.len()),
            "1 to 254 member clusters, not {}",
            setup.clusters.len()
        );
        let members = setup
            .clusters
            .iter()
            .zip(1u8..)
            .map(|(name, k)| {
                let envoy_ip = Ipv4Addr::new(127, 0, k, 1);
                Ok(MemberAddrs {
                    name: name.clone(),
                    ingress: free_addr(envoy_ip)?,
                    gateway: free_addr(envoy_ip)?,
                    admin: free_addr(envoy_ip)?,
                    service: free_addr(Ipv4Addr::new(127, 0, k, 10))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Layout {
            controller: free_addr(CONTROLLER_IP)?,
            controller_ops: free_addr(CONTROLLER_IP)?,
            members,
        })
    }

    pub fn member(&self, name: &str) -> Result<&MemberAddrs> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .with_context(|| format!("no member cluster {name:?} in this topology"))
    }
}

//! Where every part of a topology listens. Member cluster k (from 1) gets its own
//! loopback network 127.0.k.0/24: its Envoy (ingress, east-west gateway, admin) on
//! 127.0.k.1, further gateway instances on 127.0.k.2, 127.0.k.3, … (one port for all, as
//! a `MemberCluster`'s `gateway.addresses` share one), and its service's instances on
//! 127.0.k.10, 127.0.k.11, …, so logs and configs read like a real federation. Ports are
//! free ones, so topologies run side by side.

use crate::ports::{free_addr, free_port_on_all};
use crate::setup::Setup;
use anyhow::{Context, Result, ensure};
use std::net::{Ipv4Addr, SocketAddr};

/// Gateway instances on 127.0.k.1 up to 127.0.k.9.
const MAX_GATEWAYS: usize = 9;
/// Service instances on 127.0.k.10 up to 127.0.k.99.
const MAX_INSTANCES: usize = 90;
const FIRST_INSTANCE_IP: u8 = 10;

/// An Envoy of a member cluster that serves as one of its gateway instances only
/// (rendered with `--gateway-address`; its ingress listener is there but unused).
#[derive(Debug, Clone)]
pub struct GatewayEnvoyAddrs {
    /// Which of the member's gateway addresses ([`MemberAddrs::gateways`]) it binds.
    pub index: usize,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
}

/// The addresses of one member cluster.
#[derive(Debug, Clone)]
pub struct MemberAddrs {
    pub name: String,
    /// Where clients send requests (the Envoy listener with the detour filter).
    pub ingress: SocketAddr,
    /// The east-west gateway other clusters (and the controller's checks) go through:
    /// its first instance.
    pub gateway: SocketAddr,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// The service's first endpoint (the first upstream process).
    pub service: SocketAddr,
    /// Every endpoint of the service, one upstream process each; `services[0]` is
    /// `service`.
    pub services: Vec<SocketAddr>,
    /// Every gateway instance's address (one port); `gateways[0]` is `gateway`.
    pub gateways: Vec<SocketAddr>,
    /// Envoys that are gateway instances only; the ingress Envoy binds `gateways[0]`
    /// unless its cluster's gateways are dedicated ([`Setup::dedicated_gateways`]).
    pub gateway_envoys: Vec<GatewayEnvoyAddrs>,
}

impl MemberAddrs {
    /// The address of instance `i` of the service.
    pub fn instance(&self, i: usize) -> Result<SocketAddr> {
        self.services.get(i).copied().with_context(|| {
            format!(
                "{} runs {} instances, not {}",
                self.name,
                self.services.len(),
                i + 1
            )
        })
    }
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
            .map(|(name, k)| member(setup, name, k))
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

fn member(setup: &Setup, name: &str, k: u8) -> Result<MemberAddrs> {
    let (gateways, instances) = (setup.gateways_in(name), setup.instances_in(name));
    ensure!(
        gateways <= MAX_GATEWAYS && instances <= MAX_INSTANCES,
        "{name}: at most {MAX_GATEWAYS} gateways and {MAX_INSTANCES} instances"
    );
    let envoy_ip = Ipv4Addr::new(127, 0, k, 1);
    let gateway_ips: Vec<Ipv4Addr> = (1..=gateways as u8)
        .map(|i| Ipv4Addr::new(127, 0, k, i))
        .collect();
    let gateway_port = free_port_on_all(&gateway_ips)?;
    let gateway_addrs: Vec<SocketAddr> = gateway_ips
        .iter()
        .map(|ip| SocketAddr::from((*ip, gateway_port)))
        .collect();
    let services = (0..instances as u8)
        .map(|i| free_addr(Ipv4Addr::new(127, 0, k, FIRST_INSTANCE_IP + i)))
        .collect::<Result<Vec<_>>>()?;
    // The ingress Envoy holds gateway 0 unless the gateways are Envoys of their own.
    let first_own = usize::from(!setup.dedicated_gateway(name));
    let gateway_envoys = (first_own..gateways)
        .map(|index| {
            let ip = gateway_ips[index];
            Ok(GatewayEnvoyAddrs {
                index,
                ingress: free_addr(ip)?,
                admin: free_addr(ip)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(MemberAddrs {
        name: name.to_string(),
        ingress: free_addr(envoy_ip)?,
        gateway: gateway_addrs[0],
        admin: free_addr(envoy_ip)?,
        service: services[0],
        services,
        gateways: gateway_addrs,
        gateway_envoys,
    })
}

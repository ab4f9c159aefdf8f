//! A running federation of simulated member clusters on loopback: the controller, one
//! Envoy per member cluster (configured by `detour render envoy`, loading the filter
//! [`filter_wasm`] names) and one more per extra gateway instance, and one upstream
//! process per instance of each member's service ([`Setup::instances`]).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use detour_e2e::{setup::Setup, topology::{Topology, wait_served_by}};
//! let mut t = Topology::start("my_test", Setup::for_tests())?;
//! let east = t.ingress("east")?;                  // client for foo.apps at east's ingress
//! assert_eq!(east.get("/")?.served_by(), Some("east"));
//! t.kill_upstream("east")?;
//! wait_served_by(&east, "west", t.setup().failover_bound())?;
//! # Ok(()) }
//! ```
//! Dropping the topology kills every process; logs stay in `e2e/out/<name>/`.

mod instances;
mod spawn;

use crate::certs::Certs;
use crate::client::{HttpClient, Reply};
use crate::controller::{Controller, ControllerSpec, Detour};
use crate::documents::write_config;
use crate::envoy::{Envoy, EnvoySpec};
use crate::fake_controller::FakeController;
use crate::layout::Layout;
use crate::out::OutDir;
use crate::paths::filter_wasm;
use crate::setup::{ControllerKind, Protocol, Setup};
use crate::table::target_health;
use crate::upstream::Upstream;
use crate::wait::{Probe, wait_until};
use anyhow::{Context, Result, bail};
use detour_filter::health::Health;
use detour_filter::metrics::version_gauge;
pub use instances::gateway_envoy_name;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Room for the controller's first checks and the Envoys' first table fetches.
const CONVERGE_SLACK: Duration = Duration::from_secs(15);

pub struct Topology {
    // Field order is drop order: Envoys go first, so nothing notices the controller or
    // the upstreams dying during teardown and logs end cleanly.
    envoys: Vec<Envoy>,
    controller: Option<Controller>,
    upstreams: Vec<Upstream>,
    setup: Setup,
    layout: Layout,
    out: OutDir,
    config_dir: PathBuf,
    certs: Option<Certs>,
    wasm: PathBuf,
    detour: Detour,
}

impl Topology {
    /// Builds and starts everything, and returns once every target of the scheme is
    /// Healthy, every Envoy's filter holds that table, and the primary's Envoy serves
    /// the service from the primary (a GET, unless the service speaks gRPC).
    /// `name` names the output directory `e2e/out/<name>/` (use the test's name).
    pub fn start(name: &str, setup: Setup) -> Result<Topology> {
        let topology = Topology::start_unconverged(name, setup)?;
        if topology.setup.controller == ControllerKind::Detour {
            topology.wait_all_healthy()?;
            for member in &topology.layout.members {
                topology.wait_filter_current(&member.name)?;
            }
            // A GET is the check of an HTTP service; a gRPC test makes its own first call.
            if topology.setup.protocol != Protocol::Grpc {
                let primary = topology.ingress(&topology.setup.primary)?;
                wait_served_by(&primary, &topology.setup.primary, CONVERGE_SLACK)?;
            }
        }
        Ok(topology)
    }

    /// Starts every process (each waited for until it serves) without waiting for
    /// health checks or tables to converge.
    pub fn start_unconverged(name: &str, setup: Setup) -> Result<Topology> {
        let mut topology = Topology::prepare(name, setup)?;
        topology.upstreams = spawn::upstreams(&topology.setup, &topology.layout, &topology.out)?;
        for upstream in &mut topology.upstreams {
            upstream.wait_serving()?;
        }
        topology.controller = topology
            .controller_spec()
            .map(|spec| Controller::start(&spec, &topology.out))
            .transpose()?;
        topology.envoys = topology.spawn_envoys()?;
        for envoy in &mut topology.envoys {
            envoy.wait_ready()?;
        }
        Ok(topology)
    }

    /// Spawns every process at once — upstreams, controller, Envoys — and returns at
    /// once, waiting for none: as a federation comes up in real life, the controller's
    /// first checks may meet gateways not yet listening. Returns the instant before the
    /// first spawn. [`Topology::wait_started`] waits for every process to serve.
    pub fn spawn_all_at_once(name: &str, setup: Setup) -> Result<(Topology, Instant)> {
        let mut topology = Topology::prepare(name, setup)?;
        let at = Instant::now();
        topology.upstreams = spawn::upstreams(&topology.setup, &topology.layout, &topology.out)?;
        topology.controller = topology
            .controller_spec()
            .map(|spec| Controller::spawn(&spec, &topology.out))
            .transpose()?;
        topology.envoys = topology.spawn_envoys()?;
        Ok((topology, at))
    }

    /// Waits until every process of the topology serves (not for health checks or
    /// tables), but for those a test has killed meanwhile.
    pub fn wait_started(&mut self) -> Result<()> {
        for envoy in &mut self.envoys {
            if envoy.process().pid().is_some() {
                envoy.wait_ready()?;
            }
        }
        for upstream in &mut self.upstreams {
            if upstream.pid().is_some() {
                upstream.wait_serving()?;
            }
        }
        if let Some(controller) = &mut self.controller {
            controller.wait_ready()?;
        }
        Ok(())
    }

    /// Writes the config directory and certificates; starts nothing.
    fn prepare(name: &str, setup: Setup) -> Result<Topology> {
        let out = OutDir::fresh(name)?;
        let layout = Layout::allocate(&setup)?;
        let detour = Detour::locate()?;
        let wasm = filter_wasm()?;
        let config_dir = out.subdir("config")?;
        write_config(&config_dir, &setup, &layout)?;
        let certs = if setup.mtls {
            Some(Certs::init(&detour, &config_dir, &out.file("certs"))?)
        } else {
            None
        };
        Ok(Topology {
            envoys: Vec::new(),
            controller: None,
            upstreams: Vec::new(),
            setup,
            layout,
            out,
            config_dir,
            certs,
            wasm,
            detour,
        })
    }

    fn controller_spec(&self) -> Option<ControllerSpec> {
        (self.setup.controller == ControllerKind::Detour).then(|| ControllerSpec {
            config: self.config_dir.clone(),
            listen: self.layout.controller,
            ops_listen: self.layout.controller_ops,
            certs: self.certs.clone(),
        })
    }

    /// Every Envoy of the topology, spawned (they compile the filter in parallel).
    fn spawn_envoys(&self) -> Result<Vec<Envoy>> {
        let render = spawn::Render {
            detour: &self.detour,
            setup: &self.setup,
            layout: &self.layout,
            config_dir: &self.config_dir,
            wasm: &self.wasm,
            certs_dir: self.certs.as_ref().map(Certs::root),
            out: &self.out,
        };
        render.spawn_envoys()
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn out(&self) -> &OutDir {
        &self.out
    }

    /// The documents `serve` reads; rewrite them to test hot reload.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Certificates from `detour certs init` when [`Setup::mtls`] is on.
    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    /// A table server in place of the controller (with [`ControllerKind::External`]),
    /// on the controller's address; over mTLS with the controller's certificate when
    /// the topology runs mTLS, as the Envoys expect.
    pub fn start_fake_controller(&self) -> Result<FakeController> {
        FakeController::start(self.layout.controller, self.certs.as_ref())
    }

    /// The `.wasm` every Envoy of this topology was configured with.
    pub fn wasm(&self) -> &Path {
        &self.wasm
    }

    pub fn detour(&self) -> &Detour {
        &self.detour
    }

    /// A client sending the scheme's service `Host` (`foo.apps`) to `cluster`'s ingress.
    pub fn ingress(&self, cluster: &str) -> Result<HttpClient> {
        let member = self.layout.member(cluster)?;
        Ok(HttpClient::new(
            member.ingress,
            &self.setup.service.authority(),
        ))
    }

    /// Starts one more Envoy from a config the test wrote (e.g. one shaped as another
    /// control plane would configure it), kept as `envoy-<name>.yaml` and waited for
    /// until ready. It joins the topology: [`Topology::envoy`],
    /// [`Topology::wait_filter_holds`] and teardown know it by `name`.
    pub fn add_envoy(&mut self, name: &str, config: &str, admin: SocketAddr) -> Result<&mut Envoy> {
        if self.envoys.iter().any(|e| e.name() == name) {
            bail!("the topology already has an Envoy named {name:?}");
        }
        let path = self.out.file(&format!("envoy-{name}.yaml"));
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let envoy = Envoy::start(&EnvoySpec::new(name, &path, admin), &self.out)?;
        self.envoys.push(envoy);
        self.envoy(name)
    }

    pub fn envoy(&mut self, cluster: &str) -> Result<&mut Envoy> {
        self.envoys
            .iter_mut()
            .find(|e| e.name() == cluster)
            .with_context(|| format!("no Envoy for cluster {cluster:?}"))
    }

    /// `cluster`'s service, its first instance ([`Topology::instance`] for the others).
    pub fn upstream(&mut self, cluster: &str) -> Result<&mut Upstream> {
        self.upstreams
            .iter_mut()
            .find(|u| u.cluster() == cluster)
            .with_context(|| format!("no upstream in cluster {cluster:?}"))
    }

    pub fn controller(&mut self) -> Result<&mut Controller> {
        self.controller
            .as_mut()
            .context("this topology runs no detour controller (ControllerKind::External)")
    }

    /// SIGKILLs `cluster`'s service (its first instance); returns the moment just before
    /// the signal, from which failover times are measured.
    pub fn kill_upstream(&mut self, cluster: &str) -> Result<Instant> {
        let upstream = self.upstream(cluster)?;
        let at = Instant::now();
        upstream.kill()?;
        Ok(at)
    }

    /// Starts `cluster`'s service (its first instance) again and waits until it serves;
    /// returns the moment
    /// just before it was started: it cannot have served, nor passed a health check,
    /// earlier (the reference for failback damping).
    pub fn restart_upstream(&mut self, cluster: &str) -> Result<Instant> {
        let upstream = self.upstream(cluster)?;
        let at = Instant::now();
        upstream.restart()?;
        Ok(at)
    }

    /// Waits until the controller's table for the primary's cluster says every target
    /// of the scheme is Healthy.
    pub fn wait_all_healthy(&self) -> Result<()> {
        let within = self.setup.recovery_bound() + CONVERGE_SLACK;
        self.wait_table("every target is Healthy", within, |health| {
            !health.is_empty() && health.iter().all(|(_, h)| *h == Health::Healthy)
        })
    }

    /// Waits until the controller's table for the primary's cluster gives `target` (a
    /// member cluster of the scheme) this health.
    pub fn wait_target_health(&self, target: &str, health: Health, within: Duration) -> Result<()> {
        self.wait_table(&format!("{target} is {health}"), within, |targets| {
            targets.iter().any(|(c, h)| c == target && *h == health)
        })
    }

    /// Waits until the filter in `cluster`'s Envoy holds the table the controller serves
    /// for `cluster` now, in every VM (worker). The controller's word alone is not
    /// enough: the filter may still route by an older table.
    pub fn wait_filter_current(&self, cluster: &str) -> Result<()> {
        let controller = self
            .controller
            .as_ref()
            .context("no detour controller in this topology")?;
        self.wait_filter_holds_by(cluster, || Ok(controller.table(cluster)?.version))
    }

    /// Waits until the filter in `cluster`'s Envoy holds the table of this `version`
    /// in every VM (e.g. one a [`crate::fake_controller::FakeController`] serves).
    pub fn wait_filter_holds(&self, cluster: &str, version: &str) -> Result<()> {
        self.wait_filter_holds_by(cluster, || Ok(version.to_string()))
    }

    /// Compares the filter's table-version gauge, then every VM's table (by its log),
    /// with `version()` until they agree.
    fn wait_filter_holds_by(
        &self,
        cluster: &str,
        version: impl Fn() -> Result<String>,
    ) -> Result<()> {
        let envoy = self
            .envoys
            .iter()
            .find(|e| e.name() == cluster)
            .with_context(|| format!("no Envoy for cluster {cluster:?}"))?;
        let what = format!("every VM of the filter in {cluster}'s Envoy holds the expected table");
        wait_until(&what, CONVERGE_SLACK, || {
            let wanted = version()?;
            let held = envoy.filter_table_version()?;
            if held != Some(version_gauge(&wanted)) {
                return Ok(Probe::NotYet(format!(
                    "filter's gauge {held:?}, wanted version {wanted} ({})",
                    version_gauge(&wanted)
                )));
            }
            // The gauge is one VM's word; every worker must route by the table too.
            let vms = envoy.tables_by_vm()?;
            Ok(
                if !vms.is_empty() && vms.values().all(|v| v.as_deref() == Some(&wanted)) {
                    Probe::Ready(())
                } else {
                    Probe::NotYet(format!("tables by VM thread: {vms:?}, wanted {wanted}"))
                },
            )
        })
    }

    /// Polls the primary cluster's table until `holds` is true of its targets' health.
    fn wait_table(
        &self,
        what: &str,
        within: Duration,
        holds: impl Fn(&[(String, Health)]) -> bool,
    ) -> Result<()> {
        let controller = self
            .controller
            .as_ref()
            .context("no detour controller in this topology")?;
        let service = self.setup.service.qualified();
        let what = format!(
            "the controller's table for {} says {what}",
            self.setup.primary
        );
        wait_until(&what, within, || {
            let table = match controller.table(&self.setup.primary) {
                Ok(table) => table,
                Err(e) => return Ok(Probe::NotYet(format!("{e:#}"))),
            };
            let health = target_health(&table, &service);
            Ok(if holds(&health) {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{health:?}"))
            })
        })
    }
}

/// One answer seen while watching an ingress.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request was sent.
    pub sent: Instant,
    pub reply: Reply,
}

/// Polls `client` with GETs until `cluster` answers one; returns that reply. A request
/// that gets no HTTP answer at all ends the wait (the ingress itself is broken).
pub fn wait_served_by(client: &HttpClient, cluster: &str, within: Duration) -> Result<Reply> {
    let mut seen = watch_until_served_by(client, cluster, within)?;
    seen.pop()
        .map(|s| s.reply)
        .context("watch_until_served_by returned nothing")
}

/// Like [`wait_served_by`], but returns every answer seen on the way, the last being
/// the first one `cluster` gave: for asserting what happened *before* the switch.
pub fn watch_until_served_by(
    client: &HttpClient,
    cluster: &str,
    within: Duration,
) -> Result<Vec<Seen>> {
    let what = format!(
        "{} at {} is answered by {cluster}",
        client.authority(),
        client.addr()
    );
    let mut seen = Vec::new();
    wait_until(&what, within, || {
        let sent = Instant::now();
        let reply = client.get("/")?;
        let summary = reply.summary();
        let done = reply.served_by() == Some(cluster);
        seen.push(Seen { sent, reply });
        Ok(if done {
            Probe::Ready(())
        } else {
            Probe::NotYet(summary)
        })
    })?;
    Ok(seen)
}

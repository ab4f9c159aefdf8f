//! The `detour` command line.

pub mod import;
pub mod status;

use crate::explain::{ExplainOptions, explain};
use crate::serve::{ServeOptions, Source, serve};
use crate::source::files::load_dir;
use crate::telemetry::{self, LogFormat};
use crate::tls::config::TlsFiles;
use crate::tls::files::check_certs;
use crate::tls::init::{InitOptions, default_controller_hosts, init};
use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use detour_core::docs::Problems;
use detour_core::model::{Address, Host, ServiceName, parse_host};
use detour_core::pki::identity::ControllerRole;
use detour_core::pki::layout::Layout;
use detour_core::render::envoy::{DEFAULT_WASM, RenderOptions, render};
use detour_core::validate::{CrossNamespace, DEFAULT_MAX_REPLAY_BODY_BYTES, Policy};
use detour_filter::duration::parse_duration;
use detour_kube::lease::Timing;
use detour_kube::register::RegisterOptions;
use detour_kube::run::KubeOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "detour",
    version,
    about = "Multi-cluster failover routing for Envoy: the controller and its tools"
)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DETOUR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve priority tables, health-checking every target.
    Serve(Box<ServeArgs>),
    /// Validate a configuration directory; exits non-zero with every problem found.
    Check(ConfigArg),
    /// Render data-plane configuration.
    #[command(subcommand)]
    Render(RenderCommand),
    /// Tell where a request for a service would go now, and why.
    Explain(ExplainArgs),
    /// Show every scheme's active group, its targets' health and the recent events, from
    /// a running controller (what its /ui/ page shows).
    Status(status::StatusArgs),
    /// Print the CustomResourceDefinitions of detour's documents (multi-document YAML).
    Crds(CrdsArgs),
    /// Member clusters (Kubernetes mode).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Certificates for mTLS between clusters and to the controller.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Another system's failover documents in, detour's out.
    #[command(subcommand)]
    Import(import::ImportCommand),
}

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Write one file per CRD into DIR instead (how manifests/crds/ is made).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Print what registering a member cluster takes: in the member, a ServiceAccount
    /// with least-privilege RBAC and its token; in the management cluster, the kubeconfig
    /// Secret (a template) and the MemberCluster.
    Register(RegisterArgs),
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The member cluster's name (the MemberCluster's).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Its east-west gateway as the other clusters reach it (port 15443 when left out).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub gateway: String,
    /// Its API server's URL, for the kubeconfig.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Namespace of detour's mTLS Secret in the member cluster.
    #[arg(long, value_name = "NS", default_value = detour_kube::secrets::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The controller's namespace in the management cluster (where kubeconfig Secrets go).
    #[arg(long, value_name = "NS", default_value = DEFAULT_CONTROLLER_NAMESPACE)]
    pub controller_namespace: String,
    /// The cluster the controller itself runs in: only the MemberCluster is needed.
    #[arg(long)]
    pub local: bool,
}

/// Namespace of the controller unless told (the Helm chart's default).
const DEFAULT_CONTROLLER_NAMESPACE: &str = "detour-system";

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Directory of *.yaml / *.yml files (MemberCluster and FailoverScheme documents).
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// What the operator lets FailoverSchemes ask for; every command that validates
/// documents takes them, so that `check` judges as `serve` does.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Let FailoverSchemes in SCHEME_NS protect primaries in PRIMARY_NS (`*`: any
    /// namespace). Without it a scheme protects only a primary in its own namespace.
    /// Repeat, or separate with commas.
    #[arg(
        long,
        value_name = "SCHEME_NS=PRIMARY_NS",
        value_delimiter = ',',
        value_parser = CrossNamespace::parse
    )]
    pub allow_cross_namespace: Vec<CrossNamespace>,
    /// Largest `replay.maxBodyBytes` a scheme may set (each Envoy buffers a replayable
    /// request up to it).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REPLAY_BODY_BYTES)]
    pub max_replay_body_bytes: u64,
    /// Shortest `healthCheck.interval` a scheme may set (each target is checked through
    /// its cluster's gateway at that pace).
    #[arg(
        long,
        value_name = "DURATION",
        env = "DETOUR_MIN_HEALTH_CHECK_INTERVAL",
        default_value = "100ms",
        value_parser = duration
    )]
    pub min_health_check_interval: Duration,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            cross_namespace: self.allow_cross_namespace.clone(),
            max_replay_body_bytes: self.max_replay_body_bytes,
            min_health_check_interval: self.min_health_check_interval,
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory of *.yaml / *.yml files (MemberCluster and FailoverScheme documents).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Read the documents from the CRDs of the cluster detour runs in (in-cluster
    /// config, or KUBECONFIG), discover member clusters' services, write status.
    #[arg(long)]
    pub kubernetes: bool,
    /// Kubernetes: the controller's namespace (its Lease, the kubeconfig Secrets).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE", default_value = DEFAULT_CONTROLLER_NAMESPACE)]
    pub namespace: String,
    /// Kubernetes: this replica's name in the Lease and in Events (default: the pod name
    /// from POD_NAME, else the host name).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub identity: Option<String>,
    /// Kubernetes: the Lease electing the replica that writes.
    #[arg(long, value_name = "NAME", default_value = "detour")]
    pub lease_name: String,
    /// Kubernetes: namespace of the mTLS Secret in every member cluster.
    #[arg(long, value_name = "NS", default_value = detour_kube::secrets::DEFAULT_NAMESPACE)]
    pub member_namespace: String,
    /// Kubernetes: lifetime of the certificates the leader issues into member clusters'
    /// mTLS Secrets (with `ca.key` in --certs); each is renewed two thirds into it.
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = duration)]
    pub member_cert_lifetime: Duration,
    /// Address of the table API, and of /healthz, /readyz and /metrics unless
    /// --ops-listen is given (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /healthz, /readyz and /metrics (required with mTLS: probes
    /// and Prometheus have no client certificate).
    #[arg(long, value_name = "ADDR:PORT")]
    pub ops_listen: Option<SocketAddr>,
    /// Serve the table API over mTLS with this certificate (PEM chain).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "client_ca"], conflicts_with = "certs")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA that table API clients' certificates must come from; a client may read
    /// only the table its certificate names (spiffe://detour.dev/cluster/C/table).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Health-check the gateways over mTLS, presenting this client certificate.
    #[arg(
        long,
        value_name = "FILE",
        requires = "probe_key",
        conflicts_with = "certs"
    )]
    pub probe_cert: Option<PathBuf>,
    /// The private key of --probe-cert.
    #[arg(long, value_name = "FILE", requires = "probe_cert")]
    pub probe_key: Option<PathBuf>,
    /// The CA the gateways' certificates must come from (default: --client-ca).
    #[arg(long, value_name = "FILE", requires = "probe_cert")]
    pub probe_ca: Option<PathBuf>,
    /// Shorthand for all of the TLS flags from a `detour certs init` directory:
    /// controller/server.{crt,key}, controller/probe.{crt,key} and ca.crt.
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// How often the config directory (and, with TLS, the certificate files; in
    /// Kubernetes, the CA's files the member clusters' Secrets are issued from) is
    /// checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = duration)]
    pub reload_interval: Duration,
    /// Longest long-poll (`?wait=`) the table API honours.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub max_wait: Duration,
    /// Table long-polls that may wait at once; more are answered 503 with the reason.
    #[arg(long, value_name = "N", default_value_t = crate::server::caps::DEFAULT_MAX_LONG_POLLS)]
    pub max_long_polls: usize,
    /// Status event streams (/v1/status/events) and status long-polls open at once; more
    /// are answered 503 with the reason.
    #[arg(long, value_name = "N", default_value_t = crate::server::caps::DEFAULT_MAX_STATUS_WATCHERS)]
    pub max_status_watchers: usize,
    /// On every listener: a connection must send a whole request head within this (from
    /// its start, or from the end of its previous request), else it is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// On every listener: a connection on which nothing was read or written this long is
    /// closed (must be longer than --max-wait).
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// The filters' `maxTableBytes` (set both alike): a larger table is never served
    /// (the cluster's last good one stays), and one past 80% of it is warned about.
    #[arg(long, value_name = "BYTES", default_value_t = detour_filter::table::DEFAULT_MAX_TABLE_BYTES)]
    pub max_table_bytes: usize,
}

#[derive(Subcommand, Debug)]
pub enum RenderCommand {
    /// A complete Envoy bootstrap (YAML) for one member cluster.
    Envoy(RenderEnvoyArgs),
}

#[derive(Args, Debug)]
pub struct RenderEnvoyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The member cluster this Envoy runs in.
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// Which of the cluster's gateway addresses this Envoy's gateway listener binds, when
    /// the MemberCluster lists several (`gateway.addresses`); default: the first.
    #[arg(long, value_name = "ADDR:PORT", value_parser = address)]
    pub gateway_address: Option<Address>,
    /// Address of the ingress listener (with the detour filter).
    #[arg(long, value_name = "ADDR:PORT", value_parser = address)]
    pub ingress: Address,
    /// Address of Envoy's admin interface.
    #[arg(long, value_name = "ADDR:PORT", value_parser = address)]
    pub admin: Address,
    /// Address of the detour controller's table API.
    #[arg(long, value_name = "ADDR:PORT", value_parser = address)]
    pub controller: Address,
    /// The filter's .wasm file (made absolute in the output).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_WASM)]
    pub wasm: PathBuf,
    /// Certificates from `detour certs init`: the gateway then requires a client
    /// certificate from the federation CA, and the clusters of remote gateways and of
    /// the controller use mTLS (paths made absolute in the output).
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// The filter's `maxTableBytes`: set it as the controller's `--max-table-bytes`.
    #[arg(long, value_name = "BYTES", default_value_t = detour_filter::table::DEFAULT_MAX_TABLE_BYTES)]
    pub max_table_bytes: usize,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The member cluster the request enters.
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// The service requested.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = service)]
    pub service: ServiceName,
    /// Take health from a running controller (e.g. http://127.0.0.1:8080) instead of
    /// probing every target once now.
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,
    /// A `detour certs init` directory: probes present controller/probe.crt, and the
    /// controller (https:// unless the URL says otherwise) is asked with the table
    /// certificate of --cluster.
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the federation CA and every certificate, or renew those that are missing,
    /// near expiry (less than a third of their lifetime left) or whose names changed.
    Init(CertsInitArgs),
}

#[derive(Args, Debug)]
pub struct CertsInitArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output directory (created; an existing CA in it is kept).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A DNS name or IP address the controller is reached at (repeat for several;
    /// default: localhost, 127.0.0.1 and ::1).
    #[arg(long = "controller-san", value_name = "HOST", value_parser = host)]
    pub controller_sans: Vec<Host>,
    /// Lifetime of a new CA, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..))]
    pub ca_days: u32,
    /// Lifetime of new leaf certificates, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..))]
    pub leaf_days: u32,
    /// A step of a change of CA with an overlap: `begin` (make the next CA, trusted
    /// beside the current one), `switch` (it issues every certificate; the one before
    /// is still trusted), `finish` (the one before is no longer trusted). Let every
    /// Envoy and the controller load each step before the next.
    #[arg(long, value_name = "STEP", value_enum)]
    pub ca_change: Option<crate::tls::init::CaChange>,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn address(text: &str) -> Result<Address, String> {
    Address::parse(text)
}

fn host(text: &str) -> Result<Host, String> {
    parse_host(text)
}

fn service(text: &str) -> Result<ServiceName, String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ServiceName::new(ns, name))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

/// Parses the command line, runs it, and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => Ok(check(&args)),
        Command::Status(args) => status::run(args, &runtime()?),
        Command::Import(command) => import::run(command),
        Command::Serve(args) => {
            let (tls, probe_tls) = serve_tls(&args)?;
            let policy = args.policy.policy();
            let source = match args.config {
                Some(config) => Source::Files { config, policy },
                None => Source::Kubernetes(KubeOptions {
                    namespace: args.namespace,
                    identity: args.identity.unwrap_or_else(default_identity),
                    lease_name: args.lease_name,
                    member_namespace: args.member_namespace,
                    timing: Timing::default(),
                    issuer: args.certs.clone(),
                    member_cert_lifetime: args.member_cert_lifetime,
                    reload_interval: args.reload_interval,
                    policy,
                }),
            };
            runtime()?.block_on(serve(ServeOptions {
                source,
                listen: args.listen,
                ops_listen: args.ops_listen,
                tls,
                probe_tls,
                reload_interval: args.reload_interval,
                max_wait: args.max_wait,
                conn_limits: crate::server::conn::ConnLimits {
                    header_read_timeout: args.header_read_timeout,
                    idle_timeout: args.idle_timeout,
                },
                max_long_polls: args.max_long_polls,
                max_status_watchers: args.max_status_watchers,
                max_table_bytes: args.max_table_bytes,
                certs: args.certs.clone(),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds(args) => {
            match args.out {
                Some(dir) => {
                    for path in detour_kube::crds::write_dir(&dir)? {
                        println!("{}", path.display());
                    }
                }
                None => print!("{}", detour_kube::crds::render_all()?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Register(args)) => {
            let (address, port) = gateway(&args.gateway)?;
            print!(
                "{}",
                detour_kube::register::render(&RegisterOptions {
                    name: args.name,
                    gateway_address: address,
                    gateway_port: port,
                    server: args.server,
                    member_namespace: args.namespace,
                    controller_namespace: args.controller_namespace,
                    local: args.local,
                })?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Init(args)) => {
            let model = load(&args.config)?;
            let day = Duration::from_secs(86_400);
            let opts = InitOptions {
                out: args.out.clone(),
                controller_hosts: if args.controller_sans.is_empty() {
                    default_controller_hosts()
                } else {
                    args.controller_sans
                },
                ca_lifetime: day * args.ca_days,
                leaf_lifetime: day * args.leaf_days,
                ca_change: args.ca_change,
            };
            let report = init(&model, &opts, std::time::SystemTime::now())?;
            print!("{report}");
            println!(
                "{}: {} certificate(s) created or renewed, {} kept",
                args.out.display(),
                report.changed(),
                report.entries.len() - report.changed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Render(RenderCommand::Envoy(args)) => {
            let model = load(&args.config)?;
            if let Some(dir) = &args.certs {
                check_certs(&Layout::new(dir), &args.cluster)?;
            }
            let yaml = render(
                &model,
                &RenderOptions {
                    cluster: args.cluster,
                    gateway: args.gateway_address,
                    ingress: args.ingress,
                    admin: args.admin,
                    controller: args.controller,
                    wasm: args.wasm,
                    certs: args.certs,
                    max_table_bytes: args.max_table_bytes,
                },
            )?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => {
            let model = load(&args.config)?;
            let text = runtime()?.block_on(explain(
                &model,
                &ExplainOptions {
                    cluster: args.cluster,
                    service: args.service,
                    controller: args.controller,
                    certs: args.certs,
                },
            ))?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The pod name, else the host name, else a name from the process id: unique among
/// replicas, which is what the Lease needs.
fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("detour-{}", std::process::id()))
}

/// `HOST[:PORT]` of a gateway (port 15443 by default).
fn gateway(text: &str) -> anyhow::Result<(String, u16)> {
    if detour_core::model::parse_host(text).is_ok() {
        return Ok((text.to_string(), detour_core::docs::DEFAULT_GATEWAY_PORT));
    }
    let a = Address::parse(text).map_err(|e| anyhow!("--gateway: {e}"))?;
    let host = match a.host {
        detour_core::model::Host::Ip(ip) => ip.to_string(),
        detour_core::model::Host::Name(n) => n,
    };
    Ok((host, a.port))
}

/// The server and probe TLS files of `serve`, from explicit flags or `--certs`.
fn serve_tls(args: &ServeArgs) -> anyhow::Result<(Option<TlsFiles>, Option<TlsFiles>)> {
    if let Some(dir) = &args.certs {
        let layout = Layout::new(dir);
        let server = layout.controller(ControllerRole::Server);
        let tls = crate::tls::client::pair_files(&layout, server);
        return Ok((Some(tls), Some(crate::tls::client::probe_files(&layout))));
    }
    let tls = match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    };
    let probe = match (&args.probe_cert, &args.probe_key) {
        (Some(cert), Some(key)) => {
            let Some(ca) = args.probe_ca.as_ref().or(args.client_ca.as_ref()) else {
                anyhow::bail!(
                    "--probe-cert needs the CA of the gateways' certificates: add --probe-ca FILE (or --client-ca FILE)"
                );
            };
            Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })
        }
        _ => None,
    };
    Ok((tls, probe))
}

fn check(args: &ConfigArg) -> ExitCode {
    let dir = &args.config;
    match load_dir(dir, &args.policy.policy()) {
        Ok(model) => {
            println!(
                "{}: OK ({} member clusters, {} failover schemes)",
                dir.display(),
                model.clusters.len(),
                model.schemes.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{}: {} problem(s) found", dir.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArg) -> anyhow::Result<detour_core::model::Model> {
    let dir = &args.config;
    load_dir(dir, &args.policy.policy()).map_err(|problems| {
        anyhow!(
            "{}\nthe configuration in {} is invalid (run `detour check`)",
            Problems(problems),
            dir.display()
        )
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn member_certificates_live_as_long_as_certs_init_makes_them_unless_told() {
        let serve = |extra: &[&str]| {
            let mut argv = vec!["detour", "serve", "--kubernetes"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(args) => args.member_cert_lifetime,
                other => panic!("not serve: {other:?}"),
            }
        };
        assert_eq!(serve(&[]), detour_kube::issuer::LEAF_LIFETIME);
        assert_eq!(
            serve(&["--member-cert-lifetime", "30s"]),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn services_are_namespace_slash_name() {
        assert_eq!(service("apps/foo"), Ok(ServiceName::new("apps", "foo")));
        for bad in ["foo", "/foo", "apps/", "a/b/c"] {
            assert!(service(bad).is_err(), "{bad}");
        }
    }
}

//! The `detour` command line.

use crate::docs::Problems;
use crate::explain::{ExplainOptions, explain};
use crate::kube::lease::Timing;
use crate::kube::register::RegisterOptions;
use crate::kube::run::KubeOptions;
use crate::model::{Address, ServiceName};
use crate::render::envoy::{DEFAULT_WASM, RenderOptions, render};
use crate::serve::{ServeOptions, Source, serve};
use crate::source::files::load_dir;
use crate::telemetry::{self, LogFormat};
use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use detour_filter::duration::parse_duration;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    Serve(ServeArgs),
    /// Validate a configuration directory; exits non-zero with every problem found.
    Check(ConfigArg),
    /// Render data-plane configuration.
    #[command(subcommand)]
    Render(RenderCommand),
    /// Tell where a request for a service would go now, and why.
    Explain(ExplainArgs),
    /// Print the CustomResourceDefinitions of detour's documents (multi-document YAML).
    Crds(CrdsArgs),
    /// Member clusters (Kubernetes mode).
    #[command(subcommand)]
    Cluster(ClusterCommand),
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
    #[arg(long, value_name = "NS", default_value = crate::kube::secrets::DEFAULT_NAMESPACE)]
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
    #[arg(long, value_name = "NS", default_value = crate::kube::secrets::DEFAULT_NAMESPACE)]
    pub member_namespace: String,
    /// Address of the table API, /healthz, /readyz and /metrics (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How often the config directory is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = duration)]
    pub reload_interval: Duration,
    /// Longest long-poll (`?wait=`) the table API honours.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub max_wait: Duration,
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
    /// Certificates from `detour certs init` for mTLS (not implemented yet).
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
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
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn address(text: &str) -> Result<Address, String> {
    Address::parse(text)
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
        Command::Check(args) => Ok(check(&args.config)),
        Command::Serve(args) => {
            let source = match args.config {
                Some(config) => Source::Files {
                    config,
                    reload_interval: args.reload_interval,
                },
                None => Source::Kubernetes(KubeOptions {
                    namespace: args.namespace,
                    identity: args.identity.unwrap_or_else(default_identity),
                    lease_name: args.lease_name,
                    member_namespace: args.member_namespace,
                    timing: Timing::default(),
                }),
            };
            runtime()?.block_on(serve(ServeOptions {
                source,
                listen: args.listen,
                max_wait: args.max_wait,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds(args) => {
            match args.out {
                Some(dir) => {
                    for path in crate::kube::crds::write_dir(&dir)? {
                        println!("{}", path.display());
                    }
                }
                None => print!("{}", crate::kube::crds::render_all()?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Register(args)) => {
            let (address, port) = gateway(&args.gateway)?;
            print!(
                "{}",
                crate::kube::register::render(&RegisterOptions {
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
        Command::Render(RenderCommand::Envoy(args)) => {
            let model = load(&args.config.config)?;
            let yaml = render(
                &model,
                &RenderOptions {
                    cluster: args.cluster,
                    ingress: args.ingress,
                    admin: args.admin,
                    controller: args.controller,
                    wasm: args.wasm,
                    certs: args.certs,
                },
            )?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(args) => {
            let model = load(&args.config.config)?;
            let text = runtime()?.block_on(explain(
                &model,
                &ExplainOptions {
                    cluster: args.cluster,
                    service: args.service,
                    controller: args.controller,
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
    if crate::model::parse_host(text).is_ok() {
        return Ok((text.to_string(), crate::docs::DEFAULT_GATEWAY_PORT));
    }
    let a = Address::parse(text).map_err(|e| anyhow!("--gateway: {e}"))?;
    let host = match a.host {
        crate::model::Host::Ip(ip) => ip.to_string(),
        crate::model::Host::Name(n) => n,
    };
    Ok((host, a.port))
}

fn check(dir: &Path) -> ExitCode {
    match load_dir(dir) {
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

fn load(dir: &Path) -> anyhow::Result<crate::model::Model> {
    load_dir(dir).map_err(|problems| {
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
    fn services_are_namespace_slash_name() {
        assert_eq!(service("apps/foo"), Ok(ServiceName::new("apps", "foo")));
        for bad in ["foo", "/foo", "apps/", "a/b/c"] {
            assert!(service(bad).is_err(), "{bad}");
        }
    }
}

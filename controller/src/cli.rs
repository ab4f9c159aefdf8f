//! The `detour` command line.

use crate::docs::Problems;
use crate::explain::{ExplainOptions, explain};
use crate::model::{Address, ServiceName};
use crate::render::envoy::{DEFAULT_WASM, RenderOptions, render};
use crate::serve::{ServeOptions, serve};
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
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Directory of *.yaml / *.yml files (MemberCluster and FailoverScheme documents).
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
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
            runtime()?.block_on(serve(ServeOptions {
                config: args.config.config,
                listen: args.listen,
                reload_interval: args.reload_interval,
                max_wait: args.max_wait,
            }))?;
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

//! `make bench`: what detour costs and how fast it fails over, measured on this machine
//! with the real processes (Envoy with the real `.wasm`, `detour serve`, the e2e
//! upstreams), side by side in one run, and written up as `bench/report.md`.
//!
//! ```text
//! bench [STAGE...] [--rounds N] [--seconds S] [--compare NAME=WASM]... [--report FILE]
//! ```
//! Stages (all by default, in this order): `overhead` (requests through Envoy without a
//! filter, with an empty filter, with detour; wrk), `footprint` (the `.wasm` and memory
//! per Envoy worker), `failover` (kill the primary under load: passive detection,
//! long-poll only, polling only), `controller` (table computation, long-poll clients,
//! health checker, at growing sizes). `bench gateways ADDR...` is the bench's own helper
//! process: fast HTTP servers standing in for east-west gateways.

mod controller;
mod failover;
mod footprint;
mod gateways;
mod h2load;
mod ingress;
mod machine;
mod overhead;
mod procfs;
mod report;
mod stats;
mod tools;
mod wrk;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "bench", about = "detour's benchmarks (make bench)")]
struct Cli {
    #[command(subcommand)]
    helper: Option<Helper>,
    /// Stages to run; all of them when none is given.
    #[arg(value_enum)]
    stages: Vec<Stage>,
    /// Rounds of the request-overhead measurement (variants interleaved in each).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Seconds of load per variant, round and connection count.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Failover trials per mode.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// One more build of detour's filter to measure side by side with the current one
    /// (e.g. `before=/tmp/detour_filter.wasm`).
    #[arg(long, value_name = "NAME=WASM", value_parser = parse_compare)]
    compare: Vec<(String, PathBuf)>,
    /// A JSON merge patch for the filter configuration of a compared build (e.g.
    /// `before={"envoyRemovesClientHeaders":null}` for a build that predates a field).
    #[arg(long, value_name = "NAME=JSON", value_parser = parse_compare_config)]
    compare_config: Vec<(String, serde_json::Value)>,
    /// Overhead stage: start the variants' Envoys, print where they listen and wait
    /// (until killed) instead of measuring, for profiling by hand (`perf record -p`).
    #[arg(long)]
    hold: bool,
    /// Where the Markdown report goes.
    #[arg(long, default_value = "bench/out/report.md")]
    report: PathBuf,
    /// Where the failover timelines go (JSON, which bench/plot_failover.py draws).
    #[arg(long, default_value = "bench/out/failover.json")]
    timeline: PathBuf,
}

#[derive(Subcommand)]
enum Helper {
    /// Serve fast `200`s on each address, as east-west gateways would answer health
    /// checks (used by the controller stage; runs until killed).
    Gateways {
        /// `HOST:PORT` to listen on.
        #[arg(required = true)]
        listen: Vec<std::net::SocketAddr>,
        /// While this file exists, listeners named in it (one address a line) answer 503.
        #[arg(long)]
        fail_file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Stage {
    Overhead,
    /// The overhead stage again, with gRPC calls over HTTP/2 (h2load) instead of wrk.
    Grpc,
    Footprint,
    Failover,
    Controller,
}

fn parse_compare(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=PATH"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("{name:?}: a name of letters, digits and '-'"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_compare_config(text: &str) -> Result<(String, serde_json::Value), String> {
    let (name, json) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=JSON"))?;
    let patch = serde_json::from_str(json).map_err(|e| format!("{json:?}: {e}"))?;
    Ok((name.to_string(), patch))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.helper {
        Some(Helper::Gateways { listen, fail_file }) => gateways::serve(listen, fail_file),
        None => run(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let started = Instant::now();
    let mut stages = cli.stages.clone();
    if stages.is_empty() {
        stages = vec![
            Stage::Overhead,
            Stage::Footprint,
            Stage::Failover,
            Stage::Controller,
        ];
    }
    stages.sort();
    stages.dedup();
    for (name, wasm) in &cli.compare {
        if !wasm.is_file() {
            bail!("--compare {name}={}: no such file", wasm.display());
        }
    }
    let compare: Vec<overhead::Build> = cli
        .compare
        .iter()
        .map(|(name, wasm)| overhead::Build {
            name: name.clone(),
            wasm: wasm.clone(),
            patch: cli
                .compare_config
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, patch)| patch.clone()),
        })
        .collect();
    if let Some((name, _)) = cli
        .compare_config
        .iter()
        .find(|(n, _)| !cli.compare.iter().any(|(c, _)| c == n))
    {
        bail!("--compare-config {name}=...: no --compare {name}=WASM");
    }
    tools::wrk()?;
    if stages.contains(&Stage::Grpc) {
        tools::on_path("h2load", "nghttp2-client")?;
    }
    let machine = machine::describe()?;
    eprintln!("bench: {}", machine.one_line());

    let mut report = report::Report::new(machine);
    for stage in stages {
        let at = Instant::now();
        eprintln!("\nbench: stage {stage:?}");
        match stage {
            Stage::Overhead | Stage::Grpc => {
                let options = overhead::Options {
                    load: if stage == Stage::Grpc {
                        overhead::Load::Grpc
                    } else {
                        overhead::Load::Http1
                    },
                    rounds: cli.rounds,
                    seconds: cli.seconds,
                    compare: compare.clone(),
                    hold: cli.hold,
                };
                let result = overhead::run(&options)?;
                match stage {
                    Stage::Grpc => report.grpc = Some(result),
                    _ => report.overhead = Some(result),
                }
            }
            Stage::Footprint => report.footprint = Some(footprint::run()?),
            Stage::Failover => {
                let result = failover::run(cli.trials)?;
                failover::write_timelines(&result, &cli.timeline)?;
                report.failover = Some(result);
            }
            Stage::Controller => report.controller = Some(controller::run()?),
        }
        report.stage_times.push((stage, at.elapsed()));
    }
    report.elapsed = started.elapsed();
    let markdown = report.markdown();
    report::write_output(&cli.report, markdown.as_bytes())?;
    println!("{markdown}");
    eprintln!(
        "bench: done in {:.0}s; report in {}",
        report.elapsed.as_secs_f64(),
        cli.report.display()
    );
    Ok(())
}

//! Request overhead: the same closed-loop load (wrk, a fixed number of keep-alive
//! connections) through
//!
//! * (a) Envoy without a filter, to east's service;
//! * (b) the same Envoy with an empty proxy-wasm filter (`bench/noop-filter`);
//! * (c) Envoy as `detour render envoy` configures it, on the healthy path;
//! * (d) the same while failed over: the controller's table says east's service is
//!   Unhealthy, so every request is re-routed through west's east-west gateway;
//! * (a') Envoy without a filter sent straight to west's gateway: (d) ÷ (a') is the
//!   filter's cost while failed over, without the cross-cluster hop.
//!
//! The variants run interleaved, round after round (the order rotates), and each is
//! compared with its baseline *in the same round*: runs seconds apart see the same
//! background load on a shared machine, so their ratio is steadier than either figure.
//! All traffic is plain HTTP (the overhead of mTLS between clusters is the gateway hop's,
//! not the filter's); Envoys run two workers, as in the tests.

mod envoys;
mod report;

use crate::h2load;
use crate::wrk::{self, WrkRun};
use anyhow::{Context, Result, bail, ensure};
use detour_e2e::client::HttpClient;
use detour_e2e::setup::{Protocol, Setup};
use detour_e2e::topology::Topology;
use detour_filter::health::Health;
use envoys::start_envoys;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Connections of the two load levels: enough to saturate the machine (throughput and
/// latency under load), and one (latency without queueing).
pub const CONNECTIONS: [u32; 2] = [16, 1];

/// What load the stage sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// wrk, `GET /` over HTTP/1.1, to an HTTP/1.1 service.
    Http1,
    /// h2load, unary gRPC calls over HTTP/2 with prior knowledge, to a service that
    /// speaks h2c (`protocol: http2`): the gRPC path through the router, trailers included.
    Grpc,
}

pub struct Options {
    pub load: Load,
    pub rounds: usize,
    pub seconds: u64,
    /// Other builds of detour's filter to run side by side with the current one.
    pub compare: Vec<Build>,
    /// Start the Envoys, print them, and wait instead of measuring.
    pub hold: bool,
}

/// A build of detour's filter to measure next to the current one.
#[derive(Debug, Clone)]
pub struct Build {
    pub name: String,
    pub wasm: PathBuf,
    /// JSON merge patch for its filter configuration (as rendered for the current one).
    pub patch: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The table says every target is Healthy.
    Healthy,
    /// The table says east's service (the primary) is Unhealthy.
    FailedOver,
}

#[derive(Debug, Clone)]
pub struct Variant {
    /// `a`, `b`, `c`, `d`, `a'`; `c NAME` / `d NAME` for compared builds.
    pub key: String,
    pub label: String,
    pub(super) envoy: String,
    pub(super) addr: SocketAddr,
    pub(super) phase: Phase,
    /// The member cluster whose service must answer (checked before measuring).
    pub(super) served_by: &'static str,
    /// The variant whose same-round run this one is divided by, besides (a).
    pub baseline: String,
}

pub struct VariantResult {
    pub variant: Variant,
    /// Runs per connection count, one per round.
    pub runs: BTreeMap<u32, Vec<WrkRun>>,
}

pub struct Overhead {
    pub load: Load,
    pub variants: Vec<VariantResult>,
    /// The other builds of detour's filter measured, with their files.
    pub compared: Vec<Build>,
    pub rounds: usize,
    pub seconds: u64,
    pub elapsed: Duration,
}

/// The host every variant is asked for (the scheme's service; plain Envoys ignore it).
const HOST: &str = "foo.apps";

pub fn run(options: &Options) -> Result<Overhead> {
    let started = Instant::now();
    let setup = Setup {
        clusters: vec!["east".into(), "west".into()],
        failover_groups: vec![vec!["west".into()]],
        mtls: false,
        // Back on the primary soon after the bench makes its checks pass again.
        stable_for: Duration::from_millis(200),
        protocol: match options.load {
            Load::Http1 => Protocol::Http,
            Load::Grpc => Protocol::Http2,
        },
        ..Setup::for_tests()
    };
    let name = match options.load {
        Load::Http1 => "bench-overhead",
        Load::Grpc => "bench-overhead-grpc",
    };
    let mut t = Topology::start(name, setup)?;
    let scratch = t.out().path().to_path_buf();
    let load = |v: &Variant, connections, seconds, pid| match options.load {
        Load::Http1 => wrk::run(v.addr, HOST, connections, seconds, pid),
        Load::Grpc => h2load::run(v.addr, HOST, connections, seconds, pid, &scratch),
    };
    let variants = start_envoys(&mut t, &options.compare)?;
    if options.hold {
        for v in &variants {
            let pid = envoy_pid(&mut t, &v.envoy)?;
            println!(
                "({}) {}: http://{} (Host: {HOST}), Envoy pid {pid}",
                v.key, v.label, v.addr
            );
        }
        println!("holding; stop with Ctrl-C");
        loop {
            std::thread::park();
        }
    }
    let detour_envoys: Vec<String> = variants
        .iter()
        // Every Envoy with detour's filter follows the table, whichever phase it is
        // measured in.
        .filter(|v| v.key.starts_with('c') || v.key.starts_with('d'))
        .map(|v| v.envoy.clone())
        .collect();

    let mut runs: BTreeMap<String, BTreeMap<u32, Vec<WrkRun>>> = BTreeMap::new();
    for round in 0..options.rounds {
        for phase in [Phase::Healthy, Phase::FailedOver] {
            if phase == Phase::FailedOver {
                switch(&mut t, &detour_envoys, Health::Unhealthy)?;
            }
            let mut here: Vec<&Variant> = variants.iter().filter(|v| v.phase == phase).collect();
            let turn = round % here.len();
            here.rotate_left(turn);
            for v in &here {
                check_path(v)?;
                let pid = envoy_pid(&mut t, &v.envoy)?;
                if round == 0 {
                    // V8 compiles hot functions with its optimising tier only after
                    // they ran a while: the first second is not measured.
                    load(v, CONNECTIONS[0], 1, pid)?;
                }
                for &connections in &CONNECTIONS {
                    let run = load(v, connections, options.seconds, pid)?;
                    ensure!(
                        run.errors() == 0,
                        "{} ({}): {} errors in {} requests with {connections} connections",
                        v.key,
                        v.label,
                        run.errors(),
                        run.requests
                    );
                    eprintln!(
                        "  round {round} {:<10} c={connections:<2} {:>8.0} req/s  p50 {:>6.0}µs  \
                         p99 {:>6.0}µs  Envoy CPU {:>5.1}µs/req",
                        v.key,
                        run.rps(),
                        run.p50_us,
                        run.p99_us,
                        run.cpu_us_per_request
                    );
                    runs.entry(v.key.clone())
                        .or_default()
                        .entry(connections)
                        .or_default()
                        .push(run);
                }
            }
            if phase == Phase::FailedOver {
                switch(&mut t, &detour_envoys, Health::Healthy)?;
            }
        }
    }
    let variants = variants
        .into_iter()
        .map(|variant| VariantResult {
            runs: runs.remove(&variant.key).unwrap_or_default(),
            variant,
        })
        .collect();
    Ok(Overhead {
        load: options.load,
        variants,
        compared: options.compare.clone(),
        rounds: options.rounds,
        seconds: options.seconds,
        elapsed: started.elapsed(),
    })
}

/// Makes east's service fail (or pass) its health checks while it keeps serving, and
/// waits until every detour Envoy routes by the table that says so.
fn switch(t: &mut Topology, envoys: &[String], health: Health) -> Result<()> {
    t.upstream("east")?
        .fail_health_checks(health == Health::Unhealthy)?;
    let within = t.setup().failback_bound();
    t.wait_target_health("east", health, within)?;
    let version = t.controller()?.table("east")?.version;
    for envoy in envoys {
        t.wait_filter_holds(envoy, &version)?;
    }
    Ok(())
}

/// One request, to check the variant reaches the cluster it should before timing it.
fn check_path(v: &Variant) -> Result<()> {
    let reply = HttpClient::new(v.addr, HOST).get("/")?;
    if reply.served_by() != Some(v.served_by) {
        bail!(
            "{} ({}) should be answered by {}, got {}",
            v.key,
            v.label,
            v.served_by,
            reply.summary()
        );
    }
    Ok(())
}

fn envoy_pid(t: &mut Topology, name: &str) -> Result<u32> {
    t.envoy(name)?
        .process()
        .pid()
        .with_context(|| format!("{name} is not running"))
}

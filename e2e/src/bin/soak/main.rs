//! `make soak` (issue 13): a chaos soak under GET + POST load through east's Envoy.
//!
//! `soak [--minutes M | --seconds S] [--seed N] [--gateways G]`
//!
//! gRPC unary calls run beside the GETs and POSTs (the service speaks h2c).
//!
//! Three member clusters on loopback: east's `foo` with three instances, west's and
//! south's with two, west and south with G gateway instances (default 2), east's
//! gateway in an Envoy of its own. While the load runs, the chaos ([`chaos`]) kills,
//! freezes and restarts service instances and gateway Envoys in every cluster and
//! restarts the controller, always leaving a live instance reachable somewhere; then
//! everything comes back, the load runs a few calm seconds and stops.
//!
//! The report ([`report`]; also `e2e/out/soak/report.txt`, beside every process's log,
//! `chaos.log` and `failures.txt`):
//! failed GETs (must be 0), POSTs delivered twice (must be 0), failed POSTs by status and
//! `x-detour-reason`, latency quantiles, RSS of the Envoys and the controller at start
//! and end (bounded growth, [`memory::GROWTH_BOUND`]), what the chaos did. Exits 0 when
//! the contract held, 1 when it did not, 2 when the soak could not run.

mod chaos;
mod memory;
mod report;

use anyhow::{Context, Result, bail};
use chaos::{Chaos, ENTRY, Rng};
use detour_e2e::client::Request;
use detour_e2e::deliveries::Deliveries;
use detour_e2e::grpc::{GrpcClient, read_calls};
use detour_e2e::load::{Load, LoadSpec};
use detour_e2e::setup::{Protocol, Setup};
use detour_e2e::topology::Topology;
use memory::Memory;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An attempt that hangs this long (a frozen instance or gateway) goes on to the next
/// instance or group: what keeps GETs alive through SIGSTOP.
const PER_TRY_TIMEOUT: Duration = Duration::from_millis(500);
/// The route timeout: a POST stuck on a frozen instance fails after this (it may have
/// been delivered, so it is not sent elsewhere); lower than the rendered 15 s so that
/// freezes cost seconds, not quarters of a minute.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two disruptions.
const MIN_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Load before the chaos starts and after it ends.
const WARM: Duration = Duration::from_secs(2);
const CALM: Duration = Duration::from_secs(3);
const MEMORY_EVERY: Duration = Duration::from_secs(5);
/// How long the gRPC load may run on after the HTTP load stopped.
const GRPC_GRACE: Duration = Duration::from_secs(15);
/// How long everything may take to come back after the chaos.
const SETTLE: Duration = Duration::from_secs(60);

struct Args {
    run: Duration,
    seed: u64,
    gateways: usize,
}

fn parse_args() -> Result<Args> {
    let mut run = Duration::from_secs(600);
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut gateways = 2;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = || -> Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .with_context(|| format!("{flag} {value}: not a positive number"))
        };
        match flag.as_str() {
            "--minutes" => run = Duration::from_secs_f64(number()? * 60.0),
            "--seconds" => run = Duration::from_secs_f64(number()?),
            "--seed" => seed = value.parse().with_context(|| format!("--seed {value}"))?,
            "--gateways" => gateways = number()? as usize,
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(Args {
        run,
        seed,
        gateways,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "soak: {e:#}\nusage: soak [--minutes M | --seconds S] [--seed N] [--gateways G]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak could not run: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn setup(gateways: usize) -> Setup {
    let mut setup = Setup::for_tests();
    setup.instances = [("east", 3), ("west", 2), ("south", 2)]
        .map(|(c, n)| (c.to_string(), n))
        .into();
    setup.gateways = [("west", gateways), ("south", gateways)]
        .map(|(c, n)| (c.to_string(), n))
        .into();
    // East's gateway may die without taking the Envoy the load enters through.
    setup.dedicated_gateways = [ENTRY.to_string()].into();
    // h2c to the instances, so that gRPC calls go through beside HTTP/1.1 clients' GETs
    // and POSTs (the upstream binary speaks both, and answers gRPC calls).
    setup.protocol = Protocol::Http2;
    setup.replay.per_try_timeout = Some(PER_TRY_TIMEOUT);
    setup.route_timeout = Some(ROUTE_TIMEOUT);
    setup
}

fn run(args: &Args) -> Result<bool> {
    eprintln!(
        "soak: {:.0} s of chaos, seed {}, {} gateway instances in west and south",
        args.run.as_secs_f64(),
        args.seed,
        args.gateways
    );
    let mut t = Topology::start("soak", setup(args.gateways))?;
    eprintln!(
        "soak: every process and log in {}",
        t.out().path().display()
    );
    let mut rng = Rng::new(args.seed);
    let mut chaos = Chaos::new(&t);
    let mut memory = Memory::default();

    let load = Load::start(
        &t.ingress(ENTRY)?,
        LoadSpec {
            workers: 6,
            pace: Some(Duration::from_millis(40)),
            mix: vec![Request::get("/"), Request::post("/", "an order")],
            max_duration: args.run + WARM + CALM + SETTLE + Duration::from_secs(60),
        },
    )?;
    // gRPC unary calls (`e2e/grpc/client.py`, one call at a time, back to back) for as
    // long as the HTTP load; they are POSTs, so one cut off by a kill may fail.
    let grpc_calls = t.out().file("grpc-calls.jsonl");
    let mut grpc = GrpcClient::new(
        t.layout().member(ENTRY)?.ingress,
        &t.setup().service.authority(),
    )
    .start_load(
        (args.run + WARM + CALM).as_secs_f64(),
        1,
        &grpc_calls,
        t.out().file("grpc-load.log"),
    )?;
    std::thread::sleep(WARM);
    memory.sample(&mut t);

    let started = Instant::now();
    let deadline = started + args.run;
    // Bounded in count as in time: at most one disruption per MIN_PAUSE.
    let max_steps = (args.run.as_millis() / MIN_PAUSE.as_millis()).max(1);
    let mut last_sample = Instant::now();
    let mut steps = 0;
    while Instant::now() < deadline && steps < max_steps {
        chaos.step(&mut t, &mut rng)?;
        steps += 1;
        if last_sample.elapsed() >= MEMORY_EVERY {
            memory.sample(&mut t);
            last_sample = Instant::now();
        }
        let pause = rng.between(MIN_PAUSE, MAX_PAUSE);
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
    }
    chaos.settle(&mut t, SETTLE)?;
    std::thread::sleep(CALM);
    memory.sample(&mut t);
    let ran = started.elapsed();
    let report = load.stop()?;

    // The gRPC load ends by itself about now (a settling longer than planned leaves it
    // a little behind); what it has not finished is not counted.
    let grpc_end = Instant::now() + GRPC_GRACE;
    while grpc.exited()?.is_none() && Instant::now() < grpc_end {
        std::thread::sleep(Duration::from_millis(100));
    }
    grpc.terminate(Duration::from_secs(1))?;
    let calls = read_calls(&grpc_calls)?;
    let deliveries = Deliveries::read(&t)?;
    let mut verdict = report::judge(&report, &deliveries, &memory, &chaos.tally, ran);
    verdict.text.push_str(&report::grpc(&calls));
    let mut text = format!(
        "soak: seed {}, {steps} chaos steps\n{}",
        args.seed, verdict.text
    );
    if verdict.violations.is_empty() {
        text.push_str("PASS\n");
    } else {
        text.push_str(&format!("FAIL: {}\n", verdict.violations.join("; ")));
    }
    print!("{text}");
    let failures = t.out().file("failures.txt");
    std::fs::write(&failures, report::failures(&report))
        .with_context(|| format!("writing {}", failures.display()))?;
    let path = t.out().file("report.txt");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(verdict.violations.is_empty())
}

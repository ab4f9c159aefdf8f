//! What the filter weighs: the size of the `.wasm` Envoy loads, and the memory its VMs
//! take. Envoy runs one VM per worker thread (plus one on the main thread), so the
//! resident memory of the same Envoy (east's rendered ingress) with 1, 2 and 4 workers,
//! without a filter, with the empty filter and with detour's, tells the cost of the
//! module and of each VM: the difference to the Envoy without a filter, and how it grows
//! per worker. Each Envoy serves a few requests on fresh connections first (so every
//! worker has handled some) and detour's holds the controller's table.

use crate::ingress::{EastIngress, Shape};
use crate::procfs::rss_mib;
use crate::stats::Spread;
use crate::tools::noop_wasm;
use anyhow::{Context, Result};
use detour_e2e::client::HttpClient;
use detour_e2e::envoy::{Envoy, EnvoySpec};
use detour_e2e::paths::filter_wasm;
use detour_e2e::ports::free_addr;
use detour_e2e::setup::Setup;
use detour_e2e::topology::Topology;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const WORKERS: [u32; 3] = [1, 2, 4];
/// Each Envoy is started this many times (the median RSS is reported).
const ROUNDS: usize = 2;
const KINDS: [&str; 3] = ["no filter", "empty wasm filter", "detour"];

pub struct Footprint {
    pub wasm_bytes: u64,
    pub noop_bytes: u64,
    /// `rss_mib[kind][workers]`, in the order of [`KINDS`] and [`WORKERS`].
    pub rss_mib: Vec<Vec<Spread>>,
    pub elapsed: Duration,
}

pub fn run() -> Result<Footprint> {
    let started = Instant::now();
    let wasm = filter_wasm()?;
    let noop = noop_wasm()?;
    let size = |p: &std::path::Path| -> Result<u64> {
        Ok(std::fs::metadata(p)
            .with_context(|| format!("{}", p.display()))?
            .len())
    };
    let setup = Setup {
        clusters: vec!["east".into(), "west".into()],
        failover_groups: vec![vec!["west".into()]],
        mtls: false,
        ..Setup::for_tests()
    };
    let t = Topology::start("bench-footprint", setup)?;
    let ingress = EastIngress::of(&t);
    let shapes = [
        Shape::NoFilter,
        Shape::Wasm(noop.clone(), None),
        Shape::Wasm(wasm.clone(), None),
    ];
    let mut samples = vec![vec![Vec::new(); WORKERS.len()]; KINDS.len()];
    for round in 0..ROUNDS {
        for (w, &workers) in WORKERS.iter().enumerate() {
            for (k, shape) in shapes.iter().enumerate() {
                let rss = measure(&t, &ingress, shape, workers, &format!("{round}-{w}-{k}"))?;
                eprintln!(
                    "  footprint: {} with {workers} worker(s): {:.1} MiB",
                    KINDS[k], rss
                );
                samples[k][w].push(rss);
            }
        }
    }
    Ok(Footprint {
        wasm_bytes: size(&wasm)?,
        noop_bytes: size(&noop)?,
        rss_mib: samples
            .into_iter()
            .map(|per_workers| per_workers.into_iter().map(Spread::of).collect())
            .collect(),
        elapsed: started.elapsed(),
    })
}

/// Starts one Envoy, lets every worker serve, and returns its RSS in MiB.
fn measure(
    t: &Topology,
    ingress: &EastIngress,
    shape: &Shape,
    workers: u32,
    tag: &str,
) -> Result<f64> {
    let listen = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
    let admin = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
    let path = t.out().file(&format!("envoy-footprint-{tag}.yaml"));
    std::fs::write(&path, ingress.config(listen, admin, shape)?)?;
    let mut spec = EnvoySpec::new(&format!("footprint-{tag}"), &path, admin);
    spec.concurrency = workers;
    let mut envoy = Envoy::start(&spec, t.out())?;
    let client = HttpClient::new(listen, &t.setup().service.authority()).without_keep_alive();
    for _ in 0..(20 * workers) {
        client.get("/")?;
    }
    // Let start-up allocations settle (and detour's table arrive) before reading.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = envoy.process().pid().context("Envoy is not running")?;
    let rss = rss_mib(pid)?;
    envoy.kill()?;
    Ok(rss)
}

impl Footprint {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Filter size and memory\n");
        let _ = writeln!(
            out,
            "`detour_filter.wasm` (release, as Envoy loads it): **{:.0} KiB**; the empty \
             filter built the same way: {:.0} KiB.\n",
            self.wasm_bytes as f64 / 1024.0,
            self.noop_bytes as f64 / 1024.0
        );
        let _ = writeln!(
            out,
            "Resident memory (VmRSS) of east's rendered ingress Envoy by worker count \
             (Envoy runs one VM per worker and one on its main thread), after serving a \
             few requests on fresh connections; median of {ROUNDS} starts, MiB. Stage time \
             {:.0} s.\n",
            self.elapsed.as_secs_f64()
        );
        let _ = write!(out, "| workers |");
        for kind in KINDS {
            let _ = write!(out, " {kind} |");
        }
        let _ = writeln!(out, " empty filter − none | detour − none |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (w, workers) in WORKERS.iter().enumerate() {
            let m = |k: usize| self.rss_mib[k][w].median;
            let _ = writeln!(
                out,
                "| {workers} | {} | {} | {} | {:.1} | {:.1} |",
                self.rss_mib[0][w].show(1),
                self.rss_mib[1][w].show(1),
                self.rss_mib[2][w].show(1),
                m(1) - m(0),
                m(2) - m(0)
            );
        }
        let last = WORKERS.len() - 1;
        let per_worker = |k: usize| {
            let extra = |w: usize| self.rss_mib[k][w].median - self.rss_mib[0][w].median;
            (extra(last) - extra(0)) / f64::from(WORKERS[last] - WORKERS[0])
        };
        let _ = writeln!(
            out,
            "\nPer additional worker (slope from {} to {} workers, over the Envoy without a \
             filter): detour {:.1} MiB, the empty filter {:.1} MiB — what one more V8 VM \
             with the module costs.\n",
            WORKERS[0],
            WORKERS[last],
            per_worker(2),
            per_worker(1)
        );
        out
    }
}

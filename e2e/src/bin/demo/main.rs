//! `make demo`: three member clusters (east, west, south) on this machine, steady
//! traffic through east's Envoy, and a live timeline while the demo kills east's `foo`,
//! then west's, then brings them back. Exits 0 when every expected switch happened,
//! 1 when one did not, 2 when the demo could not run; leaves no process behind.
//!
//! Traffic between the clusters (east's Envoy to the other clusters' east-west
//! gateways, and the controller's health checks through them) and every table fetch run
//! over mTLS, with certificates from `detour certs init`, as in production;
//! `demo --plain` runs them in plaintext instead.
//!
//! `demo --print-wasm` prints the filter it would load and exits (the e2e tests check
//! that it is the file they load into Envoy).

mod timeline;

use anyhow::{Context, Result};
use detour_e2e::documents::duration;
use detour_e2e::load::{Load, LoadSpec};
use detour_e2e::paths::filter_wasm;
use detour_e2e::setup::Setup;
use detour_e2e::topology::Topology;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use timeline::{Switch, Timeline, failure_kind, secs};

/// Requests per second through east's Envoy, and the workers sending them.
const RATE: u32 = 20;
const WORKERS: usize = 4;
/// How long each phase runs before the next action, so each state is visible.
const DWELL: Duration = Duration::from_secs(3);
/// Extra patience, beyond the configured bounds, before the demo calls a switch missing.
const PATIENCE: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-wasm") {
        return match filter_wasm() {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::from(2)
            }
        };
    }
    let plain = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--plain") => true,
        Some(other) => {
            eprintln!("usage: demo [--plain | --print-wasm] (not {other:?})");
            return ExitCode::from(2);
        }
    };
    match run(plain) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("\ndemo could not run: {e:#}");
            eprintln!("logs of every process: e2e/out/demo/");
            ExitCode::from(2)
        }
    }
}

fn run(plain: bool) -> Result<bool> {
    let setup = Setup {
        mtls: !plain,
        ..Setup::for_demo()
    };
    println!("detour demo: failover of apps/foo between three member clusters on this machine\n");
    println!(
        "starting the controller, {} Envoys and {} upstreams...",
        setup.clusters.len(),
        setup.clusters.len()
    );
    let starting = Instant::now();
    let topology = Topology::start("demo", setup)?;
    println!("ready after {:.1}s\n", starting.elapsed().as_secs_f64());
    describe(&topology);

    let east = topology.ingress("east")?;
    let load = Load::start(&east, LoadSpec::steady_get("/", WORKERS, RATE))?;
    let mut demo = Demo {
        timeline: Timeline::new(load.started(), &topology.setup().clusters),
        topology,
        load,
        seen: 0,
        outcomes: Vec::new(),
    };
    println!(
        "{RATE} requests/s to east's Envoy (Host: {}); answers per second by cluster:\n",
        east.authority()
    );
    println!("{}", demo.timeline.header());
    demo.script()?;
    demo.finish()
}

/// Prints who listens where, and the scheme in force.
fn describe(topology: &Topology) {
    let setup = topology.setup();
    println!(
        "  {:<8} {:<22} {:<22} foo",
        "cluster", "ingress", "east-west gateway"
    );
    for m in &topology.layout().members {
        println!(
            "  {:<8} {:<22} {:<22} {}",
            m.name,
            m.ingress.to_string(),
            m.gateway.to_string(),
            m.service
        );
    }
    let groups: Vec<String> = setup
        .failover_groups
        .iter()
        .map(|g| format!("[{}]", g.join(", ")))
        .collect();
    println!(
        "  controller {} · logs in {}",
        topology.layout().controller,
        topology.out().path().display()
    );
    match topology.certs() {
        Some(certs) => println!(
            "  mTLS: traffic between clusters (Envoy → east-west gateways, health checks) and \
             table fetches;\n        certificates from `detour certs init` in {}\n",
            certs.root().display()
        ),
        None => println!("  plaintext between clusters and to the controller (--plain)\n"),
    }
    println!(
        "scheme apps/foo: {} → {}; health check every {}, down after {} failures, \
         up after {} successes; failback after {} stable\n",
        setup.primary,
        groups.join(" → "),
        duration(setup.health.interval),
        setup.health.unhealthy_threshold,
        setup.health.healthy_threshold,
        duration(setup.stable_for),
    );
}

/// What one step of the script expected, and what happened.
struct Outcome {
    /// The switch expected, e.g. `east → west`.
    expected: String,
    /// What happened, e.g. `0.2s after the kill`.
    happened: String,
    /// The limit it was held to, e.g. `within 5.0s`.
    limit: String,
    ok: bool,
}

/// A switch the script waits for after one of its actions.
struct Expect<'a> {
    expected: &'a str,
    /// The cluster that must answer next.
    to: &'a str,
    /// The action it follows, and how the summary names it.
    since: Instant,
    cause: &'a str,
    /// It must come within this (plus [`PATIENCE`]) …
    bound: Duration,
    /// … and, for a failback, not before this.
    not_before: Option<Duration>,
}

struct Demo {
    topology: Topology,
    load: Load,
    timeline: Timeline,
    /// Completed requests already given to the timeline.
    seen: usize,
    outcomes: Vec<Outcome>,
}

impl Demo {
    fn script(&mut self) -> Result<()> {
        let setup = self.topology.setup().clone();
        self.run_for(DWELL);

        let since = self.act("killed east's foo (SIGKILL)", |t| t.kill_upstream("east"))?;
        self.expect_switch(Expect {
            expected: "east → west",
            to: "west",
            since,
            cause: "the kill",
            bound: setup.failover_bound(),
            not_before: None,
        });
        self.run_for(DWELL);

        let since = self.act("killed west's foo (SIGKILL)", |t| t.kill_upstream("west"))?;
        self.expect_switch(Expect {
            expected: "west → south",
            to: "south",
            since,
            cause: "the kill",
            bound: setup.failover_bound(),
            not_before: None,
        });
        self.run_for(DWELL);

        let since = self.act("started east's foo again", |t| t.restart_upstream("east"))?;
        self.expect_switch(Expect {
            expected: "south → east",
            to: "east",
            since,
            cause: "east's restart",
            bound: setup.failback_bound(),
            not_before: Some(setup.stable_for),
        });
        self.run_for(DWELL);

        // West coming back must not move traffic: east, the primary, is healthy.
        self.act("started west's foo again", |t| t.restart_upstream("west"))?;
        let before = self.timeline.switches.len();
        self.run_for(DWELL);
        let moved: Vec<String> = self.timeline.switches[before..]
            .iter()
            .map(|s| format!("{} → {}", s.from.as_deref().unwrap_or("?"), s.to))
            .collect();
        self.outcomes.push(Outcome {
            expected: "east stays".into(),
            happened: if moved.is_empty() {
                "west's return moved nothing".into()
            } else {
                format!("moved: {}", moved.join(", "))
            },
            limit: String::new(),
            ok: moved.is_empty(),
        });
        Ok(())
    }

    /// Does `action` on the topology and queues it as an event; returns when it happened.
    fn act(
        &mut self,
        what: &str,
        action: impl FnOnce(&mut Topology) -> Result<Instant>,
    ) -> Result<Instant> {
        self.pump();
        let at = action(&mut self.topology)?;
        self.timeline.action(at, what);
        Ok(at)
    }

    /// Runs until the expected cluster answers (or the bound plus [`PATIENCE`] passes)
    /// and records the outcome.
    fn expect_switch(&mut self, expect: Expect<'_>) {
        let deadline = expect.since + expect.bound + PATIENCE;
        let mut switch: Option<Switch> = None;
        while switch.is_none() && Instant::now() < deadline {
            switch = self
                .pump()
                .into_iter()
                .find(|s| s.to == expect.to && s.at >= expect.since);
            std::thread::sleep(Duration::from_millis(50));
        }
        let limit = match expect.not_before {
            Some(min) => format!("(stableFor {})", duration(min)),
            None => format!("(bound {})", secs(expect.bound)),
        };
        let outcome = match switch {
            None => Outcome {
                expected: expect.expected.into(),
                happened: format!(
                    "none: still {} after {}",
                    self.timeline.current().unwrap_or("nobody"),
                    secs(expect.bound + PATIENCE)
                ),
                limit,
                ok: false,
            },
            Some(s) => {
                let took = s.at.saturating_duration_since(expect.since);
                let too_early = expect.not_before.is_some_and(|min| took < min);
                Outcome {
                    expected: expect.expected.into(),
                    happened: format!(
                        "{} after {}{}",
                        elapsed(took),
                        expect.cause,
                        if too_early { ": too early" } else { "" }
                    ),
                    limit,
                    ok: !too_early,
                }
            }
        };
        self.outcomes.push(outcome);
    }

    fn run_for(&mut self, how_long: Duration) {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            self.pump();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.pump();
    }

    /// Feeds newly completed requests to the timeline and prints what is due.
    fn pump(&mut self) -> Vec<Switch> {
        let new = self.load.completed_since(self.seen);
        self.seen += new.len();
        let switches = self.timeline.absorb(&new);
        for line in self.timeline.due_lines(Instant::now()) {
            println!("{line}");
        }
        switches
    }

    fn finish(mut self) -> Result<bool> {
        self.pump();
        let report = self.load.stop().context("stopping the load")?;
        for line in self.timeline.remaining_events() {
            println!("{line}");
        }
        let total = report.total();
        let failures = report.failures();
        println!("\nsummary");
        println!(
            "  requests   {total} sent · {} answered 200 · {} failed ({:.1}%)",
            total - failures.len(),
            failures.len(),
            100.0 * failures.len() as f64 / total.max(1) as f64
        );
        let by_cluster = report.by_cluster();
        let answered: Vec<String> = self
            .topology
            .setup()
            .clusters
            .iter()
            .map(|c| format!("{c} {}", by_cluster.get(c).copied().unwrap_or(0)))
            .collect();
        println!("  answered   {}", answered.join(" · "));
        println!("  security   {}", security(&mut self.topology));
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for failure in &failures {
            *kinds.entry(failure_kind(failure)).or_insert(0) += 1;
        }
        let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (kind, n) in kinds.iter().take(3) {
            println!("  failed     {n} × {kind}");
        }
        for (i, o) in self.outcomes.iter().enumerate() {
            let label = if i == 0 { "switches" } else { "" };
            println!(
                "  {label:<10} {:<14} {:<30} {:<20} {}",
                o.expected,
                o.happened,
                o.limit,
                if o.ok { "ok" } else { "FAILED" }
            );
        }
        let ok = self.outcomes.iter().all(|o| o.ok);
        if ok {
            println!("\nok: every expected switch happened; all processes stopped.");
        } else {
            println!(
                "\nFAILED: see above; logs of every process are in {}",
                self.topology.out().path().display()
            );
        }
        Ok(ok)
    }
}

/// What east's Envoy saw of TLS, from its own stats: handshakes with the gateways it
/// failed over to and with the controller, so "mTLS" in the summary is measured.
fn security(topology: &mut Topology) -> String {
    let setup = topology.setup().clone();
    let mtls = setup.mtls;
    let Ok(east) = topology.envoy(&setup.primary) else {
        return "unknown (no Envoy for the primary)".into();
    };
    let handshakes = |cluster: &str| {
        east.stat(&format!("cluster.{cluster}.ssl.handshake"))
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let gateways: u64 = setup
        .failover_groups
        .iter()
        .flatten()
        .map(|c| handshakes(&setup.service_in(c).envoy_cluster(c)))
        .sum();
    let controller = handshakes("detour_controller");
    if mtls {
        format!(
            "mTLS: east's Envoy made {gateways} handshakes with other clusters' gateways \
             and {controller} with the controller"
        )
    } else {
        "plaintext (--plain): no TLS between clusters or to the controller".into()
    }
}

/// A delay as the summary prints it: milliseconds when under a second.
fn elapsed(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        secs(d)
    }
}

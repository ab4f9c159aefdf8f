//! The chaos: at random moments, one random disruption of one random part — SIGKILL,
//! SIGSTOP (SIGCONT later) or restart of a service instance or of a gateway Envoy in
//! any cluster, or a restart of the controller — never of the Envoy the load enters
//! through, and never one that would leave no live instance of the service reachable
//! anywhere (a live instance in east, or one in another cluster with a live gateway).
//! Killed and frozen parts come back after a random while.

use anyhow::{Context, Result, bail};
use detour_e2e::topology::Topology;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The cluster the load enters through (its ingress Envoy is never touched).
pub const ENTRY: &str = "east";
/// One step in this many takes a whole service down in one cluster.
const OUTAGE_ONE_IN: usize = 8;

/// A part the chaos may disrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Instance `i` of the service in cluster `c` (index into the cluster list).
    Instance(usize, usize),
    /// Gateway instance `g` of cluster `c`.
    Gateway(usize, usize),
    Controller,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Killed; started again at this instant.
    Down(Instant),
    /// SIGSTOPped; continued at this instant.
    Frozen(Instant),
    /// An Envoy started again, not yet ready.
    Starting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Kill,
    Freeze,
    Restart,
    /// Every instance of a cluster's service killed at once: the service is down there,
    /// and only then may traffic leave the cluster.
    Outage,
}

/// A small xorshift generator: reproducible runs from a printed seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform between `lo` and `hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// What the chaos did, for the report.
#[derive(Debug, Default)]
pub struct Tally {
    pub done: BTreeMap<(String, Action), u32>,
    /// Picks refused because they would have left no live instance reachable.
    pub refused: u32,
}

pub struct Chaos {
    clusters: Vec<String>,
    states: BTreeMap<Part, State>,
    pub tally: Tally,
    /// One line per action, with the UTC time of day (Envoys log in UTC), to read
    /// beside the Envoys' logs.
    log: Option<std::fs::File>,
}

impl Chaos {
    /// Every instance and gateway of `t`, and its controller, all up.
    pub fn new(t: &Topology) -> Chaos {
        let log = std::fs::File::create(t.out().file("chaos.log")).ok();
        let clusters = t.setup().clusters.clone();
        let mut states = BTreeMap::new();
        for (c, member) in t.layout().members.iter().enumerate() {
            for i in 0..member.services.len() {
                states.insert(Part::Instance(c, i), State::Up);
            }
            for g in 0..member.gateways.len() {
                // East's gateway 0 lives in east's ingress Envoy unless dedicated.
                if member.name == ENTRY && g == 0 && !t.setup().dedicated_gateway(ENTRY) {
                    continue;
                }
                states.insert(Part::Gateway(c, g), State::Up);
            }
        }
        states.insert(Part::Controller, State::Up);
        Chaos {
            clusters,
            states,
            tally: Tally::default(),
            log,
        }
    }

    /// Brings back what is due, then does one random disruption.
    pub fn step(&mut self, t: &mut Topology, rng: &mut Rng) -> Result<()> {
        self.revive(t, false)?;
        if rng.below(OUTAGE_ONE_IN) == 0 {
            return self.outage(t, rng);
        }
        let parts: Vec<Part> = self
            .states
            .iter()
            .filter(|(_, s)| **s == State::Up)
            .map(|(p, _)| *p)
            .collect();
        let Some(&part) = parts.get(rng.below(parts.len())) else {
            return Ok(());
        };
        let action = match (part, rng.below(10)) {
            (Part::Controller, _) => Action::Restart,
            (_, 0..=3) => Action::Kill,
            (_, 4..=6) => Action::Freeze,
            _ => Action::Restart,
        };
        // A restart is a kill too, for as long as the part takes to come back.
        if part != Part::Controller && !self.survives_without(&[part]) {
            self.tally.refused += 1;
            return Ok(());
        }
        let now = Instant::now();
        match action {
            Action::Kill => {
                self.kill(t, part)?;
                let back = now + rng.between(Duration::from_millis(500), Duration::from_secs(4));
                self.states.insert(part, State::Down(back));
            }
            Action::Freeze => {
                self.freeze(t, part)?;
                let back = now + rng.between(Duration::from_millis(300), Duration::from_secs(3));
                self.states.insert(part, State::Frozen(back));
            }
            Action::Restart => self.restart(t, part)?,
            // Of a whole cluster's service, never of one part ([`Chaos::outage`]).
            Action::Outage => return Ok(()),
        }
        *self
            .tally
            .done
            .entry((self.kind(part), action))
            .or_default() += 1;
        let until = match self.states.get(&part) {
            Some(State::Down(at) | State::Frozen(at)) => {
                format!(" for {} ms", at.saturating_duration_since(now).as_millis())
            }
            _ => String::new(),
        };
        self.note(&format!("{action:?} {}{until}", self.describe(part)));
        Ok(())
    }

    /// Brings everything back and waits until every Envoy is ready again.
    pub fn settle(&mut self, t: &mut Topology, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        self.revive(t, true)?;
        while !self.states.values().all(|s| *s == State::Up) {
            if Instant::now() > deadline {
                bail!("not back after {within:?}: {:?}", self.states);
            }
            std::thread::sleep(Duration::from_millis(100));
            self.revive(t, false)?;
        }
        Ok(())
    }

    fn note(&mut self, line: &str) {
        if let Some(log) = self.log.as_mut() {
            use std::io::Write as _;
            let _ = writeln!(log, "{} {line}", utc_time_of_day());
        }
    }

    fn describe(&self, part: Part) -> String {
        match part {
            Part::Instance(c, i) => format!("{} instance {i}", self.name(c)),
            Part::Gateway(c, g) => format!("{} gateway {g}", self.name(c)),
            Part::Controller => "controller".to_string(),
        }
    }

    fn kind(&self, part: Part) -> String {
        match part {
            Part::Instance(c, _) => format!("{} instance", self.name(c)),
            Part::Gateway(c, _) => format!("{} gateway", self.name(c)),
            Part::Controller => "controller".to_string(),
        }
    }

    /// Kills every instance of one random cluster's service, when all are up and some
    /// other cluster can still answer.
    fn outage(&mut self, t: &mut Topology, rng: &mut Rng) -> Result<()> {
        let c = rng.below(self.clusters.len());
        let instances: Vec<Part> = self
            .states
            .keys()
            .filter(|p| matches!(p, Part::Instance(pc, _) if *pc == c))
            .copied()
            .collect();
        let all_up = instances
            .iter()
            .all(|p| self.states.get(p) == Some(&State::Up));
        if !all_up || !self.survives_without(&instances) {
            self.tally.refused += 1;
            return Ok(());
        }
        let back =
            Instant::now() + rng.between(Duration::from_millis(1500), Duration::from_secs(5));
        for part in &instances {
            self.kill(t, *part)?;
            self.states.insert(*part, State::Down(back));
        }
        *self
            .tally
            .done
            .entry((format!("{} service", self.name(c)), Action::Outage))
            .or_default() += 1;
        self.note(&format!(
            "Outage: every instance of {} for {} ms",
            self.name(c),
            back.saturating_duration_since(Instant::now()).as_millis()
        ));
        Ok(())
    }

    /// Whether, with `parts` down too, some cluster still has a live instance its
    /// traffic can reach: in the entry cluster directly, elsewhere through a live
    /// gateway of that cluster.
    fn survives_without(&self, parts: &[Part]) -> bool {
        let up = |p: Part| !parts.contains(&p) && self.states.get(&p) == Some(&State::Up);
        (0..self.clusters.len()).any(|c| {
            let instance = self
                .states
                .keys()
                .any(|p| matches!(p, Part::Instance(pc, _) if *pc == c) && up(*p));
            let reachable = self.name(c) == ENTRY
                || self
                    .states
                    .keys()
                    .any(|p| matches!(p, Part::Gateway(pc, _) if *pc == c) && up(*p));
            instance && reachable
        })
    }

    fn revive(&mut self, t: &mut Topology, all: bool) -> Result<()> {
        let now = Instant::now();
        let parts: Vec<(Part, State)> = self.states.iter().map(|(p, s)| (*p, *s)).collect();
        for (part, state) in parts {
            let next = match state {
                State::Down(at) | State::Frozen(at) if all || at <= now => {
                    self.note(&format!("back: {}", self.describe(part)));
                    self.bring_back(t, part, state)?
                }
                State::Starting => {
                    if self.ready(t, part)? {
                        self.note(&format!("ready: {}", self.describe(part)));
                        State::Up
                    } else {
                        State::Starting
                    }
                }
                other => other,
            };
            self.states.insert(part, next);
        }
        Ok(())
    }

    fn bring_back(&self, t: &mut Topology, part: Part, state: State) -> Result<State> {
        Ok(match state {
            State::Down(_) => {
                self.start(t, part)?;
                match part {
                    Part::Gateway(..) => State::Starting,
                    _ => State::Up,
                }
            }
            State::Frozen(_) => {
                self.thaw(t, part)?;
                State::Up
            }
            other => other,
        })
    }

    fn name(&self, c: usize) -> &str {
        self.clusters.get(c).map_or("?", String::as_str)
    }

    fn kill(&self, t: &mut Topology, part: Part) -> Result<()> {
        match part {
            Part::Instance(c, i) => t.instance(self.name(c), i)?.kill(),
            Part::Gateway(c, g) => t.gateway_envoy(self.name(c), g)?.kill(),
            Part::Controller => t.controller()?.kill(),
        }
    }

    fn freeze(&self, t: &mut Topology, part: Part) -> Result<()> {
        match part {
            Part::Instance(c, i) => t.instance(self.name(c), i)?.freeze(),
            Part::Gateway(c, g) => t
                .gateway_envoy(self.name(c), g)?
                .process()
                .signal(libc::SIGSTOP),
            Part::Controller => Ok(()),
        }
    }

    fn thaw(&self, t: &mut Topology, part: Part) -> Result<()> {
        match part {
            Part::Instance(c, i) => t.instance(self.name(c), i)?.thaw(),
            Part::Gateway(c, g) => t
                .gateway_envoy(self.name(c), g)?
                .process()
                .signal(libc::SIGCONT),
            Part::Controller => Ok(()),
        }
    }

    /// Starts a killed part again; an Envoy is not waited for (it compiles the filter
    /// for seconds, while the chaos goes on).
    fn start(&self, t: &mut Topology, part: Part) -> Result<()> {
        match part {
            Part::Instance(c, i) => t.instance(self.name(c), i)?.restart(),
            Part::Gateway(c, g) => t.gateway_envoy(self.name(c), g)?.process().restart(),
            Part::Controller => t.controller()?.restart(),
        }
    }

    /// Kill and start at once: a crash-looping or redeployed part.
    fn restart(&mut self, t: &mut Topology, part: Part) -> Result<()> {
        self.start(t, part)?;
        if matches!(part, Part::Gateway(..)) {
            self.states.insert(part, State::Starting);
        }
        Ok(())
    }

    fn ready(&self, t: &mut Topology, part: Part) -> Result<bool> {
        let Part::Gateway(c, g) = part else {
            return Ok(true);
        };
        let envoy = t.gateway_envoy(self.name(c), g)?;
        envoy
            .process()
            .ensure_running()
            .with_context(|| format!("{} did not come back", envoy.name()))?;
        Ok(envoy.admin_get("/ready").is_ok())
    }
}

/// `HH:MM:SS.mmm` in UTC, as Envoy's log lines start.
fn utc_time_of_day() -> String {
    utc_at(Instant::now())
}

/// [`utc_time_of_day`] of an earlier instant.
pub fn utc_at(instant: Instant) -> String {
    let wall = std::time::SystemTime::now() - Instant::now().saturating_duration_since(instant);
    let ms = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

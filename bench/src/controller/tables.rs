//! Table computation at growing sizes, in-process with the controller's own library
//! (the code `detour serve` runs, built with the same profile): loading the documents
//! (parse and validate), deciding every member cluster's table and every scheme's view
//! from the health board (`detour_core::decide`, what `detour serve` runs per change),
//! and publishing them (serialise, hash for the version). `detour serve` builds and
//! publishes all tables again on every health change, so build + publish is the cost
//! of one health change.

use super::documents::Federation;
use crate::stats::{Spread, ms};
use anyhow::{Result, bail};
use detour_core::decide::decide;
use detour_core::health::HealthMap;
use detour_core::health::state::TargetState;
use detour_core::tables::PublishedTable;
use std::time::Instant;

/// Clusters of the made-up federations, and the scheme counts measured.
pub const CLUSTERS: usize = 50;
pub const SCHEMES: [usize; 3] = [1_000, 5_000, 10_000];
/// Timed repetitions per size (the median is reported).
const REPEAT: usize = 5;

#[derive(Debug, Clone)]
pub struct TableScale {
    pub schemes: usize,
    pub clusters: usize,
    pub load_ms: Spread,
    pub build_ms: Spread,
    pub publish_ms: Spread,
    /// One cluster's table, as served (bytes of JSON).
    pub table_bytes: usize,
}

pub fn run() -> Result<Vec<TableScale>> {
    SCHEMES.iter().map(|&n| measure(n)).collect()
}

fn measure(schemes: usize) -> Result<TableScale> {
    let federation = Federation {
        clusters: CLUSTERS,
        services: schemes / CLUSTERS,
    };
    let text =
        federation.documents(|k| std::net::SocketAddr::from(([127, 0, 10, k as u8 + 1], 15443)));
    let mut load = Vec::new();
    let mut model = None;
    for _ in 0..REPEAT {
        let at = Instant::now();
        let (docs, problems) = detour_core::docs::load::parse_file("bench.yaml", &text);
        if !problems.is_empty() {
            bail!("made-up documents refused: {}", problems[0]);
        }
        let built = match detour_core::validate::build_model(&docs) {
            Ok(m) => m,
            Err(problems) => bail!("made-up documents refused: {:?}", problems.first()),
        };
        load.push(ms(at.elapsed()));
        model = Some(built);
    }
    let Some(model) = model else {
        bail!("no model");
    };
    // Every target checked once and Healthy, as after the checker's first round.
    let now = Instant::now();
    let mut board = HealthMap::new();
    for spec in model.probe_specs() {
        let mut state = TargetState::new(now);
        state.observe(true, &spec.check, now);
        board.insert(spec, state);
    }
    let (mut build, mut publish) = (Vec::new(), Vec::new());
    let mut table_bytes = 0;
    for _ in 0..REPEAT {
        let at = Instant::now();
        let built = decide(&model, &board, now);
        build.push(ms(at.elapsed()));
        let at = Instant::now();
        let published: Vec<PublishedTable> = built
            .tables
            .into_values()
            .map(PublishedTable::new)
            .collect();
        publish.push(ms(at.elapsed()));
        table_bytes = published.first().map_or(0, |t| t.json.len());
    }
    eprintln!(
        "  tables: {schemes} schemes: load {:.0} ms, build {:.0} ms, publish {:.0} ms",
        Spread::of(load.clone()).median,
        Spread::of(build.clone()).median,
        Spread::of(publish.clone()).median
    );
    Ok(TableScale {
        schemes,
        clusters: CLUSTERS,
        load_ms: Spread::of(load),
        build_ms: Spread::of(build),
        publish_ms: Spread::of(publish),
        table_bytes,
    })
}

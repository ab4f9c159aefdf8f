//! Any valid configuration on any health board: every table the controller would publish
//! must be one the filter accepts (a table it refuses protects nothing in that cluster),
//! and each scheme must be found under every Envoy cluster name the table gives it.
//!
//! Input: the first byte says how many of the following bytes are check results (one per
//! byte, applied round-robin over the probes: bit 0 passed, bit 1 gateway failure); the
//! rest is the configuration's YAML.
#![no_main]

use detour_core::decide::decide;
use detour_core::docs::load::parse_file;
use detour_core::health::HealthMap;
use detour_core::health::state::{Cause, Check, TargetState};
use detour_core::tables::PublishedTable;
use detour_core::validate::{Mode, Policy, build_model_in};
use detour_filter::table::{DEFAULT_MAX_TABLE_BYTES, Table};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (checks, yaml) = rest.split_at(usize::from(n).min(rest.len()));
    let Ok(text) = std::str::from_utf8(yaml) else {
        return;
    };
    let (docs, problems) = parse_file("fuzz.yaml", text);
    if !problems.is_empty() {
        return;
    }
    let Ok(model) = build_model_in(&docs, Mode::Files, &Policy::default()) else {
        return;
    };
    let t0 = Instant::now();
    let specs: Vec<_> = model.probe_specs().into_iter().collect();
    let mut board = HealthMap::new();
    let mut at = t0;
    if !specs.is_empty() {
        for (i, &c) in checks.iter().enumerate() {
            let spec = &specs[i % specs.len()];
            at += Duration::from_millis(u64::from(c >> 2) * 100);
            let check = match c & 3 {
                0 | 2 => Check::Passed,
                1 => Check::Failed(Cause::Service),
                _ => Check::Failed(Cause::Gateway),
            };
            board
                .entry(spec.clone())
                .or_insert_with(|| TargetState::new(t0))
                .observe(check, &spec.check, at);
        }
    }
    let decision = decide(&model, &board, at);
    assert_eq!(decision.views.len(), model.schemes.len());
    for (cluster, doc) in decision.tables {
        let published = PublishedTable::new(doc);
        if published.json.len() > DEFAULT_MAX_TABLE_BYTES {
            continue;
        }
        let table = match Table::parse(&published.json, &cluster, DEFAULT_MAX_TABLE_BYTES) {
            Ok(table) => table,
            Err(e) => panic!("the filter refuses {cluster}'s table: {e}"),
        };
        assert_eq!(table.version, published.version());
        for scheme in &published.doc.schemes {
            for name in &scheme.envoy_clusters {
                let found = table.scheme_for(name).map(|s| s.name.as_str());
                assert_eq!(found, Some(scheme.name.as_str()), "{cluster}: {name}");
            }
        }
    }
});

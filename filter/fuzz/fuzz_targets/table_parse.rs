//! Any bytes a controller (or something pretending to be one) may send: parsing must
//! never panic, and a table it accepts must be usable: every scheme found by each of its
//! Envoy cluster names, and selection always able to choose a target.
#![no_main]

use detour_filter::health::Health;
use detour_filter::select::select;
use detour_filter::table::Table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = Table::parse(data, "east", 1 << 20) else {
        return;
    };
    for scheme in &table.schemes {
        for (_, target) in scheme.targets() {
            // Selection with every target's reported health, and with every target
            // in turn excluded (as a replay does).
            for pick in [0, 1, u32::MAX] {
                assert!(select(scheme, |t| t.health, None, pick).is_some());
                if let Some(d) = select(scheme, |t| t.health, Some(&target.envoy_cluster), pick) {
                    assert_ne!(d.target.envoy_cluster, target.envoy_cluster);
                }
                assert!(select(scheme, |_| Health::Unhealthy, None, pick).is_some());
            }
        }
        if let Some(index) = scheme
            .primary()
            .and_then(|p| table.scheme_index(&p.envoy_cluster))
        {
            // A primary's own Envoy cluster, when listed, finds a scheme.
            assert!(index < table.schemes.len());
        }
    }
});

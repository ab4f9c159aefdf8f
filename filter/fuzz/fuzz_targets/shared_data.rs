//! Values read from Envoy shared data (written by other VMs, possibly of another filter
//! version): decoding must never panic, and what decodes must encode back the same.
#![no_main]

use detour_filter::eject::Ejections;
use detour_filter::lease::Lease;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut ejections = Ejections::decode(data);
    assert_eq!(Ejections::decode(&ejections.encode()), ejections);
    ejections.eject("x", 1_000, Duration::from_secs(1), Duration::from_secs(60));
    assert!(ejections.is_ejected("x", 1_000));
    if let Some(lease) = Lease::decode(data) {
        assert_eq!(Lease::decode(&lease.encode()), Some(lease));
    }
});

//! Any plugin configuration an operator may write: parsing must never panic, and an
//! accepted configuration must hold the invariants the glue relies on.
#![no_main]

use detour_filter::config::FilterConfig;
use detour_filter::fetch::{backoff, request_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = FilterConfig::parse(data) else {
        return;
    };
    let c = &config.controller;
    assert!(c.path.starts_with('/'));
    assert!(c.max_backoff >= c.poll_interval);
    assert!(!config.route_header.starts_with(':'));
    assert!(request_path(c).starts_with(&c.path));
    for failures in [1, 2, 30, u32::MAX] {
        assert!(backoff(failures, c.poll_interval, c.max_backoff, 12_345) <= c.max_backoff);
    }
});

//! Header maps as Envoy hands them over (the proxy-wasm pair format): any buffer is
//! either refused or parsed without panicking, and what parses serialises back to the
//! same bytes and the same pairs.
#![no_main]

use detour_filter::pairs::Pairs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(pairs) = Pairs::parse(data.to_vec()) else {
        return;
    };
    let listed: Vec<(&[u8], &[u8])> = pairs.iter().collect();
    assert_eq!(listed.len(), pairs.len());
    let again = Pairs::from_pairs(listed.iter().copied());
    if !data.is_empty() {
        assert_eq!(again.as_bytes(), data);
    }
    let _ = pairs.get(":method");
    let _ = pairs.to_text();
});

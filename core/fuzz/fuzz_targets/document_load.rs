//! Any text an operator (or a broken editor) may leave in a configuration file: the
//! loader and the validator must never panic, and every problem they report must say
//! where it is, since that is all an operator has to find it.
#![no_main]

use detour_core::docs::load::parse_file;
use detour_core::validate::{Mode, Policy, build_partial};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (docs, problems) = parse_file(FILE, text);
    for p in &problems {
        assert!(p.to_string().contains(FILE), "a problem without its file: {p}");
    }
    for mode in [Mode::Files, Mode::Kubernetes] {
        // What the controller keeps serving from a partly broken configuration: the
        // model of the documents that are valid, and a problem for each one that is not.
        let (model, problems) = build_partial(&docs, mode, &Policy::default());
        for p in &problems {
            assert!(!p.to_string().is_empty());
        }
        // The probes the controller would start are for targets the model holds.
        for spec in model.probe_specs() {
            assert!(model.cluster(&spec.target.cluster).is_some(), "{spec:?}");
        }
    }
});

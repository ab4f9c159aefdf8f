//! Issue 2: the `.wasm` file `make demo` runs is the one the e2e tests load into Envoy.

use detour_e2e::paths::{demo_bin, filter_wasm};
use detour_e2e::setup::{ControllerKind, Setup};
use detour_e2e::topology::Topology;
use std::process::Command;

#[test]
fn envoy_runs_the_same_wasm_file_as_make_demo() {
    // What the demo binary (run by `make demo`) would load, asked of the binary itself.
    let demo = Command::new(demo_bin().unwrap())
        .arg("--print-wasm")
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let demo_wasm = String::from_utf8(demo.stdout).unwrap().trim().to_string();
    assert_eq!(demo_wasm, filter_wasm().unwrap().to_str().unwrap());

    // What running Envoys were given, by their own config dumps. Tables do not matter
    // here, so no controller.
    let setup = Setup {
        controller: ControllerKind::External,
        ..Setup::for_tests()
    };
    let mut t =
        Topology::start_unconverged("envoy_runs_the_same_wasm_file_as_make_demo", setup).unwrap();
    for cluster in ["east", "west", "south"] {
        let loaded = t.envoy(cluster).unwrap().loaded_wasm_files().unwrap();
        assert_eq!(
            loaded,
            std::slice::from_ref(&demo_wasm),
            "the {cluster} Envoy's /config_dump names other wasm files"
        );
    }
}

//! `make demo` works: the demo binary walks east → west → south → east, exits 0, and
//! leaves no process behind.

use detour_e2e::out::OutDir;
use detour_e2e::paths::demo_bin;
use detour_e2e::process::processes_mentioning;
use std::process::Command;

#[test]
fn the_demo_shows_every_switch_exits_zero_and_leaves_nothing_running() {
    // The demo's own output directory goes under this test's, so a `make demo` run at
    // the same time is not disturbed.
    let out = OutDir::fresh("the_demo_shows_every_switch").unwrap();
    let run = Command::new(demo_bin().unwrap())
        .env("DETOUR_E2E_OUT", out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    std::fs::write(out.file("demo.stdout"), stdout.as_bytes()).unwrap();
    assert!(
        run.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    for line in [
        "now answered by west (was east)",
        "now answered by south (was west)",
        "now answered by east (was south)",
        "ok: every expected switch happened",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let left = processes_mentioning(&out.path().join("demo").to_string_lossy()).unwrap();
    assert!(
        left.is_empty(),
        "the demo left processes running: {left:#?}"
    );
}

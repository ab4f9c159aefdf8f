//! The config directory the harness writes is one `detour check` accepts: the failover
//! tests' setup is what DESIGN.md's documents describe, not a private dialect.

use detour_e2e::controller::Detour;
use detour_e2e::documents::write_config;
use detour_e2e::layout::Layout;
use detour_e2e::out::OutDir;
use detour_e2e::setup::Setup;

#[test]
fn detour_check_accepts_the_harness_documents() {
    let out = OutDir::fresh("detour_check_accepts_the_harness_documents").unwrap();
    for (name, setup) in [("tests", Setup::for_tests()), ("demo", Setup::for_demo())] {
        let dir = out.subdir(name).unwrap();
        write_config(&dir, &setup, &Layout::allocate(&setup).unwrap()).unwrap();
        let check = Detour::locate().unwrap().check(&dir).unwrap();
        assert!(
            check.status.success(),
            "detour check refused the {name} config:\n{}{}",
            check.stderr,
            check.stdout
        );
    }
}

//! The external tools the bench drives, found or reported with how to install them.

use anyhow::{Result, bail};
use detour_e2e::paths::{repo_root, target_dir};
use std::path::PathBuf;

/// `wrk` (Debian package `wrk`): the HTTP load generator of the overhead stage.
pub fn wrk() -> Result<PathBuf> {
    on_path("wrk", "wrk")
}

/// wrk's Lua script that prints its summary as JSON.
pub fn wrk_script() -> PathBuf {
    repo_root().join("bench/wrk-report.lua")
}

/// The empty proxy-wasm filter (`bench/noop-filter`), built as detour's filter is.
pub fn noop_wasm() -> Result<PathBuf> {
    let path = target_dir()?.join("wasm32-wasip1/release/detour_bench_noop.wasm");
    if !path.is_file() {
        bail!(
            "{} not found: run `make bench` (it builds it with `cargo build -p detour-bench-noop \
             --target wasm32-wasip1 --release`)",
            path.display()
        );
    }
    Ok(path)
}

pub fn on_path(program: &str, debian_package: &str) -> Result<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&dirs).chain([PathBuf::from("/usr/bin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{program} not found: install the Debian package `{debian_package}` \
         (apt-get install {debian_package}; `make bench` does it when run as root)"
    )
}

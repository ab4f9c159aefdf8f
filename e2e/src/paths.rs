//! Where the parts under test live: the built controller and filter, the pinned Envoy,
//! the harness's own binaries, and each test's output directory.
//!
//! Every path can be overridden by an environment variable, and every missing artifact
//! is reported with the `make` target that builds it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The repository root (e2e/ sits at its top).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's profile directory the running executable was built into (`<target>/debug`).
///
/// Derived from the executable rather than from `CARGO_TARGET_DIR` at run time, so the
/// harness finds the artifacts built next to it whatever target directory was used.
/// Tests run from `<target>/<profile>/deps/`, bins from `<target>/<profile>/`; cargo
/// marks `<target>` with a `CACHEDIR.TAG` file.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    for dir in exe.ancestors().skip(1) {
        if let Some(target) = dir.parent()
            && target.join("CACHEDIR.TAG").is_file()
        {
            return Ok(dir.to_path_buf());
        }
    }
    // Not inside a cargo target directory (e.g. a copied binary): use cargo's own rule.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    Ok(target.join("debug"))
}

/// The cargo target directory (the parent of [`profile_dir`]).
pub fn target_dir() -> Result<PathBuf> {
    let profile = profile_dir()?;
    Ok(profile.parent().unwrap_or(&profile).to_path_buf())
}

/// The pinned Envoy: `$ENVOY_BIN`, else `<repo>/.venv/bin/envoy` (`make envoy`).
pub fn envoy_bin() -> Result<PathBuf> {
    artifact(
        "ENVOY_BIN",
        repo_root().join(".venv/bin/envoy"),
        "make envoy",
    )
}

/// The filter Envoy loads: `$DETOUR_WASM`, else the release build of `detour-filter`
/// for wasm32-wasip1 in this target directory (`make wasm`).
///
/// The one place that decides which `.wasm` runs: the demo and every e2e test call it,
/// and a test checks that Envoy's own config dump names exactly this file.
pub fn filter_wasm() -> Result<PathBuf> {
    artifact(
        "DETOUR_WASM",
        target_dir()?.join("wasm32-wasip1/release/detour_filter.wasm"),
        "make wasm",
    )
}

/// The controller binary: `$DETOUR_BIN`, else `detour` in this profile directory.
pub fn detour_bin() -> Result<PathBuf> {
    artifact("DETOUR_BIN", profile_dir()?.join("detour"), "make build")
}

/// The harness's upstream server: `$DETOUR_UPSTREAM_BIN`, else `upstream` in this
/// profile directory (cargo builds it before running this package's tests).
pub fn upstream_bin() -> Result<PathBuf> {
    artifact(
        "DETOUR_UPSTREAM_BIN",
        profile_dir()?.join("upstream"),
        "make build",
    )
}

/// The demo binary (`upstream`'s sibling); tests ask it which `.wasm` it would load.
pub fn demo_bin() -> Result<PathBuf> {
    artifact("DETOUR_DEMO_BIN", profile_dir()?.join("demo"), "make build")
}

/// `$VAR` if set, else `default`; it must exist. Returned absolute and canonical, so
/// that comparing it with what a process reports compares files, not spellings.
fn artifact(var: &str, default: PathBuf, make: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(p) => {
            let path = PathBuf::from(p);
            if !path.is_file() {
                bail!("${var}={}: no such file", path.display());
            }
            path
        }
        None => {
            if !default.is_file() {
                bail!(
                    "{} not found: run `{make}` (or `make test`) first, or set ${var}",
                    default.display()
                );
            }
            default
        }
    };
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}

//! The core's boundary, guarded: the compiler refuses what the dependency list does not
//! name, so this test keeps runtime crates off that list, and file access out of the
//! sources (std is always there).
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

/// Crates that run things or talk to the outside: they belong to `detour-kube` and
/// `detour`.
const FORBIDDEN: [&str; 11] = [
    "tokio",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "axum",
    "kube",
    "kube-client",
    "kube-runtime",
    "tokio-rustls",
    "rustls",
    "tracing-subscriber",
];

#[test]
fn the_core_depends_on_no_runtime_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[dependencies]" || line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        assert!(
            !FORBIDDEN.contains(&name),
            "detour-core must not depend on {name}: it holds no runtime code (see src/lib.rs)"
        );
    }
}

#[test]
fn the_core_reads_and_writes_no_file() {
    fn visit(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if ["std::fs", "File::", "include_bytes!(\"/"]
                        .iter()
                        .any(|p| line.contains(p))
                    {
                        found.push(format!("{}:{}: {line}", path.display(), i + 1));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "file access in detour-core:\n{}",
        found.join("\n")
    );
}

//! Each test's output directory, `e2e/out/<name>/`: every process's log, the rendered
//! configs and the upstreams' request records. Emptied when a test starts and kept
//! afterwards for debugging (the directory is gitignored).

use crate::paths::repo_root;
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct OutDir {
    dir: PathBuf,
}

impl OutDir {
    /// A fresh `e2e/out/<name>/`, or `$DETOUR_E2E_OUT/<name>/` when that is set.
    pub fn fresh(name: &str) -> Result<OutDir> {
        ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
            "output directory name {name:?} must be a plain file name"
        );
        let root = std::env::var_os("DETOUR_E2E_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("e2e/out"));
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(OutDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A file (or directory) name inside this output directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A subdirectory, created if missing.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

//! The file source: every `*.yaml` / `*.yml` in a directory, re-read when it changes.
//!
//! Changes are found by polling the directory's contents (every 250ms by default) rather
//! than with inotify: it works the same on every filesystem, through editors' rename-and-
//! replace saves and Kubernetes' ConfigMap symlink swaps, and it costs little for a few
//! small files. A change is applied once the contents have stayed the same for one more
//! poll (so a half-written file is not read), and only if the whole new set is valid:
//! otherwise the last good model keeps serving and the problems are logged and counted,
//! and reported to the status API ([`FileSource::with_reports`]).

use crate::metrics::{Metrics, ResultLabels};
use detour_core::docs::load::{SourceFile, parse_files};
use detour_core::docs::{Origin, Problem, ProblemKind, Problems};
use detour_core::index::Index;
use detour_core::model::Model;
use detour_core::report::{ConfigOutcome, ConfigState, rfc3339_ms};
use detour_core::validate::{Mode, Policy};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{error, info};

/// Reads, parses and validates a directory once (`check`, `render`, `explain`, and the
/// first load of `serve`). Problems come sorted by file and document.
pub fn load_dir(dir: &Path, policy: &Policy) -> Result<Model, Vec<Problem>> {
    let files = read_dir(dir)?;
    let mut index = Index::with_policy(Mode::Files, policy.clone());
    apply(&mut index, &files)
}

fn apply(index: &mut Index, files: &[SourceFile]) -> Result<Model, Vec<Problem>> {
    let (docs, mut problems) = parse_files(files);
    index.reset(docs);
    // Validate what did parse too, so that one run reports everything.
    match index.model() {
        Ok(model) if problems.is_empty() => return Ok(model),
        Ok(_) => {}
        Err(more) => problems.extend(more),
    }
    problems.sort_by(|a, b| {
        (&a.origin.source, a.origin.document).cmp(&(&b.origin.source, b.origin.document))
    });
    Err(problems)
}

/// Reads every `*.yaml` and `*.yml` file directly in `dir`, sorted by name. Hidden files
/// are skipped (editor locks and swap files), and so are subdirectories (Kubernetes
/// mounts a ConfigMap as `..data/` plus symlinks at the top, which are read).
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Vec<Problem>> {
    let at_dir = |message: String| Problem {
        kind: ProblemKind::Unreadable,
        origin: Origin {
            source: dir.display().to_string(),
            document: None,
        },
        object: None,
        path: None,
        message,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![at_dir(format!("cannot read the config directory: {e}"))])?;
    let mut paths = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(at_dir(format!("cannot list the config directory: {e}")));
                continue;
            }
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && !entry.path().is_dir() {
            paths.push(dir.join(&*name));
        }
    }
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push(SourceFile { path, text }),
            Err(e) => problems.push(Problem {
                kind: ProblemKind::Unreadable,
                origin: Origin {
                    source: path.display().to_string(),
                    document: None,
                },
                object: None,
                path: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if files.is_empty() && problems.is_empty() {
        problems.push(at_dir("no *.yaml or *.yml files".into()));
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// The contents of the directory as last read (or why it could not be read).
type Snapshot = Result<Vec<SourceFile>, Vec<Problem>>;

pub struct FileSource {
    dir: PathBuf,
    index: Index,
    metrics: Arc<Metrics>,
    applied: Option<Snapshot>,
    reports: Option<watch::Sender<Option<ConfigState>>>,
}

impl FileSource {
    pub fn new(dir: PathBuf, metrics: Arc<Metrics>, policy: Policy) -> FileSource {
        FileSource {
            dir,
            index: Index::with_policy(Mode::Files, policy),
            metrics,
            applied: None,
            reports: None,
        }
    }

    /// Also tells `reports` the outcome of every load (for the status API).
    pub fn with_reports(mut self, reports: watch::Sender<Option<ConfigState>>) -> FileSource {
        self.reports = Some(reports);
        self
    }

    /// Loads the directory now; the first load of `serve`.
    pub fn load(&mut self) -> Result<Model, Vec<Problem>> {
        let snapshot = read_dir(&self.dir);
        let result = self.apply(&snapshot);
        self.applied = Some(snapshot);
        result
    }

    fn apply(&mut self, snapshot: &Snapshot) -> Result<Model, Vec<Problem>> {
        let result = match snapshot {
            Ok(files) => apply(&mut self.index, files),
            Err(problems) => Err(problems.clone()),
        };
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: label })
            .inc();
        self.metrics
            .config_last_reload_successful
            .set(i64::from(result.is_ok()));
        if let Some(reports) = &self.reports {
            reports.send_replace(Some(ConfigState {
                outcome: if result.is_ok() {
                    ConfigOutcome::Applied
                } else {
                    ConfigOutcome::Refused
                },
                at: rfc3339_ms(SystemTime::now()),
                message: result
                    .as_ref()
                    .err()
                    .map(|p| Problems(p.clone()).to_string()),
            }));
        }
        if let Ok(model) = &result {
            self.metrics
                .member_clusters
                .set(i64::try_from(model.clusters.len()).unwrap_or(i64::MAX));
            self.metrics
                .schemes
                .set(i64::try_from(model.schemes.len()).unwrap_or(i64::MAX));
        }
        result
    }

    /// Polls the directory every `interval` and publishes each new valid model.
    pub async fn watch(mut self, models: watch::Sender<Arc<Model>>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pending: Option<Snapshot> = None;
        loop {
            ticker.tick().await;
            let snapshot = read_dir(&self.dir);
            if self.applied.as_ref() == Some(&snapshot) {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&snapshot) {
                pending = Some(snapshot); // changed: wait one poll for it to settle
                continue;
            }
            pending = None;
            match self.apply(&snapshot) {
                Ok(model) => {
                    let changed = **models.borrow() != model;
                    info!(
                        clusters = model.clusters.len(),
                        schemes = model.schemes.len(),
                        changed,
                        "configuration reloaded"
                    );
                    if changed {
                        models.send_replace(Arc::new(model));
                    }
                }
                Err(problems) => {
                    for p in &problems {
                        error!(problem = %p, "configuration refused");
                    }
                    error!(
                        problems = problems.len(),
                        "configuration refused; the last good configuration keeps serving"
                    );
                }
            }
            self.applied = Some(snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "apiVersion: detour.dev/v1alpha1
kind: MemberCluster
metadata: {name: west}
spec:
  gateway: {address: 127.0.2.1, port: 15443}
  services:
  - {name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.2.10:8080\"]}
";

    #[test]
    fn read_dir_takes_yaml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yml"), CLUSTER).unwrap();
        std::fs::write(dir.path().join("a.yaml"), CLUSTER).unwrap();
        std::fs::write(dir.path().join(".#a.yaml"), "junk").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "junk").unwrap();
        let files = read_dir(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yaml", "b.yml"]);
        let empty = tempfile::tempdir().unwrap();
        let err = read_dir(empty.path()).unwrap_err();
        assert!(err[0].message.contains("no *.yaml"), "{err:?}");
        assert!(read_dir(&empty.path().join("missing")).is_err());
    }
}

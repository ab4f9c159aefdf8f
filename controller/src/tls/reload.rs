//! Certificates are renewed while processes run (`detour certs init` again, or Secrets
//! rotated in Kubernetes): a TLS configuration built from files is rebuilt when one of
//! them changes. A change that does not load (say, the new key written but not yet its
//! certificate) keeps the previous configuration and says so once.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{info, warn};

/// What identifies a file's version without reading it.
pub(super) type Stamp = Option<(SystemTime, u64)>;

/// Each file's [`Stamp`], from its metadata only.
pub(super) fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Builds a value from `files` now (an error is returned: a process must not start on
/// bad certificates), then again whenever one of them changes, checked every
/// `interval`. Must be called within a Tokio runtime.
pub fn load_and_watch<T, E, F>(
    what: &'static str,
    files: Vec<PathBuf>,
    interval: Duration,
    build: F,
) -> Result<watch::Receiver<Arc<T>>, E>
where
    T: Send + Sync + 'static,
    E: Display,
    F: Fn() -> Result<T, E> + Send + 'static,
{
    let mut seen = stamps(&files);
    let (tx, rx) = watch::channel(Arc::new(build()?));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if tx.is_closed() {
                return;
            }
            let now = stamps(&files);
            if now == seen {
                continue;
            }
            seen = now;
            match build() {
                Ok(value) => {
                    info!(what, "certificates changed on disk: reloaded");
                    let _ = tx.send(Arc::new(value));
                }
                Err(e) => {
                    warn!(what, error = %e, "certificates changed on disk but do not load: keeping the previous ones");
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rebuilds_on_change_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, "1").unwrap();
        let path = file.clone();
        let read = move || -> Result<u32, String> {
            std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())?
                .trim()
                .parse()
                .map_err(|_| "not a number".to_string())
        };
        let mut rx =
            load_and_watch("test", vec![file.clone()], Duration::from_millis(5), read).unwrap();
        assert_eq!(**rx.borrow_and_update(), 1);
        std::fs::write(&file, "22").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(**rx.borrow_and_update(), 22);
        std::fs::write(&file, "bad").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!rx.has_changed().unwrap());
        assert_eq!(**rx.borrow(), 22);

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "no").unwrap();
        let read_bad = move || -> Result<u32, String> { Err("does not load".into()) };
        assert!(load_and_watch("test", vec![bad], Duration::from_millis(5), read_bad).is_err());
    }
}

//! One tokio runtime per test process for the harness's network I/O (HTTP client, load
//! generator, fake controller). The harness API itself is blocking, so tests are plain
//! `#[test]` functions; do not call it from inside another tokio runtime.

use anyhow::{Context, Result};
use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn runtime() -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = Builder::new_multi_thread()
        // Two cores on the test machine, shared with Envoys and the controller.
        .worker_threads(2)
        .thread_name("detour-e2e-io")
        .enable_all()
        .build()
        .context("starting the harness's tokio runtime")?;
    // Another thread may have won the race; its runtime is the one kept.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `future` to completion on the harness runtime, from a non-async caller.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

//! Waiting for a condition with a deadline, instead of sleeping for a guessed time.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// What one look at the condition found.
pub enum Probe<T> {
    /// The condition holds; stop waiting with this value.
    Ready(T),
    /// Not yet; the text says what was seen, and is reported if the deadline passes.
    NotYet(String),
}

/// How often conditions are polled: fast enough to time a failover to ~tens of ms.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// Polls `probe` until it is [`Probe::Ready`] or `timeout` passes. An `Err` from the
/// probe ends the wait at once (e.g. the process being waited for has exited); on a
/// timeout the error names `what` and the last observation.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Probe<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match probe()? {
            Probe::Ready(value) => return Ok(value),
            Probe::NotYet(seen) => seen,
        };
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting until {what}; last seen: {last}");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// A probe result from a fallible observation: an error counts as "not yet" (a server
/// still starting refuses connections) rather than ending the wait.
pub fn not_yet_on_error<T>(observation: Result<Probe<T>>) -> Probe<T> {
    observation.unwrap_or_else(|e| Probe::NotYet(format!("{e:#}")))
}

/// Seconds with millisecond precision, as timelines and failure messages print them.
pub fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

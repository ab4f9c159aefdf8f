//! A server process counts as started when it answers one path with 200; a process that
//! exits meanwhile ends the wait at once, with the end of its log.

use crate::client::HttpClient;
use crate::process::Process;
use crate::wait::{Probe, wait_until};
use anyhow::Result;
use std::time::Duration;

/// Polls `GET path` through `client` until it answers 200, for at most `timeout`.
pub fn wait_answering(
    process: &mut Process,
    client: &HttpClient,
    path: &str,
    timeout: Duration,
) -> Result<()> {
    let what = format!("{} answers {path} with 200", process.name());
    wait_until(&what, timeout, || {
        process.ensure_running()?;
        Ok(match client.get(path) {
            Ok(reply) if reply.status == 200 => Probe::Ready(()),
            Ok(reply) => Probe::NotYet(format!("{} {}", reply.status, reply.body_text().trim())),
            Err(e) => Probe::NotYet(format!("{e:#}")),
        })
    })
}

//! detour's controller binary: the command line ([`cli`]), the running controller
//! ([`serve`]: sources, health checks, table and status servers) and the tools around the
//! core (`check`, `render envoy`, `explain`, `certs init`, `status`).
//!
//! What is decided lives in `detour_core` (no I/O); Kubernetes in `detour_kube`. This
//! crate holds what runs: tokio tasks, HTTP servers and clients, TLS, files, metrics.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod decisions;
pub mod explain;
pub mod health;
pub mod live;
pub mod metrics;
pub mod serve;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod tls;

#[cfg(test)]
pub(crate) mod testing;

//! detour's controller binary: the command line ([`cli`]), the running controller
//! ([`serve`]: sources, health checks, table and status servers) and the tools around the
//! core (`check`, `render envoy`, `explain`, `certs init`, `status`).
//!
//! What is decided lives in `detour_core` (no I/O); Kubernetes in `detour_kube`. This
//! crate holds what runs: tokio tasks ([`source`], [`decisions`], [`reporter`],
//! [`health`] checks), HTTP servers ([`server`]) and clients ([`client`]), TLS and
//! files ([`tls`]), [`metrics`]. It decides nothing itself: what a table or a view is,
//! it asks `detour_core`; it must not talk to the Kubernetes API but through
//! `detour_kube`. `main.rs` only calls [`cli::main`].
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod decisions;
pub mod explain;
pub mod health;
pub mod import;
pub mod metrics;
pub mod reporter;
pub mod serve;
pub mod server;
pub mod source;
pub mod table_limit;
pub mod telemetry;
pub mod tls;

#[cfg(test)]
pub(crate) mod testing;

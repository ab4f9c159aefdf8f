//! detour's controller: documents → validated model → health-checked priority tables,
//! served over HTTP; plus the tools around them (`check`, `render envoy`, `explain`).
//!
//! Pure parts (no I/O): [`docs`] (types, file parsing), [`validate`], [`model`],
//! [`index`], [`health::state`], [`tables`], [`status`], [`render`]. Runtime parts:
//! [`source`], [`health`], [`server`], [`serve`], [`explain`], [`cli`]. Kubernetes mode
//! is a thin adapter in [`kube`].
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod docs;
pub mod explain;
pub mod health;
pub mod import;
pub mod index;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod render;
pub mod serve;
pub mod server;
pub mod source;
pub mod status;
pub mod tables;
pub mod telemetry;
pub mod tls;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;

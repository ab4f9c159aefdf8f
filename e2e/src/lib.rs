//! detour's end-to-end harness: the real Envoy loading the real filter, the real
//! controller, and real upstream processes, as simulated member clusters on loopback.
//!
//! The API is blocking (tests are plain `#[test]` functions); network I/O runs on one
//! tokio runtime per process ([`runtime`]). Start with [`topology::Topology`]:
//! - [`setup`]: what a test asks for (clusters, scheme, timings) and the bounds it implies;
//! - [`layout`], [`documents`]: the addresses and the config directory derived from it;
//! - [`certs`]: the mTLS certificates `detour certs init` issues for a topology;
//! - [`controller`], [`envoy`], [`upstream`]: one kind of process each, on [`process`]
//!   and [`ready`]; [`fake_controller`] serves made-up [`table`]s in-process;
//!   [`envoy_log`] reads what Envoy logged, by thread and time;
//! - [`client`], [`load`]: requests as users send them, one at a time or as steady load;
//! - [`grpc`], [`h2c`], [`websocket`], [`download`]: other protocols through the
//!   ingress (real grpcio servers and clients, HTTP/2 prior knowledge, upgrades, large
//!   answers read as they stream);
//! - [`browser`]: headless Chromium for the controller's status page;
//! - [`paths`], [`ports`], [`out`], [`wait`]: where things are, and waiting without sleeps.

pub mod browser;
pub mod certs;
pub mod client;
pub mod controller;
pub mod deliveries;
pub mod documents;
pub mod download;
pub mod envoy;
pub mod envoy_log;
pub mod fake_controller;
pub mod grpc;
pub mod h2c;
pub mod layout;
pub mod load;
pub mod out;
pub mod paths;
pub mod ports;
pub mod process;
pub mod ready;
pub mod rendered;
pub mod runtime;
pub mod setup;
pub mod table;
pub mod topology;
pub mod upstream;
pub mod wait;
pub mod websocket;

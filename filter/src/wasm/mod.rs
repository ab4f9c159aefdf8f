//! The proxy-wasm glue: everything that talks to Envoy. Each module has one job; the
//! decisions they act on live in the pure core (`crate::*`) and are tested there.
//!
//! * [`root`] — one root context per VM (Envoy runs one VM per worker thread, plus one
//!   on the main thread): configuration, the tick that drives everything in the
//!   background, and the factory of HTTP contexts.
//! * [`lease`] — which VM of this Envoy fetches tables (`detour.lease`).
//! * [`fetcher`] — the table fetch from the controller, run only by the lease holder.
//! * [`table_sync`] — every VM notices a new `detour.table.version` and parses it once.
//! * [`ejections`] — passive ejections shared by all VMs (`detour.ejections`).
//! * [`http`] — the per-request filter: strip, route, detect, replay.
//! * [`worker`] — the per-VM state that HTTP contexts share with the root.
//! * [`stats`], [`host`], [`log`] — Envoy stats, hostcall wrappers that cannot panic,
//!   and logging; [`abi`] — the hostcalls that move whole header maps, called directly
//!   because the SDK's wrappers panic on header values that are not UTF-8.

mod abi;
mod ejections;
mod fetcher;
mod host;
mod http;
mod lease;
mod log;
mod root;
mod stats;
mod table_sync;
mod worker;

proxy_wasm::main! {{
    log::install_panic_hook();
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

//! detour's filter.
//!
//! Everything outside [`wasm`] is the pure core: it compiles and is tested natively and
//! on wasm32, and the controller links it so that `detour explain` decides exactly as the
//! filter does. [`wasm`] is the proxy-wasm glue, built only for `wasm32`.

pub mod attempt;
pub mod config;
pub mod duration;
pub mod eject;
pub mod health;
pub mod select;
pub mod table;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // proxy_wasm::main! exports the `_start` entry point.
mod wasm;

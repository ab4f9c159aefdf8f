//! detour's filter.
//!
//! Everything outside [`wasm`] is the pure core: it compiles and is tested natively and
//! on wasm32, and the controller links it so that `detour explain` decides exactly as the
//! filter does. [`wasm`] is the proxy-wasm glue, built only for `wasm32`.
//!
//! The core's tests run natively, on `wasm32-wasip1` (the target Envoy loads, under
//! Node's WASI with libtest) and on `wasm32-unknown-unknown` with `wasm-bindgen-test`
//! under Node. libtest's harness cannot run on the latter, so each test module there
//! imports `wasm_bindgen_test as test`: every `#[test]` then registers with
//! wasm-bindgen-test's runner, and the tests stay written once for all three.

pub mod chain;
pub mod config;
pub mod duration;
pub mod eject;
pub mod fetch;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod pairs;
pub mod request;
pub mod rng;
pub mod select;
pub mod start;
pub mod table;

// Not in test builds: the wasm32 test binaries run under Node, which has no proxy-wasm
// host to import from.
#[cfg(all(target_arch = "wasm32", not(test)))]
#[allow(unsafe_code)] // proxy_wasm::main! exports the `_initialize` entry point.
mod wasm;

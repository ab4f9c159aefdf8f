//! An HTTP filter that does nothing, for `make bench`: Envoy with this filter minus Envoy
//! without it is what any proxy-wasm filter costs (the V8 boundary), so that detour's
//! own cost can be told apart from it.
//!
//! It is built exactly as detour's filter is — the same SDK (`proxy-wasm`), the same
//! release profile, `wasm32-wasip1`, loaded by V8 — and has the same shape: a root
//! context per VM that hands each request an HTTP context. Every callback keeps the
//! SDK's default (continue). On native targets the crate is empty, so that
//! `cargo build --workspace` needs no wasm toolchain for it.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // proxy_wasm::main! exports the `_initialize` entry point.
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(Root));
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Noop))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Noop;

    impl Context for Noop {}

    impl HttpContext for Noop {}
}

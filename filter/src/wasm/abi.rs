//! The proxy-wasm hostcall that moves a whole header map, called directly.
//!
//! The SDK's wrapper (`proxy-wasm` 0.2.5: `get_map`) converts every
//! name and value to `String` and `unwrap` the conversion: one client header value that
//! is not UTF-8 (obs-text, which Envoy passes on) would panic and stop the worker's VM.
//! `get_map` also allocates twice per header, on every request. Here the map stays in
//! the wire format ([`Pairs`]) as Envoy produces and consumes it. Everything else uses
//! the SDK — `dispatch_http_call` in particular, whose wrapper records which context
//! made the call so that the SDK can hand the answer to it.
//!
//! Ownership follows the SDK's convention: a buffer the host returns was allocated by
//! the module's `proxy_on_memory_allocate` (the SDK's, a boxed `[u8]` of exactly that
//! length) and becomes the caller's `Vec<u8>`.

use crate::pairs::Pairs;
use proxy_wasm::types::MapType;
use std::ptr::null_mut;

/// `WasmResult::Ok` of the ABI; statuses are compared as numbers, never transmuted, so
/// an unexpected code from the host cannot be undefined behaviour.
const OK: u32 = 0;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// A whole header map; `None` when the host refuses (e.g. the map does not exist in
/// this phase) or hands over something malformed.
pub fn header_map(map: MapType) -> Option<Pairs> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size through the two out-parameters,
    // which point at live locals.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    if status != OK {
        return None;
    }
    if data.is_null() {
        return Some(Pairs::default());
    }
    // SAFETY: a non-null buffer was allocated for the host by this module's
    // `proxy_on_memory_allocate` with exactly `size` bytes, all written by the host, and
    // is handed over to us: taking it as a Vec of that length and capacity frees it
    // with the allocator that made it.
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    Pairs::parse(bytes)
}

//! Hostcalls the filter uses, wrapped so that an error becomes "no value" instead of a
//! panic (the trait defaults of `proxy_wasm` unwrap). Header maps and header values are
//! bytes ([`Pairs`], `Vec<u8>`): a client's header need not be UTF-8.

use super::abi;
use crate::pairs::Pairs;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, UNIX_EPOCH};

/// Wall-clock milliseconds, as Envoy tells them (shared data carries these, so every VM
/// must read the same clock).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 64 random bits: std's `RandomState` draws its keys from WASI `random_get`, which
/// Envoy backs with its own random generator; the clock is mixed in for good measure.
pub fn random_u64() -> u64 {
    let nanos = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    RandomState::new().hash_one(nanos)
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// A string property such as `xds.cluster_name`.
pub fn string_property(path: &[&str]) -> Option<String> {
    property(path).and_then(|b| String::from_utf8(b).ok())
}

/// An integer property such as `response.flags` (Envoy encodes it as 8 bytes, little
/// endian).
pub fn u64_property(path: &[&str]) -> Option<u64> {
    let bytes: [u8; 8] = property(path)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A shared-data value and its CAS token (`None`, `None` when the key is not set).
pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
}

/// A whole header map (empty if Envoy has none in this phase).
pub fn header_map(map: MapType) -> Pairs {
    abi::header_map(map).unwrap_or_default()
}

pub fn set_header(map: MapType, name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(map, name, value);
}

pub fn buffer(buffer: BufferType, size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(buffer, 0, size).ok().flatten()
}

/// An HTTP call to `cluster`; the token, or why not. The SDK takes headers as text: a
/// map with a name or value that is not UTF-8 cannot be sent.
pub fn dispatch(
    cluster: &str,
    headers: &Pairs,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, String> {
    let Some(headers) = headers.to_text() else {
        return Err("a header is not UTF-8".into());
    };
    hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout)
        .map_err(|status| format!("{status:?}"))
}

//! Names and values of the filter's Envoy stats, free of Envoy so they are tested here
//! and documented in one place.
//!
//! Envoy puts stats a Wasm module defines under its `wasmcustom` namespace: `/stats`
//! lists them by the names below, `/stats/prometheus` as the same names with `.`
//! turned into `_` (e.g. `detour_ejections`), without the `envoy_` prefix.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `detour.failover.<ns>_<name>.group_<n>` | counter | requests of scheme `ns/name` sent to failover group n (n ≥ 1) |
//! | `detour.ejections` | counter | targets ejected by passive detection (this Envoy, all workers) |
//! | `detour.headers_stripped` | counter | requests from which client-sent `x-detour-*` headers were removed |
//! | `detour.table.version` | gauge | version of the table in use ([`version_gauge`]) |
//! | `detour.table.age_seconds` | gauge | seconds since the controller last confirmed the table (200 or 304) |
//! | `detour.table.rejected.<reason>` | counter | fetched tables refused: `too_large`, `malformed`, `unknown_version`, `wrong_cluster`, `invalid` |
//! | `detour.fetch.error.<kind>` | counter | failed fetches: `unreachable`, `status` (not 200/304), `rejected` |

/// Labels of [`crate::table::TableError::label`], in a fixed order for stats.
pub const TABLE_REJECTIONS: [&str; 5] = [
    "too_large",
    "malformed",
    "unknown_version",
    "wrong_cluster",
    "invalid",
];

/// Labels of [`crate::fetch::FetchError::label`], in a fixed order for stats.
pub const FETCH_ERRORS: [&str; 3] = ["unreachable", "status", "rejected"];

/// One stat name component: anything but ASCII letters, digits, `-` and `_` becomes `_`
/// (`apps/foo` → `apps_foo`; Kubernetes names hold no `_`, so this stays unambiguous),
/// because `.` separates components and Prometheus names allow little else.
pub fn component(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The counter of requests of `scheme` sent to failover `group`.
pub fn failover_counter(scheme: &str, group: usize) -> String {
    format!("detour.failover.{}.group_{group}", component(scheme))
}

/// A table version as a gauge value: a decimal version as itself, anything else as a
/// 53-bit hash (exact in Prometheus' float64), so a change is always visible.
pub fn version_gauge(version: &str) -> u64 {
    let v = version.trim_matches('"');
    if !v.is_empty() && v.len() <= 15 && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().unwrap_or(0);
    }
    // FNV-1a, 64-bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h & ((1 << 53) - 1)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn names_are_safe_stat_components() {
        assert_eq!(
            failover_counter("apps/foo", 1),
            "detour.failover.apps_foo.group_1"
        );
        assert_eq!(component("a.b|c d-e_f"), "a_b_c_d-e_f");
    }

    #[test]
    fn versions_become_numbers_that_change_with_them() {
        assert_eq!(version_gauge("42"), 42);
        assert_eq!(version_gauge("\"42\""), 42);
        let a = version_gauge("sha256:abc");
        assert_ne!(a, version_gauge("sha256:abd"));
        assert!(a < 1 << 53);
        assert!(version_gauge("99999999999999999999") < 1 << 53);
    }

    #[test]
    fn stat_labels_match_the_error_labels() {
        use crate::fetch::FetchError;
        use crate::table::TableError;
        let errors = [
            TableError::TooLarge { bytes: 1, limit: 0 },
            TableError::Malformed(String::new()),
            TableError::UnknownVersion(String::new()),
            TableError::WrongCluster {
                expected: String::new(),
                got: String::new(),
            },
            TableError::Invalid(String::new()),
        ];
        for (e, label) in errors.iter().zip(TABLE_REJECTIONS) {
            assert_eq!(e.label(), label);
        }
        let fetch = [
            FetchError::Unreachable(String::new()),
            FetchError::Status(500),
            FetchError::Rejected(TableError::Invalid(String::new())),
        ];
        for (e, label) in fetch.iter().zip(FETCH_ERRORS) {
            assert_eq!(e.label(), label);
        }
    }
}

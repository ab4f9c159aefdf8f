//! The health of one failover target, and how the controller's word and this Envoy's
//! own observations combine.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Health as the controller reports it. `Unknown` (not checked yet, or checks give no
/// answer) is deliberately not `Healthy`: traffic only moves to a target known to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Health {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
            Health::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Either source may say Unhealthy: a passive ejection (this Envoy saw the target fail)
/// overrides a Healthy verdict from the controller, whose checks lag by an interval.
pub fn merge(controller: Health, ejected: bool) -> Health {
    if ejected {
        Health::Unhealthy
    } else {
        controller
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn an_ejection_overrides_the_controller() {
        assert_eq!(merge(Health::Healthy, true), Health::Unhealthy);
        assert_eq!(merge(Health::Unknown, true), Health::Unhealthy);
        assert_eq!(merge(Health::Healthy, false), Health::Healthy);
        assert_eq!(merge(Health::Unknown, false), Health::Unknown);
        assert_eq!(merge(Health::Unhealthy, false), Health::Unhealthy);
    }
}

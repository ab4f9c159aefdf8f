//! The health of checked targets as values: one target's state machine ([`state`]) and
//! the map of every checked target's state that tables and views are computed from.
//! The checks themselves run in the binary.

pub mod state;

use crate::model::ProbeSpec;
use state::TargetState;
use std::collections::HashMap;

/// Every checked target's state, by what is checked.
pub type HealthMap = HashMap<ProbeSpec, TargetState>;

//! Fixtures shared by unit tests (here, and with the `testing` feature in the crates
//! above this one).
#![allow(clippy::unwrap_used, clippy::panic)]

use crate::model::Model;

/// The example configuration users read (`controller/examples/config`), as one stream.
pub const EXAMPLE: &str = concat!(
    include_str!("../../controller/examples/config/clusters.yaml"),
    "---\n",
    include_str!("../../controller/examples/config/foo.yaml")
);

/// The example configuration ([`EXAMPLE`]) parsed and validated, as `detour serve` would
/// hold it: the model most unit tests start from.
pub fn example_model() -> Model {
    let (docs, problems) = crate::docs::load::parse_file("t.yaml", EXAMPLE);
    assert!(problems.is_empty(), "{problems:?}");
    crate::validate::build_model(&docs).unwrap()
}

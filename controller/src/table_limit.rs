//! The filters' `maxTableBytes`, kept by the controller: every filter refuses a larger
//! table (and keeps its last good one), so a table over it is never served — the
//! cluster's last good table stays — and one past 80% of it is warned about before that
//! happens: in the metrics (`detour_table_bytes` against `detour_table_max_bytes`), the
//! status API (the cluster's `tableWarning`, and an event), and the log.

use crate::metrics::{ClusterLabels, Metrics};
use detour_core::tables::{PublishedTable, TableSize};
use tracing::{error, warn};

/// Measures `table`, newly built for `cluster`, against `max`; `before` is the size of
/// the cluster's previous build. Counts and logs what an operator must hear of (once per
/// crossing, not once per build); the caller serves the table unless
/// [`TableSize::over_limit`].
pub fn measure(
    cluster: &str,
    table: &PublishedTable,
    before: Option<&TableSize>,
    max: usize,
    metrics: &Metrics,
) -> TableSize {
    let size = TableSize {
        bytes: table.json.len(),
        max,
    };
    let labels = ClusterLabels {
        cluster: cluster.to_string(),
    };
    metrics
        .table_bytes
        .get_or_create(&labels)
        .set(i64::try_from(size.bytes).unwrap_or(i64::MAX));
    if size.over_limit() {
        metrics.tables_refused.get_or_create(&labels).inc();
        if !before.is_some_and(TableSize::over_limit) {
            error!(
                %cluster,
                bytes = size.bytes,
                max_table_bytes = max,
                version = table.version(),
                "{}",
                size.warning(cluster).unwrap_or_default()
            );
        }
    } else if size.near_limit() && !before.is_some_and(TableSize::near_limit) {
        warn!(
            %cluster,
            bytes = size.bytes,
            max_table_bytes = max,
            "{}",
            size.warning(cluster).unwrap_or_default()
        );
    }
    size
}

//! Every VM follows the table in shared data: on tick it compares
//! `detour.table.version` with the version it uses, and parses the table once per new
//! version into an immutable snapshot its HTTP contexts share.

use super::fetcher::{TABLE_KEY, VERSION_KEY};
use super::host;
use super::log;
use super::stats::FailoverCounters;
use super::worker::{Snapshot, Worker};
use crate::metrics::version_gauge;
use crate::table::Table;
use std::rc::Rc;

#[derive(Default)]
pub struct TableSync {
    /// The value of `detour.table.version` last acted on (adopted or refused), so a
    /// version is parsed once, and a table this VM refuses is not parsed on every tick.
    seen: Option<Vec<u8>>,
    counters: FailoverCounters,
}

impl TableSync {
    /// True when this VM adopted a new table.
    pub fn tick(&mut self, worker: &Worker) -> bool {
        let Some(version) = host::shared_get(VERSION_KEY).0 else {
            return false;
        };
        if self.seen.as_deref() == Some(version.as_slice()) {
            return false;
        }
        let Some(bytes) = host::shared_get(TABLE_KEY).0 else {
            return false;
        };
        let config = &worker.config;
        match Table::parse(&bytes, &config.cluster, config.controller.max_table_bytes) {
            Ok(table) => {
                // Normally equal; if the holder stored a newer table between our two
                // reads, remember the table's own version so the next tick looks again.
                self.seen = Some(table.version.as_bytes().to_vec());
                self.adopt(worker, table)
            }
            Err(e) => {
                self.seen = Some(version);
                log::error(|| format!("detour: the shared table cannot be used here: {e}"));
                false
            }
        }
    }

    fn adopt(&mut self, worker: &Worker, table: Table) -> bool {
        let previous = worker.snapshot.get();
        if previous.as_ref().is_some_and(|p| p.table == table) {
            return false;
        }
        worker
            .stats
            .table_version
            .set(version_gauge(&table.version));
        let failover = self.counters.for_table(&table);
        log::debug(|| format!("detour: using table version {}", table.version));
        worker.snapshot.set(Rc::new(Snapshot { table, failover }));
        true
    }
}

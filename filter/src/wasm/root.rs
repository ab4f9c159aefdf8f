//! The root context of one VM: configuration, the background tick, and the factory of
//! HTTP contexts.

use super::ejections;
use super::fetcher::TableFetcher;
use super::host;
use super::http::{Filter, PassThrough};
use super::lease::LeaseKeeper;
use super::log;
use super::table_sync::TableSync;
use super::worker::Worker;
use crate::config::FilterConfig;
use crate::lease::worker_id;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;
use std::time::Duration;

/// How often each VM looks for a new table, and the lease holder for a due fetch.
const TICK: Duration = Duration::from_millis(100);
/// How often the lease holder refreshes the table-age gauge.
const AGE_GAUGE_EVERY_MS: u64 = 1_000;

pub struct Root {
    worker: Option<Rc<Worker>>,
    lease: LeaseKeeper,
    fetcher: TableFetcher,
    sync: TableSync,
    age_reported_ms: u64,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        // Unique across VMs: random bits, with the context id mixed in for good measure.
        let id = host::random_u64() ^ (u64::from(context_id) << 48);
        Root {
            worker: None,
            lease: LeaseKeeper::new(worker_id(id)),
            fetcher: TableFetcher::default(),
            sync: TableSync::default(),
            age_reported_ms: 0,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(worker) = &self.worker {
            self.fetcher
                .on_response(worker, &self.lease, token_id, num_headers, body_size);
            // Share the new table with this VM's requests now, not on the next tick.
            if self.sync.tick(worker) {
                worker.recompute_starts(worker.clock_ms());
            }
        }
    }

    fn on_done(&mut self) -> bool {
        self.lease.release();
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match FilterConfig::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::critical(|| format!("detour: {e}"));
                return false;
            }
        };
        let worker = Rc::new(Worker::new(config, host::random_u64()));
        // A VM started after a table was fetched (a new worker, a config update) uses
        // it at once.
        if self.sync.tick(&worker) {
            worker.recompute_starts(worker.now_ms());
        }
        self.worker = Some(worker);
        if hostcalls::set_tick_period(TICK).is_err() {
            log::critical(|| "detour: Envoy refused the tick period".into());
            return false;
        }
        log::debug(|| format!("detour: worker {} configured", self.lease.id()));
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = &self.worker else {
            return;
        };
        let now_ms = worker.now_ms();
        let new_table = self.sync.tick(worker);
        let new_ejections = worker.config.passive.enabled && ejections::tick(worker);
        let ran_out = worker.starts.get().is_some_and(|s| s.stale_at(now_ms));
        if new_table || new_ejections || ran_out {
            worker.recompute_starts(now_ms);
        }
        worker.sample.set(worker.config.passive.enabled);
        if self.lease.tick(now_ms) {
            self.fetcher.tick(worker, now_ms);
            if now_ms.saturating_sub(self.age_reported_ms) >= AGE_GAUGE_EVERY_MS {
                self.fetcher.report_age(worker, now_ms);
                self.age_reported_ms = now_ms;
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.worker {
            Some(worker) => Box::new(Filter::new(worker.clone())),
            None => Box::new(PassThrough),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

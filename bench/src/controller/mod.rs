//! Controller scale: table computation for thousands of schemes, many long-poll
//! clients on one controller, and the health checker with thousands of targets.

mod documents;
mod health;
mod longpoll;
mod serve;
mod tables;

use crate::stats::Spread;
use anyhow::Result;
use detour_e2e::out::OutDir;
use health::HealthScale;
use longpoll::LongPoll;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tables::TableScale;

pub struct ControllerScale {
    pub tables: Vec<TableScale>,
    pub long_poll: LongPoll,
    pub health: Vec<HealthScale>,
    pub elapsed: Duration,
}

pub fn run() -> Result<ControllerScale> {
    let started = Instant::now();
    let tables = tables::run()?;
    let out = OutDir::fresh("bench-controller")?;
    let gateways = health::start_gateways(&out)?;
    let long_poll = longpoll::run(&out, &gateways)?;
    let health = health::run(&out, &gateways)?;
    Ok(ControllerScale {
        tables,
        long_poll,
        health,
        elapsed: started.elapsed(),
    })
}

impl ControllerScale {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Controller scale\n");
        let _ = writeln!(out, "Stage time {:.0} s.\n", self.elapsed.as_secs_f64());
        let _ = writeln!(
            out,
            "**Table computation** (in-process, the controller's library as `detour serve` \
             runs it; {} member clusters, every target Healthy; median (min–max) of 5). \
             *load*: parse and validate the documents (at start and on every reload); \
             *build*: every cluster's table from the health board; *publish*: serialise \
             and version them. `detour serve` builds and publishes every table again on \
             each health change.\n",
            tables::CLUSTERS
        );
        let _ = writeln!(
            out,
            "| schemes | load ms | build ms | publish ms | one cluster's table |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for t in &self.tables {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} KiB ({} schemes) |",
                t.schemes,
                t.load_ms.show(0),
                t.build_ms.show(1),
                t.publish_ms.show(1),
                t.table_bytes as f64 / 1024.0,
                t.schemes / t.clusters
            );
        }
        out.push_str(&self.growth());
        let lp = &self.long_poll;
        let _ = writeln!(
            out,
            "\n**Long-poll clients**: {} clients, each on its own mTLS connection with \
             cluster c00's table certificate, wait on `GET /v1/tables/c00?wait=60s`; a \
             health change at c00's gateway (fail, recover, fail) changes the table and \
             wakes them all. Memory is the controller's RSS (/proc), CPU its user+system \
             time.\n",
            lp.clients
        );
        let _ = writeln!(out, "| | controller |");
        let _ = writeln!(out, "|---|---|");
        let _ = writeln!(
            out,
            "| RSS before the clients | {:.1} MiB |",
            lp.rss_before_mib
        );
        let _ = writeln!(
            out,
            "| RSS with {} waiting | {:.1} MiB ({:.1} KiB per client) |",
            lp.clients,
            lp.rss_waiting_mib,
            (lp.rss_waiting_mib - lp.rss_before_mib) * 1024.0 / lp.clients as f64
        );
        let _ = writeln!(
            out,
            "| CPU idle, before / while {} wait | {:.1}% / {:.1}% of a core |",
            lp.clients, lp.cpu_before_percent, lp.cpu_waiting_percent
        );
        let _ = writeln!(
            out,
            "| {} clients connected (mTLS) and waiting after | {:.2} s |",
            lp.clients, lp.connect_s
        );
        let _ = writeln!(
            out,
            "| all answered after a change: first → last answer | {} ms |",
            Spread::of(lp.wakes.iter().map(|w| w.spread_ms)).show(1)
        );
        let _ = writeln!(
            out,
            "| change at the gateway → first answer (health checks) | {} ms |",
            Spread::of(lp.wakes.iter().map(|w| w.first_ms)).show(0)
        );
        let _ = writeln!(
            out,
            "| controller CPU from the change to the last answer | {} ms |",
            Spread::of(lp.wakes.iter().map(|w| w.cpu_ms)).show(0)
        );
        let _ = writeln!(
            out,
            "\n**Health checker**: every target checked every 1 s (500 ms timeout) \
             through its cluster's gateway on connections kept open to it, plain HTTP; the \
             gateways are the bench's own HTTP servers ({} loopback addresses, one \
             process). CPU and RSS over {} s after the first rounds.\n",
            tables::CLUSTERS,
            health::WINDOW.as_secs()
        );
        let _ = writeln!(
            out,
            "| targets | ready after | probes/s | controller CPU | controller RSS | \
             false Unhealthy verdicts in the window | gateways' CPU |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for h in &self.health {
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {:.0} | {:.0}% of a core | {:.0} MiB ({:.1} KiB per target) | \
                 {:.0} transitions; {:.0} of {} Healthy at the end | {:.0}% |",
                h.targets,
                h.ready_s,
                h.probes_per_second,
                h.cpu_percent,
                h.rss_mib,
                h.rss_mib * 1024.0 / h.targets as f64,
                h.transitions,
                h.healthy,
                h.targets,
                h.gateways_cpu_percent
            );
        }
        out.push('\n');
        out
    }

    /// How the table work grows from the smallest size to the largest.
    fn growth(&self) -> String {
        let (Some(small), Some(large)) = (self.tables.first(), self.tables.last()) else {
            return String::new();
        };
        let size = large.schemes as f64 / small.schemes as f64;
        let per = |f: &dyn Fn(&TableScale) -> f64| f(large) / f(small);
        format!(
            "\n{}× the schemes: load {:.1}×, build {:.1}×, publish {:.1}× the time.\n",
            size,
            per(&|t| t.load_ms.median),
            per(&|t| t.build_ms.median),
            per(&|t| t.publish_ms.median)
        )
    }
}

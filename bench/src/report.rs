//! The Markdown report: the machine, how each figure was measured, and the figures.

use crate::Stage;
use crate::controller::ControllerScale;
use crate::failover::Failover;
use crate::footprint::Footprint;
use crate::machine::Machine;
use crate::overhead::Overhead;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Writes one of the bench's outputs, making its directory first.
pub fn write_output(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

pub struct Report {
    pub machine: Machine,
    pub overhead: Option<Overhead>,
    /// The overhead stage with gRPC load.
    pub grpc: Option<Overhead>,
    pub footprint: Option<Footprint>,
    pub failover: Option<Failover>,
    pub controller: Option<ControllerScale>,
    pub stage_times: Vec<(Stage, Duration)>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(machine: Machine) -> Report {
        Report {
            machine,
            overhead: None,
            grpc: None,
            footprint: None,
            failover: None,
            controller: None,
            stage_times: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "# detour benchmarks\n");
        let _ = writeln!(
            out,
            "Written by `make bench` ({}). Every figure comes from real processes on this \
             machine: Envoy {} loading the release `.wasm`, `detour serve` (built with \
             the `perf` profile), and the e2e harness's upstream servers. The machine is \
             shared: compare figures of one run side by side, not across runs.\n",
            self.timing(),
            m.envoy
        );
        let _ = writeln!(out, "| machine | |\n|---|---|");
        let _ = writeln!(out, "| cores | {} |", m.cores);
        let _ = writeln!(out, "| CPU | {} |", m.cpu_model);
        let _ = writeln!(out, "| memory | {:.0} GiB |", m.memory_gib);
        let _ = writeln!(out, "| kernel | Linux {} |", m.kernel);
        let _ = writeln!(out, "| Envoy | {} |", m.envoy);
        let _ = writeln!(out, "| load average at start | {} |\n", m.load_at_start);
        if let Some(o) = &self.overhead {
            out.push_str(&o.markdown());
        }
        if let Some(o) = &self.grpc {
            out.push_str(&o.markdown());
        }
        if let Some(f) = &self.failover {
            out.push_str(&f.markdown());
        }
        if let Some(c) = &self.controller {
            out.push_str(&c.markdown());
        }
        if let Some(f) = &self.footprint {
            out.push_str(&f.markdown());
        }
        out
    }

    fn timing(&self) -> String {
        let stages: Vec<String> = self
            .stage_times
            .iter()
            .map(|(s, d)| {
                format!(
                    "{} {:.0}s",
                    format!("{s:?}").to_lowercase(),
                    d.as_secs_f64()
                )
            })
            .collect();
        format!(
            "{:.1} minutes: {}",
            self.elapsed.as_secs_f64() / 60.0,
            stages.join(", ")
        )
    }
}

//! `detour serve` as a real process for the controller stage, on a made-up federation.

use anyhow::{Context, Result};
use detour_e2e::certs::Certs;
use detour_e2e::client::HttpClient;
use detour_e2e::envoy::parse_prometheus;
use detour_e2e::out::OutDir;
use detour_e2e::paths::detour_bin;
use detour_e2e::ports::free_addr;
use detour_e2e::process::{Process, ProcessSpec};
use detour_e2e::ready::wait_answering;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Serve {
    process: Process,
    pub listen: SocketAddr,
    ops: HttpClient,
    /// From the start until `/readyz` said every target was checked once.
    pub ready_after: Duration,
}

impl Serve {
    /// `detour serve --config DIR`, the table API over mTLS when `certs` is given (the
    /// health probes stay plain: the bench's gateways speak plain HTTP).
    pub fn start(name: &str, out: &OutDir, config: &Path, certs: Option<&Certs>) -> Result<Serve> {
        let listen = free_addr(Ipv4Addr::LOCALHOST)?;
        let ops = free_addr(Ipv4Addr::LOCALHOST)?;
        let mut spec = ProcessSpec::new(name, detour_bin()?, out.file(&format!("{name}.log")))
            .env("NO_COLOR", "1")
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--ops-listen")
            .arg(ops.to_string());
        if let Some(certs) = certs {
            let server = certs.controller_server();
            spec = spec
                .arg("--tls-cert")
                .arg(server.cert)
                .arg("--tls-key")
                .arg(server.key)
                .arg("--client-ca")
                .arg(certs.ca());
        }
        let started = Instant::now();
        let mut process = spec.spawn()?;
        let ops = HttpClient::new(ops, "detour-controller").with_timeout(Duration::from_secs(10));
        // Ready once every target was checked once: with thousands, that takes a while.
        wait_answering(&mut process, &ops, "/readyz", Duration::from_secs(120))?;
        Ok(Serve {
            process,
            listen,
            ops,
            ready_after: started.elapsed(),
        })
    }

    pub fn pid(&self) -> Result<u32> {
        self.process.pid().context("the controller is not running")
    }

    /// The sum of one metric of `/metrics` over its label sets.
    pub fn metric(&self, name: &str) -> Result<f64> {
        self.metric_with(name, "")
    }

    /// The sum of the samples of one metric whose labels contain `label`.
    pub fn metric_with(&self, name: &str, label: &str) -> Result<f64> {
        let reply = self.ops.get("/metrics")?;
        Ok(parse_prometheus(&reply.body_text())
            .into_iter()
            .filter(|(n, l, _)| n == name && l.contains(label))
            .map(|(_, _, v)| v)
            .sum())
    }
}

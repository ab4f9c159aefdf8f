//! `bench gateways ADDR... --fail-file FILE`: fast HTTP servers standing in for many
//! member clusters' east-west gateways, so that the controller's health checker can be
//! measured with thousands of targets. Every request gets `200 ok`; while FILE lists an
//! address (one a line), that listener answers `503` instead (a health change on demand).
//! A process of its own, so that its CPU is not the controller's nor the bench's.

use anyhow::{Context, Result};
use bytes::Bytes;
use detour_e2e::out::OutDir;
use detour_e2e::paths::profile_dir;
use detour_e2e::process::{Process, ProcessSpec};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// How often the fail file is read again.
const RELOAD: Duration = Duration::from_millis(50);

/// The helper process, started from the bench's own binary.
pub struct Gateways {
    pub addrs: Vec<SocketAddr>,
    fail_file: PathBuf,
    process: Process,
}

impl Gateways {
    /// Starts `bench gateways` on `addrs` and waits until each answers.
    pub fn start(addrs: Vec<SocketAddr>, out: &OutDir) -> Result<Gateways> {
        let fail_file = out.file("gateways.fail");
        let _ = std::fs::remove_file(&fail_file);
        let bench = profile_dir()?.join("bench");
        let process = ProcessSpec::new("gateways", bench, out.file("gateways.log"))
            .arg("gateways")
            .arg("--fail-file")
            .arg(&fail_file)
            .args(addrs.iter().map(|a| a.to_string()))
            .spawn()?;
        let gateways = Gateways {
            addrs,
            fail_file,
            process,
        };
        for addr in &gateways.addrs {
            detour_e2e::wait::wait_until(
                &format!("the bench gateway on {addr} answers"),
                Duration::from_secs(10),
                || {
                    Ok(match std::net::TcpStream::connect(addr) {
                        Ok(_) => detour_e2e::wait::Probe::Ready(()),
                        Err(e) => detour_e2e::wait::Probe::NotYet(e.to_string()),
                    })
                },
            )?;
        }
        Ok(gateways)
    }

    pub fn pid(&self) -> Result<u32> {
        self.process
            .pid()
            .context("the bench's gateways are not running")
    }

    /// Makes the listeners at `addrs` fail (503) or pass (`&[]`).
    pub fn fail(&self, addrs: &[SocketAddr]) -> Result<()> {
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&self.fail_file, text)
            .with_context(|| format!("writing {}", self.fail_file.display()))
    }
}

/// The helper's own `main`.
pub fn serve(listen: &[SocketAddr], fail_file: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let failing: Arc<RwLock<HashSet<SocketAddr>>> = Arc::default();
        for &addr in listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tokio::spawn(accept(listener, addr, failing.clone()));
        }
        let fail_file = fail_file.to_path_buf();
        loop {
            let now: HashSet<SocketAddr> = std::fs::read_to_string(&fail_file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if let Ok(mut set) = failing.write() {
                *set = now;
            }
            tokio::time::sleep(RELOAD).await;
        }
    })
}

async fn accept(
    listener: TcpListener,
    addr: SocketAddr,
    failing: Arc<RwLock<HashSet<SocketAddr>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let connections close first.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let failing = failing.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                let fail = failing.read().map(|s| s.contains(&addr)).unwrap_or(false);
                async move {
                    let (status, body) = if fail {
                        (503, "failing\n")
                    } else {
                        (200, "ok\n")
                    };
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! Many Envoys long-polling one controller: `CLIENTS` clients, each with its own mTLS
//! connection presenting cluster c00's table certificate (as that many Envoys of one
//! member cluster would), wait on `GET /v1/tables/c00?wait=60s` with the version they
//! hold. Measured: the controller's memory and CPU before the clients, while they all
//! wait, and each time a health change wakes them all — how long from the first answer
//! to the last. The change is made at the bench's gateway of c00 (its target fails, or
//! recovers), so it reaches the table after the health checks notice (about 2 s).

use super::documents::Federation;
use super::serve::Serve;
use crate::gateways::Gateways;
use crate::procfs::{CpuWindow, rss_mib};
use crate::stats::ms;
use anyhow::{Context, Result, bail, ensure};
use detour_e2e::certs::{Certs, ClusterRole};
use detour_e2e::client::{HttpClient, Request};
use detour_e2e::controller::Detour;
use detour_e2e::out::OutDir;
use detour_e2e::runtime::{block_on, runtime};
use detour_e2e::wait::{Probe, wait_until};
use std::time::{Duration, Instant};

pub const CLIENTS: usize = 1_000;
/// Health changes that wake every client (fail, recover, fail).
const WAKES: usize = 3;
const IDLE_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Wake {
    /// From the health change at the gateway to the first answer (detection by the
    /// health checks: not long-poll's doing).
    pub first_ms: f64,
    /// From the first answer to the last: the cost of waking every client.
    pub spread_ms: f64,
    /// CPU time of the controller from the change to the last answer.
    pub cpu_ms: f64,
}

#[derive(Debug, Clone)]
pub struct LongPoll {
    pub clients: usize,
    pub connect_s: f64,
    pub rss_before_mib: f64,
    pub rss_waiting_mib: f64,
    pub cpu_before_percent: f64,
    pub cpu_waiting_percent: f64,
    pub wakes: Vec<Wake>,
}

pub fn run(out: &OutDir, gateways: &Gateways) -> Result<LongPoll> {
    let federation = Federation {
        clusters: 2,
        services: 1,
    };
    let dir = out.subdir("long-poll")?;
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(
        config.join("bench.yaml"),
        federation.documents(|k| gateways.addrs[k]),
    )?;
    let certs = Certs::init(&Detour::locate()?, &config, &dir.join("certs"))?;
    let serve = Serve::start("controller-long-poll", out, &config, Some(&certs))?;
    let pid = serve.pid()?;
    let tls = certs.client_config(&certs.cluster("c00", ClusterRole::Table))?;
    let client = HttpClient::new(serve.listen, "detour-controller")
        .with_tls(tls)
        .with_timeout(Duration::from_secs(90));

    let cpu = CpuWindow::start(pid)?;
    std::thread::sleep(IDLE_WINDOW);
    let cpu_before_percent = cpu.percent()?;
    let rss_before_mib = rss_mib(pid)?;

    let mut version = current_version(&client)?;
    let mut result = LongPoll {
        clients: CLIENTS,
        connect_s: 0.0,
        rss_before_mib,
        rss_waiting_mib: 0.0,
        cpu_before_percent,
        cpu_waiting_percent: 0.0,
        wakes: Vec::new(),
    };
    for wake in 0..WAKES {
        let launched = Instant::now();
        let polls = launch(&client, &version)?;
        wait_until(
            &format!("{CLIENTS} long-polls wait at the controller"),
            Duration::from_secs(60),
            || {
                let waiting = serve.metric("detour_long_polls_in_flight")?;
                Ok(if waiting as usize >= CLIENTS {
                    Probe::Ready(())
                } else {
                    Probe::NotYet(format!("{waiting} waiting"))
                })
            },
        )?;
        if wake == 0 {
            result.connect_s = launched.elapsed().as_secs_f64();
            let cpu = CpuWindow::start(pid)?;
            std::thread::sleep(IDLE_WINDOW);
            result.cpu_waiting_percent = cpu.percent()?;
            result.rss_waiting_mib = rss_mib(pid)?;
        }
        // Fail c00's target, let it recover, fail it again: each changes c00's table.
        let cpu = CpuWindow::start(pid)?;
        let changed = Instant::now();
        let fail: Vec<_> = if wake % 2 == 0 {
            vec![gateways.addrs[0]]
        } else {
            Vec::new()
        };
        gateways.fail(&fail)?;
        let answers = block_on(async {
            let mut answers = Vec::with_capacity(polls.len());
            for poll in polls {
                answers.push(poll.await);
            }
            answers
        })?;
        let (cpu_used, _) = cpu.end()?;
        let mut times = Vec::new();
        let mut versions = Vec::new();
        for answer in answers {
            let (at, reply) = answer.context("a long-poll task failed")??;
            ensure!(reply.status == 200, "a long-poll got {}", reply.summary());
            times.push(at);
            versions.push(
                reply
                    .header("etag")
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            );
        }
        let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
            bail!("no long-poll answered");
        };
        versions.dedup();
        ensure!(
            versions.len() == 1,
            "clients saw different versions: {versions:?}"
        );
        version = versions.remove(0);
        let wake = Wake {
            first_ms: ms(first.duration_since(changed)),
            spread_ms: ms(last.duration_since(*first)),
            cpu_ms: ms(cpu_used),
        };
        eprintln!(
            "  long-poll: {CLIENTS} clients woken: first after {:.0} ms, all within {:.1} ms, \
             controller CPU {:.0} ms",
            wake.first_ms, wake.spread_ms, wake.cpu_ms
        );
        result.wakes.push(wake);
    }
    gateways.fail(&[])?;
    Ok(result)
}

type Poll = tokio::task::JoinHandle<Result<(Instant, detour_e2e::client::Reply)>>;

/// Starts every client's long-poll for a version other than `version`.
fn launch(client: &HttpClient, version: &str) -> Result<Vec<Poll>> {
    let rt = runtime()?;
    Ok((0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            let request = Request::get("/v1/tables/c00?wait=60s")
                .header("if-none-match", &format!("\"{version}\""));
            rt.spawn(async move {
                let reply = client.send_async(request).await?;
                Ok((Instant::now(), reply))
            })
        })
        .collect())
}

fn current_version(client: &HttpClient) -> Result<String> {
    let reply = client.get("/v1/tables/c00")?;
    ensure!(reply.status == 200, "{}", reply.summary());
    Ok(reply
        .header("etag")
        .context("no ETag")?
        .trim_matches('"')
        .to_string())
}

//! Issue 12: what Envoy's router carries through a failover besides HTTP/1.1 GETs and
//! POSTs, with real clients and servers: gRPC (grpcio) unary calls under a kill,
//! server streaming, trailing metadata and non-OK statuses; HTTP/2 with prior knowledge;
//! a WebSocket upgrade; a 50 MB download that Envoy streams rather than buffers; bodies
//! over `replay.maxBodyBytes` sent once; and `replay.perTryTimeout` moving a hung GET on
//! but never a POST.

use anyhow::Result;
use bytes::Bytes;
use detour_e2e::client::{HttpClient, Request};
use detour_e2e::download::{download, expected_checksum};
use detour_e2e::grpc::{Call, GrpcClient, read_calls};
use detour_e2e::process::{rss_bytes, signal};
use detour_e2e::runtime::block_on;
use detour_e2e::setup::{Protocol, Replay, Setup};
use detour_e2e::topology::{Topology, wait_served_by};
use detour_e2e::upstream::{Answer, Record, WEBSOCKET_PATH};
use detour_e2e::wait::{Probe, secs, wait_until};
use detour_e2e::{h2c, websocket};
use detour_filter::health::Health;
use hyper::Method;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

fn setup(protocol: Protocol) -> Setup {
    Setup {
        protocol,
        ..Setup::for_tests()
    }
}

/// Kills east's service and waits until east's filter routes by a table that calls it
/// Unhealthy: requests then start at west, the failed-over path.
fn fail_east_over(t: &mut Topology) -> Result<()> {
    t.kill_upstream("east")?;
    t.wait_target_health("east", Health::Unhealthy, t.setup().failover_bound())?;
    t.wait_filter_current("east")
}

/// How many times each test id reached any upstream.
fn deliveries(t: &mut Topology) -> Result<BTreeMap<String, Vec<String>>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cluster in ["east", "west", "south"] {
        for record in t.upstream(cluster)?.records()? {
            if let Some(id) = record.test_id {
                seen.entry(id).or_default().push(cluster.to_string());
            }
        }
    }
    Ok(seen)
}

fn recorded_ids(records: &[Record]) -> Vec<&str> {
    records
        .iter()
        .filter_map(|r| r.test_id.as_deref())
        .collect()
}

/// `load-<thread>-<n>`, as client.py names the calls of a load.
fn thread_and_seq(id: &str) -> Result<(u64, u64)> {
    let mut parts = id.strip_prefix("load-").unwrap_or(id).split('-');
    let mut next = || -> Result<u64> {
        Ok(parts
            .next()
            .ok_or_else(|| anyhow::anyhow!("{id:?} is not load-<thread>-<n>"))?
            .parse()?)
    };
    Ok((next()?, next()?))
}

/// (1) gRPC, real server and client, `protocol: grpc` checked by grpc.health.v1.
#[test]
fn grpc_calls_survive_a_kill_whole_with_their_trailers() -> Result<()> {
    const CONCURRENCY: usize = 6;
    // Calls a client thread may lose at the kill: the one in flight, and those it sent
    // while the dying server's listener still accepted connections (seen: up to 2; a
    // busy machine stretches that window). A broken retry loses hundreds per thread.
    const CUT_OFF_PER_THREAD: usize = 4;
    let mut t = Topology::start("grpc_calls", setup(Protocol::Grpc))?;
    let east = t.layout().member("east")?.ingress;
    let client = GrpcClient::new(east, &t.setup().service.authority());
    let first = client.unary("before", None)?;
    assert!(
        first.ok() && first.served_by() == Some("east"),
        "while east is healthy its own gRPC server answers: {}",
        first.summary()
    );

    // (a) Unary calls under load; east's server is SIGKILLed midway.
    let calls_file = t.out().file("grpc-load.calls.jsonl");
    let mut load =
        client.start_load(6.0, CONCURRENCY, &calls_file, t.out().file("grpc-load.log"))?;
    wait_until("the gRPC load has 100 answers from east", PATIENCE, || {
        let calls = read_calls(&calls_file)?;
        let east = calls
            .iter()
            .filter(|c| c.served_by() == Some("east"))
            .count();
        Ok(if east >= 100 {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("{east} from east of {}", calls.len()))
        })
    })?;
    let killed = t.kill_upstream("east")?;
    let killed_after = read_calls(&calls_file)?.len();
    wait_until("the gRPC load is over", PATIENCE, || {
        Ok(match load.exited()? {
            Some(status) => Probe::Ready(status),
            None => Probe::NotYet("running".into()),
        })
    })?;
    let calls = read_calls(&calls_file)?;
    let east_records = t.upstream("east")?.records()?;
    let reached_east: BTreeSet<&str> = recorded_ids(&east_records).into_iter().collect();
    let east_recorded = reached_east.len();
    let mut by_cluster: BTreeMap<String, usize> = BTreeMap::new();
    for call in &calls {
        *by_cluster
            .entry(call.served_by().unwrap_or("none").to_string())
            .or_default() += 1;
    }
    let failed: Vec<&Call> = calls.iter().filter(|c| !c.ok()).collect();
    eprintln!(
        "gRPC load: {} calls, {} finished before the kill, {east_recorded} recorded by \
         east; by cluster {by_cluster:?}; failed: {:?}; slowest {} ms; killed at {}",
        calls.len(),
        killed_after,
        failed.iter().map(|c| c.summary()).collect::<Vec<_>>(),
        calls.iter().map(|c| c.ms).fold(0.0, f64::max),
        secs(killed.elapsed())
    );
    // A unary call is a POST, not in `replay.methods`: one that may have reached east's
    // server (written to a connection the kill then cut) cannot be retried. So calls
    // may fail only at the switch, each client thread's failures falling between its
    // last answer from east and its first from west, a few per thread. Everything
    // before and after is answered. A call the gateway could not deliver is answered
    // UNAVAILABLE with a reason; a call east's server had begun to answer (its initial
    // metadata goes out before the message) and the kill cut mid-answer can only be
    // reset, as Envoy does with any stream whose upstream dies after the headers.
    for call in &failed {
        let (thread, n) = thread_and_seq(&call.id)?;
        let served = |cluster: &str| -> Vec<u64> {
            calls
                .iter()
                .filter(|c| c.served_by() == Some(cluster))
                .filter_map(|c| thread_and_seq(&c.id).ok())
                .filter_map(|(k, m)| (k == thread).then_some(m))
                .collect()
        };
        let last_east = served("east").into_iter().max().unwrap_or(0);
        let first_west = served("west").into_iter().min().unwrap_or(u64::MAX);
        assert!(
            last_east < n && n < first_west,
            "a call fails only when cut off at the kill: {} (thread {thread}: last from \
             east #{last_east}, first from west #{first_west})",
            call.summary()
        );
        let reached = reached_east.contains(call.id.as_str());
        let reset_mid_answer =
            call.code == "INTERNAL" && call.details.contains("RST_STREAM") && reached;
        assert!(
            reset_mid_answer
                || (call.code == "UNAVAILABLE" && call.trailing.contains_key("x-detour-reason")),
            "a call cut off at the kill is either answered UNAVAILABLE with a reason, or \
             reset because east's server had begun answering it: {} (reached east's \
             server: {reached})",
            call.summary()
        );
    }
    assert!(
        failed.len() <= CUT_OFF_PER_THREAD * CONCURRENCY,
        "at most {CUT_OFF_PER_THREAD} calls per client thread may be cut off at the kill: \
         {} failed",
        failed.len()
    );
    assert!(
        by_cluster.get("west").copied().unwrap_or(0) >= 50,
        "west answered the load after the kill: {by_cluster:?}"
    );
    let twice: Vec<_> = deliveries(&mut t)?
        .into_iter()
        .filter(|(_, clusters)| clusters.len() > 1)
        .collect();
    assert!(twice.is_empty(), "no gRPC call delivered twice: {twice:?}");

    // (b) A server-streaming call made after the kill arrives whole from west.
    let (count, size) = (500, 512);
    let stream = client.stream("stream-after-kill", count, size)?;
    assert_eq!(stream.code, "OK", "{}", stream.summary());
    assert_eq!(stream.served_by(), Some("west"), "{}", stream.summary());
    assert_eq!(
        stream.messages.len(),
        count,
        "every streamed message arrives"
    );
    for (seq, message) in stream.messages.iter().enumerate() {
        let parsed: serde_json::Value = serde_json::from_str(message.trim_end())?;
        assert_eq!(
            (
                parsed["seq"].as_u64(),
                parsed["cluster"].as_str(),
                message.len()
            ),
            (Some(seq as u64), Some("west"), size),
            "message {seq} arrives whole and in order"
        );
    }

    // (c) Trailing metadata and grpc-status, OK and not, arrive intact.
    let ok = client.unary("trailers-ok", None)?;
    assert_eq!(ok.code, "OK", "{}", ok.summary());
    assert_eq!(
        ok.trailing.get("x-echo-id").map(String::as_str),
        Some("trailers-ok")
    );
    assert_eq!(ok.served_by(), Some("west"));
    let message = "no such thing: 42 (with spaces, punctuation; and ü)";
    let not_found = client.unary("trailers-not-found", Some(("NOT_FOUND", message)))?;
    assert_eq!(
        (not_found.code.as_str(), not_found.details.as_str()),
        ("NOT_FOUND", message),
        "the status the server chose reaches the client: {}",
        not_found.summary()
    );
    assert_eq!(
        not_found.trailing.get("x-echo-id").map(String::as_str),
        Some("trailers-not-found"),
        "trailing metadata of a failed call arrives too: {:?}",
        not_found.trailing
    );
    assert_eq!(not_found.served_by(), Some("west"));
    Ok(())
}

/// (2) An HTTP/2 client with prior knowledge (h2c) to the ingress, failed over.
#[test]
fn h2c_prior_knowledge_is_answered_whole_from_west() -> Result<()> {
    let mut t = Topology::start("h2c_prior_knowledge", setup(Protocol::Http2))?;
    let ingress = t.layout().member("east")?.ingress;
    let authority = t.setup().service.authority();
    let size = 200_000;
    let path = format!("/?size={size}");
    let get = || -> Result<(h2c::H2Reply, Answer)> {
        let reply = h2c::get(ingress, &authority, &path, Duration::from_secs(10))?;
        let answer: Answer = serde_json::from_slice(&reply.body)?;
        Ok((reply, answer))
    };
    let (reply, _) = get()?;
    assert_eq!(
        (reply.status, reply.header("x-served-by")),
        (200, Some("east"))
    );

    // Right after the kill, before any table says so: the router carries it to west.
    t.kill_upstream("east")?;
    let (reply, answer) = get()?;
    assert_eq!(
        reply.version,
        hyper::Version::HTTP_2,
        "answered over HTTP/2"
    );
    assert_eq!(reply.status, 200);
    assert_eq!(answer.cluster, "west", "west answers a request east cannot");
    assert!(
        reply.body.len() > size && reply.body.ends_with(b"\n"),
        "the answer arrives whole: {} bytes",
        reply.body.len()
    );
    Ok(())
}

/// (3) A WebSocket upgrade to a failed-over service.
#[test]
fn a_websocket_upgrades_through_wests_gateway_and_echoes() -> Result<()> {
    let mut t = Topology::start("websocket_failover", setup(Protocol::Http))?;
    let ingress = t.layout().member("east")?.ingress;
    let authority = t.setup().service.authority();
    fail_east_over(&mut t)?;
    let messages = ["hello", "from a client of east", &"x".repeat(10_000)];
    let session = websocket::echo(
        ingress,
        &authority,
        WEBSOCKET_PATH,
        &messages,
        Duration::from_secs(10),
    )?;
    assert_eq!(session.status, 101, "the upgrade succeeds");
    assert_eq!(session.served_by.as_deref(), Some("west"));
    assert_eq!(
        session.echoed, messages,
        "every message echoes back, in order"
    );
    let via_gateway: Vec<Record> = t
        .upstream("west")?
        .records()?
        .into_iter()
        .filter(|r| r.path == WEBSOCKET_PATH)
        .collect();
    assert_eq!(
        via_gateway.len(),
        1,
        "one upgrade reached west: {via_gateway:?}"
    );
    assert_eq!(
        via_gateway[0].via.as_deref(),
        Some("west"),
        "through west's gateway"
    );
    Ok(())
}

/// (4) A 50 MB download through the failover path, streamed by east's Envoy.
#[test]
fn a_50mb_download_streams_through_the_failover_path() -> Result<()> {
    const SIZE: u64 = 50 * 1024 * 1024;
    const GROWTH: u64 = 10 * 1024 * 1024;
    let mut t = Topology::start("download_50mb", setup(Protocol::Http))?;
    let ingress = t.layout().member("east")?.ingress;
    let authority = t.setup().service.authority();
    fail_east_over(&mut t)?;
    let pid = t
        .envoy("east")?
        .process()
        .pid()
        .ok_or_else(|| anyhow::anyhow!("east's Envoy has no pid"))?;
    // A small download first: connections to west's gateway and their buffers exist
    // before the baseline, so what is measured is what the size of an answer costs.
    let warm = download(ingress, &authority, "/?download=1048576", PATIENCE, |_| ())?;
    assert_eq!((warm.status, warm.bytes), (200, 1 << 20));

    let before = rss_bytes(pid)?;
    let mut peak = before;
    let mut next_sample = 0;
    let got = download(
        ingress,
        &authority,
        &format!("/?download={SIZE}"),
        Duration::from_secs(60),
        |bytes| {
            if bytes >= next_sample {
                next_sample += 2 << 20;
                peak = peak.max(rss_bytes(pid).unwrap_or(0));
            }
        },
    )?;
    let after = rss_bytes(pid)?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    eprintln!(
        "50 MB download from {:?} in {}: east's Envoy RSS {} before, peak {}, {} after",
        got.served_by,
        secs(got.took),
        mib(before),
        mib(peak),
        mib(after)
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.served_by.as_deref(), Some("west"));
    assert_eq!(got.bytes, SIZE, "every byte arrives");
    assert_eq!(got.checksum, expected_checksum(SIZE), "and in order");
    let growth = peak.max(after).saturating_sub(before);
    assert!(
        growth < GROWTH,
        "east's Envoy streams the answer: RSS grew by {} (less than {} allowed)",
        mib(growth),
        mib(GROWTH)
    );
    Ok(())
}

/// (5) A body over `replay.maxBodyBytes` is sent once, never retried; one under it goes
/// on to west when east's instance resets after reading it.
#[test]
fn bodies_over_the_replay_limit_are_sent_once() -> Result<()> {
    let mut t = Topology::start("body_limit", setup(Protocol::Http))?;
    let east = t.ingress("east")?;
    let limit = usize::try_from(t.setup().replay.max_body_bytes)?;
    // PUT is replayable: only the body's size decides.
    let put = |id: &str, size: usize| {
        Request::new(Method::PUT, "/?reset_in=east")
            .header("x-test-id", id)
            .body(Bytes::from(vec![b'b'; size]))
    };

    let big = east.send(put("big", limit * 2))?;
    eprintln!(
        "PUT of {} bytes, reset by east: {}",
        limit * 2,
        big.summary()
    );
    assert_eq!(
        big.status,
        503,
        "east reset it and it cannot be retried: {}",
        big.summary()
    );
    assert!(
        big.detour_reason().is_some(),
        "the 503 says why: {}",
        big.summary()
    );
    let small = east.send(put("small", limit / 2))?;
    assert_eq!(
        (small.status, small.served_by()),
        (200, Some("west")),
        "a body Envoy kept goes on to west: {}",
        small.summary()
    );
    let seen = deliveries(&mut t)?;
    assert_eq!(
        seen.get("big").map(Vec::as_slice),
        Some(&["east".to_string()][..]),
        "the large body was sent once, to east only"
    );
    assert_eq!(
        seen.get("small").map(Vec::as_slice),
        Some(&["east".to_string(), "west".to_string()][..]),
        "the small body reached east (which reset) and then west"
    );
    Ok(())
}

/// (6) `replay.perTryTimeout`: a GET hung in a frozen east goes on to west within about
/// the per-try timeout; a POST is not retried.
#[test]
fn per_try_timeout_moves_a_hung_get_on_but_not_a_post() -> Result<()> {
    const PER_TRY: Duration = Duration::from_millis(300);
    let setup = Setup {
        replay: Replay {
            per_try_timeout: Some(PER_TRY),
            ..Setup::for_tests().replay
        },
        ..Setup::for_tests()
    };
    let mut t = Topology::start("per_try_timeout", setup)?;
    let get_client = t.ingress("east")?;
    // Long enough for a POST to be answered by west if anything retried it after a
    // per-try timeout (a few of them), short of the route's own 15 s timeout.
    let post_client = t.ingress("east")?.with_timeout(Duration::from_secs(3));
    wait_served_by(&get_client, "east", PATIENCE)?;
    let pid = t
        .upstream("east")?
        .pid()
        .ok_or_else(|| anyhow::anyhow!("east's upstream has no pid"))?;
    let stopped = signal(pid, libc::SIGSTOP);
    assert!(stopped, "SIGSTOP east's service");
    // Both sent at once, while every table still calls east Healthy.
    let outcome = block_on(send_both(&get_client, &post_client));
    signal(pid, libc::SIGCONT);
    let (get, post) = outcome?;
    let get = get?;
    eprintln!(
        "hung GET: {} in {}; POST: {:?}",
        get.summary(),
        secs(get.latency),
        post.as_ref().map(|r| r.summary())
    );
    assert_eq!(
        (get.status, get.served_by()),
        (200, Some("west")),
        "{}",
        get.summary()
    );
    assert!(
        get.latency >= PER_TRY && get.latency < PER_TRY + Duration::from_millis(1200),
        "the GET waited for one per-try timeout, then west answered: {}",
        secs(get.latency)
    );
    if let Ok(post) = &post {
        assert_ne!(post.served_by(), Some("west"), "the POST is not retried");
        assert!(
            post.detour_reason().is_some(),
            "a failed POST says why: {}",
            post.summary()
        );
    }

    // Once east runs again it may still take what was queued for it: read the records
    // only after it answers again. The POST must reach at most one instance, and never
    // west.
    let east_foo = HttpClient::new(t.upstream("east")?.addr(), "foo.apps");
    wait_until("east's foo answers again", PATIENCE, || {
        Ok(match east_foo.get("/healthz") {
            Ok(r) if r.status == 200 => Probe::Ready(()),
            other => Probe::NotYet(format!("{:?}", other.map(|r| r.summary()))),
        })
    })?;
    let seen = deliveries(&mut t)?;
    let post_seen = seen.get("hung-post").cloned().unwrap_or_default();
    let get_seen = seen.get("hung-get").cloned().unwrap_or_default();
    eprintln!("deliveries: GET {get_seen:?}, POST {post_seen:?}");
    // The GET's first attempt was in east's socket when east froze: east may take it
    // once it runs again. That is what a per-try timeout on a replayable method allows;
    // what it must never do is send it twice to the same target.
    assert_eq!(
        get_seen.iter().filter(|c| *c == "west").count(),
        1,
        "the GET went on to west once: {get_seen:?}"
    );
    assert!(
        get_seen.iter().filter(|c| *c == "east").count() <= 1,
        "and to east at most once: {get_seen:?}"
    );
    assert!(
        post_seen.len() <= 1 && !post_seen.contains(&"west".to_string()),
        "the POST was delivered at most once, never to west: {post_seen:?}"
    );
    Ok(())
}

async fn send_both(
    get_client: &HttpClient,
    post_client: &HttpClient,
) -> (
    Result<detour_e2e::client::Reply>,
    Result<detour_e2e::client::Reply>,
) {
    let get = get_client.send_async(Request::get("/").header("x-test-id", "hung-get"));
    let post =
        post_client.send_async(Request::post("/", "a post").header("x-test-id", "hung-post"));
    tokio::join!(get, post)
}

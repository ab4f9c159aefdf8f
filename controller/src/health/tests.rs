//! The checker against a real local HTTP server that is stopped and restarted.

use super::*;
use crate::testing::{FakeGateway, eventually};
use detour_core::health::state;
use detour_core::model::{Address, CheckKind, HealthCheck, Host, ServiceName, TargetRef};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn spec(gateway: &FakeGateway, interval_ms: u64, unhealthy: u32, healthy: u32) -> ProbeSpec {
    ProbeSpec {
        caller: "east".into(),
        target: TargetRef {
            cluster: "west".into(),
            service: ServiceName::new("apps", "foo"),
        },
        gateways: vec![Address {
            host: Host::Ip(gateway.addr.ip()),
            port: gateway.addr.port(),
        }],
        check: HealthCheck {
            kind: CheckKind::Http {
                path: "/healthz".into(),
            },
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms),
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        },
    }
}

fn checker() -> (Checker, HealthBoard, Arc<Metrics>) {
    let board = HealthBoard::new();
    let metrics = Arc::new(Metrics::new());
    (
        Checker::new(board.clone(), Prober::new(), metrics.clone()),
        board,
        metrics,
    )
}

fn health(board: &HealthBoard, spec: &ProbeSpec) -> Health {
    board.get(spec).map_or(Health::Unknown, |s| s.health)
}

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn checks_reuse_one_connection_and_a_restarted_gateway_gets_a_new_one() {
    let mut gateway = FakeGateway::start().await;
    let prober = Prober::new();
    let s = spec(&gateway, 1000, 1, 1);
    for _ in 0..5 {
        assert!(prober.probe(&s).await.passed());
    }
    assert_eq!(gateway.hosts().len(), 5);
    assert_eq!(
        gateway.connections(),
        1,
        "five checks in a row travel on one kept-alive connection"
    );

    // A gateway that goes away takes its connections with it: the next check fails at
    // once instead of waiting on a dead connection, and after the restart a new
    // connection is made.
    gateway.stop().await;
    assert!(matches!(prober.probe(&s).await, ProbeResult::Error(_)));
    gateway.restart().await;
    assert!(prober.probe(&s).await.passed());
    assert_eq!(gateway.connections(), 2);
}

#[tokio::test]
async fn a_dead_gateway_instance_does_not_fail_a_check_another_instance_answers() {
    let mut first = FakeGateway::start().await;
    let second = FakeGateway::start().await;
    let mut s = spec(&first, 1000, 1, 1);
    s.gateways.push(Address {
        host: Host::Ip(second.addr.ip()),
        port: second.addr.port(),
    });
    let prober = Prober::new();
    first.stop().await;
    assert!(prober.probe(&s).await.passed());
    assert_eq!(second.hosts(), ["foo.apps"]);
    // A failed answer is asked once more, through the next instance: one bad
    // instance among live ones does not fail the check.
    first.restart().await;
    first.fail_service(true);
    assert!(prober.probe(&s).await.passed());
    assert_eq!(second.hosts().len(), 2);
    // Two failed answers in a row decide: the service failed.
    second.fail_service(true);
    let before = (first.hosts().len(), second.hosts().len());
    assert_eq!(
        prober.probe(&s).await,
        ProbeResult::BadStatus { status: 503 }
    );
    assert_eq!(
        (first.hosts().len(), second.hosts().len()),
        (before.0 + 1, before.1 + 1)
    );
    second.fail_service(false);
    // None answers: the gateway's failure, not the service's.
    first.stop().await;
    let mut second = second;
    second.stop().await;
    assert_eq!(
        prober.probe(&s).await.check(),
        state::Check::Failed(state::Cause::Gateway)
    );
}

#[tokio::test]
async fn behind_one_gateway_a_late_or_failed_answer_is_asked_once_more() {
    let gateway = FakeGateway::start().await;
    let prober = Prober::new();
    let s = spec(&gateway, 200, 1, 1);
    gateway.fail_service(true);
    assert_eq!(
        prober.probe(&s).await,
        ProbeResult::BadStatus { status: 503 }
    );
    assert_eq!(gateway.hosts().len(), 2, "the first try and one more");
    // A frozen instance: no answer within the timeout, asked once more.
    gateway.fail_service(false);
    gateway.delay_ms.store(400, Ordering::Relaxed);
    assert!(matches!(prober.probe(&s).await, ProbeResult::Timeout(_)));
    assert_eq!(gateway.hosts().len(), 4);
}

#[tokio::test]
async fn a_health_page_with_a_body_is_read_to_its_end_so_the_connection_is_reused() {
    // Larger than what arrives with the head: unread, it would cost the connection.
    let page: &'static str = Box::leak("detour ".repeat(4096).into_boxed_str());
    let gateway = FakeGateway::named(page).await;
    let prober = Prober::new();
    let s = spec(&gateway, 1000, 1, 1);
    for _ in 0..3 {
        assert!(prober.probe(&s).await.passed());
    }
    assert_eq!(gateway.connections(), 1);
}

#[tokio::test]
async fn thresholds_govern_transitions_through_a_stop_and_restart() {
    let mut gateway = FakeGateway::start().await;
    let (mut checker, board, metrics) = checker();
    let s = spec(&gateway, 30, 3, 2);
    checker.reconcile(&BTreeSet::from([s.clone()]));
    assert_eq!(health(&board, &s), Health::Unknown);

    eventually("first check makes it Healthy", LIMIT, || {
        health(&board, &s) == Health::Healthy
    })
    .await;
    assert_eq!(gateway.hosts()[0], "foo.apps", "Host: NAME.NS");

    gateway.stop().await;
    let stopped = board.get(&s).unwrap().checks;
    eventually("three failures make it Unhealthy", LIMIT, || {
        health(&board, &s) == Health::Unhealthy
    })
    .await;
    let state = board.get(&s).unwrap();
    assert!(
        state.checks - stopped >= 3,
        "Unhealthy after {} checks",
        state.checks - stopped
    );
    assert!(
        state.last.as_deref().unwrap_or("").contains("refused"),
        "{state:?}"
    );

    gateway.restart().await;
    let restarted = board.get(&s).unwrap().checks;
    eventually("two passes make it Healthy again", LIMIT, || {
        health(&board, &s) == Health::Healthy
    })
    .await;
    let state = board.get(&s).unwrap();
    assert!(state.recovered);
    assert!(state.checks - restarted >= 2);

    let text = metrics.encode();
    assert!(
        text.contains("detour_health_checks_total{cluster=\"west\",namespace=\"apps\",name=\"foo\",result=\"error\"}"),
        "{text}"
    );
    assert!(text.contains("to=\"Unhealthy\"} 1"), "{text}");
    assert!(text.contains("state=\"Healthy\"} 1"), "{text}");
}

#[tokio::test]
async fn error_statuses_and_timeouts_fail_checks() {
    let gateway = FakeGateway::start().await;
    gateway.status.store(503, Ordering::Relaxed);
    let (mut checker, board, _) = checker();
    let s = spec(&gateway, 20, 1, 1);
    checker.reconcile(&BTreeSet::from([s.clone()]));
    eventually("503 is a failure", LIMIT, || {
        health(&board, &s) == Health::Unhealthy
    })
    .await;
    assert_eq!(board.get(&s).unwrap().last.as_deref(), Some("HTTP 503"));

    gateway.status.store(200, Ordering::Relaxed);
    eventually("200 passes", LIMIT, || {
        health(&board, &s) == Health::Healthy
    })
    .await;

    gateway.delay_ms.store(200, Ordering::Relaxed);
    eventually("a slow answer is a timeout", LIMIT, || {
        health(&board, &s) == Health::Unhealthy
    })
    .await;
    assert!(
        board
            .get(&s)
            .unwrap()
            .last
            .unwrap()
            .contains("no answer within 20ms")
    );
}

#[tokio::test]
async fn reconcile_keeps_state_of_kept_targets_and_drops_the_rest() {
    let gateway = FakeGateway::start().await;
    let (mut checker, board, _) = checker();
    let a = spec(&gateway, 20, 1, 1);
    let mut b = a.clone();
    b.check.kind = CheckKind::Http {
        path: "/ready".into(),
    };
    checker.reconcile(&BTreeSet::from([a.clone(), b.clone()]));
    eventually("both checked", LIMIT, || {
        health(&board, &a) == Health::Healthy && health(&board, &b) == Health::Healthy
    })
    .await;
    let since = board.get(&a).unwrap().since;
    checker.reconcile(&BTreeSet::from([a.clone()]));
    assert!(board.get(&b).is_none());
    assert_eq!(
        board.get(&a).unwrap().since,
        since,
        "state survives a reload"
    );
    assert_eq!(checker.tasks.len(), 1);
}

#[tokio::test]
async fn callers_without_a_certificate_of_their_own_share_one_check() {
    let mut gateway = FakeGateway::start().await;
    let (mut checker, board, metrics) = checker();
    // West's foo, a failover target of schemes in east and in south: in plaintext the
    // two checks would be the same request.
    let for_east = spec(&gateway, 200, 1, 1);
    let for_south = ProbeSpec {
        caller: "south".into(),
        ..for_east.clone()
    };
    checker.reconcile(&BTreeSet::from([for_east.clone(), for_south.clone()]));
    assert_eq!(checker.tasks.len(), 1, "one check for both");
    eventually("both Healthy", LIMIT, || {
        health(&board, &for_east) == Health::Healthy
            && health(&board, &for_south) == Health::Healthy
    })
    .await;
    let before = gateway.hosts().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let asked = gateway.hosts().len() - before;
    assert!(
        (3..=6).contains(&asked),
        "one check per 200 ms interval in a second, not two: {asked}"
    );

    gateway.stop().await;
    eventually("both Unhealthy with the one check", LIMIT, || {
        health(&board, &for_east) == Health::Unhealthy
            && health(&board, &for_south) == Health::Unhealthy
    })
    .await;
    let text = metrics.encode();
    assert!(
        text.contains("to=\"Unhealthy\"} 1"),
        "one transition: {text}"
    );

    // One caller's scheme goes: the other keeps the check and its state.
    let since = board.get(&for_south).unwrap().since;
    checker.reconcile(&BTreeSet::from([for_south.clone()]));
    assert!(board.get(&for_east).is_none());
    assert_eq!(board.get(&for_south).unwrap().since, since);
    assert_eq!(checker.tasks.len(), 1);
}

#[tokio::test]
async fn a_changed_policy_keeps_the_targets_health() {
    let gateway = FakeGateway::start().await;
    let (mut checker, board, _) = checker();
    let before = spec(&gateway, 20, 1, 1);
    checker.reconcile(&BTreeSet::from([before.clone()]));
    eventually("checked", LIMIT, || {
        health(&board, &before) == Health::Healthy
    })
    .await;
    let mut after = before.clone();
    after.check.interval = Duration::from_millis(30);
    checker.reconcile(&BTreeSet::from([after.clone()]));
    assert_eq!(health(&board, &after), Health::Healthy, "not Unknown again");
    assert!(board.get(&before).is_none());
}

#[tokio::test]
async fn checks_of_many_targets_spread_over_the_interval() {
    let gateway = FakeGateway::start().await;
    let mut phases: Vec<Duration> = (0..200)
        .map(|i| {
            let mut s = spec(&gateway, 1000, 2, 2);
            s.target.service = ServiceName::new("apps", &format!("svc{i}"));
            phase(&s)
        })
        .collect();
    assert!(phases.iter().all(|p| *p < Duration::from_millis(1000)));
    phases.sort();
    // Evenly enough: every tenth of the interval holds some of them.
    for tenth in 0..10 {
        let (from, to) = (
            Duration::from_millis(100 * tenth),
            Duration::from_millis(100 * (tenth + 1)),
        );
        assert!(
            phases.iter().any(|p| *p >= from && *p < to),
            "no check in {from:?}..{to:?}: {phases:?}"
        );
    }
    let same = spec(&gateway, 1000, 2, 2);
    assert_eq!(phase(&same), phase(&same.clone()), "fixed per target");
}

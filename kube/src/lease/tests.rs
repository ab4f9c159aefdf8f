//! Leader election: the state machine driven by a fake clock against an in-memory Lease
//! that behaves like the API server's (versions, create conflicts, stale writes refused);
//! then the Lease API calls against the mock API server.

use super::*;
use crate::testing::{ApiServer, mock_client};
use serde_json::json;
use std::sync::Mutex;

const SECOND: Duration = Duration::from_secs(1);

/// The API server's Lease: one object with a resourceVersion.
#[derive(Default)]
struct Store {
    lease: Option<Lease>,
    version: u64,
}

impl Store {
    /// Create (refused when it exists) or replace (refused when the version is stale).
    fn write(&mut self, mut lease: Lease, create: bool) -> Option<Lease> {
        let current = self
            .lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        let ok = if create {
            self.lease.is_none()
        } else {
            current.is_some() && current == lease.metadata.resource_version
        };
        if !ok {
            return None;
        }
        self.version += 1;
        lease.metadata.resource_version = Some(self.version.to_string());
        self.lease = Some(lease.clone());
        Some(lease)
    }
}

/// One replica's round against the store, as [`round`] does against the API.
fn tick(e: &mut Elector, store: &mut Store, now: Instant) -> bool {
    let current = store.lease.clone();
    e.observe(current.as_ref().map(Record::of), now);
    let step = e.step(now);
    if let Some(lease) = e.lease_for(step, current.as_ref(), "detour", Timestamp::UNIX_EPOCH) {
        match store.write(lease, step == Step::Create) {
            Some(written) => e.won(Record::of(&written), now),
            None => e.conflicted(),
        }
    }
    e.is_leader(now)
}

fn holder(store: &Store) -> Option<String> {
    store.lease.as_ref().and_then(|l| Record::of(l).holder)
}

#[test]
fn acquire_renew_expire_take_over() {
    let timing = Timing::default();
    let mut store = Store::default();
    let mut a = Elector::new("a", timing);
    let mut b = Elector::new("b", timing);
    let t0 = Instant::now();

    // a comes first and creates the Lease; b finds it held.
    assert!(tick(&mut a, &mut store, t0));
    assert!(!tick(&mut b, &mut store, t0));
    assert_eq!(holder(&store).as_deref(), Some("a"));
    assert_eq!(b.step(t0), Step::Wait);

    // a renews every retry period; b sees the Lease change and keeps waiting.
    let mut t = t0;
    for _ in 0..10 {
        t += timing.retry_period;
        assert!(tick(&mut a, &mut store, t));
        assert!(!tick(&mut b, &mut store, t));
    }
    let last_renewal = t;

    // a stops (crashed, partitioned): it stops counting itself leader renew_deadline
    // after its last renewal, with no call made at all...
    assert!(a.is_leader(last_renewal + timing.renew_deadline - SECOND));
    assert!(!a.is_leader(last_renewal + timing.renew_deadline));
    // ...and b takes over only lease_duration after it last saw the Lease change: the
    // two never write at the same time.
    assert!(timing.renew_deadline < timing.lease_duration);
    while t + timing.retry_period < last_renewal + timing.lease_duration {
        t += timing.retry_period;
        assert!(
            !tick(&mut b, &mut store, t),
            "taken over too early at {:?}",
            t - last_renewal
        );
    }
    t = last_renewal + timing.lease_duration;
    assert_eq!(b.step(t), Step::TakeOver);
    assert!(tick(&mut b, &mut store, t));
    let record = Record::of(store.lease.as_ref().unwrap());
    assert_eq!(record.holder.as_deref(), Some("b"));
    assert_eq!(record.transitions, 1);

    // a comes back: it reads b's Lease and does not write.
    t += SECOND;
    assert!(!tick(&mut a, &mut store, t));
    assert_eq!(a.step(t), Step::Wait);
    assert_eq!(holder(&store).as_deref(), Some("b"));
}

#[test]
fn two_replicas_taking_over_at_once_cannot_both_win() {
    let timing = Timing::default();
    let mut store = Store::default();
    let mut old = Elector::new("old", timing);
    let t0 = Instant::now();
    tick(&mut old, &mut store, t0);
    let (mut a, mut b) = (Elector::new("a", timing), Elector::new("b", timing));
    tick(&mut a, &mut store, t0);
    tick(&mut b, &mut store, t0);
    // Both read the expired Lease, then both write.
    let later = t0 + timing.lease_duration;
    let current = store.lease.clone();
    for e in [&mut a, &mut b] {
        e.observe(current.as_ref().map(Record::of), later);
        assert_eq!(e.step(later), Step::TakeOver);
    }
    let lease_a = a
        .lease_for(
            Step::TakeOver,
            current.as_ref(),
            "detour",
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
    let lease_b = b
        .lease_for(
            Step::TakeOver,
            current.as_ref(),
            "detour",
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
    let won = store.write(lease_a, false).unwrap();
    a.won(Record::of(&won), later);
    assert!(
        store.write(lease_b, false).is_none(),
        "stale version refused"
    );
    b.conflicted();
    assert!(a.is_leader(later));
    assert!(!b.is_leader(later));
}

#[test]
fn a_released_lease_is_taken_at_once_and_a_deleted_one_is_lost() {
    let timing = Timing::default();
    let mut store = Store::default();
    let mut a = Elector::new("a", timing);
    let mut b = Elector::new("b", timing);
    let t0 = Instant::now();
    tick(&mut a, &mut store, t0);
    tick(&mut b, &mut store, t0);
    let release = a
        .release_of(store.lease.as_ref().unwrap(), Timestamp::UNIX_EPOCH)
        .unwrap();
    assert_eq!(
        release.spec.as_ref().unwrap().lease_duration_seconds,
        Some(1)
    );
    store.write(release, false).unwrap();
    a.released();
    assert!(!a.is_leader(t0));
    // b need not wait for any expiry.
    assert!(tick(&mut b, &mut store, t0 + SECOND));
    // b only releases what it holds.
    assert!(
        a.release_of(store.lease.as_ref().unwrap(), Timestamp::UNIX_EPOCH)
            .is_none()
    );
    // Someone deletes the Lease: b stops leading when it sees that, then recreates it.
    store.lease = None;
    b.observe(None, t0 + 2 * SECOND);
    assert!(!b.is_leader(t0 + 2 * SECOND));
    assert_eq!(b.step(t0 + 2 * SECOND), Step::Create);
}

struct FakeClock(Mutex<Instant>);

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

#[test]
fn the_write_gate_closes_by_the_clock() {
    let t0 = Instant::now();
    let clock = Arc::new(FakeClock(Mutex::new(t0)));
    let gate = Leadership::new(clock.clone());
    assert!(matches!(gate.check(), Err(Error::NotLeader)));
    let mut changes = gate.subscribe();
    let mut e = Elector::new("a", Timing::default());
    let mut store = Store::default();
    tick(&mut e, &mut store, t0);
    gate.set(e.leading_until());
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    assert!(gate.check().is_ok());
    // A renewal moves the deadline: writers are not woken for that.
    tick(&mut e, &mut store, t0 + 2 * SECOND);
    gate.set(e.leading_until());
    assert!(!changes.has_changed().unwrap());
    // No renewal succeeds any more: the gate closes when the clock passes the deadline.
    *clock.0.lock().unwrap() = t0 + 2 * SECOND + Timing::default().renew_deadline;
    assert!(!gate.is_leader());
}

// The API calls.

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/detour-system/leases";

fn lease_json(holder: &str, version: &str, transitions: i32) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "detour", "namespace": "detour-system", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
                 "acquireTime": "2025-01-01T00:00:00.000000Z", "renewTime": "2025-01-01T00:00:00.000000Z"}
    })
}

async fn with_api<F, Fut>(script: F) -> (LeaseApi, tokio::task::JoinHandle<ApiServer>)
where
    F: FnOnce(ApiServer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiServer> + Send + 'static,
{
    let (client, api) = mock_client();
    let server = tokio::spawn(async move {
        let mut api = script(api).await;
        api.no_more_calls().await;
        api
    });
    (LeaseApi::new(client, "detour-system", "detour"), server)
}

#[tokio::test]
async fn the_lease_is_created_then_renewed_with_its_version() {
    let (api, server) = with_api(|mut api| async move {
        api.expect("GET", &format!("{LEASES}/detour"))
            .await
            .not_found();
        let create = api.expect("POST", &format!("{LEASES}?")).await;
        let spec = &create.body["spec"];
        assert_eq!(create.body["metadata"]["name"], "detour");
        assert_eq!(spec["holderIdentity"], "a");
        assert_eq!(spec["leaseDurationSeconds"], 15);
        assert_eq!(spec["leaseTransitions"], 0);
        assert!(spec["acquireTime"].is_string() && spec["renewTime"].is_string());
        create.reply(201, lease_json("a", "1", 0));

        api.expect("GET", &format!("{LEASES}/detour"))
            .await
            .reply(200, lease_json("a", "1", 0));
        let renew = api.expect("PUT", &format!("{LEASES}/detour?")).await;
        assert_eq!(
            renew.body["metadata"]["resourceVersion"], "1",
            "optimistic concurrency"
        );
        assert_eq!(renew.body["spec"]["holderIdentity"], "a");
        assert_ne!(
            renew.body["spec"]["renewTime"],
            "2025-01-01T00:00:00.000000Z"
        );
        renew.reply(200, lease_json("a", "2", 0));
        api
    })
    .await;
    let mut e = Elector::new("a", Timing::default());
    let t0 = Instant::now();
    assert!(round(&mut e, &api, t0, Timestamp::now()).await.unwrap());
    assert!(
        round(&mut e, &api, t0 + 2 * SECOND, Timestamp::now())
            .await
            .unwrap()
    );
    assert_eq!(
        e.leading_until(),
        Some(t0 + 2 * SECOND + Timing::default().renew_deadline)
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_held_lease_is_left_alone_and_a_lost_race_stops_leading() {
    let (api, server) = with_api(|mut api| async move {
        // b holds it: a only reads.
        api.expect("GET", &format!("{LEASES}/detour"))
            .await
            .reply(200, lease_json("b", "7", 3));
        // 15s later, unchanged: a takes over, but b renewed in between (409).
        api.expect("GET", &format!("{LEASES}/detour"))
            .await
            .reply(200, lease_json("b", "7", 3));
        let take = api.expect("PUT", &format!("{LEASES}/detour?")).await;
        assert_eq!(take.body["spec"]["holderIdentity"], "a");
        assert_eq!(take.body["spec"]["leaseTransitions"], 4);
        assert_eq!(take.body["metadata"]["resourceVersion"], "7");
        take.conflict();
        api
    })
    .await;
    let mut e = Elector::new("a", Timing::default());
    let t0 = Instant::now();
    assert!(!round(&mut e, &api, t0, Timestamp::now()).await.unwrap());
    let later = t0 + Timing::default().lease_duration;
    assert!(!round(&mut e, &api, later, Timestamp::now()).await.unwrap());
    assert_eq!(
        e.step(later),
        Step::Create,
        "forgot the Lease: read it afresh"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_the_lease() {
    let (api, server) = with_api(|mut api| async move {
        api.expect("GET", &format!("{LEASES}/detour"))
            .await
            .not_found();
        api.expect("POST", &format!("{LEASES}?"))
            .await
            .reply(201, lease_json("a", "1", 0));
        // Shutdown: read, then write the Lease without a holder.
        api.expect("GET", &format!("{LEASES}/detour"))
            .await
            .reply(200, lease_json("a", "1", 0));
        let release = api.expect("PUT", &format!("{LEASES}/detour?")).await;
        assert!(release.body["spec"].get("holderIdentity").is_none());
        assert_eq!(release.body["spec"]["leaseDurationSeconds"], 1);
        release.reply(200, lease_json("", "2", 0));
        api
    })
    .await;
    let leadership = Leadership::new(Arc::new(SystemClock));
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(KubeMetrics::new());
    let task = tokio::spawn(run(
        Elector::new("a", Timing::default()),
        api,
        leadership.clone(),
        stopped,
        metrics.clone(),
    ));
    let mut changes = leadership.subscribe();
    changes.changed().await.unwrap();
    assert!(leadership.is_leader());
    assert!(metrics.encode().contains("detour_kube_leader 1"));
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(!leadership.is_leader(), "stopped writing before releasing");
    assert!(metrics.encode().contains("detour_kube_leader 0"));
    server.await.unwrap();
}

//! The health watch and registration against the CONTRACT FAKE
//! `lb_consul::testing` (not Consul: a scripted server that keeps Consul's
//! documented blocking-query contract). Waits are short and every wait is bounded.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lb_consul::testing::{FakeConsul, Instance};
use lb_consul::{Backoff, ConsulClient, ConsulConfig, ConsulError, HealthWatch, HttpCheck, Registration};
use lb_core::{Change, Endpoint, HealthStatus, ManualClock};
use lb_discovery::{ChangeStream, Source, changes, watch_snapshots};

const WAIT: Duration = Duration::from_secs(5);

fn client(fake: &FakeConsul) -> ConsulClient {
    ConsulClient::new(ConsulConfig::new(&fake.address()).unwrap())
        .unwrap()
        .with_timeout_slack(Duration::from_secs(2))
}

fn watch(client: ConsulClient, service: &str, wait: Duration) -> HealthWatch {
    HealthWatch::new(client, service)
        .wait(wait)
        .min_interval(Duration::from_millis(5))
        .backoff(Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100) })
}

/// A watch polled by its own task, as a consumer would run it, so queries
/// go out while the test scripts the fake. Changes arrive in batches: those
/// a round emitted together.
struct Events {
    batches: tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>,
}

impl Events {
    fn spawn(watch: HealthWatch) -> Events {
        let (tx, batches) = tokio::sync::mpsc::unbounded_channel();
        let mut stream: ChangeStream = changes(watch);
        tokio::spawn(async move {
            while let Some(first) = stream.next().await {
                let mut batch = vec![first];
                while let Some(Some(change)) = stream.next().now_or_never() {
                    batch.push(change);
                }
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        Events { batches }
    }

    async fn next_batch(&mut self) -> Vec<Change> {
        tokio::time::timeout(WAIT, self.batches.recv())
            .await
            .expect("an event in time")
            .expect("a live stream")
    }

    fn nothing_pending(&mut self) -> bool {
        self.batches.try_recv().is_err()
    }
}

/// A fake with one passing instance `n1/web-1`, watched, its snapshot already seen.
async fn watching_web_1(wait: Duration) -> (FakeConsul, Events) {
    let fake = FakeConsul::start().await;
    fake.put(Instance::passing("n1", "web-1", "web", 8001));
    let mut stream = Events::spawn(watch(client(&fake), "web", wait));
    assert_eq!(ids(&stream.next_batch().await), ["snapshot[n1/web-1]"]);
    (fake, stream)
}

fn ids(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Snapshot(all) => {
                format!("snapshot[{}]", all.iter().map(|e| e.id().to_string()).collect::<Vec<_>>().join(","))
            }
            Change::Add(e) => format!("add {}", e.id()),
            Change::Update(e) => format!("update {}", e.id()),
            Change::Remove(id) => format!("remove {id}"),
        })
        .collect()
}

fn only_endpoint(changes: &[Change]) -> &Endpoint {
    match changes {
        [Change::Add(e) | Change::Update(e)] => e,
        other => panic!("expected one add or update, got {other:?}"),
    }
}

#[tokio::test]
async fn instances_added_or_removed_during_a_blocked_query_arrive_as_diffs() {
    let fake = FakeConsul::start().await;
    fake.put(Instance::passing("n1", "web-1", "web", 8001));
    fake.put(Instance::passing("n2", "web-2", "web", 8002).at("127.0.0.2"));
    fake.put(Instance::passing("n1", "db-1", "db", 5432));
    let mut stream = Events::spawn(watch(client(&fake), "web", Duration::from_secs(2)));

    assert_eq!(ids(&stream.next_batch().await), ["snapshot[n1/web-1,n2/web-2]"]);

    fake.until_blocked(1).await;
    fake.put(Instance::passing("n3", "web-3", "web", 8003));
    let added = stream.next_batch().await;
    assert_eq!(ids(&added), ["add n3/web-3"]);
    assert_eq!(only_endpoint(&added).address().to_string(), "127.0.0.1:8003", "Node.Address fallback");

    fake.until_blocked(1).await;
    fake.remove("n1", "web-1");
    assert_eq!(ids(&stream.next_batch().await), ["remove n1/web-1"]);

    let requests = fake.requests();
    assert!(requests.iter().all(|r| !r.passing), "`passing` is never sent: warning instances must be seen");
    assert_eq!(requests[0].index, None, "the first query does not block");
    assert!(
        requests[1..].iter().all(|r| r.index.is_some() && r.wait.as_deref() == Some("2s")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn warning_instances_take_the_warning_weight_and_critical_ones_leave() {
    let fake = FakeConsul::start().await;
    fake.put(Instance::passing("n1", "web-1", "web", 8001));
    fake.put(Instance::passing("n2", "web-2", "web", 8002));
    let stream = changes(watch(client(&fake), "web", Duration::from_secs(2)));
    let mut snapshots = watch_snapshots(stream, ManualClock::new());
    tokio::time::timeout(WAIT, snapshots.changed()).await.unwrap().unwrap();
    assert_eq!(snapshots.borrow_and_update().total_weight(), 20);

    fake.set_check("n1", "web-1", "service:web-1", "warning");
    tokio::time::timeout(WAIT, snapshots.changed()).await.unwrap().unwrap();
    {
        let set = snapshots.borrow_and_update();
        let warned = set.get(0).unwrap();
        assert_eq!(warned.endpoint().weight(), 1, "Weights.Warning");
        assert_eq!(warned.endpoint().discovery_health(), lb_core::DiscoveryHealth::Warning);
        assert_eq!(warned.state().status(), HealthStatus::Degraded, "still eligible, marked degraded");
        assert!(warned.state().is_eligible());
    }

    // A node check (serfHealth) going critical takes the instance out too.
    fake.set_check("n2", "web-2", "serfHealth", "critical");
    tokio::time::timeout(WAIT, snapshots.changed()).await.unwrap().unwrap();
    let ids: Vec<String> =
        snapshots.borrow_and_update().iter().map(|m| m.endpoint().id().to_string()).collect();
    assert_eq!(ids, ["n1/web-1"]);

    fake.set_check("n1", "web-1", "service:web-1", "passing");
    tokio::time::timeout(WAIT, snapshots.changed()).await.unwrap().unwrap();
    let set = snapshots.borrow_and_update().clone();
    assert_eq!(set.get(0).unwrap().endpoint().weight(), 10);
    assert_eq!(set.get(0).unwrap().state().status(), HealthStatus::Healthy, "the degraded flag cleared");
}

#[tokio::test]
async fn an_index_that_goes_backwards_resets_and_refetches() {
    let (fake, mut stream) = watching_web_1(Duration::from_secs(2)).await;
    let before = fake.index();

    // A snapshot restore: the index drops and the data changes.
    fake.until_blocked(1).await;
    fake.put(Instance::passing("n2", "web-2", "web", 8002));
    fake.set_index(3);
    assert_eq!(ids(&stream.next_batch().await), ["add n2/web-2"]);
    fake.until_blocked(1).await;

    let sent: Vec<Option<u64>> = fake.requests().iter().map(|r| r.index).collect();
    let reset_at = sent.iter().position(|&i| i == Some(1)).expect("an index=1 query after the reset");
    assert!(sent[..reset_at].iter().all(|&i| i.is_none() || i >= Some(before)), "{sent:?}");
    assert_eq!(sent.last(), Some(&Some(3)), "then it blocks on the new, lower index: {sent:?}");
}

#[tokio::test]
async fn index_zero_is_never_sent_in_the_loop() {
    let fake = FakeConsul::start().await;
    fake.put(Instance::passing("n1", "web-1", "web", 8001));
    fake.set_index(0);
    let mut stream = Events::spawn(watch(client(&fake), "web", Duration::from_millis(100)));
    assert_eq!(ids(&stream.next_batch().await), ["snapshot[n1/web-1]"]);
    // Each later query blocks for its whole wait (index 1 has not been passed).
    fake.until_answered(4).await;
    let sent: Vec<Option<u64>> = fake.requests().iter().map(|r| r.index).collect();
    assert_eq!(sent[0], None);
    assert!(sent[1..].iter().all(|&i| i == Some(1)), "clamped to 1, never 0: {sent:?}");
    assert!(stream.nothing_pending(), "nothing changed, nothing emitted");
}

#[tokio::test]
async fn a_wait_that_expires_without_change_emits_nothing() {
    let (fake, mut stream) = watching_web_1(Duration::from_millis(100)).await;
    fake.until_answered(3).await;
    let index = fake.index();
    assert!(
        fake.requests()[1..3].iter().all(|r| r.index == Some(index) && r.wait.as_deref() == Some("100ms"))
    );
    assert!(stream.nothing_pending(), "two expired waits, no event");
    fake.put(Instance::passing("n2", "web-2", "web", 8002));
    assert_eq!(ids(&stream.next_batch().await), ["add n2/web-2"]);
}

#[tokio::test]
async fn server_errors_back_off_and_never_empty_the_set() {
    let (fake, mut stream) = watching_web_1(Duration::from_secs(2)).await;

    fake.until_blocked(1).await;
    fake.fail_next(3);
    // The blocked query already passed the failure check: it returns the change.
    fake.put(Instance::passing("n2", "web-2", "web", 8002));
    assert_eq!(ids(&stream.next_batch().await), ["add n2/web-2"]);
    // The next three queries fail with 500 and back off; the fourth blocks again.
    fake.until_blocked(1).await;
    assert!(stream.nothing_pending(), "failures emit nothing, and never a removal");
    fake.put(Instance::passing("n3", "web-3", "web", 8003));
    assert_eq!(ids(&stream.next_batch().await), ["add n3/web-3"]);
    let failures = fake.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(failures, 3);
}

#[tokio::test]
async fn a_missing_token_is_refused_and_the_right_one_is_sent() {
    let fake = FakeConsul::start().await;
    fake.require_token("s3cr3t");
    fake.put(Instance::passing("n1", "web-1", "web", 8001));

    let mut anonymous = watch(client(&fake), "web", Duration::from_millis(100));
    let err = anonymous.next_list().await.unwrap().unwrap_err();
    assert!(matches!(err, ConsulError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("CONSUL_HTTP_TOKEN"), "the error says what to fix: {err}");
    let err = client(&fake).register(&Registration::new("x", "x", 1)).await.unwrap_err();
    assert!(matches!(err, ConsulError::Forbidden { .. }), "{err}");

    let config = ConsulConfig::new(&fake.address()).unwrap().with_token("s3cr3t");
    let authorized = ConsulClient::new(config).unwrap();
    let mut stream = Events::spawn(watch(authorized, "web", Duration::from_millis(100)));
    assert_eq!(ids(&stream.next_batch().await), ["snapshot[n1/web-1]"]);
    assert!(fake.requests().iter().any(|r| r.token.as_deref() == Some("s3cr3t") && r.status == 200));
}

#[tokio::test]
async fn tags_and_datacenter_filter_the_query() {
    let fake = FakeConsul::start().await;
    fake.put(Instance::passing("n1", "web-1", "web", 8001).tagged("canary").tagged("v2"));
    fake.put(Instance::passing("n2", "web-2", "web", 8002).tagged("v2"));
    let tagged =
        watch(client(&fake), "web", Duration::from_millis(100)).tag("canary").tag("v2").datacenter("dc1");
    assert_eq!(tagged.describe(), "consul service web in dc1");
    let mut stream = Events::spawn(tagged);
    assert_eq!(ids(&stream.next_batch().await), ["snapshot[n1/web-1]"]);
    let first = &fake.requests()[0];
    assert_eq!(first.dc.as_deref(), Some("dc1"));
    assert_eq!(first.filter.as_deref(), Some(r#""canary" in Service.Tags and "v2" in Service.Tags"#));

    let mut elsewhere = watch(client(&fake), "web", Duration::from_millis(100)).datacenter("dc9");
    let err = elsewhere.next_list().await.unwrap().unwrap_err();
    assert!(matches!(err, ConsulError::Status { status: 500, .. }), "{err}");
    assert!(err.to_string().contains("No path to datacenter"), "{err}");
}

#[tokio::test]
async fn a_registration_guard_announces_and_withdraws_the_service() {
    let fake = FakeConsul::start().await;
    let client = client(&fake);
    let registration = Registration::new("api-1", "api", 9000)
        .address("127.0.0.9")
        .tag("v1")
        .meta("version", "1.2.3")
        .weights(5, 1)
        .check(
            HttpCheck::new("http://127.0.0.9:9000/health", Duration::from_secs(2), Duration::from_secs(1))
                .deregister_critical_after(Duration::from_secs(60)),
        );
    let guard = client.register_guarded(&registration).await.unwrap();
    assert_eq!(guard.service_id(), "api-1");
    let stored = fake.instance("fake-node", "api-1").expect("registered");
    assert_eq!((stored.address.as_str(), stored.port, stored.weights), ("127.0.0.9", 9000, (5, 1)));
    let check = stored.check_definition.unwrap();
    assert_eq!(check["HTTP"], "http://127.0.0.9:9000/health");
    assert_eq!(check["Interval"], "2s");
    assert_eq!(check["DeregisterCriticalServiceAfter"], "60s");

    // Its check starts critical, so the watch sees nobody until it passes.
    let mut stream = Events::spawn(watch(client.clone(), "api", Duration::from_secs(2)));
    assert_eq!(ids(&stream.next_batch().await), ["snapshot[]"]);
    fake.until_blocked(1).await;
    fake.set_check("fake-node", "api-1", "service:api-1", "passing");
    let added = stream.next_batch().await;
    assert_eq!(only_endpoint(&added).address().to_string(), "127.0.0.9:9000");
    assert_eq!(only_endpoint(&added).meta().get("version").map(String::as_str), Some("1.2.3"));

    fake.until_blocked(1).await;
    guard.deregister().await.unwrap();
    assert_eq!(ids(&stream.next_batch().await), ["remove fake-node/api-1"]);

    // Dropping a guard deregisters too (spawned on the runtime).
    let dropped = client.register_guarded(&Registration::new("api-2", "api", 9001)).await.unwrap();
    assert!(fake.instance("fake-node", "api-2").is_some());
    drop(dropped);
    fake.until(|f| f.instance("fake-node", "api-2").is_none()).await;

    let err = client.deregister("never-registered").await.unwrap_err();
    assert!(matches!(err, ConsulError::Status { status: 404, .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_agent_is_a_transport_error() {
    let fake = FakeConsul::start().await;
    let address = fake.address();
    drop(fake);
    // The listener is gone once its task is aborted; give the abort a turn.
    tokio::task::yield_now().await;
    let config = ConsulConfig::new(&address).unwrap();
    let mut unreachable = watch(ConsulClient::new(config).unwrap(), "web", Duration::from_millis(100));
    let err = tokio::time::timeout(WAIT, unreachable.next_list()).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, ConsulError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn a_zero_wait_is_raised_so_consul_does_not_read_it_as_five_minutes() {
    let (fake, _stream) = watching_web_1(Duration::ZERO).await;
    fake.until_answered(2).await;
    assert_eq!(fake.requests()[1].wait.as_deref(), Some("10ms"));
}

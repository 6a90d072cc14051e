//! A view recovers a table written by someone else (tombstones, several versions of a key),
//! catches up with new writes, resumes from its stored offset after a restart, and keeps
//! serving while its connection is cut; an update callback decides how each message is
//! applied and sees its headers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goka::codec::StringCodec;
use goka::emitter::Emitter;
use goka::kafka::Headers;
use goka::storage::RocksDbBuilder;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::{DecodeErrorPolicy, View, ViewError, ViewState};
use goka::Partitioner;
use goka_tests::{client, produce_raw, TestBroker, TestClient};
use tokio_util::sync::CancellationToken;

goka::table!(Profiles = "profiles": String as StringCodec);
goka::table!(Counts = "counts": i64 as goka::codec::Int64Codec);

const PARTITIONS: u32 = 3;

fn partition(key: &str) -> i32 {
    goka::partitioner::GokaPartitioner.partition(key.as_bytes(), PARTITIONS)
}

/// Writes rows for `keys` to their goka partitions.
async fn write(broker: &TestBroker, rows: &[(&str, Option<&str>)]) {
    for (key, value) in rows {
        produce_raw(broker, "profiles", partition(key), &[(key, *value)]).await;
    }
}

/// A client of `broker`, which has the "profiles" table.
async fn profiles_table(broker: &TestBroker) -> TestClient {
    let client = client(broker);
    TopicManager::new(&*client, TopicManagerConfig::default())
        .expect("topic manager")
        .ensure_table("profiles", PARTITIONS)
        .await
        .expect("profiles table");
    client
}

async fn wait_for(what: &str, check: impl FnMut() -> bool) {
    goka_tests::eventually(Duration::from_secs(30), check, || what).await;
}

fn start(
    view: &View<Profiles>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ViewError>>,
) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let view = view.clone();
        let cancel = cancel.clone();
        async move { view.run(cancel).await }
    });
    (cancel, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_catches_up_and_resumes_from_the_stored_offset() {
    let broker = TestBroker::start();
    let client = profiles_table(&broker).await;
    write(
        &broker,
        &[
            ("alice", Some("v1")),
            ("bob", Some("b1")),
            ("alice", Some("v2")),
            ("carol", Some("c1")),
            ("bob", None),
            ("dave", Some("d1")),
        ],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let view = View::<Profiles>::builder(client.clone())
        .storage(RocksDbBuilder::new(dir.path()))
        .build()
        .await
        .unwrap();
    assert_eq!(view.state(), ViewState::Idle);
    let (cancel, task) = start(&view);
    assert_eq!(view.recovered().await, ViewState::Running);

    assert_eq!(
        view.get(&"alice".into()).unwrap().as_deref(),
        Some("v2"),
        "the latest version wins"
    );
    assert_eq!(
        view.get(&"bob".into()).unwrap(),
        None,
        "the tombstone deleted bob"
    );
    assert!(view.has(&"carol".into()).unwrap());
    let mut rows: Vec<_> = view.iter().map(Result::unwrap).collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("alice".into(), "v2".into()),
            ("carol".into(), "c1".into()),
            ("dave".into(), "d1".into())
        ]
    );
    let recovered_messages: u64 = view.stats().partitions.iter().map(|p| p.messages).sum();
    assert_eq!(recovered_messages, 6);

    // New writes arrive while running.
    write(&broker, &[("erin", Some("e1")), ("carol", None)]).await;
    wait_for("erin", || view.has(&"erin".into()).unwrap()).await;
    wait_for("carol's tombstone", || !view.has(&"carol".into()).unwrap()).await;
    let stats = view.stats();
    assert!(stats.partitions.iter().all(|p| p.lag == 0), "{stats:?}");

    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(view.state(), ViewState::Stopped);
    drop(view);

    // Restart on the same storage: only the new message is read.
    write(&broker, &[("frank", Some("f1"))]).await;
    let view = View::<Profiles>::builder(client.clone())
        .storage(RocksDbBuilder::new(dir.path()))
        .build()
        .await
        .unwrap();
    assert_eq!(
        view.get(&"alice".into()).unwrap().as_deref(),
        Some("v2"),
        "served from disk before running"
    );
    let (cancel, task) = start(&view);
    assert_eq!(view.recovered().await, ViewState::Running);
    assert_eq!(view.get(&"frank".into()).unwrap().as_deref(), Some("f1"));
    let consumed: u64 = view.stats().partitions.iter().map(|p| p.messages).sum();
    assert_eq!(
        consumed, 1,
        "resumed from the stored offset instead of re-reading all 9"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// Starts a view of "profiles", waits for its recovery, then cuts its connections and
/// refuses new ones until it reports `Reconnecting`.
async fn cut_off_after_recovery(
    client: &TestClient,
    proxy: &goka_tests::FaultProxy,
) -> (
    View<Profiles>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ViewError>>,
) {
    let view = View::<Profiles>::builder(client.clone())
        .build()
        .await
        .expect("view");
    let (cancel, task) = start(&view);
    view.recovered().await;
    proxy.set_mode(goka_tests::ProxyMode::Refuse);
    proxy.cut();
    let mut states = view.watch_state();
    tokio::time::timeout(
        Duration::from_secs(30),
        states.wait_for(|s| *s == ViewState::Reconnecting),
    )
    .await
    .expect("the view reports the lost connection")
    .expect("the view's state is watched");
    (view, cancel, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_while_cut_off_and_catches_up() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let client = profiles_table(&broker).await;
    write(&broker, &[("alice", Some("a1")), ("bob", Some("b1"))]).await;
    let (view, cancel, task) = cut_off_after_recovery(&client, proxy).await;
    assert_eq!(
        view.get(&"alice".into()).unwrap().as_deref(),
        Some("a1"),
        "still serving"
    );

    proxy.set_mode(goka_tests::ProxyMode::Forward);
    write(&broker, &[("alice", Some("a2")), ("carol", Some("c1"))]).await;
    wait_for("the catch-up", || {
        view.get(&"carol".into()).unwrap().is_some()
    })
    .await;
    assert_eq!(view.get(&"alice".into()).unwrap().as_deref(), Some("a2"));
    wait_for("the running state", || view.state() == ViewState::Running).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_stop_the_view_or_are_skipped_and_counted() {
    let broker = TestBroker::start();
    let client = client(&broker);
    TopicManager::new(&*client, TopicManagerConfig::default())
        .unwrap()
        .ensure_table("counts", 1)
        .await
        .unwrap();
    produce_raw(
        &broker,
        "counts",
        0,
        &[
            ("a", Some("1")),
            ("b", Some("not a number")),
            ("c", Some("3")),
        ],
    )
    .await;

    let view = View::<Counts>::builder(client.clone())
        .build()
        .await
        .unwrap();
    let err = view.run(CancellationToken::new()).await.unwrap_err();
    let text = err.to_string();
    for part in ["counts", "partition 0", "offset 1", "\"b\"", "not a number"] {
        assert!(text.contains(part), "{part} in {text}");
    }

    let view = View::<Counts>::builder(client.clone())
        .decode_errors(DecodeErrorPolicy::SkipAndCount)
        .build()
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (view, cancel) = (view.clone(), cancel.clone());
        async move { view.run(cancel).await }
    });
    view.recovered().await;
    assert_eq!(view.get(&"a".into()).unwrap(), Some(1));
    assert_eq!(view.get(&"b".into()).unwrap(), None);
    assert_eq!(view.get(&"c".into()).unwrap(), Some(3));
    assert_eq!(view.stats().partitions[0].decode_errors, 1);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

goka::stream!(ProfileWrites = "profiles": String as StringCodec);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_callback_applies_each_message_and_sees_its_headers() {
    let broker = TestBroker::start();
    let client = profiles_table(&broker).await;
    // Written as a stream only to put headers on the table's messages.
    let writer = Emitter::<ProfileWrites>::new(&*client).await.unwrap();
    let mut origin = Headers::new();
    origin.insert("origin", "import");
    for (key, value) in [("alice", "a1"), ("bob", "b1"), ("alice", "a2")] {
        writer
            .emit_with_headers(&key.into(), &value.into(), &origin)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    writer
        .emit_sync(&"carol".into(), &"c1".into())
        .await
        .unwrap();

    // The callback keeps only rows whose message came with an origin, upper-cased.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let view = View::<Profiles>::builder(client.clone())
        .update_callback({
            let seen = seen.clone();
            move |storage, message| {
                let origin = message.headers.get("origin").map(<[u8]>::to_vec);
                let key = String::from_utf8_lossy(&message.key).into_owned();
                seen.lock().unwrap().push((key, origin.clone()));
                match (&message.value, origin) {
                    (Some(value), Some(_)) => {
                        storage.set(&message.key, &value.to_ascii_uppercase())
                    }
                    _ => Ok(()),
                }
            }
        })
        .build()
        .await
        .unwrap();
    let (cancel, task) = start(&view);
    assert_eq!(view.recovered().await, ViewState::Running);
    assert_eq!(view.get(&"alice".into()).unwrap(), Some("A2".into()));
    assert_eq!(view.get(&"bob".into()).unwrap(), Some("B1".into()));
    assert_eq!(view.get(&"carol".into()).unwrap(), None);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let import = Some(b"import".to_vec());
    assert_eq!(
        seen,
        [
            ("alice".to_owned(), import.clone()),
            ("alice".to_owned(), import.clone()),
            ("bob".to_owned(), import),
            ("carol".to_owned(), None),
        ]
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_table_shows_running_again_once_the_cluster_is_back() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let client = profiles_table(&broker).await;
    write(&broker, &[("alice", Some("a1"))]).await;
    let (view, cancel, task) = cut_off_after_recovery(&client, proxy).await;

    // Nothing is written afterwards: no message can tell the view the cluster is back.
    proxy.set_mode(goka_tests::ProxyMode::Forward);
    goka_tests::eventually(
        Duration::from_secs(60),
        || view.state() == ViewState::Running,
        || format!("still {:?} with the cluster reachable", view.state()),
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_of_a_running_view_follows_the_changelog_while_it_falls_behind() {
    const ROWS: usize = 300;
    let broker = TestBroker::start();
    let client = profiles_table(&broker).await;
    // The row "gate" holds the view up until the test opens it.
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let view = View::<Profiles>::builder(client.clone())
        .update_callback({
            let open = open.clone();
            move |storage, message| {
                while message.key == b"gate" && !open.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                match &message.value {
                    Some(value) => storage.set(&message.key, value),
                    None => storage.delete(&message.key),
                }
            }
        })
        .build()
        .await
        .unwrap();
    let (cancel, task) = start(&view);
    assert_eq!(view.recovered().await, ViewState::Running);

    write(&broker, &[("gate", Some("g"))]).await;
    let keys: Vec<String> = (0..ROWS).map(|i| format!("user-{i}")).collect();
    let rows: Vec<(&str, Option<&str>)> = keys.iter().map(|k| (k.as_str(), Some("p"))).collect();
    for p in 0..PARTITIONS as i32 {
        let rows: Vec<_> = rows
            .iter()
            .filter(|(k, _)| partition(k) == p)
            .copied()
            .collect();
        produce_raw(&broker, "profiles", p, &rows).await;
    }
    let lag = |view: &View<Profiles>| view.stats().partitions.iter().map(|p| p.lag).sum::<i64>();
    goka_tests::eventually(
        Duration::from_secs(30),
        || lag(&view) >= ROWS as i64,
        || format!("the lag does not show the view behind: {:?}", view.stats()),
    )
    .await;

    open.store(true, std::sync::atomic::Ordering::Relaxed);
    goka_tests::eventually(
        Duration::from_secs(30),
        || {
            let applied: u64 = view.stats().partitions.iter().map(|p| p.messages).sum();
            applied == ROWS as u64 + 1 && lag(&view) == 0
        },
        || format!("not caught up: {:?}", view.stats()),
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_state_of_a_table_made_anew_stops_the_view_naming_where() {
    // The local state was read from one cluster's table...
    let dir = tempfile::tempdir().unwrap();
    let first = TestBroker::start();
    let client = profiles_table(&first).await;
    let keys = ["alice", "bob", "carol", "dave", "erin", "frank"];
    for round in 0..3 {
        let rows: Vec<_> = keys
            .iter()
            .map(|k| (*k, Some(["1", "2", "3"][round])))
            .collect();
        write(&first, &rows).await;
    }
    let view = View::<Profiles>::builder(client)
        .storage(RocksDbBuilder::new(dir.path()))
        .build()
        .await
        .unwrap();
    let (cancel, task) = start(&view);
    assert_eq!(view.recovered().await, ViewState::Running);
    let stored: Vec<_> = view.stats().partitions.iter().map(|p| p.offset).collect();
    cancel.cancel();
    task.await.unwrap().unwrap();
    drop(view);
    drop(first);

    // ...and the table the view reads now was made anew, with one row.
    let second = TestBroker::start();
    let client = profiles_table(&second).await;
    write(&second, &[("alice", Some("new"))]).await;
    let view = View::<Profiles>::builder(client)
        .storage(RocksDbBuilder::new(dir.path()))
        .build()
        .await
        .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(30), view.run(CancellationToken::new()));
    let error = run.await.expect("an error, not a hang").unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            &error,
            ViewError::Kafka {
                topic: "profiles",
                source: goka::kafka::KafkaError::LocalStateAhead { .. }
            }
        ),
        "{text}"
    );
    let ViewError::Kafka {
        source:
            goka::kafka::KafkaError::LocalStateAhead {
                partition,
                stored: offset,
                high,
                ..
            },
        ..
    } = &error
    else {
        unreachable!()
    };
    assert_eq!(Some(*offset), stored[*partition as usize], "{text}");
    let new_rows = usize::from(*partition == self::partition("alice"));
    assert_eq!(*high, new_rows as i64, "{text}");
    for part in [
        format!("partition {partition}"),
        format!("offset {offset}"),
        format!("high watermark {high}"),
        "delete the local state".to_owned(),
    ] {
        assert!(text.contains(&part), "{part} in {text}");
    }
    assert_eq!(
        view.get(&"alice".into()).unwrap().as_deref(),
        Some("3"),
        "nothing of the new table was mixed into the old rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_told_not_to_reconnect_stops_run_naming_the_partition() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let client = profiles_table(&broker).await;
    write(&broker, &[("alice", Some("a1"))]).await;
    let view = View::<Profiles>::builder(client.clone())
        .auto_reconnect(false)
        .build()
        .await
        .expect("view");
    let (_cancel, task) = start(&view);
    view.recovered().await;
    proxy.set_mode(goka_tests::ProxyMode::Refuse);
    proxy.cut();
    let outcome = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("run stops by itself")
        .unwrap();
    let error = outcome.unwrap_err();
    assert!(
        matches!(
            error,
            ViewError::Disconnected {
                topic: "profiles",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("lost its connection"), "{error}");
    assert_eq!(
        view.get(&"alice".into()).unwrap().as_deref(),
        Some("a1"),
        "the rows it had are still there"
    );
}

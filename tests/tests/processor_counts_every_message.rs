//! The counter of `goka_tests::counter` (hand-written `Group` and `Handlers`, the traits the
//! macro implements) keeps exact counts end to end, commits what it did so a restart does
//! not count twice, and stops with the coordinates of a failing or undecodable message.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use goka::codec::StringCodec;
use goka::context::{CallbackError, Context};
use goka::graph::{EdgeKind, GroupGraph};
use goka::processor::{Group, GroupTable, Handlers, Processor, ProcessorConfig};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::{DecodeErrorPolicy, View, ViewState};
use goka_tests::{produce_raw, TestBroker, TestClient};
use tokio_util::sync::CancellationToken;

use goka_tests::counter::{
    emit, setup, start, view_of_counts, wait_for_counts, Clicks, Counter, PARTITIONS,
};
use goka_tests::string_edge as edge;

/// Runs a processor of `group` with the default config until it stops by itself; returns its
/// error message.
async fn run_until_error<P: Handlers>(group: P, client: &TestClient) -> String {
    let processor = Processor::new(group, client.clone(), goka_tests::from_oldest());
    goka_tests::run_until_error(&processor).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_and_survive_a_restart() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let mut expected = emit(&emitter, 0..2_000, 50).await;

    let processor = Arc::new(Processor::new(
        Counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let (cancel, task) = start(&processor);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), processor.recovered())
            .await
            .unwrap(),
        goka::processor::ProcessorState::Running
    );
    let view = View::<GroupTable<Counter>>::builder(client.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(GroupTable::<Counter>::NAME, "counter-table");
    let view_running = goka_tests::spawn_view(&view);
    assert_eq!(view.recovered().await, ViewState::Running);
    wait_for_counts(&view, &expected).await;
    assert_eq!(
        processor.get(&"user-7".to_string()).unwrap(),
        Some(40),
        "Processor::get reads local state"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();

    // A new instance (fresh in-memory storage) recovers the table from its changelog and
    // resumes after the committed offsets: nothing is counted twice.
    let more = emit(&emitter, 2_000..2_300, 50).await;
    for (k, v) in more {
        *expected.get_mut(&k).unwrap() += v;
    }
    let processor = Arc::new(Processor::new(
        Counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let (cancel, task) = start(&processor);
    wait_for_counts(&view, &expected).await;
    assert_eq!(
        processor.stats().messages_in,
        300,
        "only the new messages were handled"
    );
    // Each partition recovered its part of the 2,000 changelog writes.
    let partitions = processor.partition_stats();
    assert_eq!(partitions.len(), PARTITIONS as usize);
    let mut recovered = 0;
    for p in &partitions {
        let [table] = p.tables.as_slice() else {
            panic!("one table recovered per partition: {p:?}");
        };
        assert_eq!(
            (table.topic, table.partition),
            ("counter-table", p.partition)
        );
        assert!(table.recovery.finished, "{p:?}");
        assert_eq!(table.remaining(), Some(0));
        assert_eq!(table.state, goka::table::TableState::Running, "{p:?}");
        recovered += table.recovery.messages;
    }
    assert_eq!(recovered, 2_000, "{partitions:?}");
    cancel.cancel();
    task.await.unwrap().unwrap();
    view_running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_stops_run_with_coordinates() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    emitter
        .emit_sync(&"alice".to_string(), &"fine".to_string())
        .await
        .unwrap();
    let boom = emitter
        .emit_sync(&"bob".to_string(), &"boom".to_string())
        .await
        .unwrap();

    let text = run_until_error(Counter, &client).await;
    for part in [
        "counter".to_string(),
        "clicks".to_string(),
        format!("partition {}", boom.partition),
        format!("offset {}", boom.offset),
        "\"bob\"".to_string(),
        "went boom".to_string(),
    ] {
        assert!(text.contains(&part), "{part} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_value_stops_run_or_is_skipped_and_counted() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let partition = goka::topic::partition_of::<Clicks>(
        &"carol".to_string(),
        PARTITIONS,
        &goka::partitioner::GokaPartitioner,
    )
    .unwrap();
    produce_raw(&broker, "clicks", partition, &[("carol", Some("ok"))]).await;
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = goka_tests::rdkafka_config(&broker).create().unwrap();
        producer
            .send(
                FutureRecord::to("clicks")
                    .partition(partition)
                    .key("carol")
                    .payload(&[0xffu8, 0xfe][..]),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    emitter
        .emit_sync(&"carol".to_string(), &"ok again".to_string())
        .await
        .unwrap();

    let text = run_until_error(Counter, &client).await;
    for part in [
        "clicks",
        &format!("partition {partition}"),
        "offset 1",
        "\"carol\"",
        "does not decode",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }

    let config = ProcessorConfig {
        decode_errors: Some(DecodeErrorPolicy::SkipAndCount),
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(Counter, client.clone(), config));
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (processor, cancel) = (processor.clone(), cancel.clone());
        async move { processor.run(cancel).await }
    });
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.get(&"carol".to_string()).unwrap() == Some(2),
        || {
            format!(
                "carol was not counted twice: {:?}, {:?}, {:?}",
                processor.get(&"carol".to_string()),
                processor.stats(),
                processor.partitions()
            )
        },
    )
    .await;
    assert_eq!(processor.stats().decode_errors, 1);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// Joins a table with a different partition count than its input.
struct Mismatched;

goka::table!(Profiles = "profiles": String as StringCodec);

impl Group for Mismatched {
    const GRAPH: GroupGraph = GroupGraph {
        inputs: &[edge(EdgeKind::Input, "clicks", "string")],
        joins: &[edge(EdgeKind::Join, "profiles", "string")],
        ..GroupGraph::new("mismatched")
    };
    type Key = String;
    type KeyCodec = StringCodec;
}

impl Handlers for Mismatched {
    fn dispatch<'a>(
        &'a self,
        _ctx: &'a mut Context<'_, Self>,
        _value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        Box::pin(async { Err("no message may reach this processor".into()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copartitioning_mismatch_is_reported_before_consuming() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    emitter
        .emit_sync(&"alice".to_string(), &"x".to_string())
        .await
        .unwrap();
    TopicManager::new(&*client, TopicManagerConfig::default())
        .unwrap()
        .ensure_table(Profiles::NAME, 3)
        .await
        .unwrap();
    let processor = Processor::new(Mismatched, client.clone(), goka_tests::from_oldest());
    let err = processor.run(CancellationToken::new()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"clicks\" has 4") && text.contains("\"profiles\" has 3"),
        "{text}"
    );
    assert_eq!(processor.stats().messages_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_partitions_and_one_takes_over() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let mut expected = emit(&emitter, 0..1_000, 40).await;

    let first = Arc::new(Processor::new(
        Counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let (first_cancel, first_task) = start(&first);
    tokio::time::timeout(Duration::from_secs(60), first.recovered())
        .await
        .unwrap();
    let second = Arc::new(Processor::new(
        Counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let (second_cancel, second_task) = start(&second);

    // After the rebalance each instance owns part of the partitions, none twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (first.partitions(), second.partitions());
        if !a.is_empty() && !b.is_empty() && a.len() + b.len() == PARTITIONS as usize {
            assert!(
                a.keys().all(|p| !b.contains_key(p)),
                "{a:?} and {b:?} overlap"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no split: {a:?} / {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (view, view_running) = view_of_counts(&client).await;
    wait_for_counts(&view, &expected).await;

    // Stop the first instance; the second takes over every partition and keeps counting.
    first_cancel.cancel();
    first_task.await.unwrap().unwrap();
    let more = emit(&emitter, 1_000..1_500, 40).await;
    for (k, v) in more {
        *expected.get_mut(&k).unwrap() += v;
    }
    wait_for_counts(&view, &expected).await;
    assert_eq!(
        second.partitions().len(),
        PARTITIONS as usize,
        "the survivor owns everything"
    );

    second_cancel.cancel();
    second_task.await.unwrap().unwrap();
    view_running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cuts_do_not_stop_the_processor_or_lose_messages() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let (client, emitter) = setup(&broker).await;
    let processor = Arc::new(Processor::new(
        Counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let (cancel, task) = start(&processor);
    tokio::time::timeout(Duration::from_secs(60), processor.recovered())
        .await
        .unwrap();

    let mut expected: HashMap<String, i64> = HashMap::new();
    for round in 0..4u32 {
        for (k, v) in emit(&emitter, round * 500..(round + 1) * 500, 30).await {
            *expected.entry(k).or_insert(0) += v;
        }
        proxy.cut();
        if round == 2 {
            proxy.set_mode(goka_tests::ProxyMode::Refuse);
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.set_mode(goka_tests::ProxyMode::Forward);
        }
    }
    assert!(
        proxy.accepted() > 4,
        "clients reconnected through the proxy"
    );

    // Every emitted message is counted; producer retries may add duplicates, never losses.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let short: Vec<_> = expected
            .iter()
            .filter(|(k, v)| processor.get(k).unwrap().unwrap_or(0) < **v)
            .map(|(k, _)| k.clone())
            .collect();
        if short.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "keys still short after the cuts: {short:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !task.is_finished(),
        "the processor kept running through the cuts"
    );
    let counted: i64 = expected
        .keys()
        .map(|k| processor.get(k).unwrap().unwrap_or(0))
        .sum();
    println!(
        "2000 emitted, {counted} counted, {} duplicates",
        counted - 2000
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}

const CHILD_BROKERS: &str = "GOKA_COUNTER_CHILD_BROKERS";
const CHILD_STORAGE: &str = "GOKA_COUNTER_CHILD_STORAGE";

/// Run by `killed_instances_lose_nothing` in a child process: counts until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of killed_instances_lose_nothing"]
async fn counter_child_runs_until_killed() {
    let (Ok(brokers), Ok(storage)) = (std::env::var(CHILD_BROKERS), std::env::var(CHILD_STORAGE))
    else {
        panic!("run by killed_instances_lose_nothing only");
    };
    let config = goka_tests::for_broker(
        goka::kafka::KafkaConfig::new(brokers).set("session.timeout.ms", "6000"),
        goka_tests::BrokerKind::current(),
    );
    let client = Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(config));
    let processor = Processor::new(
        Counter,
        client,
        ProcessorConfig {
            storage: Arc::new(goka::storage::RocksDbBuilder::new(storage)),
            ..goka_tests::from_oldest()
        },
    );
    processor.run(CancellationToken::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instances_lose_nothing() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let storage = tempfile::tempdir().unwrap();
    let spawn_child = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "counter_child_runs_until_killed"])
            .env(CHILD_BROKERS, broker.bootstrap())
            .env(CHILD_STORAGE, storage.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };

    // Emit in the background while the child is killed at points that fall mid-stream.
    let emitting = tokio::spawn(async move {
        let mut expected: HashMap<String, i64> = HashMap::new();
        for chunk in 0..40u32 {
            for (k, v) in emit(&emitter, chunk * 100..(chunk + 1) * 100, 25).await {
                *expected.entry(k).or_insert(0) += v;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        expected
    });
    let mut child = spawn_child();
    for kill in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(4_000 + 700 * kill)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn_child();
    }
    let expected = emitting.await.unwrap();

    let (view, view_running) = view_of_counts(&client).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let counted = loop {
        let rows: HashMap<String, i64> = view.iter().map(Result::unwrap).collect();
        let short: Vec<_> = expected
            .iter()
            .filter(|(k, v)| rows.get(*k).copied().unwrap_or(0) < **v)
            .collect();
        if short.is_empty() {
            break rows.values().sum::<i64>();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lost messages: {short:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "4000 emitted, {counted} counted after 5 kills: {} duplicates",
        counted - 4000
    );
    view_running.stop().await;
}

/// Emits three clicks, a tombstone and one more click for "alice", and a click with an empty
/// key; returns what the processor counted for "alice" and for "" under `nil_handling`.
async fn count_with_nil_handling(
    nil_handling: goka::processor::NilHandling,
) -> (Option<i64>, Option<i64>) {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let alice = "alice".to_string();
    for _ in 0..3 {
        emitter
            .emit_sync(&alice, &"click".to_string())
            .await
            .unwrap();
    }
    emitter.emit_tombstone(&alice).await.unwrap().await.unwrap();
    emitter
        .emit_sync(&alice, &"click".to_string())
        .await
        .unwrap();
    emitter
        .emit_sync(&String::new(), &"anonymous".to_string())
        .await
        .unwrap();

    let config = ProcessorConfig {
        nil_handling: Some(nil_handling),
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(Counter, client.clone(), config));
    let (cancel, task) = start(&processor);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Five messages on alice's partition (four with a value), one on the empty key's: all
    // six done, that is written and acknowledged (`messages_in` counts a message as its
    // handling starts, before its row is written).
    let done = |processor: &Processor<Counter>| -> i64 {
        processor.done_offsets().iter().map(|o| o.offset).sum()
    };
    while done(&processor) < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every message was done: {:?} {:?}",
            processor.done_offsets(),
            processor.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = (
        processor.get(&alice).unwrap(),
        processor.get(&String::new()).unwrap(),
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_on_inputs_follow_the_nil_handling_and_empty_keys_are_keys() {
    use goka::processor::NilHandling;
    assert_eq!(
        count_with_nil_handling(NilHandling::Ignore).await,
        (Some(4), Some(1)),
        "ignored"
    );
    // Process hands the handler no value; this handler counts it like any click.
    assert_eq!(
        count_with_nil_handling(NilHandling::Process).await,
        (Some(5), Some(1)),
        "processed"
    );
    assert_eq!(
        count_with_nil_handling(NilHandling::Restore).await,
        (Some(1), Some(1)),
        "row deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_partition_queues_stop_fetching_and_resume_without_losing_messages() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let expected = emit(&emitter, 0..3_000, 20).await;
    // A queue of a few messages: the client stops and resumes fetching all the time.
    let config = ProcessorConfig {
        partition_queue: 50,
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(Counter, client.clone(), config));
    let running = goka_tests::Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counted: HashMap<String, i64> = expected
            .keys()
            .filter_map(|k| processor.get(k).unwrap().map(|v| (k.clone(), v)))
            .collect();
        if counted == expected {
            break;
        }
        assert!(
            !running.is_finished(),
            "the processor stopped: {:?}",
            processor.state()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "counts did not converge: {counted:?}, {:?}, {:?}",
            processor.stats(),
            processor.partitions()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        processor.stats().messages_in,
        3_000,
        "every message handled exactly once"
    );
    running.stop().await;
}

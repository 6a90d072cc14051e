//! Hostile input on a real broker: oversized values, very long keys, a locked local table
//! directory and a table topic without compaction. Each gets a clear error naming what is
//! wrong, nothing panics, and what was processed before stays processed.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use goka::codec::{BytesCodec, Int64Codec};
use goka::context::{CallbackError, Context};
use goka::emitter::{EmitError, Emitter};
use goka::processor::{GroupTable, Processor, ProcessorConfig};
use goka::storage::{RocksDbBuilder, StorageBuilder};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::{client, run_until_error, TestBroker, TestClient};
use tokio_util::sync::CancellationToken;

goka::stream!(Blobs = "hostile-blobs": Vec<u8> as BytesCodec);
goka::stream!(Echoes = "hostile-echoes": Vec<u8> as BytesCodec);

/// librdkafka's default `message.max.bytes` is 1,000,000: a 2 MiB value cannot be produced.
const OVERSIZED: usize = 2 * 1024 * 1024;
/// A key far longer than any sensible key, still within the message size limit.
const LONG_KEY: usize = 100_000;

const PARTITIONS: u32 = 2;

/// Counts values per key, and echoes each value to `hostile-echoes` ten times over: a value
/// of more than 100 KB makes an echo too large to produce.
#[goka::processor(group = "hostile-counter")]
#[input(topic = Blobs, handler = Self::on_blob)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Echoes)]
struct Counter;

impl Counter {
    fn on_blob(&self, ctx: &mut Context<'_, Self>, blob: Vec<u8>) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let echo = blob.repeat(10);
        let key = ctx.key().clone();
        ctx.emit::<Echoes>(&key, &echo)
    }
}

async fn setup(broker: &TestBroker) -> (TestClient, Emitter<Blobs>) {
    let client = client(broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    manager
        .ensure_stream(Echoes::NAME, PARTITIONS)
        .await
        .unwrap();
    let emitter = Emitter::<Blobs>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap();
    (client, emitter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_is_refused_with_topic_and_key_and_nothing_else_is_lost() {
    let broker = TestBroker::start();
    let (_client, emitter) = setup(&broker).await;
    emitter
        .emit_sync(&"before".into(), &vec![1; 10])
        .await
        .unwrap();
    let error = match emitter.emit(&"huge".into(), &vec![0; OVERSIZED]).await {
        Err(e) => e,
        Ok(delivery) => delivery.await.expect_err("a 2 MiB value is refused"),
    };
    let text = error.to_string();
    assert!(matches!(error, EmitError::Delivery { .. }), "{error:?}");
    assert!(
        text.contains("hostile-blobs") && text.contains("huge") && text.contains("too large"),
        "{text}"
    );
    emitter
        .emit_sync(&"after".into(), &vec![2; 10])
        .await
        .unwrap();
    let stats = emitter.stats();
    assert_eq!((stats.messages, stats.errors), (2, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_keys_are_processed_and_an_oversized_emit_stops_the_processor_with_the_input() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let long_key = "k".repeat(LONG_KEY);
    emitter.emit_sync(&long_key, &vec![1; 10]).await.unwrap();
    emitter.emit_sync(&long_key, &vec![2; 10]).await.unwrap();

    let processor = Arc::new(Processor::new(
        Counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let task = tokio::spawn({
        let processor = processor.clone();
        async move { processor.run(CancellationToken::new()).await }
    });
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.get(&long_key).unwrap() == Some(2),
        || "the long key was not counted twice",
    )
    .await;

    // Its echo (10 x 200 KB) is over the producer's message size limit.
    emitter
        .emit_sync(&"big-echo".into(), &vec![3; 200_000])
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("run stops by itself")
        .unwrap()
        .expect_err("run fails")
        .to_string();
    assert!(
        error.contains("hostile-counter")
            && error.contains("topic \"hostile-blobs\"")
            && error.contains("offset ")
            && error.contains("(key \"big-echo\")")
            && error.contains("hostile-echoes")
            && error.contains("too large"),
        "{error}"
    );

    // What was done before stays done: the long key's count is in the changelog.
    let (view, running) = goka_tests::running_view::<GroupTable<Counter>>(&client).await;
    goka_tests::eventually(
        Duration::from_secs(30),
        || view.get(&long_key).unwrap() == Some(2),
        || {
            format!(
                "the changelog lost the long key's count: {:?}",
                view.get(&long_key).unwrap()
            )
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_directory_stops_run_naming_the_path() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    for i in 0..10u8 {
        emitter
            .emit_sync(&format!("user-{i}"), &vec![i; 10])
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let builder = RocksDbBuilder::new(dir.path());
    // Another process (here: another handle) holds every partition's directory.
    let held: Vec<_> = (0..PARTITIONS as i32)
        .map(|p| builder.build("hostile-counter-table", p).unwrap())
        .collect();
    let config = ProcessorConfig {
        storage: Arc::new(RocksDbBuilder::new(dir.path())),
        ..goka_tests::from_oldest()
    };
    let processor = Processor::new(Counter, client.clone(), config);
    let error = run_until_error(&processor).await;
    assert!(
        error.contains("hostile-counter")
            && error.contains(&dir.path().display().to_string())
            && error.contains("lock"),
        "{error}"
    );
    assert_eq!(processor.stats().messages_in, 0, "nothing was handled");
    drop(held);

    // Once the directory is free, the same processor counts everything.
    let processor = Arc::new(Processor::new(
        Counter,
        client,
        ProcessorConfig {
            storage: Arc::new(RocksDbBuilder::new(dir.path())),
            ..goka_tests::from_oldest()
        },
    ));
    let running = goka_tests::Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.stats().messages_in >= 10,
        || "the processor did not count",
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_topic_without_compaction_stops_run_before_consuming() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    emitter
        .emit_sync(&"user".into(), &vec![1; 10])
        .await
        .unwrap();
    // Someone created the group table as a plain (deleting) topic.
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    manager
        .ensure_stream("hostile-counter-table", PARTITIONS)
        .await
        .unwrap();
    let processor = Processor::new(Counter, client.clone(), goka_tests::from_oldest());
    let error = run_until_error(&processor).await;
    assert!(
        error.contains("hostile-counter-table") && error.contains("cleanup.policy=compact"),
        "{error}"
    );
    assert_eq!(processor.stats().messages_in, 0, "nothing was consumed");
}

//! Stateful count through one processor instance (read-modify-write of one row per message,
//! changelog write, commit) side by side with a bare rdkafka loop that consumes the same input
//! and produces one message per input message. Target ratio: 0.8.
//!
//! `cargo bench -p goka-tests --bench processor` (1,000,000 messages, 100-byte values, 10,000
//! keys, 8 partitions; `-- --messages N` and `-- --partitions N` for other shapes). Under `cargo test --all-targets`
//! it runs a small smoke size.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use goka::codec::{BytesCodec, Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::graph::{EdgeKind, GroupGraph};
use goka::processor::{Group, PartitionState, Processor, ProcessorConfig, Stateful};
use goka::storage::RocksDbBuilder;
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::bench::{mib, rss_bytes, send_waiting, verdict, RssSampler};
use goka_tests::{client, rdkafka_config, string_edge as edge, Running, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

goka::stream!(Input = "bench-input": Vec<u8> as BytesCodec);

/// Input partitions unless `--partitions N` says otherwise.
const PARTITIONS: u32 = 8;
const KEYS: usize = 10_000;

/// The count; `UNORDERED` runs it in a group of its own with several produce requests in
/// flight per connection, which lets retries reorder a key's changelog writes (what the
/// default of one request in flight rules out), to show what that order costs.
struct Count<const UNORDERED: bool>;

impl<const UNORDERED: bool> Group for Count<UNORDERED> {
    const GRAPH: GroupGraph = GroupGraph {
        group: if UNORDERED {
            "bench-count-unordered"
        } else {
            "bench-count"
        },
        inputs: &[edge(EdgeKind::Input, "bench-input", "bytes")],
        joins: &[],
        lookups: &[],
        outputs: &[],
        loopback: None,
        table: Some(if UNORDERED {
            edge(EdgeKind::Persist, "bench-count-unordered-table", "int64")
        } else {
            edge(EdgeKind::Persist, "bench-count-table", "int64")
        }),
    };
    type Key = String;
    type KeyCodec = StringCodec;

    fn dispatch<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        _value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        Box::pin(async move {
            let count = ctx.value()?.unwrap_or(0);
            ctx.set_value(&(count + 1))
        })
    }
}

impl<const UNORDERED: bool> Stateful for Count<UNORDERED> {
    type Value = i64;
    type ValueCodec = Int64Codec;
}

fn main() {
    let messages = goka_tests::bench_size("messages", 1_000_000, 20_000);
    let partitions = goka_tests::bench_size("partitions", PARTITIONS as usize, PARTITIONS as usize);
    goka_tests::bench_runtime(run(messages, partitions as u32));
}

async fn run(messages: usize, partitions: u32) {
    let broker = TestBroker::start();
    let client = client(&broker);
    // Quix Streams reads `retention.ms` back from the topic's configs: set it explicitly.
    let mut topics = TopicManagerConfig::default();
    topics
        .stream_config
        .insert("retention.ms".into(), "604800000".into());
    let manager = TopicManager::new(&*client, topics).expect("topic manager");
    manager
        .ensure_stream(Input::NAME, partitions)
        .await
        .expect("input topic");
    manager
        .ensure_stream("bench-bare-out", partitions)
        .await
        .expect("output topic");
    goka_tests::bench::fill_stream(&broker, Input::NAME, partitions, messages, KEYS);
    println!("processor bench: {messages} messages, 100-byte values, {KEYS} keys, {partitions} partitions");
    println!("{:<48} {:>12} {:>9}", "", "messages/s", "seconds");

    let (bare, bare_joined) = bare_loop(&broker, messages);
    report("bare rdkafka consume -> produce loop", messages, bare);
    println!(
        "{:<48} {:>12} {:>9.2}",
        "  bare: joining the group (first message)",
        "",
        bare_joined.as_secs_f64()
    );
    let bare_handling = (bare - bare_joined).as_secs_f64();
    println!(
        "{:<48} {:>12.0} {bare_handling:>9.2}",
        "  bare: after the first message",
        messages as f64 / bare_handling
    );
    let (ours, ours_joined, rss) = processor_count(Count::<false>, client, messages).await;
    report(
        "Processor: stateful count (RocksDB, commits)",
        messages,
        ours,
    );
    let ratio_bare = bare.as_secs_f64() / ours.as_secs_f64();
    println!(
        "{:<48} {:>12.2}  {}",
        "ratio Processor / bare (target >= 0.8)",
        ratio_bare,
        verdict(ratio_bare, 0.8)
    );
    println!(
        "{:<48} {:>12.2}",
        "ratio after the first message, each side",
        (bare - bare_joined).as_secs_f64() / (ours - ours_joined).as_secs_f64()
    );
    println!(
        "{:<48} {:>12} {:>9}",
        "Processor resident memory (MiB): before, peak",
        format!("{:.0}", mib(rss.0)),
        format!("{:.0}", mib(rss.1))
    );
    let unordered_client: goka_tests::TestClient =
        std::sync::Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(
            goka_tests::config(&broker).set("max.in.flight.requests.per.connection", "5"),
        ));
    let (unordered, _, _) = processor_count(Count::<true>, unordered_client, messages).await;
    report(
        "Processor, 5 produce requests in flight (unordered)",
        messages,
        unordered,
    );
    let ratio_order = unordered.as_secs_f64() / ours.as_secs_f64();
    println!(
        "{:<48} {:>12.2}",
        "ratio ordered (default) / unordered", ratio_order
    );
    let mut figures = vec![
        ("ratio_ordered_unordered", ratio_order),
        ("messages", messages as f64),
        ("processor_rss_before_mib", mib(rss.0)),
        ("processor_rss_peak_mib", mib(rss.1)),
        ("bare_per_s", messages as f64 / bare.as_secs_f64()),
        ("processor_per_s", messages as f64 / ours.as_secs_f64()),
        ("ratio", bare.as_secs_f64() / ours.as_secs_f64()),
    ];
    if let Some((quix, quix_first)) = quix_count(&broker, messages) {
        report("Quix Streams 3.28.1: stateful count", messages, quix);
        report("  Quix: after the first message", messages, quix_first);
        let ratio = quix.as_secs_f64() / ours.as_secs_f64();
        let ratio_first = quix_first.as_secs_f64() / (ours - ours_joined).as_secs_f64();
        println!(
            "{:<48} {:>12.2}  {}",
            "ratio Processor / Quix Streams (target >= 5)",
            ratio,
            verdict(ratio, 5.0)
        );
        println!(
            "{:<48} {:>12.2}",
            "  the same, after the first message each", ratio_first
        );
        figures.push(("quix_per_s", messages as f64 / quix.as_secs_f64()));
        figures.push(("ratio_quix", ratio));
        figures.push(("ratio_quix_after_first", ratio_first));
    }
    goka_tests::bench_json("processor", &figures);
}

/// The same count in Quix Streams, when `GOKA_QUIX_PYTHON` names a Python with
/// `quixstreams` installed (`scripts/bench.sh` sets one up).
fn quix_count(broker: &TestBroker, messages: usize) -> Option<(Duration, Duration)> {
    let python = std::env::var("GOKA_QUIX_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench/quix_count.py"
    );
    let state = tempfile::tempdir().expect("quix state dir");
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(broker.bootstrap())
        .arg(Input::NAME)
        .arg(messages.to_string())
        .arg(state.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Quix Streams count failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let figures: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("quix printed {line:?}: {e}"));
    assert_eq!(
        figures["messages"].as_u64(),
        Some(messages as u64),
        "{line}"
    );
    let seconds = |name: &str| {
        figures[name]
            .as_f64()
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    Some((seconds("seconds"), seconds("after_first")))
}

fn report(name: &str, messages: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!("{name:<48} {:>12.0} {secs:>9.2}", messages as f64 / secs);
}

/// Consumes every input message as a member of a consumer group (as a hand-written
/// service would, paying the same group join as the processor) and produces one message per
/// input, then flushes.
fn bare_loop(broker: &TestBroker, messages: usize) -> (Duration, Duration) {
    let consumer: BaseConsumer = rdkafka_config(broker)
        .set("group.id", "bench-bare-loop")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    let producer: BaseProducer = rdkafka_config(broker).create().expect("producer");
    let start = Instant::now();
    consumer.subscribe(&[Input::NAME]).expect("subscribe");
    let mut seen = 0;
    let mut joined = None;
    while seen < messages {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        joined.get_or_insert_with(|| start.elapsed());
        let message = message.expect("bare consume");
        let key = message.key().unwrap_or_default();
        send_waiting(
            &producer,
            BaseRecord::to("bench-bare-out")
                .partition(message.partition())
                .key(key)
                .payload(message.payload().unwrap_or_default()),
        );
        seen += 1;
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    (start.elapsed(), joined.unwrap_or_default())
}

/// Runs the count over the backlog; returns the total time, the time to the first message
/// and the resident memory before the processor started and at its peak.
async fn processor_count<const UNORDERED: bool>(
    count: Count<UNORDERED>,
    client: goka_tests::TestClient,
    messages: usize,
) -> (Duration, Duration, (u64, u64)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ProcessorConfig {
        // The changelog is the table's source of truth: no WAL needed (as Kafka Streams).
        storage: std::sync::Arc::new(
            RocksDbBuilder::new(dir.path())
                .without_wal()
                .update_in_place(),
        ),
        ..Default::default()
    };
    let processor = std::sync::Arc::new(Processor::new(count, client, config));
    let rss_before = rss_bytes();
    let sampler = RssSampler::start();
    let start = Instant::now();
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    // Time from start (joining the group included, about 3 s on the test broker) until every
    // message was handled and its changelog write handed to the producer.
    let mut joined = None;
    while processor.stats().messages_in < messages as u64
        || processor.state() != PartitionState::Running
    {
        assert!(!running.is_finished(), "the processor stopped early");
        if joined.is_none() && processor.stats().messages_in > 0 {
            joined = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while processor.stats().messages_out < messages as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let rss_peak = sampler.stop().into_iter().max().unwrap_or(rss_before);
    running.stop().await;
    let joined = joined.unwrap_or_default();
    let handling = elapsed.saturating_sub(joined).as_secs_f64();
    println!(
        "{:<48} {:>12} {:>9.2}",
        "  Processor: joining the group (first message)",
        "",
        joined.as_secs_f64()
    );
    println!(
        "{:<48} {:>12.0} {handling:>9.2}",
        "  Processor: after the first message",
        messages as f64 / handling
    );
    (elapsed, joined, (rss_before, rss_peak))
}

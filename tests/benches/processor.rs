//! Stateful count through one processor instance (read-modify-write of one row per message,
//! changelog write, commit) side by side with a bare rdkafka loop that consumes the same input
//! and produces one message per input message, with Quix Streams' stateful count, and with
//! Kafka Streams' `groupByKey().count()` under `at_least_once` and `exactly_once_v2`, for
//! each partition count from 1 to 8. Targets: at least the bare loop's figure and twice Quix
//! Streams' and Kafka Streams' (at least once), after each side's first message, in every
//! shape.
//!
//! Our processor runs as the README shows it: `goka_tests::from_oldest()` (its table on
//! disk in RocksDB) and a client of `KafkaConfig::new(brokers)` with nothing tuned (on Tansu
//! with what `goka_tests::for_broker` adds for it); a second run keeps its table in memory
//! (`MemoryBuilder`), to show what the disk costs. Every side joins its consumer group with
//! a 10 s session timeout (goka's default): Quix Streams' default of 45 s makes Tansu hold
//! its group join for about 20 s, which would measure the broker, not the library.
//!
//! After the shapes, one restart each way, at the largest shape: the same instance's disk
//! (warm: recovery reads only what the table got since its stored offset) and an empty disk
//! (recovery reads the whole changelog), each time split into joining the group, recovering
//! the tables and the first message handled. Resident memory is the backlog bench's.
//!
//! `cargo bench -p goka-tests --bench processor` (1,000,000 messages, 100-byte values, 10,000
//! keys, 1, 2, 4 and 8 partitions; `-- --messages N` and `-- --partitions N` for one other
//! shape). Under `cargo test --all-targets` it runs a small smoke size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use goka::codec::{BytesCodec, Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::graph::{EdgeKind, GroupGraph};
use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::KafkaConfig;
use goka::processor::{Group, Handlers, PartitionState, Processor, ProcessorConfig, Stateful};
use goka::storage::{MemoryBuilder, RocksDbBuilder, StorageBuilder};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::bench::{send_waiting, streams_run, verdict, Guarantee, PeerRun, Run};
use goka_tests::{client, rdkafka_config, string_edge as edge, Running, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

goka::stream!(Input = "bench-input": Vec<u8> as BytesCodec);

const KEYS: usize = 10_000;
/// Every side's consumer group session timeout (goka's default).
const SESSION_TIMEOUT_MS: &str = "10000";

/// The count in one of four groups (each reads the whole input from the beginning): the
/// README run, the in-memory run, the exactly-once run and the restarts.
struct Count<const GROUP: usize>;

const README_RUN: usize = 0;
const MEMORY_RUN: usize = 1;
const RESTARTS: usize = 2;
const EXACTLY_ONCE_RUN: usize = 3;
const GROUPS: [(&str, &str); 4] = [
    ("bench-count", "bench-count-table"),
    ("bench-count-memory", "bench-count-memory-table"),
    ("bench-restart", "bench-restart-table"),
    ("bench-count-eos", "bench-count-eos-table"),
];

impl<const GROUP: usize> Group for Count<GROUP> {
    const GRAPH: GroupGraph = GroupGraph {
        inputs: &[edge(EdgeKind::Input, "bench-input", "bytes")],
        table: Some(edge(EdgeKind::Persist, GROUPS[GROUP].1, "int64")),
        ..GroupGraph::new(GROUPS[GROUP].0)
    };
    type Key = String;
    type KeyCodec = StringCodec;
}

impl<const GROUP: usize> Handlers for Count<GROUP> {
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

impl<const GROUP: usize> Stateful for Count<GROUP> {
    type Value = i64;
    type ValueCodec = Int64Codec;
}

/// The figures of one partition count.
struct Shape {
    partitions: u32,
    bare: Run,
    ours: Run,
    memory: Run,
    /// Ours under exactly-once, the README's defaults otherwise.
    eos: Run,
    quix: Option<Run>,
    streams: Option<PeerRun>,
    streams_eos: Option<PeerRun>,
}

fn main() {
    let messages = goka_tests::bench_size("messages", 1_000_000, 20_000);
    goka_tests::bench_runtime(run(messages, goka_tests::bench::bench_shapes()));
}

async fn run(messages: usize, shapes: Vec<u32>) {
    println!("processor bench: {messages} messages, 100-byte values, {KEYS} keys");
    let mut figures = vec![("messages", messages as f64)];
    let mut results = Vec::new();
    let last = shapes.last().copied().unwrap_or(1);
    for partitions in shapes {
        let broker = TestBroker::start();
        prepare_input(&broker, partitions, messages).await;
        println!("\n{partitions} partition(s)");
        println!(
            "{:<44} {:>10} {:>12} {:>12}",
            "", "first (s)", "after first", "overall"
        );
        let bare = bare_loop(&broker, messages);
        bare.report("bare rdkafka consume -> produce loop", messages);
        let dir = tempfile::tempdir().expect("temp dir");
        let ours = processor_count(
            Count::<README_RUN>,
            &broker,
            goka_tests::from_oldest(),
            messages,
        )
        .await;
        ours.report("Processor, as the README shows it", messages);
        let memory = processor_count(
            Count::<MEMORY_RUN>,
            &broker,
            ProcessorConfig {
                storage: Arc::new(MemoryBuilder),
                ..goka_tests::from_oldest()
            },
            messages,
        )
        .await;
        memory.report("Processor, table in memory", messages);
        let eos = processor_count(
            Count::<EXACTLY_ONCE_RUN>,
            &broker,
            ProcessorConfig {
                guarantee: goka::processor::Guarantee::ExactlyOnce,
                ..goka_tests::from_oldest()
            },
            messages,
        )
        .await;
        eos.report("Processor, exactly-once", messages);
        let quix = quix_count(&broker, messages);
        if let Some(quix) = quix {
            quix.report("Quix Streams 3.28.1 (session timeout 10 s)", messages);
        }
        let [streams, streams_eos] = [Guarantee::AtLeastOnce, Guarantee::ExactlyOnceV2].map(|g| {
            let run = streams_run(
                &broker,
                Input::NAME,
                messages,
                SESSION_TIMEOUT_MS,
                "count",
                g,
                None,
            );
            if let Some(peer) = &run {
                peer.run
                    .report(&format!("Kafka Streams 4.4, {}", g.name()), messages);
            }
            run
        });
        if partitions == last {
            restarts(&broker, partitions, dir.path(), messages).await;
        }
        results.push(Shape {
            partitions,
            bare,
            ours,
            memory,
            eos,
            quix,
            streams,
            streams_eos,
        });
    }
    summary(&results, messages, &mut figures);
    goka_tests::bench_json("processor", &figures);
}

/// Creates the input topic and fills it with the backlog.
async fn prepare_input(broker: &TestBroker, partitions: u32, messages: usize) {
    let client = client(broker);
    // Quix Streams reads `retention.ms` back from the topic's configs: set it explicitly.
    let mut topics = TopicManagerConfig::default();
    topics
        .stream_config
        .insert("retention.ms".into(), "604800000".into());
    let manager = TopicManager::new(&*client, topics).expect("topic manager");
    for topic in [Input::NAME, "bench-bare-out"] {
        manager
            .ensure_stream(topic, partitions)
            .await
            .expect("bench topic");
    }
    goka_tests::bench::fill_stream(broker, Input::NAME, partitions, messages, KEYS);
}

/// The table of every shape, with the ratios the targets are about.
fn summary(results: &[Shape], messages: usize, figures: &mut Vec<(&'static str, f64)>) {
    println!("\nsummary, messages/s after each side's first message (overall in brackets)");
    println!(
        "{:>4} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "p",
        "bare loop",
        "ours (README)",
        "ours (memory)",
        "ours (EOS)",
        "Quix Streams",
        "KStreams ALOS",
        "KStreams EOSv2",
        "/bare",
        "/Quix",
        "/KS ALOS",
        "EOS/ALOS",
        "EOS/KS",
        "KS peak MiB"
    );
    let cell = |run: &Run| {
        format!(
            "{:.0} ({:.0})",
            run.after_first(messages),
            run.overall(messages)
        )
    };
    for shape in results {
        let ours = shape.ours.after_first(messages);
        let ratio_bare = ours / shape.bare.after_first(messages);
        let ratio_quix = shape.quix.map(|q| ours / q.after_first(messages));
        let ratio_streams = shape.streams.map(|k| ours / k.run.after_first(messages));
        let eos = shape.eos.after_first(messages);
        let eos_to_ours = eos / ours;
        let eos_to_streams = shape.streams_eos.map(|k| eos / k.run.after_first(messages));
        let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
        println!(
            "{:>4} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18} {:>8.2} {:>8} {:>8} {:>8.2} {:>8} {:>10}",
            shape.partitions,
            cell(&shape.bare),
            cell(&shape.ours),
            cell(&shape.memory),
            cell(&shape.eos),
            shape.quix.as_ref().map_or("-".into(), cell),
            shape.streams.as_ref().map_or("-".into(), |k| cell(&k.run)),
            shape
                .streams_eos
                .as_ref()
                .map_or("-".into(), |k| cell(&k.run)),
            ratio_bare,
            ratio(ratio_quix),
            ratio(ratio_streams),
            eos_to_ours,
            ratio(eos_to_streams),
            shape.streams.map_or("-".into(), |k| format!(
                "{:.0}",
                goka_tests::bench::mib(k.peak_rss)
            )),
        );
        let names = SHAPE_NAMES[shape.partitions.trailing_zeros().min(3) as usize];
        figures.push((names[0], ours));
        figures.push((names[1], ratio_bare));
        figures.push((names[4], eos_to_ours));
        if let Some(ratio) = eos_to_streams {
            figures.push((names[5], ratio));
        }
        if let Some(ratio) = ratio_quix {
            figures.push((names[2], ratio));
        }
        if let Some(ratio) = ratio_streams {
            figures.push((names[3], ratio));
        }
    }
    let worst = |ratio: &dyn Fn(&Shape) -> Option<f64>| {
        results
            .iter()
            .filter_map(ratio)
            .fold(f64::INFINITY, f64::min)
    };
    let worst_bare = worst(&|s| Some(s.ours.after_first(messages) / s.bare.after_first(messages)));
    println!(
        "{:<44} {:>8.2}  {}",
        "lowest ratio to the bare loop (target >= 1)",
        worst_bare,
        verdict(worst_bare, 1.0)
    );
    figures.push(("ratio", worst_bare));
    if results.iter().all(|s| s.quix.is_some()) {
        let worst_quix = worst(&|s| {
            s.quix
                .map(|q| s.ours.after_first(messages) / q.after_first(messages))
        });
        println!(
            "{:<44} {:>8.2}  {}",
            "lowest ratio to Quix Streams (target >= 2)",
            worst_quix,
            verdict(worst_quix, 2.0)
        );
        figures.push(("ratio_quix_after_first", worst_quix));
    }
    if results.iter().all(|s| s.streams.is_some()) {
        let worst_streams = worst(&|s| {
            s.streams
                .map(|k| s.ours.after_first(messages) / k.run.after_first(messages))
        });
        println!(
            "{:<44} {:>8.2}  {}",
            "lowest ratio to Kafka Streams, at least once (target >= 2)",
            worst_streams,
            verdict(worst_streams, 2.0)
        );
        figures.push(("ratio_streams_after_first", worst_streams));
    }
    let worst_eos = worst(&|s| Some(s.eos.after_first(messages) / s.ours.after_first(messages)));
    println!(
        "{:<44} {:>8.2}  {}",
        "lowest ratio exactly-once / at-least-once (target >= 0.7)",
        worst_eos,
        verdict(worst_eos, 0.7)
    );
    figures.push(("ratio_eos_to_alos", worst_eos));
    if results.iter().all(|s| s.streams_eos.is_some()) {
        let worst_eos_streams = worst(&|s| {
            s.streams_eos
                .map(|k| s.eos.after_first(messages) / k.run.after_first(messages))
        });
        println!(
            "{:<44} {:>8.2}  {}",
            "lowest ratio to Kafka Streams, exactly once (target >= 2)",
            worst_eos_streams,
            verdict(worst_eos_streams, 2.0)
        );
        figures.push(("ratio_eos_to_streams_eos", worst_eos_streams));
    }
}

/// JSON names of each shape's figures: rate after the first message, ratio to the bare loop,
/// to Quix Streams and to Kafka Streams (at least once), exactly-once to our at-least-once,
/// and exactly-once to Kafka Streams' exactly_once_v2.
const SHAPE_NAMES: [[&str; 6]; 4] = [
    [
        "p1_per_s",
        "p1_ratio_bare",
        "p1_ratio_quix",
        "p1_ratio_streams",
        "p1_eos_to_alos",
        "p1_eos_to_streams_eos",
    ],
    [
        "p2_per_s",
        "p2_ratio_bare",
        "p2_ratio_quix",
        "p2_ratio_streams",
        "p2_eos_to_alos",
        "p2_eos_to_streams_eos",
    ],
    [
        "p4_per_s",
        "p4_ratio_bare",
        "p4_ratio_quix",
        "p4_ratio_streams",
        "p4_eos_to_alos",
        "p4_eos_to_streams_eos",
    ],
    [
        "p8_per_s",
        "p8_ratio_bare",
        "p8_ratio_quix",
        "p8_ratio_streams",
        "p8_eos_to_alos",
        "p8_eos_to_streams_eos",
    ],
];

/// A client as the README makes one: the brokers and nothing else.
fn readme_client(broker: &TestBroker) -> goka_tests::TestClient {
    Arc::new(RdKafkaClient::new(goka_tests::for_broker(
        KafkaConfig::new(broker.bootstrap()),
        broker.kind(),
    )))
}

/// The same count in Quix Streams, when `GOKA_QUIX_PYTHON` names a Python with
/// `quixstreams` installed (`scripts/bench.sh` sets one up).
fn quix_count(broker: &TestBroker, messages: usize) -> Option<Run> {
    goka_tests::bench::quix_run(broker, Input::NAME, messages, SESSION_TIMEOUT_MS, "count")
}

/// Consumes every input message as a member of a consumer group (as a hand-written
/// service would, paying the same group join as the processor) and produces one message per
/// input, then flushes.
fn bare_loop(broker: &TestBroker, messages: usize) -> Run {
    let consumer: BaseConsumer = rdkafka_config(broker)
        .set("group.id", "bench-bare-loop")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .create()
        .expect("consumer");
    let producer: BaseProducer = rdkafka_config(broker).create().expect("producer");
    let start = Instant::now();
    consumer.subscribe(&[Input::NAME]).expect("subscribe");
    let mut seen = 0;
    let mut first = None;
    while seen < messages {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        first.get_or_insert_with(|| start.elapsed());
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
    Run {
        total: start.elapsed(),
        first: first.unwrap_or_default(),
    }
}

/// Runs the count over the backlog until every message was handled and its changelog write
/// acknowledged (time in all, and to the first message handled).
async fn processor_count<const GROUP: usize>(
    count: Count<GROUP>,
    broker: &TestBroker,
    config: ProcessorConfig,
    messages: usize,
) -> Run {
    let processor = Arc::new(Processor::new(count, readme_client(broker), config));
    goka_tests::bench::run_until_produced(processor, messages).await
}

/// Runs a count of its own over the whole input on a disk of its own, then restarts it on
/// that disk (warm: recovery reads only what the table got after its stored offset) and on
/// an empty one (recovery reads the whole changelog), each after a few more messages, and
/// reports how long joining the group, recovering the tables and reaching the first message
/// took.
async fn restarts(broker: &TestBroker, partitions: u32, dir: &std::path::Path, messages: usize) {
    let backlog = 1_000;
    let storage = RocksDbBuilder::new(dir).update_in_place();
    println!(
        "
starts of another group, {partitions} partition(s)"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>12}",
        "", "join (s)", "recover", "first msg", "rows read"
    );
    let first = start_timed(broker, Arc::new(storage.clone()), partitions, messages).await;
    first.report("first start: empty disk, empty table");
    goka_tests::bench::fill_stream(broker, Input::NAME, partitions, backlog, KEYS);
    let warm = start_timed(broker, Arc::new(storage), partitions, backlog).await;
    warm.report("restart on its own disk (warm table)");
    goka_tests::bench::fill_stream(broker, Input::NAME, partitions, backlog, KEYS);
    let cold_dir = tempfile::tempdir().expect("temp dir");
    let cold = RocksDbBuilder::new(cold_dir.path()).update_in_place();
    let cold = start_timed(broker, Arc::new(cold), partitions, backlog).await;
    cold.report("restart on an empty disk (whole changelog)");
}

/// How long a start took to each milestone, from `run`.
struct Start {
    joined: Duration,
    recovered: Duration,
    first: Duration,
    rows: u64,
}

impl Start {
    fn report(&self, name: &str) {
        println!(
            "{name:<44} {:>10.2} {:>10.2} {:>10.2} {:>12}",
            self.joined.as_secs_f64(),
            (self.recovered - self.joined).as_secs_f64(),
            (self.first - self.recovered).as_secs_f64(),
            self.rows
        );
    }
}

/// Starts the count of group `bench-restart` on `storage`, waits until it handled
/// `expected` messages and their changelog writes were acknowledged, and stops it.
async fn start_timed(
    broker: &TestBroker,
    storage: Arc<dyn StorageBuilder>,
    partitions: u32,
    expected: usize,
) -> Start {
    let config = ProcessorConfig {
        storage,
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(
        Count::<RESTARTS>,
        readme_client(broker),
        config,
    ));
    let start = Instant::now();
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    let (mut joined, mut recovered, mut first) = (None, None, None);
    while processor.stats().messages_out < expected as u64 || recovered.is_none() {
        assert!(!running.is_finished(), "the processor stopped early");
        let states = processor.partitions();
        if joined.is_none() && !states.is_empty() {
            joined = Some(start.elapsed());
        }
        if recovered.is_none()
            && states.len() == partitions as usize
            && states.values().all(|s| *s == PartitionState::Running)
        {
            recovered = Some(start.elapsed());
        }
        if first.is_none() && processor.stats().messages_in > 0 {
            first = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rows = processor
        .partition_stats()
        .iter()
        .flat_map(|p| &p.tables)
        .map(|t| t.recovery.messages)
        .sum();
    running.stop().await;
    let recovered = recovered.unwrap_or_default();
    Start {
        joined: joined.unwrap_or_default().min(recovered),
        recovered,
        first: first.unwrap_or_default().max(recovered),
        rows,
    }
}

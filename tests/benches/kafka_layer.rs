//! Kafka-layer figures on the test broker, side by side with bare rdkafka:
//!
//! 1. Emitter vs a bare rdkafka producer sending the same records (target ratio 0.9). The
//!    bare producer checks no delivery; neither does the emitter in goka's way of emitting
//!    (emit without awaiting, then `finish`, then the stats), which carries the target. The
//!    emitter awaiting every delivery in a window of 100,000 is shown beside it.
//! 2. View recovery of a table into RocksDB vs a bare rdkafka consumer reading the same topic
//!    to its end without storing anything (target ratio 0.7).
//!
//! `cargo bench -p goka-tests --bench kafka_layer` (1,000,000 records of 10-byte keys and
//! 100-byte values over 8 partitions; `-- --records N` for another size). Each side runs
//! three times, alternating (`-- --rounds N`), and the medians are compared. Under
//! `cargo test --all-targets` it runs a small smoke size once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use goka::codec::BytesCodec;
use goka::emitter::Emitter;
use goka::storage::RocksDbBuilder;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::{View, ViewState};
use goka_tests::bench::{cpu_time, send_to_goka_partition, verdict};
use goka_tests::{client, rdkafka_config, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use tokio_util::sync::CancellationToken;

goka::stream!(EmitterStream = "bench-produce": Vec<u8> as BytesCodec);
goka::table!(BenchTable = "bench-bare": Vec<u8> as BytesCodec);

const PARTITIONS: u32 = 8;

fn main() {
    let records = goka_tests::bench_size("records", 1_000_000, 20_000);
    let rounds = goka_tests::bench_size("rounds", 3, 1);
    goka_tests::bench_runtime(run(records, rounds));
}

/// Both sides format their keys in the timed loop: the emitter's keys are `String`s.
fn key_string(i: usize) -> String {
    format!("key{:07}", i % 1_000_000)
}

fn key(i: usize) -> Vec<u8> {
    key_string(i).into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![b'x'; 100];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

async fn run(records: usize, rounds: usize) {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager =
        TopicManager::new(&*client, TopicManagerConfig::default()).expect("topic manager");
    // The bare topic doubles as the table the view recovers: compacted.
    manager
        .ensure_table("bench-bare", PARTITIONS)
        .await
        .expect("table topic");
    manager
        .ensure_stream("bench-produce", PARTITIONS)
        .await
        .expect("stream topic");
    println!("kafka-layer bench: {records} records, 10-byte keys, 100-byte values, {PARTITIONS} partitions");
    println!(
        "{:<44} {:>12} {:>9} {:>14} {:>14}",
        "", "records/s", "seconds", "CPU us/record", "broker CPU us"
    );

    // The table the view recovers, written before anything is timed.
    bare_produce(&broker, "bench-bare", records);

    // Each side runs `rounds` times, alternating, and the medians are compared: the test
    // broker shares the two cores, and single runs vary by a fifth. All runs write to one
    // topic, and the broker's cost per record grows with the topic, so each round starts
    // with another side: none always meets the smallest topic.
    let mut bare_producer = Vec::new();
    let mut emitter = Vec::new();
    let mut emitter_awaiting = Vec::new();
    for round in 0..rounds {
        for side in 0..3 {
            match (round + side) % 3 {
                0 => bare_producer.push(bare_produce(&broker, "bench-produce", records)),
                1 => emitter
                    .push(emitter_produce(&client, broker.pid(), records, Awaiting::No).await),
                _ => emitter_awaiting.push(
                    emitter_produce(&client, broker.pid(), records, Awaiting::EachDelivery).await,
                ),
            }
        }
    }
    let (bare_producer, emitter, emitter_awaiting) = (
        median(bare_producer),
        median(emitter),
        median(emitter_awaiting),
    );
    report("bare rdkafka producer", records, bare_producer);
    report("Emitter (emit, then finish)", records, emitter);
    report("Emitter awaiting each delivery", records, emitter_awaiting);
    println!(
        "{:<44} {:>12.2}  {}",
        "ratio Emitter / bare (target >= 0.9)",
        ratio(bare_producer, emitter),
        verdict(ratio(bare_producer, emitter), 0.9)
    );
    println!(
        "{:<44} {:>12.2}",
        "ratio Emitter awaiting each / bare",
        ratio(bare_producer, emitter_awaiting),
    );

    let mut bare = Vec::new();
    let mut view = Vec::new();
    for _ in 0..rounds {
        bare.push(bare_consume(&broker, records));
        view.push(view_recover(client.clone(), broker.pid(), records).await);
    }
    let (bare, view) = (median(bare), median(view));
    report("bare rdkafka consumer (to the end)", records, bare);
    report("View recovery into RocksDB", records, view);
    println!(
        "{:<44} {:>12.2}  {}",
        "ratio View recovery / bare (target >= 0.7)",
        ratio(bare, view),
        verdict(ratio(bare, view), 0.7)
    );
    let per_s = |s: Sample| records as f64 / s.wall.as_secs_f64();
    goka_tests::bench_json(
        "kafka_layer",
        &[
            ("records", records as f64),
            ("bare_producer_per_s", per_s(bare_producer)),
            ("emitter_per_s", per_s(emitter)),
            ("ratio_emitter", ratio(bare_producer, emitter)),
            ("emitter_awaiting_per_s", per_s(emitter_awaiting)),
            (
                "ratio_emitter_awaiting",
                ratio(bare_producer, emitter_awaiting),
            ),
            ("bare_consumer_per_s", per_s(bare)),
            ("view_recovery_per_s", per_s(view)),
            ("ratio_view", ratio(bare, view)),
        ],
    );
}

/// One run of one side: its wall time and the CPU time this process and the broker used.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    broker_cpu: Duration,
}

/// Where a run started.
struct Clock {
    broker: u32,
    wall: Instant,
    cpu: Duration,
    broker_cpu: Duration,
}

impl Clock {
    fn start(broker: u32) -> Self {
        Self {
            broker,
            wall: Instant::now(),
            cpu: cpu_time(None),
            broker_cpu: cpu_time(Some(broker)),
        }
    }

    fn stop(&self) -> Sample {
        Sample {
            wall: self.wall.elapsed(),
            cpu: cpu_time(None).saturating_sub(self.cpu),
            broker_cpu: cpu_time(Some(self.broker)).saturating_sub(self.broker_cpu),
        }
    }
}

fn ratio(bare: Sample, ours: Sample) -> f64 {
    bare.wall.as_secs_f64() / ours.wall.as_secs_f64()
}

fn report(name: &str, records: usize, sample: Sample) {
    let secs = sample.wall.as_secs_f64();
    let us_per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    println!(
        "{name:<44} {:>12.0} {secs:>9.2} {:>14.2} {:>14.2}",
        records as f64 / secs,
        us_per_record(sample.cpu),
        us_per_record(sample.broker_cpu),
    );
}

/// The run of median wall time.
fn median(mut runs: Vec<Sample>) -> Sample {
    runs.sort_by_key(|s| s.wall);
    runs[runs.len() / 2]
}

fn bare_produce(broker: &TestBroker, topic: &str, records: usize) -> Sample {
    // The emitter's idempotence, whatever goka's default is on this broker.
    let goka = goka_tests::config(broker);
    let producer: BaseProducer = rdkafka_config(broker)
        .set(
            "enable.idempotence",
            goka.get("enable.idempotence").unwrap_or("false"),
        )
        .create()
        .expect("bare producer");
    let clock = Clock::start(broker.pid());
    for i in 0..records {
        send_to_goka_partition(&producer, topic, PARTITIONS, &key(i), &value(i));
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("bare flush");
    clock.stop()
}

/// How the emitter bench learns of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// Not one by one: `finish` waits for all, the stats tell how they went.
    No,
    /// Each delivery, oldest first, keeping at most 100,000 unawaited.
    EachDelivery,
}

async fn emitter_produce(
    client: &goka_tests::TestClient,
    broker: u32,
    records: usize,
    awaiting: Awaiting,
) -> Sample {
    let emitter = Emitter::<EmitterStream>::new(&**client)
        .await
        .expect("emitter");
    let clock = Clock::start(broker);
    let mut pending = VecDeque::new();
    for i in 0..records {
        let delivery = emitter.emit(&key_string(i), &value(i)).await.expect("emit");
        if awaiting == Awaiting::No {
            drop(delivery);
            continue;
        }
        pending.push_back(delivery);
        if pending.len() > 100_000 {
            if let Some(oldest) = pending.pop_front() {
                oldest.await.expect("delivery");
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery");
    }
    emitter.finish().await.expect("finish");
    let sample = clock.stop();
    let stats = emitter.stats();
    assert_eq!(
        (stats.messages, stats.errors, stats.pending),
        (records as u64, 0, 0),
        "{stats:?}"
    );
    sample
}

fn bare_consume(broker: &TestBroker, records: usize) -> Sample {
    let consumer: BaseConsumer = rdkafka_config(broker)
        .set("group.id", "bench-bare-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("bare consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        assignment
            .add_partition_offset("bench-bare", p, rdkafka::Offset::Beginning)
            .expect("assignment");
    }
    let clock = Clock::start(broker.pid());
    consumer.assign(&assignment).expect("assign");
    let mut seen = 0;
    while seen < records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(e)) => panic!("bare consume: {e}"),
            None => {}
        }
    }
    clock.stop()
}

async fn view_recover(client: goka_tests::TestClient, broker: u32, records: usize) -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = View::<BenchTable>::builder(client)
        // As the README advises for a table cache: the changelog is the source of truth.
        .storage(RocksDbBuilder::new(dir.path()).without_wal())
        .build()
        .await
        .expect("view");
    let cancel = CancellationToken::new();
    let clock = Clock::start(broker);
    let task = tokio::spawn({
        let (view, cancel) = (view.clone(), cancel.clone());
        async move { view.run(cancel).await }
    });
    assert_eq!(
        view.recovered().await,
        ViewState::Running,
        "the view recovered"
    );
    let sample = clock.stop();
    let applied: u64 = view.stats().partitions.iter().map(|p| p.messages).sum();
    assert_eq!(applied, records as u64, "every record was applied");
    cancel.cancel();
    task.await.expect("view task").expect("view run");
    sample
}

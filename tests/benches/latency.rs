//! End-to-end latency: an emitter writes at a fixed moderate rate, a processor stores each
//! value in its group table, and a view of that table applies the changelog. Each value
//! carries its emit time; the view's update callback takes the difference when the row
//! becomes readable. Prints p50/p90/p99/max.
//!
//! `cargo bench -p goka-tests --bench latency` (1,000 messages/s for 10 s over 8 partitions,
//! twice; `-- --rate N --seconds S` for others). Under `cargo test --all-targets` it runs 1 s.
//!
//! Tansu, the stand-in broker, answers a fetch only once the consumer's `fetch.wait.max.ms`
//! has passed (Kafka answers as soon as data arrives), so there both hops wait for it: the
//! bench runs with librdkafka's default (500 ms) and again with 100 ms, each on a fresh
//! broker. Producers
//! keep librdkafka's `linger.ms` of 5 ms.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use goka::codec::BytesCodec;
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::processor::{GroupTable, Processor, ProcessorConfig, ProcessorState};
use goka::storage::RocksDbBuilder;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::{View, ViewState};
use goka_tests::bench::quantile;
use goka_tests::{Running, TestBroker};

goka::stream!(Events = "bench-latency-events": Vec<u8> as BytesCodec);

const PARTITIONS: u32 = 8;
const KEYS: usize = 1_000;
const WARM_UP: usize = 200;

/// Keeps the latest value of each key.
#[goka::processor(group = "bench-latency")]
#[input(topic = Events, handler = Self::store)]
#[persist(value = Vec<u8>, codec = BytesCodec)]
struct Latest;

impl Latest {
    fn store(&self, ctx: &mut Context<'_, Self>, value: Vec<u8>) -> Result<(), CallbackError> {
        ctx.set_value(&value)
    }
}

fn main() {
    let rate = goka_tests::bench_size("rate", 1_000, 1_000);
    let seconds = goka_tests::bench_size("seconds", 10, 1);
    goka_tests::bench_runtime(async {
        println!(
            "latency bench: {rate} messages/s for {seconds} s, emit -> processor table -> view"
        );
        println!(
            "{:<32} {:>8} {:>8} {:>8} {:>8}",
            "consumers' fetch.wait.max.ms", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for fetch_wait_ms in [500, 100] {
            run(rate, seconds, fetch_wait_ms).await;
        }
    });
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A 100-byte value that starts with its emit time.
fn stamped() -> Vec<u8> {
    let mut value = vec![b'v'; 100];
    value[..8].copy_from_slice(&now_micros().to_le_bytes());
    value
}

async fn run(rate: usize, seconds: usize, fetch_wait_ms: u32) {
    let broker = TestBroker::start();
    let client: goka_tests::TestClient = Arc::new(RdKafkaClient::new(
        goka_tests::config(&broker).set("fetch.wait.max.ms", fetch_wait_ms.to_string()),
    ));
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).expect("manager");
    manager
        .ensure_stream("bench-latency-events", PARTITIONS)
        .await
        .expect("events topic");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ProcessorConfig {
        storage: Arc::new(RocksDbBuilder::new(dir.path().join("processor")).without_wal()),
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(Latest, client.clone(), config));
    let processing = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    while processor.state() != ProcessorState::Running {
        assert!(!processing.is_finished(), "the processor stopped early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Latencies in microseconds, taken when the view applies a row.
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let view = View::<GroupTable<Latest>>::builder(client.clone())
        .update_callback({
            let latencies = latencies.clone();
            move |storage, message| {
                let Some(value) = &message.value else {
                    return storage.delete(&message.key);
                };
                storage.set(&message.key, value)?;
                let mut sent = [0; 8];
                sent.copy_from_slice(&value[..8]);
                let latency = now_micros().saturating_sub(u64::from_le_bytes(sent));
                latencies.lock().expect("latencies").push(latency);
                Ok(())
            }
        })
        .build()
        .await
        .expect("view");
    let viewing = Running::spawn({
        let view = view.clone();
        move |cancel| async move { view.run(cancel).await }
    });
    assert_eq!(view.recovered().await, ViewState::Running);
    let emitter = Emitter::<Events>::new(&*client).await.expect("emitter");

    // Warm up the path (connections, metadata), then measure from a clean slate.
    emit_paced(&emitter, rate, WARM_UP).await;
    wait_for_rows(&latencies, WARM_UP).await;
    latencies.lock().expect("latencies").clear();

    let total = rate * seconds;
    emit_paced(&emitter, rate, total).await;
    wait_for_rows(&latencies, total).await;
    viewing.stop().await;
    processing.stop().await;

    let mut measured = latencies.lock().expect("latencies").clone();
    measured.sort_unstable();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let (p50, p90, p99) = (
        quantile(&measured, 0.50),
        quantile(&measured, 0.90),
        quantile(&measured, 0.99),
    );
    let max = measured.last().copied().unwrap_or_default();
    println!(
        "{fetch_wait_ms:<32} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        ms(p50),
        ms(p90),
        ms(p99),
        ms(max)
    );
    goka_tests::bench_json(
        "latency",
        &[
            ("messages", total as f64),
            ("rate_per_s", rate as f64),
            ("fetch_wait_max_ms", f64::from(fetch_wait_ms)),
            ("p50_ms", ms(p50)),
            ("p90_ms", ms(p90)),
            ("p99_ms", ms(p99)),
            ("max_ms", ms(max)),
        ],
    );
}

/// Emits `count` stamped messages at `rate` per second, in steps of 10 ms, then waits for
/// every delivery.
async fn emit_paced(emitter: &Emitter<Events>, rate: usize, count: usize) {
    let per_tick = (rate / 100).max(1);
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut deliveries = Vec::with_capacity(count);
    let mut sent = 0;
    while sent < count {
        ticks.tick().await;
        for _ in 0..per_tick.min(count - sent) {
            let key = format!("key-{}", sent % KEYS);
            deliveries.push(emitter.emit(&key, &stamped()).await.expect("emit"));
            sent += 1;
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivery");
    }
}

async fn wait_for_rows(latencies: &Mutex<Vec<u64>>, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = latencies.lock().expect("latencies").len();
        if seen >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the view saw {seen} of {expected} rows within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

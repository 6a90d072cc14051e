//! A count per key in tumbling windows of one minute over event time, through one processor
//! instance (`#[window]`, `ctx.window::<W>()?.update(...)`: a read-modify-write of the
//! window's row and a changelog write per message), side by side with Quix Streams'
//! `tumbling_window(...).count()` and Kafka Streams' `windowedBy(...).count()` on the same
//! topic, for 1, 2, 4 and 8 partitions. Target: at least twice Quix Streams' and Kafka
//! Streams' figures after each side's first message, in every shape.
//!
//! Our processor runs as the README shows it (`goka_tests::from_oldest()`, windows on disk in
//! RocksDB, a client of `KafkaConfig::new(brokers)`); both sides join their consumer group
//! with a 10 s session timeout, as in the processor bench. The input's timestamps are the
//! producer's clock, so each key's messages fall in one or two windows.
//!
//! `cargo bench -p goka-tests --bench windows` (500,000 messages, 100-byte values, 10,000
//! keys; `-- --messages N` and `-- --partitions N` for one other shape). Under
//! `cargo test --all-targets` it runs a small smoke size.

use std::sync::Arc;
use std::time::Duration;

use goka::codec::{BytesCodec, Json};
use goka::context::{CallbackError, Context};
use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::KafkaConfig;
use goka::processor::Processor;
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::window::WindowSpec;
use goka_tests::bench::{quix_run, streams_run, verdict, Guarantee, Run};
use goka_tests::{client, TestBroker};

goka::stream!(Input = "bench-window-input": Vec<u8> as BytesCodec);
goka::window!(
    PerMinute = "per-minute": u64 as Json,
    WindowSpec::tumbling(Duration::from_secs(60))
);

const KEYS: usize = 10_000;
const SESSION_TIMEOUT_MS: &str = "10000";

#[goka::processor(group = "bench-window-count")]
#[input(topic = Input, handler = Self::on_message)]
#[window(window = PerMinute)]
struct WindowCount;

impl WindowCount {
    fn on_message(
        &self,
        ctx: &mut Context<'_, Self>,
        _value: Vec<u8>,
    ) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }
}

fn main() {
    let messages = goka_tests::bench_size("messages", 500_000, 10_000);
    goka_tests::bench_runtime(run(messages, goka_tests::bench::bench_shapes()));
}

async fn run(messages: usize, shapes: Vec<u32>) {
    println!("windows bench: {messages} messages, 100-byte values, {KEYS} keys, 1-minute tumbling windows");
    let mut figures = vec![("messages", messages as f64)];
    let mut rows = Vec::new();
    for partitions in shapes {
        let broker = TestBroker::start();
        prepare_input(&broker, partitions, messages).await;
        println!("\n{partitions} partition(s)");
        println!(
            "{:<44} {:>10} {:>12} {:>12}",
            "", "first (s)", "after first", "overall"
        );
        let ours = processor_count(&broker, messages).await;
        ours.report("Processor, as the README shows it", messages);
        let quix = quix_run(&broker, Input::NAME, messages, SESSION_TIMEOUT_MS, "window");
        if let Some(quix) = quix {
            quix.report("Quix Streams 3.28.1 tumbling_window count", messages);
        }
        let streams = streams_run(
            &broker,
            Input::NAME,
            messages,
            SESSION_TIMEOUT_MS,
            "window",
            Guarantee::AtLeastOnce,
            None,
        )
        .map(|peer| peer.run);
        if let Some(streams) = streams {
            streams.report("Kafka Streams 4.4 windowedBy count", messages);
        }
        rows.push((partitions, ours, quix, streams));
    }
    println!("\nsummary, messages/s after each side's first message (overall in brackets)");
    println!(
        "{:>4} {:>22} {:>22} {:>22} {:>8} {:>8}",
        "p", "Processor", "Quix Streams", "Kafka Streams", "/Quix", "/KS"
    );
    let cell = |run: &Run| {
        format!(
            "{:.0} ({:.0})",
            run.after_first(messages),
            run.overall(messages)
        )
    };
    let mut worst: Option<f64> = None;
    let mut worst_streams: Option<f64> = None;
    let shown = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
    for (partitions, ours, quix, streams) in &rows {
        let ratio = quix.map(|q| ours.after_first(messages) / q.after_first(messages));
        let ratio_streams = streams.map(|k| ours.after_first(messages) / k.after_first(messages));
        println!(
            "{:>4} {:>22} {:>22} {:>22} {:>8} {:>8}",
            partitions,
            cell(ours),
            quix.as_ref().map_or("-".into(), cell),
            streams.as_ref().map_or("-".into(), cell),
            shown(ratio),
            shown(ratio_streams),
        );
        if let Some(ratio) = ratio {
            worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
        }
        if let Some(ratio) = ratio_streams {
            worst_streams = Some(worst_streams.map_or(ratio, |w: f64| w.min(ratio)));
        }
    }
    if let Some(worst) = worst_streams {
        println!(
            "lowest ratio to Kafka Streams (target >= 2): {worst:.2} {}",
            verdict(worst, 2.0)
        );
        figures.push(("ratio_streams_after_first", worst));
    }
    if let Some(worst) = worst {
        println!(
            "lowest ratio to Quix Streams (target >= 2): {worst:.2} {}",
            verdict(worst, 2.0)
        );
        figures.push(("ratio_quix_after_first", worst));
    } else {
        println!("Quix Streams not run: set GOKA_QUIX_PYTHON (scripts/bench.sh does)");
    }
    goka_tests::bench_json("windows", &figures);
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
    manager
        .ensure_stream(Input::NAME, partitions)
        .await
        .expect("bench topic");
    goka_tests::bench::fill_stream(broker, Input::NAME, partitions, messages, KEYS);
}

/// Runs the window count over the backlog until every message's window write was
/// produced (time in all, and to the first message handled).
async fn processor_count(broker: &TestBroker, messages: usize) -> Run {
    let client = Arc::new(RdKafkaClient::new(goka_tests::for_broker(
        KafkaConfig::new(broker.bootstrap()),
        broker.kind(),
    )));
    let processor = Arc::new(Processor::new(
        WindowCount,
        client,
        goka_tests::from_oldest(),
    ));
    goka_tests::bench::run_until_produced(processor, messages).await
}

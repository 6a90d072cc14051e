//! Resident memory of one processor instance working through a large backlog: the stateful
//! count of the processor bench over 5,000,000 waiting messages (100-byte values, 10,000 keys,
//! 8 partitions), with the process's RSS printed at every tenth of the way. The processor runs
//! with `goka_tests::from_oldest()`, as the README shows it: each partition's queue in the
//! client is bounded (messages and bytes), and the default storage's memtables share a budget
//! of their own, so memory stays flat however long the backlog.
//!
//! `cargo bench -p goka-tests --bench backlog` (`-- --messages N` for another size). Under
//! `cargo test --all-targets` it runs a small smoke size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use goka::codec::{BytesCodec, Int64Codec};
use goka::context::{CallbackError, Context};
use goka::processor::{Processor, ProcessorState};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::bench::{fill_stream, mib, rss_bytes, RssSampler};
use goka_tests::{client, Running, TestBroker};

goka::stream!(Backlog = "bench-backlog": Vec<u8> as BytesCodec);

const PARTITIONS: u32 = 8;
const KEYS: usize = 10_000;

/// Counts messages per key in its group table.
#[goka::processor(group = "bench-backlog-count")]
#[input(topic = Backlog, handler = Self::count)]
#[persist(value = i64, codec = Int64Codec)]
struct BacklogCount;

impl BacklogCount {
    fn count(&self, ctx: &mut Context<'_, Self>, _value: Vec<u8>) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

fn main() {
    let messages = goka_tests::bench_size("messages", 5_000_000, 20_000);
    goka_tests::bench_runtime(run(messages));
}

async fn run(messages: usize) {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).expect("manager");
    manager
        .ensure_stream(Backlog::NAME, PARTITIONS)
        .await
        .expect("backlog topic");
    let filling = Instant::now();
    fill_stream(&broker, Backlog::NAME, PARTITIONS, messages, KEYS);
    println!(
        "backlog bench: {messages} messages waiting (written in {:.1} s), 100-byte values, \
         {KEYS} keys, {PARTITIONS} partitions",
        filling.elapsed().as_secs_f64()
    );

    let processor = Arc::new(Processor::new(
        BacklogCount,
        client,
        goka_tests::from_oldest(),
    ));
    let before = rss_bytes();
    let sampler = RssSampler::start();
    let start = Instant::now();
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    println!(
        "{:>10} {:>9} {:>14} {:>14}",
        "handled", "seconds", "RSS now (MiB)", "peak so far"
    );
    println!(
        "{:>10} {:>9.1} {:>14.0} {:>14.0}",
        0,
        0.0,
        mib(before),
        mib(before)
    );
    let mut rows = Vec::new();
    for tenth in 1..=10u64 {
        let target = messages as u64 * tenth / 10;
        while processor.stats().messages_in < target {
            assert!(!running.is_finished(), "the processor stopped early");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = rss_bytes();
        let peak = sampler.peak().max(now);
        println!(
            "{target:>10} {:>9.1} {:>14.0} {:>14.0}",
            start.elapsed().as_secs_f64(),
            mib(now),
            mib(peak)
        );
        rows.push((target, now));
    }
    while processor.state() != ProcessorState::Running
        || processor.stats().messages_out < messages as u64
    {
        assert!(!running.is_finished(), "the processor stopped early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let peak = sampler.stop().into_iter().max().unwrap_or(before);
    running.stop().await;
    // Growth between the first tenth and the end shows whether memory follows the backlog.
    let first_tenth = rows.first().map_or(before, |r| r.1);
    let last = rows.last().map_or(before, |r| r.1);
    println!(
        "peak RSS {:.0} MiB (before start {:.0} MiB); growth from the first tenth to the end \
         {:+.0} MiB; {:.0} messages/s",
        mib(peak),
        mib(before),
        mib(last) - mib(first_tenth),
        messages as f64 / elapsed.as_secs_f64()
    );
    goka_tests::bench_json(
        "backlog",
        &[
            ("messages", messages as f64),
            ("rss_before_mib", mib(before)),
            ("rss_peak_mib", mib(peak)),
            ("rss_first_tenth_mib", mib(first_tenth)),
            ("rss_end_mib", mib(last)),
            ("messages_per_s", messages as f64 / elapsed.as_secs_f64()),
        ],
    );
}

//! What timers cost a processor: the same count per key (a read-modify-write of the group
//! table's row and its changelog write per message) three times over one backlog, for 1, 2,
//! 4 and 8 partitions:
//!
//! - **plain**: the count alone;
//! - **rescheduling**: the count plus the quiet-key alert of the README, which cancels the
//!   key's previous stream-time timer and schedules the next one a minute later (two timer
//!   changelog writes per message; none fires within the backlog);
//! - **firing**: the count plus a stream-time timer 1 ms after each message, which fires
//!   once stream time passes it (a timer write per message, then its firing and tombstone;
//!   all but the last millisecond's timers fire within the backlog).
//!
//! Each runs as the README shows it (`goka_tests::from_oldest()`, tables and timers on disk
//! in RocksDB, a client of `KafkaConfig::new(brokers)`) in a group of its own, until every
//! input message is done. No peer is beside it (Quix Streams has no timers, Kafka Streams is
//! not part of these benches): the figure is the cost beside the plain count.
//!
//! `cargo bench -p goka-tests --bench timers` (500,000 messages, 100-byte values, 10,000
//! keys; `-- --messages N` and `-- --partitions N` for one other shape). Under
//! `cargo test --all-targets` it runs a small smoke size.

use std::sync::Arc;

use goka::codec::{BytesCodec, Int64Codec};
use goka::context::{CallbackError, Context};
use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::KafkaConfig;
use goka::processor::{Handlers, Processor};
use goka::timer::TimerTime;
use goka::topic::Topic;
use goka_tests::bench::{run_until_done, Run};
use goka_tests::TestBroker;

goka::stream!(Input = "bench-timer-input": Vec<u8> as BytesCodec);
goka::timer!(Quiet: Vec<u8> as BytesCodec);
goka::timer!(Soon: Vec<u8> as BytesCodec);

const KEYS: usize = 10_000;
/// How long a key stays quiet before its alert would fire: longer than the backlog spans.
const QUIET_MS: i64 = 60_000;
/// How soon after its message a timer of the firing processor is due: the backlog is
/// written within a second or so, so each timer must come due within it to fire.
const SOON_MS: i64 = 1;

/// The count alone.
#[goka::processor(group = "bench-timer-plain")]
#[input(topic = Input, handler = Self::on_message)]
#[persist(value = i64, codec = Int64Codec)]
struct Plain;

impl Plain {
    fn on_message(
        &self,
        ctx: &mut Context<'_, Self>,
        _value: Vec<u8>,
    ) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

/// The count's row holds the key's last message time; each message moves its quiet alert.
#[goka::processor(group = "bench-timer-rescheduling")]
#[input(topic = Input, handler = Self::on_message)]
#[persist(value = i64, codec = Int64Codec)]
#[timer(timer = Quiet, handler = Self::on_quiet)]
struct Rescheduling;

impl Rescheduling {
    fn on_message(
        &self,
        ctx: &mut Context<'_, Self>,
        _value: Vec<u8>,
    ) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default();
        if let Some(previous) = ctx.value()? {
            ctx.cancel::<Quiet>(TimerTime::Stream(previous + QUIET_MS))?;
        }
        ctx.set_value(&at)?;
        ctx.schedule::<Quiet>(TimerTime::Stream(at + QUIET_MS), &Vec::new())
    }

    fn on_quiet(
        &self,
        _ctx: &mut Context<'_, Self>,
        _payload: Vec<u8>,
    ) -> Result<(), CallbackError> {
        Ok(())
    }
}

/// The count, and a timer per message that fires 1 ms of stream time later.
#[goka::processor(group = "bench-timer-firing")]
#[input(topic = Input, handler = Self::on_message)]
#[persist(value = i64, codec = Int64Codec)]
#[timer(timer = Soon, handler = Self::on_soon)]
struct Firing;

impl Firing {
    fn on_message(
        &self,
        ctx: &mut Context<'_, Self>,
        _value: Vec<u8>,
    ) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let at = ctx.timestamp().unwrap_or_default();
        ctx.schedule::<Soon>(TimerTime::Stream(at + SOON_MS), &Vec::new())
    }

    fn on_soon(
        &self,
        _ctx: &mut Context<'_, Self>,
        _payload: Vec<u8>,
    ) -> Result<(), CallbackError> {
        Ok(())
    }
}

fn main() {
    let messages = goka_tests::bench_size("messages", 500_000, 10_000);
    goka_tests::bench_runtime(run(messages, goka_tests::bench::bench_shapes()));
}

async fn run(messages: usize, shapes: Vec<u32>) {
    println!("timers bench: {messages} messages, 100-byte values, {KEYS} keys, a count per key with and without timers");
    let mut figures = vec![("messages", messages as f64)];
    let mut rows = Vec::new();
    for partitions in shapes {
        let broker = TestBroker::start();
        goka_tests::ensure_streams(&broker, &[Input::NAME], partitions).await;
        goka_tests::bench::fill_stream(&broker, Input::NAME, partitions, messages, KEYS);
        println!("\n{partitions} partition(s)");
        println!(
            "{:<44} {:>10} {:>12} {:>12} {:>10}",
            "", "first (s)", "after first", "overall", "fired"
        );
        let (plain, _) = count(&broker, Plain, messages, partitions, 0).await;
        plain.report("plain count", messages);
        // A schedule per message and a cancel per message after each key's first.
        let written = 2 * messages - KEYS.min(messages);
        let (rescheduling, quiet) =
            count(&broker, Rescheduling, messages, partitions, written).await;
        report(
            &rescheduling,
            "count + cancel and schedule per message",
            messages,
            quiet,
        );
        let (firing, fired) = count(&broker, Firing, messages, partitions, messages).await;
        report(
            &firing,
            "count + a timer per message that fires",
            messages,
            fired,
        );
        rows.push((partitions, plain, rescheduling, firing, fired));
    }
    println!("\nsummary, messages/s after each run's first message (share of the plain count)");
    println!(
        "{:>4} {:>12} {:>20} {:>20} {:>10}",
        "p", "plain", "rescheduling", "firing", "fired"
    );
    let (mut worst_rescheduling, mut worst_firing) = (f64::MAX, f64::MAX);
    for (partitions, plain, rescheduling, firing, fired) in &rows {
        let base = plain.after_first(messages);
        let share = |run: &Run| run.after_first(messages) / base;
        worst_rescheduling = worst_rescheduling.min(share(rescheduling));
        worst_firing = worst_firing.min(share(firing));
        println!(
            "{:>4} {:>12.0} {:>12.0} ({:>4.2}) {:>12.0} ({:>4.2}) {:>10}",
            partitions,
            base,
            rescheduling.after_first(messages),
            share(rescheduling),
            firing.after_first(messages),
            share(firing),
            fired
        );
    }
    figures.push(("lowest_share_rescheduling", worst_rescheduling));
    figures.push(("lowest_share_firing", worst_firing));
    goka_tests::bench_json("timers", &figures);
}

fn report(run: &Run, name: &str, messages: usize, fired: u64) {
    println!(
        "{name:<44} {:>10.2} {:>12.0} {:>12.0} {fired:>10}",
        run.first.as_secs_f64(),
        run.after_first(messages),
        run.overall(messages)
    );
}

/// Runs `group` over the backlog until every message is done; returns the run and how many
/// timers fired: the timer changelog writes beyond the `handled` that the messages' own
/// schedules and cancels wrote (a fired timer writes its tombstone).
async fn count<P: Handlers>(
    broker: &TestBroker,
    group: P,
    messages: usize,
    partitions: u32,
    handled: usize,
) -> (Run, u64) {
    let client = Arc::new(RdKafkaClient::new(goka_tests::for_broker(
        KafkaConfig::new(broker.bootstrap()),
        broker.kind(),
    )));
    let processor = Arc::new(Processor::new(group, client, goka_tests::from_oldest()));
    let (run, written) = run_until_done(processor, messages, partitions).await;
    let timer_writes: u64 = written
        .iter()
        .filter(|o| o.topic.ends_with("-timers"))
        .map(|o| o.messages)
        .sum();
    (run, timer_writes.saturating_sub(handled as u64))
}

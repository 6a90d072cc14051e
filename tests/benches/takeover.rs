//! How long a partition takes to move from one instance to another when its group table has
//! 1,000,000 rows, with and without hot standby (`ProcessorConfig::hot_standby`).
//!
//! Instance A counts a 1,000,000-message input over 1,000,000 keys (one row per key) on 4
//! partitions. Instance B joins and gets half of them; with hot standby it also follows the
//! tables of A's half up to their ends. A stops, and B takes A's partitions over while new
//! messages wait for them. For each taken-over partition the bench reports, from the moment
//! B was assigned it: until it runs (its table recovered) and until its first new message is
//! done, and the changelog rows the takeover read. The rebalance before the assignment is
//! the broker's group protocol and the same either way (reported apart). Target: under 1 s
//! from assignment to the first message with hot standby.
//!
//! `cargo bench -p goka-tests --bench takeover` (`-- --rows N` for another table size).
//! Under `cargo test --all-targets` it runs a small smoke size.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use goka::codec::{BytesCodec, Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::graph::{EdgeKind, GroupGraph};
use goka::processor::{Group, Handlers, PartitionState, Processor, ProcessorConfig, Stateful};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::{client, string_edge as edge, Running, TestBroker};

goka::stream!(Input = "takeover-input": Vec<u8> as BytesCodec);

const PARTITIONS: u32 = 4;
/// New messages per partition that wait for the takeover.
const WAITING: usize = 1_000;

/// The count, in one group per case (each reads the whole input).
struct Count<const STANDBY: bool>;

impl<const STANDBY: bool> Group for Count<STANDBY> {
    const GRAPH: GroupGraph = GroupGraph {
        inputs: &[edge(EdgeKind::Input, "takeover-input", "bytes")],
        table: Some(edge(
            EdgeKind::Persist,
            if STANDBY {
                "takeover-standby-table"
            } else {
                "takeover-plain-table"
            },
            "int64",
        )),
        ..GroupGraph::new(if STANDBY {
            "takeover-standby"
        } else {
            "takeover-plain"
        })
    };
    type Key = String;
    type KeyCodec = StringCodec;
}

impl<const STANDBY: bool> Handlers for Count<STANDBY> {
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

impl<const STANDBY: bool> Stateful for Count<STANDBY> {
    type Value = i64;
    type ValueCodec = Int64Codec;
}

fn main() {
    let rows = goka_tests::bench_size("rows", 1_000_000, 2_000);
    goka_tests::bench_runtime(run(rows));
}

async fn run(rows: usize) {
    println!("takeover bench: a group table of {rows} rows on {PARTITIONS} partitions");
    let broker = TestBroker::start();
    let manager =
        TopicManager::new(&*client(&broker), TopicManagerConfig::default()).expect("manager");
    manager
        .ensure_stream(Input::NAME, PARTITIONS)
        .await
        .expect("input topic");
    goka_tests::bench::fill_stream(&broker, Input::NAME, PARTITIONS, rows, rows);
    let plain = takeover::<false>(&broker, rows).await;
    let standby = takeover::<true>(&broker, rows).await;
    println!(
        "\n{:<22} {:>14} {:>18} {:>22} {:>12}",
        "takeover", "rebalance (s)", "assigned→running", "assigned→first msg", "rows read"
    );
    for (name, case) in [("full recovery", &plain), ("hot standby", &standby)] {
        println!(
            "{name:<22} {:>14.2} {:>16.3} s {:>20.3} s {:>12}",
            case.rebalance.as_secs_f64(),
            case.running.as_secs_f64(),
            case.first.as_secs_f64(),
            case.rows
        );
    }
    println!(
        "hot standby: {:.3} s from assignment to the first message (target under 1 s: {}); \
         {:.1}x faster than a full recovery",
        standby.first.as_secs_f64(),
        if standby.first < Duration::from_secs(1) {
            "meets the target"
        } else {
            "MISSES the target"
        },
        plain.first.as_secs_f64() / standby.first.as_secs_f64().max(1e-6)
    );
    goka_tests::bench_json(
        "takeover",
        &[
            ("rows", rows as f64),
            ("plain_first_s", plain.first.as_secs_f64()),
            ("standby_first_s", standby.first.as_secs_f64()),
            ("plain_rows_read", plain.rows as f64),
            ("standby_rows_read", standby.rows as f64),
        ],
    );
}

/// One case: the slowest of the taken-over partitions.
struct Takeover {
    /// From A's stop until B was assigned the first of A's partitions.
    rebalance: Duration,
    running: Duration,
    first: Duration,
    rows: u64,
}

async fn takeover<const STANDBY: bool>(broker: &TestBroker, rows: usize) -> Takeover {
    let config = || ProcessorConfig {
        hot_standby: STANDBY,
        ..goka_tests::from_oldest()
    };
    let start = |processor: &Arc<Processor<Count<STANDBY>>>| {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    let a = Arc::new(Processor::new(Count::<STANDBY>, client(broker), config()));
    let a_running = start(&a);
    wait("A counts the input", || {
        a.stats().messages_out >= rows as u64
    })
    .await;
    let b = Arc::new(Processor::new(Count::<STANDBY>, client(broker), config()));
    let b_running = start(&b);
    wait("B owns half the partitions", || {
        b.partitions().len() == PARTITIONS as usize / 2
            && b.partitions()
                .values()
                .all(|s| *s == PartitionState::Running)
            && a.partitions().len() == PARTITIONS as usize / 2
    })
    .await;
    let moving: Vec<i32> = a.partitions().keys().copied().collect();
    if STANDBY {
        wait("B's standby copies catch up", || {
            let stats = b.partition_stats();
            moving.iter().all(|p| {
                stats.iter().any(|s| {
                    s.partition == *p
                        && s.state == PartitionState::Standby
                        && s.tables.iter().all(|t| t.lag == 0 && t.recovery.finished)
                })
            })
        })
        .await;
    }
    let ends: HashMap<i32, i64> = a
        .done_offsets()
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    a_running.stop().await;
    let stopped = Instant::now();
    goka_tests::bench::fill_stream(broker, Input::NAME, PARTITIONS, WAITING * 4, WAITING * 4);

    // Per moving partition: when B was assigned it, when it ran, when its first new message
    // was done.
    let mut assigned: HashMap<i32, Instant> = HashMap::new();
    let mut running: HashMap<i32, Instant> = HashMap::new();
    let mut first: HashMap<i32, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while first.len() < moving.len() {
        assert!(Instant::now() < deadline, "no takeover within 300 s");
        assert!(!b_running.is_finished(), "B stopped early");
        let now = Instant::now();
        for (partition, state) in b.partitions() {
            if moving.contains(&partition) {
                assigned.entry(partition).or_insert(now);
                if state == PartitionState::Running {
                    running.entry(partition).or_insert(now);
                }
            }
        }
        for done in b.done_offsets() {
            let end = ends.get(&done.partition).copied().unwrap_or(0);
            if moving.contains(&done.partition) && done.offset > end {
                first.entry(done.partition).or_insert(now);
                // Assigned and running since the last look at the latest.
                assigned.entry(done.partition).or_insert(now);
                running.entry(done.partition).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rows_read = b
        .partition_stats()
        .iter()
        .filter(|p| moving.contains(&p.partition))
        .flat_map(|p| &p.tables)
        .map(|t| t.recovery.messages)
        .sum();
    b_running.stop().await;
    let slowest = |at: &HashMap<i32, Instant>| {
        moving
            .iter()
            .map(|p| at[p] - assigned[p])
            .max()
            .unwrap_or_default()
    };
    Takeover {
        rebalance: assigned
            .values()
            .min()
            .map_or(Duration::ZERO, |t| *t - stopped),
        running: slowest(&running),
        first: slowest(&first),
        rows: rows_read,
    }
}

async fn wait(what: &str, done: impl FnMut() -> bool) {
    goka_tests::eventually(Duration::from_secs(600), done, || what).await;
}

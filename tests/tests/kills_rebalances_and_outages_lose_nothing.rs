//! Reliability scenarios with figures: a counting processor killed with SIGKILL again and
//! again while input flows, a rebalance storm of four instances joining and leaving, a
//! processor, view and emitter behind a fault proxy that cuts, stalls and refuses, and the
//! same three while the broker itself is killed and restarted on its SQLite database.
//! Nothing reported delivered may be lost. Where the processor runs in this process the
//! accounting is exact: per key, every message handled is counted exactly once in the table
//! (so counted - emitted is exactly the replays of uncommitted messages plus the emitter's
//! own duplicates) and every delivered message was handled. An outage longer than
//! `message.timeout.ms` must stop `run`, and a restart must then lose nothing. Each scenario
//! prints one summary line. CI runs reduced sizes; `GOKA_RELIABILITY=full` runs the full ones
//! (200,000 messages and 20 kills; 100,000 messages and 12 membership changes).

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::{GroupTable, PartitionState, Processor, ProcessorConfig, ProcessorState};
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka_tests::{client, Running, TestBroker, TestClient};
use tokio_util::sync::CancellationToken;

goka::stream!(pub Events = "reliability-events": String as StringCodec);

#[goka::processor(group = "reliability-counter")]
#[input(topic = Events, handler = Self::on_event)]
#[persist(value = i64, codec = Int64Codec)]
#[derive(Debug, Default)]
pub struct Counter {
    ledger: Ledger,
    /// Time each message takes, so that a backlog is in flight when a fault comes.
    pause: Duration,
}

impl Counter {
    fn keeping(ledger: &Ledger) -> Self {
        Self {
            ledger: ledger.clone(),
            pause: Duration::ZERO,
        }
    }

    async fn on_event(
        &self,
        ctx: &mut Context<'_, Self>,
        _event: String,
    ) -> Result<(), CallbackError> {
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        self.ledger.record(ctx.key(), ctx.offset());
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

/// Every input message the counters of one scenario handled: per key, the offset of each
/// handling (a key lives in one partition, so an offset names a message).
#[derive(Debug, Default, Clone)]
pub struct Ledger(Arc<Mutex<HashMap<String, Vec<i64>>>>);

/// What the ledger says about a finished scenario.
struct Accounting {
    /// Messages handled again because their offset was not committed when their partition
    /// moved or the processor stopped.
    replays: i64,
    /// Messages in the topic beyond those the emitter reported delivered: its own retries,
    /// and emits reported failed that reached the broker all the same.
    emitter_duplicates: i64,
}

impl Ledger {
    fn record(&self, key: &str, offset: i64) {
        let mut handled = self.0.lock().unwrap();
        handled.entry(key.to_owned()).or_default().push(offset);
    }

    /// How many times `key` was handled.
    fn handlings(&self, key: &str) -> i64 {
        self.0.lock().unwrap().get(key).map_or(0, Vec::len) as i64
    }

    /// Keys whose count differs from how often they were handled, e.g. up to 8.
    fn miscounted(&self, counts: impl Fn(&str) -> i64) -> Vec<(String, i64, i64)> {
        let handled = self.0.lock().unwrap();
        let mut wrong: Vec<_> = handled
            .iter()
            .map(|(k, offsets)| (k.clone(), offsets.len() as i64, counts(k)))
            .filter(|(_, handled, counted)| handled != counted)
            .collect();
        wrong.sort();
        wrong.truncate(8);
        wrong
    }

    /// Checks that every delivered message was handled and returns replays and duplicates.
    /// Call once the counts equal the handlings.
    fn account(&self, delivered: &HashMap<String, i64>) -> Accounting {
        let handled = self.0.lock().unwrap();
        let (mut replays, mut emitter_duplicates) = (0, 0);
        for (key, emitted) in delivered {
            let offsets = handled.get(key).map_or(&[][..], Vec::as_slice);
            let distinct = offsets
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len() as i64;
            assert!(
                distinct >= *emitted,
                "key {key}: {emitted} delivered, {distinct} handled"
            );
            replays += offsets.len() as i64 - distinct;
            emitter_duplicates += distinct - emitted;
        }
        Accounting {
            replays,
            emitter_duplicates,
        }
    }
}

const PARTITIONS: u32 = 4;
const KEYS: u32 = 1_000;

fn full() -> bool {
    std::env::var("GOKA_RELIABILITY").is_ok_and(|v| v == "full")
}

/// A small deterministic generator for kill points, seeded from the clock (printed, so a
/// failing run can be replayed by setting `GOKA_RELIABILITY_SEED`).
struct Lcg(u64);

impl Lcg {
    fn seeded() -> Self {
        let seed = std::env::var("GOKA_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("seed {seed}");
        Self(seed)
    }

    /// A number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        low + (self.0 >> 33) % (high - low).max(1)
    }
}

/// Runs `counter` in a processor of its own on `client`.
fn start_counter(
    counter: Counter,
    client: &TestClient,
) -> (
    Arc<Processor<Counter>>,
    Running<goka::processor::ProcessorError>,
) {
    start_counter_with(counter, client, goka_tests::from_oldest())
}

fn start_counter_with(
    counter: Counter,
    client: &TestClient,
    config: goka::processor::ProcessorConfig,
) -> (
    Arc<Processor<Counter>>,
    Running<goka::processor::ProcessorError>,
) {
    let processor = Arc::new(Processor::new(counter, client.clone(), config));
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    (processor, running)
}

async fn emitter(client: &TestClient) -> Emitter<Events> {
    let manager = TopicManager::new(&**client, TopicManagerConfig::default()).unwrap();
    Emitter::<Events>::ensuring(&**client, &manager, PARTITIONS)
        .await
        .unwrap()
}

/// Emits `total` events over `KEYS` keys in chunks, pausing between chunks so that the
/// stream lasts through the scenario; returns how many each key got.
fn emit_in_background(
    emitter: Emitter<Events>,
    total: u32,
    chunks: u32,
    pause: Duration,
) -> tokio::task::JoinHandle<HashMap<String, i64>> {
    tokio::spawn(async move {
        let mut expected: HashMap<String, i64> = HashMap::new();
        let per_chunk = total / chunks;
        for chunk in 0..chunks {
            let mut pending = Vec::with_capacity(per_chunk as usize);
            for i in chunk * per_chunk..(chunk + 1) * per_chunk {
                let key = format!("key-{}", i % KEYS);
                *expected.entry(key.clone()).or_insert(0) += 1;
                pending.push(emitter.emit(&key, &format!("event-{i}")).await.unwrap());
            }
            for delivery in pending {
                delivery.await.unwrap();
            }
            tokio::time::sleep(pause).await;
        }
        expected
    })
}

/// Waits until every key's count in the group table reaches what was emitted and, given a
/// ledger, equals how often the key was handled; returns the total counted (>= emitted; the
/// surplus are at-least-once replays).
async fn wait_for_nothing_lost(
    client: &TestClient,
    expected: &HashMap<String, i64>,
    ledger: Option<&Ledger>,
) -> i64 {
    let view = View::<GroupTable<Counter>>::builder(client.clone())
        .build()
        .await
        .unwrap();
    let running = goka_tests::spawn_view(&view);
    let deadline = Instant::now() + Duration::from_secs(180);
    let counted = loop {
        let rows: HashMap<String, i64> = view.iter().map(Result::unwrap).collect();
        let short: Vec<_> = expected
            .iter()
            .filter(|(k, v)| rows.get(*k).copied().unwrap_or(0) < **v)
            .map(|(k, v)| (k, *v, rows.get(k).copied()))
            .collect();
        let miscounted = ledger.map_or_else(Vec::new, |l| {
            l.miscounted(|k| rows.get(k).copied().unwrap_or(0))
        });
        if short.is_empty() && miscounted.is_empty() {
            break rows.values().sum::<i64>();
        }
        assert!(
            Instant::now() < deadline,
            "lost messages at {} of {} keys, (key, emitted, counted) e.g. {:?}; \
             (key, handled, counted) where they differ, e.g. {miscounted:?}",
            short.len(),
            expected.len(),
            &short[..short.len().min(8)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    running.stop().await;
    counted
}

const CHILD_BROKERS: &str = "GOKA_RELIABILITY_CHILD_BROKERS";
const CHILD_STORAGE: &str = "GOKA_RELIABILITY_CHILD_STORAGE";

/// Run by `the_kill_loop_loses_nothing` in a child process: counts until killed, printing
/// `READY` once every assigned partition recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the_kill_loop_loses_nothing"]
async fn reliability_child_counts_until_killed() {
    let (Ok(brokers), Ok(storage)) = (std::env::var(CHILD_BROKERS), std::env::var(CHILD_STORAGE))
    else {
        panic!("run by the_kill_loop_loses_nothing only");
    };
    let config = goka_tests::for_broker(
        goka::kafka::KafkaConfig::new(brokers).set("session.timeout.ms", "6000"),
        goka_tests::BrokerKind::current(),
    );
    let client = Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(config));
    let processor = Arc::new(Processor::new(
        Counter::default(),
        client,
        ProcessorConfig {
            storage: Arc::new(goka::storage::RocksDbBuilder::new(storage).without_wal()),
            ..goka_tests::from_oldest()
        },
    ));
    let running = tokio::spawn({
        let processor = processor.clone();
        async move { processor.run(CancellationToken::new()).await }
    });
    processor.recovered().await;
    println!("READY");
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_loop_loses_nothing() {
    let (total, kills) = if full() { (200_000, 20) } else { (20_000, 6) };
    let broker = TestBroker::start();
    let client = client(&broker);
    let emitter = emitter(&client).await;
    let storage = tempfile::tempdir().unwrap();
    let mut random = Lcg::seeded();
    // A child and a thread that reports when it printed READY.
    let spawn_child = || {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "reliability_child_counts_until_killed",
                "--nocapture",
            ])
            .env(CHILD_BROKERS, broker.bootstrap())
            .env(CHILD_STORAGE, storage.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if line.is_ok_and(|l| l.contains("READY")) {
                    let _ = ready_tx.send(Instant::now());
                }
            }
        });
        (child, ready_rx, Instant::now())
    };

    let chunks = if full() { 200 } else { 40 };
    let emitting = emit_in_background(emitter, total, chunks, Duration::from_millis(100));
    let mut recoveries = Vec::new();
    let (mut child, mut ready, mut started) = spawn_child();
    for _ in 0..kills {
        // Wait for the child to be up, then kill it at a random point of its work.
        let up = tokio::task::block_in_place(|| ready.recv_timeout(Duration::from_secs(60)))
            .expect("the child recovered and runs");
        recoveries.push(up - started);
        tokio::time::sleep(Duration::from_millis(random.between(200, 2_500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        (child, ready, started) = spawn_child();
    }
    let expected = emitting.await.unwrap();
    let counted = wait_for_nothing_lost(&client, &expected, None).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let emitted: i64 = expected.values().sum();
    let max = recoveries.iter().max().copied().unwrap_or_default();
    println!(
        "kill loop: {emitted} messages, {kills} SIGKILLs, lost 0, duplicates {}, \
         recovery (start to running) max {:.1} s, mean {:.1} s",
        counted - emitted,
        max.as_secs_f64(),
        recoveries.iter().map(Duration::as_secs_f64).sum::<f64>() / recoveries.len().max(1) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_storm_loses_nothing_and_never_shares_a_partition() {
    let (total, changes) = if full() { (100_000, 12) } else { (12_000, 5) };
    let broker = TestBroker::start();
    let client = client(&broker);
    let emitter = emitter(&client).await;
    let mut random = Lcg::seeded();
    let chunks = if full() { 100 } else { 30 };
    let emitting = emit_in_background(emitter, total, chunks, Duration::from_millis(150));
    let ledger = Ledger::default();

    let start = |client: &TestClient| start_counter(Counter::keeping(&ledger), client);
    let mut instances = vec![start(&client)];
    // Every 100 ms, no partition may be owned (running or recovering) by two instances.
    let watch = |instances: &[(Arc<Processor<Counter>>, _)]| {
        let mut owners: HashMap<i32, usize> = HashMap::new();
        for (i, (processor, _)) in instances.iter().enumerate() {
            for (partition, state) in processor.partitions() {
                if matches!(state, PartitionState::Running | PartitionState::Recovering) {
                    if let Some(other) = owners.insert(partition, i) {
                        panic!("partition {partition} owned by instances {other} and {i}");
                    }
                }
            }
        }
    };
    // Changes come at random intervals, but each after the group settled (every instance
    // running): on the test broker, a member that leaves while the group is still forming
    // leaves the others waiting for an assignment indefinitely.
    // Settled means every instance runs and every partition has an owner: an idle member
    // (more instances than partitions) is `Running` too.
    let settle = |instances: &[(Arc<Processor<Counter>>, _)]| {
        let owned: std::collections::HashSet<i32> = instances
            .iter()
            .flat_map(|(p, _)| p.partitions().into_keys())
            .collect();
        owned.len() == PARTITIONS as usize
            && instances
                .iter()
                .all(|(p, _)| p.state() == ProcessorState::Running)
    };
    let mut samples = 0u64;
    for change in 0..changes {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !settle(&instances) {
            assert!(
                Instant::now() < deadline,
                "the group did not settle after change {change}: {}",
                instances
                    .iter()
                    .map(|(p, running)| format!(
                        "[state {:?}, finished {}, partitions {:?}]",
                        p.state(),
                        running.is_finished(),
                        p.partitions()
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            watch(&instances);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let until = Instant::now() + Duration::from_millis(random.between(500, 3_000));
        while Instant::now() < until {
            watch(&instances);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Join while fewer than four run (and always at the start); otherwise leave.
        if instances.len() < 4 && (instances.len() < 2 || random.between(0, 2) == 0) {
            instances.push(start(&client));
        } else {
            let (_, running) = instances.remove(random.between(0, instances.len() as u64) as usize);
            running.stop().await;
        }
        println!("change {change}: {} instances", instances.len());
    }
    let expected = emitting.await.unwrap();
    for (i, (processor, running)) in instances.iter().enumerate() {
        println!(
            "instance {i}: state {:?}, finished {}, partitions {:?}, {:?}",
            processor.state(),
            running.is_finished(),
            processor.partitions(),
            processor.stats()
        );
    }
    wait_for_nothing_lost(&client, &expected, None).await;
    for (_, running) in instances {
        running.stop().await;
    }
    // Stopped: every handling is in the changelog, counted exactly once.
    let counted = wait_for_nothing_lost(&client, &expected, Some(&ledger)).await;
    let accounting = ledger.account(&expected);
    let emitted: i64 = expected.values().sum();
    assert_eq!(
        counted - emitted,
        accounting.replays + accounting.emitter_duplicates
    );
    println!(
        "rebalance storm: {emitted} messages, {changes} membership changes, lost 0, \
         counted exactly once per handling, {} replays, {} emitter duplicates, \
         {samples} ownership samples without a shared partition",
        accounting.replays, accounting.emitter_duplicates
    );
}

/// A counting processor and a view of its table running on `client`, for the scenarios that
/// disturb the broker underneath them.
struct Whole {
    ledger: Ledger,
    processor: Arc<Processor<Counter>>,
    view: View<GroupTable<Counter>>,
    run: Running<goka::processor::ProcessorError>,
    view_run: Running<goka::view::ViewError>,
}

impl Whole {
    async fn start(client: &TestClient) -> Self {
        let ledger = Ledger::default();
        let (processor, run) = start_counter(Counter::keeping(&ledger), client);
        tokio::time::timeout(Duration::from_secs(60), processor.recovered())
            .await
            .unwrap();
        let view = View::<GroupTable<Counter>>::builder(client.clone())
            .build()
            .await
            .unwrap();
        let view_run = goka_tests::spawn_view(&view);
        Self {
            ledger,
            processor,
            view,
            run,
            view_run,
        }
    }

    /// Waits up to `within` until every delivered message is counted, each handling exactly
    /// once, and the view equals the processor's table, both still running; returns the
    /// accounting.
    async fn converge(&mut self, delivered: &HashMap<String, i64>, within: Duration) -> Accounting {
        let deadline = Instant::now() + within;
        loop {
            let short = delivered
                .iter()
                .filter(|(k, v)| self.processor.get(k).unwrap().unwrap_or(0) < **v)
                .count();
            let behind = delivered
                .keys()
                .filter(|k| self.view.get(k).unwrap() != self.processor.get(k).unwrap())
                .count();
            let miscounted = self
                .ledger
                .miscounted(|k| self.processor.get(&k.to_owned()).unwrap().unwrap_or(0));
            if short == 0 && behind == 0 && miscounted.is_empty() {
                break;
            }
            if let Some(outcome) = self.run.ended() {
                panic!("the processor stopped: {outcome}");
            }
            assert!(
                Instant::now() < deadline,
                "{short} keys short of what was delivered, the view differs at {behind}, \
                 (key, handled, counted) where they differ e.g. {miscounted:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!self.run.is_finished(), "the processor kept running");
        assert!(!self.view_run.is_finished(), "the view kept running");
        let accounting = self.ledger.account(delivered);
        let counted: i64 = delivered
            .keys()
            .map(|k| self.processor.get(k).unwrap().unwrap_or(0))
            .sum();
        let emitted: i64 = delivered.values().sum();
        assert_eq!(
            counted - emitted,
            accounting.replays + accounting.emitter_duplicates,
            "counted - emitted is exactly replays plus the emitter's duplicates"
        );
        accounting
    }

    async fn stop(self) {
        self.run.stop().await;
        self.view_run.stop().await;
    }
}

/// Reads the processor's changelog while a scenario runs (before compaction can drop
/// anything) and checks that no key's count ever goes down in it: retries that reordered a
/// partition's batches would put an older count after a newer one, and whoever recovers the
/// table next would take the older.
struct ChangelogWatch {
    /// The table's final counts, once known: the reader stops when it read them.
    last: Arc<Mutex<Option<Counts>>>,
    reader: std::thread::JoinHandle<Vec<goka_tests::RawMessage>>,
}

impl ChangelogWatch {
    fn start(bootstrap: String) -> Self {
        let last: Arc<Mutex<Option<Counts>>> = Arc::default();
        let reader = std::thread::spawn({
            let last = last.clone();
            move || {
                goka_tests::read_until_at(
                    &bootstrap,
                    "reliability-counter-table",
                    PARTITIONS as i32,
                    Duration::from_secs(600),
                    |read| {
                        let last = last.lock().unwrap();
                        last.as_ref().is_some_and(|last| &last_counts(read) == last)
                    },
                )
            }
        });
        Self { last, reader }
    }

    /// Checks the order once `whole` converged; returns how many distinct writes were read.
    fn finish(self, whole: &Whole) -> usize {
        let counts: HashMap<Vec<u8>, i64> = whole
            .ledger
            .0
            .lock()
            .unwrap()
            .keys()
            .map(|k| {
                (
                    k.clone().into_bytes(),
                    whole.processor.get(k).unwrap().unwrap_or(0),
                )
            })
            .collect();
        *self.last.lock().unwrap() = Some(counts.clone());
        let mut writes = self.reader.join().unwrap();
        // A reader whose broker restarted may read part of the log again: the log's order is
        // the offsets' order.
        writes.sort_by_key(|w| (w.partition, w.offset));
        writes.dedup_by(|later, first| {
            let again = (later.partition, later.offset) == (first.partition, first.offset);
            assert!(
                !again || later.value == first.value,
                "offset read twice, two values"
            );
            again
        });
        assert_eq!(
            last_counts(&writes),
            counts,
            "the changelog ends with the table"
        );
        let mut last: HashMap<&[u8], i64> = HashMap::new();
        for write in &writes {
            let count = decode_count(write);
            let previous = last.insert(&write.key, count).unwrap_or(0);
            assert!(
                count >= previous,
                "key {:?}: count {count} written after {previous} (partition {}, offset {})",
                String::from_utf8_lossy(&write.key),
                write.partition,
                write.offset
            );
        }
        writes.len()
    }
}

/// Scaling down by two within one rebalance: the third instance stops, and a second after
/// the other two were revoked (their joins held by the coordinator) the first stops too.
/// The remaining instance must end up owning every partition and lose nothing, or, where
/// the rebalance never finishes, say so: `Starting`, no partition, and the wait in its
/// stats (`awaiting_assignment`, shown by the monitor).
///
/// Kafka elects a new leader among the members that rejoined, so there the last instance
/// must own every partition. Tansu, the stand-in broker, never finishes such a rebalance
/// when the instance that left was the group's leader: its join responses keep naming the
/// departed leader, and the remaining member waits in SyncGroup, is told to rejoin, and
/// gets the same answer again (seen in librdkafka's `cgrp` debug log); there the test asks
/// that the wait is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_mid_rebalance_leaves_the_last_one_all_partitions_or_says_so() {
    const REPORTED: Duration = Duration::from_secs(30);
    let broker = TestBroker::start();
    let client = client(&broker);
    let emitter = emitter(&client).await;
    let emitting = emit_in_background(emitter, 3_000, 30, Duration::from_millis(100));
    let ledger = Ledger::default();
    let start = || start_counter(Counter::keeping(&ledger), &client);
    let describe = |instances: &[&Arc<Processor<Counter>>]| {
        instances
            .iter()
            .map(|p| {
                format!(
                    "[state {:?}, partitions {:?}, awaiting an assignment for {:?}]",
                    p.state(),
                    p.partitions(),
                    p.stats().awaiting_assignment,
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (first, first_running) = start();
    let (second, second_running) = start();
    let (third, third_running) = start();
    let all = [&first, &second, &third];
    // Settled: every partition owned, every instance owning some (four partitions among
    // three members), and nobody waiting for an assignment. The three join one after the
    // other, so the group may rebalance more than once before it settles, and the first two
    // may own everything before the third joined: stopping the third then would start no
    // rebalance at all.
    goka_tests::eventually(
        Duration::from_secs(60),
        || {
            all.iter().map(|p| p.partitions().len()).sum::<usize>() == PARTITIONS as usize
                && all.iter().all(|p| !p.partitions().is_empty())
                && all.iter().all(|p| p.stats().awaiting_assignment.is_none())
        },
        || format!("three instances did not settle: {}", describe(&all)),
    )
    .await;
    third_running.stop().await;
    match goka_tests::group_protocol() {
        // The classic protocol's rebalance revokes every member's partitions first. On Kafka
        // it may also finish between two looks (the two rejoin within milliseconds of each
        // other): then the two own the third's partitions too.
        goka_tests::GroupProtocol::Classic => {
            goka_tests::eventually(
                Duration::from_secs(30),
                || {
                    let (one, two) = (first.partitions(), second.partitions());
                    (one.is_empty() && two.is_empty())
                        || one.len() + two.len() == PARTITIONS as usize
                },
                || format!("no rebalance after the third stopped: {}", describe(&all)),
            )
            .await
        }
        // The consumer protocol's members keep theirs: the third's partitions are being
        // handed on from the moment it left.
        goka_tests::GroupProtocol::Consumer => {}
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first_running.stop().await;
    let left_at = Instant::now();
    let healed = || second.partitions().len() == PARTITIONS as usize;
    goka_tests::eventually(
        REPORTED + Duration::from_secs(15),
        || healed() || second.stats().awaiting_assignment >= Some(REPORTED),
        || {
            format!(
                "after the first instance stopped mid-rebalance the last one neither got \
                 every partition nor reported the wait: {}",
                describe(&[&second])
            )
        },
    )
    .await;
    let expected = emitting.await.unwrap();
    assert!(
        healed() || broker.kind() == goka_tests::BrokerKind::Tansu,
        "{}: the last instance did not get every partition after the first stopped \
         mid-rebalance: {}",
        broker.kind(),
        describe(&[&second])
    );
    if healed() {
        println!(
            "leave mid-rebalance: the last instance owned all {PARTITIONS} partitions {:?} \
             after the first stopped",
            left_at.elapsed()
        );
        // It owns every partition, but may still be recovering them or working through
        // what was written meanwhile: nothing is lost once it caught up.
        wait_for_nothing_lost(&client, &expected, Some(&ledger)).await;
        second_running.stop().await;
    } else {
        assert_eq!(second.state(), ProcessorState::Starting);
        println!(
            "leave mid-rebalance: the broker did not finish the rebalance; the last instance \
             reports it: {}",
            describe(&[&second])
        );
        second_running.stop().await;
    }
}

fn decode_count(write: &goka_tests::RawMessage) -> i64 {
    write.value.as_deref().map_or(0, |v| {
        <Int64Codec as goka::codec::Codec<i64>>::decode(v).unwrap()
    })
}

/// A count per key, as the changelog holds it.
type Counts = HashMap<Vec<u8>, i64>;

/// Each key's last count in `writes`.
fn last_counts(writes: &[goka_tests::RawMessage]) -> HashMap<Vec<u8>, i64> {
    writes
        .iter()
        .map(|w| (w.key.clone(), decode_count(w)))
        .collect()
}

/// Emits `chunks` chunks of `per_chunk` events over 200 keys, waiting for each chunk's
/// deliveries and `pause` between chunks; returns what the broker acknowledged per key (only
/// that counts as delivered) and how many emits failed.
fn emit_through_faults(
    emitter: Emitter<Events>,
    chunks: u32,
    per_chunk: u32,
    pause: Duration,
) -> tokio::task::JoinHandle<(HashMap<String, i64>, u64)> {
    tokio::spawn(async move {
        let mut delivered: HashMap<String, i64> = HashMap::new();
        let mut failed = 0u64;
        for chunk in 0..chunks {
            let mut pending = Vec::new();
            for i in chunk * per_chunk..(chunk + 1) * per_chunk {
                let key = format!("key-{}", i % 200);
                match emitter.emit(&key, &format!("event-{i}")).await {
                    Ok(delivery) => pending.push((key, delivery)),
                    Err(_) => failed += 1,
                }
            }
            for (key, delivery) in pending {
                match delivery.await {
                    Ok(_) => *delivered.entry(key).or_insert(0) += 1,
                    Err(_) => failed += 1,
                }
            }
            tokio::time::sleep(pause).await;
        }
        (delivered, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_faults_leave_processor_view_and_emitter_whole() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let client = client(&broker);
    let emitter = emitter(&client).await;
    let mut whole = Whole::start(&client).await;
    let emitting = emit_through_faults(emitter, 60, 100, Duration::from_millis(200));

    // Five cuts with a few seconds of refused reconnects, one stall, one refusal.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set_mode(goka_tests::ProxyMode::Refuse);
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set_mode(goka_tests::ProxyMode::Forward);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_mode(goka_tests::ProxyMode::Stall);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set_mode(goka_tests::ProxyMode::Forward);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_mode(goka_tests::ProxyMode::Refuse);
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set_mode(goka_tests::ProxyMode::Forward);

    let (delivered, failed) = emitting.await.unwrap();
    let accounting = whole.converge(&delivered, Duration::from_secs(120)).await;
    let emitted: i64 = delivered.values().sum();
    println!(
        "connection faults: {emitted} delivered ({failed} reported failed), 5 cuts, 1 stall, \
         1 refusal, {} reconnects, lost 0, counted exactly once per handling, {} replays, \
         {} emitter duplicates, the view converged",
        proxy.accepted(),
        accounting.replays,
        accounting.emitter_duplicates
    );
    whole.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_leave_processor_view_and_emitter_whole() {
    let restarts = 5;
    let mut broker = goka_tests::PersistentBroker::start();
    let client: TestClient = Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(
        // Delivery may wait out a restart: give it more than the default of the tests.
        goka_tests::config_for(&broker.bootstrap()).set("message.timeout.ms", "60000"),
    ));
    let emitter = emitter(&client).await;
    let mut whole = Whole::start(&client).await;
    let changelog = ChangelogWatch::start(broker.bootstrap());
    let emitting = emit_through_faults(emitter, 40, 50, Duration::from_millis(250));

    // The broker process is killed and started again on its database, five times.
    let mut downtime = Duration::ZERO;
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stopped = Instant::now();
        broker.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.start_again();
        downtime += stopped.elapsed();
    }

    let (delivered, failed) = emitting.await.unwrap();
    let accounting = whole.converge(&delivered, Duration::from_secs(180)).await;
    let emitted: i64 = delivered.values().sum();
    assert!(emitted > 0, "something was delivered");
    let writes = changelog.finish(&whole);
    println!(
        "broker restarts: {emitted} delivered ({failed} reported failed), {restarts} restarts \
         ({:.1} s down in all), lost 0, counted exactly once per handling, {} replays, \
         {} emitter duplicates, {writes} changelog writes read back live, each key's counts in order, the view converged",
        downtime.as_secs_f64(),
        accounting.replays,
        accounting.emitter_duplicates
    );
    whole.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_delivery_timeout_stops_run_and_a_restart_loses_nothing() {
    let backlog: u32 = if full() { 20_000 } else { 3_000 };
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let client = client(&broker);
    let emitted = emit_in_background(emitter(&client).await, backlog, 1, Duration::ZERO)
        .await
        .unwrap();
    // Deliveries give up after 2 s; the outage below lasts 6 s. Each message takes 2 ms, so
    // changelog writes are in flight when the connection goes.
    let short: TestClient = Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(
        goka_tests::config(&broker).set("message.timeout.ms", "2000"),
    ));
    let ledger = Ledger::default();
    let counter = Counter {
        ledger: ledger.clone(),
        pause: Duration::from_millis(2),
    };
    // Offsets are committed only on revoke and on stop, both during the outage: a commit
    // that waits for the unreachable coordinator must not keep `run` from stopping.
    let rarely = goka::processor::ProcessorConfig {
        commit_interval: Duration::from_secs(3600),
        ..goka_tests::from_oldest()
    };
    let (processor, mut running) = start_counter_with(counter, &short, rarely);
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.stats().messages_in >= 200,
        || format!("nothing handled: {:?}", processor.stats()),
    )
    .await;
    proxy.set_mode(goka_tests::ProxyMode::Refuse);
    proxy.cut();
    let outage = Instant::now();
    let handled_before = ledger
        .0
        .lock()
        .unwrap()
        .values()
        .map(Vec::len)
        .sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        if let Some(ended) = running.ended() {
            break ended;
        }
        assert!(
            Instant::now() < deadline,
            "run did not stop: {:?}",
            processor.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stopped_after = outage.elapsed();
    assert!(ended.contains("HandlerProduce"), "{ended}");
    assert!(ended.contains("reliability-events"), "{ended}");
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(outage.elapsed())).await;
    proxy.set_mode(goka_tests::ProxyMode::Forward);
    let outage = outage.elapsed();

    // A restart (what a supervisor does) counts every message: the lost writes are handled
    // again, nothing is committed past them.
    let (_processor, running) = start_counter(Counter::keeping(&ledger), &client);
    wait_for_nothing_lost(&client, &emitted, None).await;
    running.stop().await;
    // A handling whose changelog write was lost is not counted: counts lie between the
    // messages and the handlings.
    let accounting = ledger.account(&emitted);
    let counted = wait_for_nothing_lost(&client, &emitted, None).await;
    let handlings: i64 = emitted.keys().map(|k| ledger.handlings(k)).sum();
    let total: i64 = emitted.values().sum();
    assert!(
        counted <= handlings,
        "counted {counted} > handled {handlings}"
    );
    println!(
        "outage: {total} messages, {:.1} s without the broker (delivery timeout 2 s), run \
         stopped after {:.1} s with the lost write named, {handled_before} handled before the \
         outage, restarted, lost 0, {} replays, {} writes lost with the outage and redone",
        outage.as_secs_f64(),
        stopped_after.as_secs_f64(),
        accounting.replays,
        handlings - counted
    );
}

//! A processor on a three-node Kafka cluster (replication factor 3, `min.insync.replicas` 2,
//! `acks=all`) while nodes die and come back: the leader of an input, a changelog and an
//! output partition killed and restarted, one node down for good, two down at once, a
//! controlled shutdown followed by the preferred leader's return.
//!
//! Each scenario counts exactly: the set of messages emitted (and acknowledged) against the
//! set the handler saw, the output topic and the table's final rows. Duplicates (messages
//! handled again because their offset was not committed when a fault came) are counted and
//! printed, never taken for losses. Kafka only: the stand-in broker has one node.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::{GroupTable, Guarantee, Processor, ProcessorConfig, ProcessorError};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka_tests::{KafkaCluster, Running, TestClient};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

goka::stream!(pub Events = "cluster-events": String as StringCodec);
goka::stream!(pub Relayed = "cluster-relayed": String as StringCodec);

const PARTITIONS: u32 = 3;
const KEYS: u64 = 300;

/// Counts events per key and relays each one to an output topic.
#[goka::processor(group = "cluster-counter")]
#[input(topic = Events, handler = Self::on_event)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Relayed)]
#[derive(Debug, Default)]
pub struct Relay {
    ledger: Ledger,
}

impl Relay {
    fn on_event(&self, ctx: &mut Context<'_, Self>, event: String) -> Result<(), CallbackError> {
        self.ledger.record(&event);
        let key = ctx.key().clone();
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        ctx.emit::<Relayed>(&key, &event)
    }
}

/// Every event the handlers of one scenario saw, with how often.
#[derive(Debug, Default, Clone)]
pub struct Ledger(Arc<Mutex<HashMap<u64, u32>>>);

impl Ledger {
    fn record(&self, event: &str) {
        let seq = sequence(event);
        *self.0.lock().unwrap().entry(seq).or_default() += 1;
    }

    /// The highest sequence number handled so far.
    fn highest(&self) -> Option<u64> {
        self.0.lock().unwrap().keys().max().copied()
    }

    fn snapshot(&self) -> HashMap<u64, u32> {
        self.0.lock().unwrap().clone()
    }
}

/// The sequence number in an event `event-<seq>`.
fn sequence(event: &str) -> u64 {
    event
        .strip_prefix("event-")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an event of this test: {event:?}"))
}

fn key_of(seq: u64) -> String {
    format!("key-{}", seq % KEYS)
}

/// A client of the cluster whose deliveries may wait out a leader election (a killed node is
/// noticed after the broker session timeout, 9 s by default).
fn cluster_client(cluster: &KafkaCluster, message_timeout: Duration) -> TestClient {
    Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(
        goka_tests::config_for(&cluster.bootstrap())
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            )
            .set("acks", "all"),
    ))
}

/// Emits events until stopped, counting each one acknowledged and each one reported failed.
struct Emitting {
    next: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(BTreeSet<u64>, BTreeSet<u64>)>,
}

impl Emitting {
    async fn start(client: &TestClient, per_second: u64) -> Self {
        let manager = TopicManager::new(&**client, TopicManagerConfig::default()).unwrap();
        let emitter = Emitter::<Events>::ensuring(&**client, &manager, PARTITIONS)
            .await
            .unwrap();
        let next = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (next, stop) = (next.clone(), stop.clone());
            async move {
                let mut pending = Vec::new();
                let pause = Duration::from_millis(1000 / per_second.max(1));
                while !stop.is_cancelled() {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    let queued = emitter.emit(&key_of(seq), &format!("event-{seq}")).await;
                    pending.push((seq, queued.ok()));
                    tokio::time::sleep(pause).await;
                }
                let (mut delivered, mut failed) = (BTreeSet::new(), BTreeSet::new());
                for (seq, delivery) in pending {
                    let acknowledged = match delivery {
                        Some(delivery) => delivery.await.is_ok(),
                        None => false,
                    };
                    if acknowledged {
                        delivered.insert(seq);
                    } else {
                        failed.insert(seq);
                    }
                }
                (delivered, failed)
            }
        });
        Self { next, stop, task }
    }

    /// The sequence number the next event will carry.
    fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    async fn finish(self) -> (BTreeSet<u64>, BTreeSet<u64>) {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

fn start_relay(
    ledger: &Ledger,
    client: &TestClient,
    guarantee: Guarantee,
) -> Running<ProcessorError> {
    let processor = Processor::new(
        Relay {
            ledger: ledger.clone(),
        },
        client.clone(),
        ProcessorConfig {
            guarantee,
            ..goka_tests::from_oldest()
        },
    );
    Running::spawn(move |cancel| async move { processor.run(cancel).await })
}

/// The node leading `partition` of `topic`, as the cluster's metadata says.
fn leader_of(bootstrap: &str, topic: &str, partition: i32) -> u32 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let leader = metadata
                .topics()
                .first()
                .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
                .map(|p| p.leader());
            if let Some(leader) = leader.filter(|l| *l > 0) {
                return u32::try_from(leader).unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader of {topic}/{partition} in a minute"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the handler saw an event emitted after `after` (processing goes on past the
/// fault); returns how long that took from `since`.
async fn resumed(ledger: &Ledger, after: u64, since: Instant, what: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ledger.highest().is_none_or(|h| h <= after) {
        assert!(
            Instant::now() < deadline,
            "{what}: nothing emitted after event {after} was handled within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    since.elapsed()
}

/// Waits until the processor handled its first events; fails with the error that stopped
/// it, if it stopped.
async fn started(ledger: &Ledger, running: &mut Running<ProcessorError>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ledger.highest().is_none() {
        if let Some(error) = running.ended() {
            panic!("the processor stopped before handling anything: {error}");
        }
        assert!(
            Instant::now() < deadline,
            "the processor handled nothing within 120 s of its start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a finished scenario counted.
struct Counted {
    handled: usize,
    duplicates: u64,
    relayed_duplicates: usize,
}

/// How the table's rows must match the handlings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Each handling counted exactly once: the processor never lost a write.
    Exact,
    /// Between the distinct events handled and the handlings: a run that stopped on a failed
    /// write handled its input without its count landing, and the next run handled it again.
    AtLeastOnce,
    /// Each distinct event counted once, however often it was handled (exactly-once: a
    /// handling whose transaction aborted left nothing).
    Once,
}

/// Checks that every acknowledged event was handled, relayed and counted in the table (per
/// key, as `rows` says), and returns the duplicates. The ledger is read again until the
/// table agrees with it: events reported failed to the emitter may still have landed (a
/// leader appends before its followers confirm) and be handled late.
async fn count_exactly(
    cluster: &KafkaCluster,
    client: &TestClient,
    ledger: &Ledger,
    delivered: &BTreeSet<u64>,
    rows: Rows,
) -> Counted {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let handled = ledger.snapshot();
        let missing: Vec<_> = delivered
            .iter()
            .filter(|s| !handled.contains_key(s))
            .take(8)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged events never handled, e.g. {missing:?} ({} acknowledged, {} handled)",
            delivered.len(),
            handled.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let view = View::<GroupTable<Relay>>::builder(client.clone())
        .build()
        .await
        .unwrap();
    let viewing = goka_tests::spawn_view(&view);
    let deadline = Instant::now() + Duration::from_secs(120);
    let handled = loop {
        let handled = ledger.snapshot();
        // Per key: how often its events were handled, and how many distinct ones.
        let mut per_key: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (seq, times) in &handled {
            let entry = per_key.entry(key_of(*seq)).or_default();
            entry.0 += i64::from(*times);
            entry.1 += 1;
        }
        let table: BTreeMap<String, i64> = view.iter().map(Result::unwrap).collect();
        let wrong: Vec<_> = per_key
            .iter()
            .filter(|(k, (handlings, distinct))| {
                let row = table.get(*k).copied().unwrap_or(0);
                match rows {
                    Rows::Exact => row != *handlings,
                    Rows::AtLeastOnce => row < *distinct || row > *handlings,
                    Rows::Once => row != *distinct,
                }
            })
            .map(|(k, n)| (k.clone(), *n, table.get(k).copied()))
            .take(8)
            .collect();
        if wrong.is_empty() && table.len() == per_key.len() {
            break handled;
        }
        assert!(
            Instant::now() < deadline,
            "table rows differ from the handlings, (key, (handlings, distinct events), row) \
             e.g. {wrong:?}; {} rows, {} keys handled",
            table.len(),
            per_key.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    viewing.stop().await;
    let duplicates: u64 = handled.values().map(|n| u64::from(n - 1)).sum();

    // The output topic holds every handled event, at least once. A count is no end
    // condition: a write retried after a leader died may land twice, so the reader goes on
    // until every handled event was seen.
    let mut unseen: BTreeSet<u64> = handled.keys().copied().collect();
    let mut read = 0;
    let relayed = goka_tests::read_until_at(
        &cluster.bootstrap(),
        Relayed::NAME,
        i32::try_from(PARTITIONS).unwrap(),
        Duration::from_secs(60),
        |m| {
            for message in &m[read..] {
                let value = String::from_utf8_lossy(message.value.as_deref().unwrap_or_default());
                unseen.remove(&sequence(&value));
            }
            read = m.len();
            unseen.is_empty()
        },
    );
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for message in &relayed {
        let value = String::from_utf8_lossy(message.value.as_deref().unwrap_or_default());
        *seen.entry(sequence(&value)).or_default() += 1;
    }
    let unrelayed: Vec<_> = handled
        .keys()
        .filter(|s| !seen.contains_key(s))
        .take(8)
        .collect();
    assert!(
        unrelayed.is_empty(),
        "handled events missing from {}: e.g. {unrelayed:?}",
        Relayed::NAME
    );
    Counted {
        handled: handled.len(),
        duplicates,
        relayed_duplicates: relayed.len() - seen.len(),
    }
}

/// The cluster tests run one at a time: each has three JVMs of its own.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A scenario under way: its own three-node cluster, an emitter writing 200 events a second
/// and a processor that handled its first events.
struct Scenario {
    _one: tokio::sync::MutexGuard<'static, ()>,
    cluster: KafkaCluster,
    client: TestClient,
    emitting: Emitting,
    ledger: Ledger,
    running: Running<ProcessorError>,
}

impl Scenario {
    /// Starts one whose clients give a delivery up after `message_timeout`.
    async fn start(message_timeout: Duration) -> Self {
        Self::start_with(message_timeout, Guarantee::AtLeastOnce).await
    }

    /// Starts one whose processor gives `guarantee`.
    async fn start_with(message_timeout: Duration, guarantee: Guarantee) -> Self {
        let one = ONE_CLUSTER_AT_A_TIME.lock().await;
        let cluster = KafkaCluster::start(3);
        let client = cluster_client(&cluster, message_timeout);
        let emitting = Emitting::start(&client, 200).await;
        let ledger = Ledger::default();
        // A transactional producer's deliveries may not outlast its transaction (10 s); the
        // emitter's may.
        let processor_client = match guarantee {
            Guarantee::ExactlyOnce => {
                cluster_client(&cluster, message_timeout.min(Duration::from_secs(10)))
            }
            _ => client.clone(),
        };
        let mut running = start_relay(&ledger, &processor_client, guarantee);
        started(&ledger, &mut running).await;
        Self {
            _one: one,
            cluster,
            client,
            emitting,
            ledger,
            running,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leaders_of_input_changelog_and_output_partitions_loses_nothing() {
    let Scenario {
        _one,
        mut cluster,
        client,
        emitting,
        ledger,
        mut running,
    } = Scenario::start(Duration::from_secs(60)).await;

    let bootstrap = cluster.bootstrap();
    let changelog = GroupTable::<Relay>::NAME;
    let mut figures = Vec::new();
    for (what, topic, partition) in [
        ("input", Events::NAME, 0),
        ("changelog", changelog, 1),
        ("output", Relayed::NAME, 2),
    ] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = leader_of(&bootstrap, topic, partition);
        let killed = Instant::now();
        let after = emitting.next();
        cluster.node(leader).kill();
        let took = resumed(&ledger, after, killed, what).await;
        assert_eq!(
            running.ended(),
            None,
            "the processor stopped after the {what} leader died"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.restart(leader);
        figures.push(format!(
            "{what} leader (node {leader}) killed: handling events emitted after the kill in {:.1} s",
            took.as_secs_f64()
        ));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (delivered, failed) = emitting.finish().await;
    assert!(failed.is_empty(), "deliveries reported failed: {failed:?}");
    let counted = count_exactly(&cluster, &client, &ledger, &delivered, Rows::Exact).await;
    assert_eq!(running.ended(), None, "the processor keeps running");
    println!(
        "leader kills: {} acknowledged, {} handled, lost 0, {} handled again, {} relayed twice; {}",
        delivered.len(),
        counted.handled,
        counted.duplicates,
        counted.relayed_duplicates,
        figures.join("; ")
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_for_good_and_processing_goes_on() {
    let Scenario {
        _one,
        mut cluster,
        client,
        emitting,
        ledger,
        mut running,
    } = Scenario::start(Duration::from_secs(60)).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = leader_of(&cluster.bootstrap(), Events::NAME, 0);
    let killed = Instant::now();
    let after = emitting.next();
    cluster.node(leader).kill();
    let took = resumed(&ledger, after, killed, "one node down").await;
    // Two replicas of three still make min.insync.replicas: writes with acks=all go on.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (delivered, failed) = emitting.finish().await;
    assert!(failed.is_empty(), "deliveries reported failed: {failed:?}");
    let counted = count_exactly(&cluster, &client, &ledger, &delivered, Rows::Exact).await;
    assert_eq!(running.ended(), None, "the processor keeps running");
    println!(
        "one node down for good (node {leader}): {} acknowledged, {} handled, lost 0, {} handled \
         again, {} relayed twice; events emitted after the kill handled in {:.1} s",
        delivered.len(),
        counted.handled,
        counted.duplicates,
        counted.relayed_duplicates,
        took.as_secs_f64()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_down_stop_run_naming_where_and_a_restart_loses_nothing() {
    // Deliveries give up after 10 s: two nodes down leave no partition with two in-sync
    // replicas, and the processor must say so rather than wait in silence.
    let Scenario {
        _one,
        mut cluster,
        emitting,
        ledger,
        mut running,
        ..
    } = Scenario::start(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let down = Instant::now();
    cluster.node(1).kill();
    cluster.node(2).kill();
    let deadline = Instant::now() + Duration::from_secs(120);
    let error = loop {
        if let Some(error) = running.ended() {
            break error;
        }
        assert!(
            Instant::now() < deadline,
            "two of three nodes down for 120 s and run goes on without a word"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stopped_after = down.elapsed();
    assert!(
        error.contains("partition") && error.contains("offset"),
        "the error names where it stopped: {error}"
    );
    let (delivered, failed) = emitting.finish().await;

    cluster.restart(1);
    cluster.restart(2);
    // A new instance takes over from what was committed: every acknowledged event is handled.
    let client = cluster_client(&cluster, Duration::from_secs(60));
    let running = start_relay(&ledger, &client, Guarantee::AtLeastOnce);
    let counted = count_exactly(&cluster, &client, &ledger, &delivered, Rows::AtLeastOnce).await;
    println!(
        "two nodes down: run stopped after {:.1} s ({error}); {} acknowledged, {} reported \
         failed, after the restart {} handled, lost 0, {} handled again",
        stopped_after.as_secs_f64(),
        delivered.len(),
        failed.len(),
        counted.handled,
        counted.duplicates
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controlled_shutdown_and_the_preferred_leaders_return_lose_nothing() {
    let Scenario {
        _one,
        mut cluster,
        client,
        emitting,
        ledger,
        mut running,
    } = Scenario::start(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let bootstrap = cluster.bootstrap();
    let leader = leader_of(&bootstrap, Events::NAME, 0);
    let shutdown = Instant::now();
    let after = emitting.next();
    // SIGTERM: the node hands its leaderships over before it stops.
    cluster.node(leader).shut_down();
    let moved = resumed(&ledger, after, shutdown, "controlled shutdown").await;
    let elsewhere = leader_of(&bootstrap, Events::NAME, 0);
    assert_ne!(elsewhere, leader, "the leadership moved");

    cluster.restart(leader);
    // The restarted node is the preferred leader; the controller gives it its leaderships back
    // (leader.imbalance.check.interval.seconds is short on the test cluster).
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while leader_of(&bootstrap, Events::NAME, 0) != leader {
        assert!(
            Instant::now() < deadline,
            "the preferred leader did not get {}/0 back in 90 s",
            Events::NAME
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let returned = back.elapsed();
    let after = emitting.next();
    resumed(&ledger, after, Instant::now(), "preferred leader back").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (delivered, failed) = emitting.finish().await;
    assert!(failed.is_empty(), "deliveries reported failed: {failed:?}");
    let counted = count_exactly(&cluster, &client, &ledger, &delivered, Rows::Exact).await;
    assert_eq!(running.ended(), None, "the processor keeps running");
    println!(
        "controlled shutdown of node {leader}: events emitted after it handled in {:.1} s; \
         leadership back {:.1} s after the restart; {} acknowledged, {} handled, lost 0, \
         {} handled again, {} relayed twice",
        moved.as_secs_f64(),
        returned.as_secs_f64(),
        delivered.len(),
        counted.handled,
        counted.duplicates,
        counted.relayed_duplicates
    );
    running.stop().await;
}

/// Under exactly-once, the leader of a changelog partition is killed while transactions
/// write to it: the open transaction cannot finish before the election (its writes wait for
/// the dead leader past the transaction timeout), is aborted, and the processor starts again
/// from the last commit by itself. `read_committed` readers see every event relayed once,
/// and the table counts each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_exactly_once_a_changelog_leader_killed_mid_transaction_changes_nothing_seen() {
    let Scenario {
        _one,
        mut cluster,
        client,
        emitting,
        ledger,
        mut running,
    } = Scenario::start_with(Duration::from_secs(60), Guarantee::ExactlyOnce).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let changelog = GroupTable::<Relay>::NAME;
    let leader = leader_of(&cluster.bootstrap(), changelog, 1);
    let killed = Instant::now();
    let after = emitting.next();
    cluster.node(leader).kill();
    let took = resumed(&ledger, after, killed, "changelog").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (delivered, failed) = emitting.finish().await;
    assert!(failed.is_empty(), "deliveries reported failed: {failed:?}");
    let counted = count_exactly(&cluster, &client, &ledger, &delivered, Rows::Once).await;
    assert_eq!(counted.relayed_duplicates, 0, "events relayed twice");
    assert_eq!(running.ended(), None, "the processor keeps running");
    println!(
        "exactly-once, changelog leader (node {leader}) killed: {} acknowledged, {} handled, \
         {} handled again (aborted), relayed twice 0, table exact; handling events emitted \
         after the kill in {:.1} s",
        delivered.len(),
        counted.handled,
        counted.duplicates,
        took.as_secs_f64(),
    );
    running.stop().await;
}

//! goka's processor options on the test broker: where a new group starts, the rebalance
//! callback, and the update callback of group-table recovery.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use goka::codec::StringCodec;
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::{GroupStart, Processor, ProcessorConfig, ProcessorState, Rebalance};
use goka::storage::{MemoryBuilder, Storage, StorageError};
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::{client, eventually, Running, TestBroker};

goka::stream!(pub Notes = "option-notes": String as StringCodec);

const PARTITIONS: u32 = 2;

/// Keeps the last note per key.
#[goka::processor(group = "option-keeper")]
#[input(topic = Notes, handler = Self::on_note)]
#[persist(value = String, codec = StringCodec)]
#[derive(Debug, Clone, Copy)]
pub struct Keeper;

impl Keeper {
    fn on_note(&self, ctx: &mut Context<'_, Self>, note: String) -> Result<(), CallbackError> {
        ctx.set_value(&note)
    }
}

async fn emitter(broker: &TestBroker) -> Emitter<Notes> {
    let client = client(broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    Emitter::<Notes>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap()
}

fn start(processor: &Arc<Processor<Keeper>>) -> Running<goka::processor::ProcessorError> {
    let processor = processor.clone();
    Running::spawn(move |cancel| async move { processor.run(cancel).await })
}

async fn running(processor: &Processor<Keeper>) {
    eventually(
        Duration::from_secs(60),
        || processor.state() == ProcessorState::Running,
        || format!("{:?}", processor.state()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_at_the_newest_message_unless_told_the_oldest() {
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    for key in ["early-1", "early-2", "early-3"] {
        notes
            .emit_sync(&key.into(), &"before".into())
            .await
            .unwrap();
    }
    // The default, as goka's: only what is written from the start on.
    let newest = Arc::new(Processor::new(
        Keeper,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            ..Default::default()
        },
    ));
    let run = start(&newest);
    running(&newest).await;
    // The partitions' reads begin at the end once assigned; give them a moment to ask for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for key in ["late-1", "late-2"] {
        notes.emit_sync(&key.into(), &"after".into()).await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        || {
            ["late-1", "late-2"]
                .iter()
                .all(|k| newest.get(&(*k).into()).unwrap().is_some())
        },
        || "the messages written after the start were not handled".to_owned(),
    )
    .await;
    for key in ["early-1", "early-2", "early-3"] {
        assert_eq!(
            newest.get(&key.into()).unwrap(),
            None,
            "{key} came before the group"
        );
    }
    run.stop().await;
}

/// The same group under another name, for a group that starts at the oldest message.
#[goka::processor(group = "option-backfill")]
#[input(topic = Notes, handler = Self::on_note)]
#[persist(value = String, codec = StringCodec)]
#[derive(Debug)]
pub struct Backfill;

impl Backfill {
    fn on_note(&self, ctx: &mut Context<'_, Self>, note: String) -> Result<(), CallbackError> {
        ctx.set_value(&note)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_told_the_oldest_handles_what_came_before_it() {
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    for key in ["early-1", "early-2", "early-3"] {
        notes
            .emit_sync(&key.into(), &"before".into())
            .await
            .unwrap();
    }
    let backfill = Arc::new(Processor::new(
        Backfill,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            new_group_start: GroupStart::Oldest,
            ..Default::default()
        },
    ));
    let run = {
        let backfill = backfill.clone();
        Running::spawn(move |cancel| async move { backfill.run(cancel).await })
    };
    eventually(
        Duration::from_secs(60),
        || {
            ["early-1", "early-2", "early-3"]
                .iter()
                .all(|k| backfill.get(&(*k).into()).unwrap().as_deref() == Some("before"))
        },
        || "the earlier messages were not handled".to_owned(),
    )
    .await;
    run.stop().await;
}

/// The partitions a member owns after the rebalances of `log`: an assignment adds, a revoke
/// takes away (under either group protocol).
fn owned(log: &[Rebalance]) -> Vec<i32> {
    let mut owned = std::collections::BTreeSet::new();
    for rebalance in log {
        match rebalance {
            Rebalance::Assigned(partitions) => owned.extend(partitions.iter().copied()),
            Rebalance::Revoked(partitions) => partitions.iter().for_each(|p| {
                owned.remove(p);
            }),
        }
    }
    owned.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebalance_callback_hears_of_assigned_and_revoked_partitions() {
    let broker = TestBroker::start();
    let _notes = emitter(&broker).await;
    let heard = |log: &Arc<Mutex<Vec<Rebalance>>>| {
        let log = log.clone();
        Arc::new(move |rebalance: &Rebalance| log.lock().unwrap().push(rebalance.clone()))
    };
    let (first_log, second_log) = (Arc::default(), Arc::default());
    let config = |log| ProcessorConfig {
        storage: Arc::new(MemoryBuilder),
        rebalance: Some(heard(log)),
        ..Default::default()
    };
    let first = Arc::new(Processor::new(Keeper, client(&broker), config(&first_log)));
    let first_run = start(&first);
    running(&first).await;
    assert_eq!(
        first_log.lock().unwrap().as_slice(),
        [Rebalance::Assigned(vec![0, 1])],
        "the only member gets both partitions"
    );

    let second = Arc::new(Processor::new(Keeper, client(&broker), config(&second_log)));
    let second_run = start(&second);
    eventually(
        Duration::from_secs(60),
        || {
            let (a, b) = (first_log.lock().unwrap(), second_log.lock().unwrap());
            owned(&a).len() == 1 && owned(&b).len() == 1
        },
        || {
            format!(
                "first {:?}, second {:?}",
                first_log.lock().unwrap(),
                second_log.lock().unwrap()
            )
        },
    )
    .await;
    let a = first_log.lock().unwrap().clone();
    // The classic protocol revokes every partition before it assigns again; the consumer
    // protocol revokes only the one that moves, and the first member keeps the other.
    let revoked = match goka_tests::group_protocol() {
        goka_tests::GroupProtocol::Classic => vec![0, 1],
        goka_tests::GroupProtocol::Consumer => {
            let moved: Vec<i32> = owned(&second_log.lock().unwrap()).into_iter().collect();
            moved
        }
    };
    assert_eq!(
        a[1],
        Rebalance::Revoked(revoked),
        "the first member gave partitions up before the new assignment: {a:?}"
    );
    let mut both = [owned(&a), owned(&second_log.lock().unwrap())].concat();
    both.sort_unstable();
    assert_eq!(both, [0, 1], "each partition has one owner");
    second_run.stop().await;
    first_run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_callback_applies_the_group_tables_changelog_on_recovery() {
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    let writer = Arc::new(Processor::new(
        Keeper,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            ..Default::default()
        },
    ));
    let run = start(&writer);
    running(&writer).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (key, note) in [("ann", "tea"), ("bo", "cake"), ("ann", "coffee")] {
        notes.emit_sync(&key.into(), &note.into()).await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        || writer.get(&"ann".into()).unwrap().as_deref() == Some("coffee"),
        || "not written".to_owned(),
    )
    .await;
    run.stop().await;

    // In memory, a new instance recovers the whole changelog through the callback.
    let applied = Arc::new(Mutex::new(Vec::new()));
    let update = {
        let applied = applied.clone();
        Arc::new(
            move |storage: &dyn Storage,
                  message: &goka::kafka::ConsumedMessage|
                  -> Result<(), StorageError> {
                let key = String::from_utf8_lossy(&message.key).into_owned();
                applied.lock().unwrap().push(key);
                let mut value = b"restored ".to_vec();
                value.extend(message.value.as_deref().unwrap_or_default());
                storage.set(&message.key, &value)
            },
        )
    };
    let reader = Arc::new(Processor::new(
        Keeper,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            update: Some(update),
            ..Default::default()
        },
    ));
    let run = start(&reader);
    running(&reader).await;
    assert_eq!(
        reader.get(&"ann".into()).unwrap().as_deref(),
        Some("restored coffee")
    );
    assert_eq!(
        reader.get(&"bo".into()).unwrap().as_deref(),
        Some("restored cake")
    );
    let mut keys = applied.lock().unwrap().clone();
    keys.sort();
    assert_eq!(keys, ["ann", "ann", "bo"], "one call per changelog message");
    run.stop().await;
}

/// Keeps the last note; a note "defer" finishes its work in another task once the gate
/// opens, "fail-later" fails it there, "forget" drops the handle, "defer-then-err" defers
/// work that finishes once the gate opens and then fails the handler, and "hold" defers work
/// that finishes once the gate opens or gives up when its partition stops.
#[goka::processor(group = "option-deferred")]
#[input(topic = Notes, handler = Self::on_note)]
#[persist(value = String, codec = StringCodec)]
#[derive(Debug)]
pub struct Deferring {
    gate: Arc<tokio::sync::Semaphore>,
    /// How many "hold" deferrals were told that their partition stopped.
    told: Arc<std::sync::atomic::AtomicUsize>,
}

impl Deferring {
    fn on_note(&self, ctx: &mut Context<'_, Self>, note: String) -> Result<(), CallbackError> {
        ctx.set_value(&note)?;
        match note.as_str() {
            "defer" => {
                let commit = ctx.defer_commit();
                let gate = self.gate.clone();
                tokio::spawn(async move {
                    let _open = gate.acquire().await;
                    commit.done();
                });
            }
            "fail-later" => {
                let commit = ctx.defer_commit();
                let gate = self.gate.clone();
                tokio::spawn(async move {
                    let _open = gate.acquire().await;
                    commit.fail("the upstream call timed out")
                });
            }
            "forget" => drop(ctx.defer_commit()),
            "hold" => {
                let commit = ctx.defer_commit();
                let (gate, told) = (self.gate.clone(), self.told.clone());
                let stopped = ctx.cancellation().clone();
                tokio::spawn(async move {
                    tokio::select! {
                        permit = gate.acquire() => {
                            let _permit = permit;
                            commit.done();
                        }
                        () = stopped.cancelled() => {
                            told.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            drop(commit);
                        }
                    }
                });
            }
            "defer-then-err" => {
                let commit = ctx.defer_commit();
                let gate = self.gate.clone();
                tokio::spawn(async move {
                    let _open = gate.acquire().await;
                    commit.done();
                });
                return Err("refused after deferring".into());
            }
            _ => {}
        }
        Ok(())
    }
}

fn deferring(broker: &TestBroker, gate: &Arc<tokio::sync::Semaphore>) -> Arc<Processor<Deferring>> {
    deferring_with(broker, gate, Default::default())
}

fn deferring_with(
    broker: &TestBroker,
    gate: &Arc<tokio::sync::Semaphore>,
    handler_errors: goka::processor::HandlerErrorPolicy,
) -> Arc<Processor<Deferring>> {
    deferring_configured(
        broker,
        gate,
        &Arc::default(),
        ProcessorConfig {
            handler_errors,
            ..Default::default()
        },
    )
}

fn deferring_configured(
    broker: &TestBroker,
    gate: &Arc<tokio::sync::Semaphore>,
    told: &Arc<std::sync::atomic::AtomicUsize>,
    config: ProcessorConfig,
) -> Arc<Processor<Deferring>> {
    Arc::new(Processor::new(
        Deferring {
            gate: gate.clone(),
            told: told.clone(),
        },
        client(broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            new_group_start: GroupStart::Oldest,
            ..config
        },
    ))
}

/// The committable offset of the partition of key "k".
fn done_offset(processor: &Processor<Deferring>) -> Option<i64> {
    use goka::partitioner::Partitioner;
    let partition = goka::partitioner::GokaPartitioner.partition(b"k", PARTITIONS);
    processor
        .done_offsets()
        .into_iter()
        .find(|o| o.partition == partition)
        .map(|o| o.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_commit_lets_later_messages_go_on_but_is_never_passed() {
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let processor = deferring(&broker, &gate);
    let run = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    for note in ["first", "defer", "after-1", "after-2"] {
        notes.emit_sync(&"k".into(), &note.into()).await.unwrap();
    }
    // Later messages were handled while the deferred one waits...
    eventually(
        Duration::from_secs(60),
        || processor.get(&"k".into()).unwrap().as_deref() == Some("after-2"),
        || format!("{:?}", processor.get(&"k".into())),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ...but the commit stops at it: "first" (offset 0) is done, "defer" (offset 1) is not.
    assert_eq!(done_offset(&processor), Some(1));
    gate.add_permits(1);
    eventually(
        Duration::from_secs(30),
        || done_offset(&processor) == Some(4),
        || format!("done offset {:?}", done_offset(&processor)),
    )
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_or_forgotten_deferred_work_stops_run_naming_the_message() {
    for (note, expected) in [
        (
            "fail-later",
            "deferred work failed: the upstream call timed out",
        ),
        ("forget", "deferred commit dropped without done() or fail()"),
    ] {
        let broker = TestBroker::start();
        let notes = emitter(&broker).await;
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        let processor = deferring(&broker, &gate);
        notes.emit_sync(&"k".into(), &"first".into()).await.unwrap();
        notes.emit_sync(&"k".into(), &note.into()).await.unwrap();
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            processor.run(tokio_util::sync::CancellationToken::new()),
        )
        .await
        .expect("run stops by itself");
        let error = outcome.unwrap_err().to_string();
        assert!(
            error.contains(expected) && error.contains("offset 1") && error.contains("\"k\""),
            "{note}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deferred_work_is_never_committed_past() {
    use goka::partitioner::Partitioner;
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let processor = deferring(&broker, &gate);
    for note in ["first", "fail-later", "after-1", "after-2"] {
        notes.emit_sync(&"k".into(), &note.into()).await.unwrap();
    }
    let running = tokio::spawn({
        let processor = processor.clone();
        async move {
            processor
                .run(tokio_util::sync::CancellationToken::new())
                .await
        }
    });
    // The messages after the deferred one are handled (and acknowledged) before it fails.
    eventually(
        Duration::from_secs(60),
        || processor.get(&"k".into()).unwrap().as_deref() == Some("after-2"),
        || format!("{:?}", processor.get(&"k".into())),
    )
    .await;
    gate.add_permits(1);
    let outcome = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("run stops by itself")
        .unwrap();
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("offset 1"), "{error}");
    // The next owner starts at the failed message, so it is handled again.
    let partition = goka::partitioner::GokaPartitioner.partition(b"k", PARTITIONS);
    assert_eq!(
        goka_tests::committed_offset(&broker, "option-deferred", "option-notes", partition),
        Some(1)
    );
}

/// Deferred work that does not finish holds a revoke (and the group's rebalance) for
/// `drain_timeout` at most, and learns of it from `ctx.cancellation()`; the message is not
/// committed, so the partition's next owner handles it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_waits_for_deferred_work_at_most_the_drain_timeout_and_tells_it() {
    use goka::partitioner::Partitioner;
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let told = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let config = || ProcessorConfig {
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let first = deferring_configured(&broker, &gate, &told, config());
    let first_run = {
        let processor = first.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    // A held deferral on each partition: whichever moves, its revoke has one to wait for.
    let keys: Vec<String> = (0..2)
        .map(|p| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|k| {
                    goka::partitioner::GokaPartitioner.partition(k.as_bytes(), PARTITIONS) == p
                })
                .unwrap()
        })
        .collect();
    for key in &keys {
        notes.emit_sync(key, &"hold".into()).await.unwrap();
    }
    eventually(
        Duration::from_secs(60),
        || {
            keys.iter()
                .all(|k| first.get(k).unwrap().as_deref() == Some("hold"))
        },
        || {
            format!(
                "{:?}",
                keys.iter().map(|k| first.get(k)).collect::<Vec<_>>()
            )
        },
    )
    .await;
    let second = deferring_configured(&broker, &gate, &told, config());
    let second_run = {
        let processor = second.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    eventually(
        Duration::from_secs(60),
        || {
            !second.partitions().is_empty()
                && first.partitions().len() + second.partitions().len() == 2
        },
        || {
            format!(
                "the rebalance did not finish: first {:?}, second {:?}",
                first.partitions(),
                second.partitions()
            )
        },
    )
    .await;
    assert!(
        told.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the deferred work of the revoked partition was not told"
    );
    // Stopping with deferrals still held does not fail either run.
    second_run.stop().await;
    first_run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_is_done_only_once_its_deferred_work_is() {
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let processor = deferring_with(
        &broker,
        &gate,
        goka::processor::HandlerErrorPolicy::DeadLetter,
    );
    let run = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    for note in ["first", "defer-then-err", "after"] {
        notes.emit_sync(&"k".into(), &note.into()).await.unwrap();
    }
    eventually(
        Duration::from_secs(60),
        || processor.get(&"k".into()).unwrap().as_deref() == Some("after"),
        || format!("{:?}", processor.get(&"k".into())),
    )
    .await;
    assert_eq!(processor.stats().dead_letters, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Dead-lettered, but its deferred work still runs: the commit stops at it.
    assert_eq!(done_offset(&processor), Some(1));
    gate.add_permits(1);
    eventually(
        Duration::from_secs(30),
        || done_offset(&processor) == Some(3),
        || format!("done offset {:?}", done_offset(&processor)),
    )
    .await;
    run.stop().await;
}

goka::visitor!(pub Shout: String);

/// Keeps notes; a visit appends the visitor's value to every note.
#[goka::processor(group = "option-visited")]
#[input(topic = Notes, handler = Self::on_note)]
#[persist(value = String, codec = StringCodec)]
#[visit(visitor = Shout, handler = Self::on_shout)]
#[derive(Debug)]
pub struct Visited;

impl Visited {
    fn on_note(&self, ctx: &mut Context<'_, Self>, note: String) -> Result<(), CallbackError> {
        ctx.set_value(&note)
    }

    fn on_shout(&self, ctx: &mut Context<'_, Self>, suffix: String) -> Result<(), CallbackError> {
        let note = ctx.value()?.unwrap_or_default();
        ctx.set_value(&format!("{note}{suffix}"))
    }
}

/// `visit_all` answers once what the visit wrote is acknowledged: while the broker takes no
/// writes it does not answer, and once it does, the visit's rows are in the changelog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_all_answers_once_what_the_visit_wrote_is_acknowledged() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let notes = emitter(&broker).await;
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for key in &keys {
        notes.emit_sync(key, &"hi".into()).await.unwrap();
    }
    let processor = Arc::new(Processor::new(
        Visited,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            new_group_start: GroupStart::Oldest,
            ..Default::default()
        },
    ));
    let run = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    eventually(
        Duration::from_secs(60),
        || keys.iter().all(|k| processor.get(k).unwrap().is_some()),
        || "not every note was kept".to_owned(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_mode(goka_tests::ProxyMode::Stall);
    proxy.cut();
    let visit = tokio::spawn({
        let processor = processor.clone();
        async move { processor.visit_all::<Shout>("!".into()).await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !visit.is_finished(),
        "visit_all answered while its writes could not reach the broker: {:?}",
        visit.await
    );
    proxy.set_mode(goka_tests::ProxyMode::Forward);
    let visited = tokio::time::timeout(Duration::from_secs(30), visit)
        .await
        .expect("visit_all answers once the broker takes writes again")
        .unwrap()
        .unwrap();
    assert_eq!(visited, 10);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_all_visits_every_key_of_every_owned_partition_on_a_running_processor() {
    let broker = TestBroker::start();
    let notes = emitter(&broker).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        notes.emit_sync(key, &"hi".into()).await.unwrap();
    }
    let processor = Arc::new(Processor::new(
        Visited,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            new_group_start: GroupStart::Oldest,
            ..Default::default()
        },
    ));
    let run = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    eventually(
        Duration::from_secs(60),
        || keys.iter().all(|k| processor.get(k).unwrap().is_some()),
        || "not every note was kept".to_owned(),
    )
    .await;
    let visited = processor.visit_all::<Shout>("!".into()).await.unwrap();
    assert_eq!(visited, 20);
    for key in &keys {
        assert_eq!(processor.get(key).unwrap().as_deref(), Some("hi!"), "{key}");
    }
    let progress: Vec<_> = processor
        .partition_stats()
        .into_iter()
        .filter_map(|p| p.visit)
        .collect();
    assert_eq!(progress.len(), PARTITIONS as usize);
    assert!(progress
        .iter()
        .all(|v| v.finished && v.visited == v.total && v.visitor == "Shout"));
    assert_eq!(progress.iter().map(|v| v.total).sum::<u64>(), 20);
    // A message after the visit sees what the visit wrote, and the commit still follows
    // the inputs only.
    notes
        .emit_sync(&"k0".into(), &"again".into())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        || processor.get(&"k0".into()).unwrap().as_deref() == Some("again"),
        || format!("{:?}", processor.get(&"k0".into())),
    )
    .await;
    assert!(processor.done_offsets().iter().all(|o| o.offset >= 0));
    run.stop().await;
}

/// A client of `broker` whose metadata and admin requests give up after 2 s, so that an
/// attempt against a cluster that does not answer ends soon.
fn impatient_client(broker: &TestBroker) -> goka_tests::TestClient {
    Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(
        goka_tests::config(broker).set("socket.timeout.ms", "2000"),
    ))
}

/// goka's `WithBackoffBuilder`: a processor started while the cluster refuses every
/// connection shows `Starting`, tries again after each wait, and handles messages once the
/// cluster answers; one whose backoff gives up stops `run` with the error, naming the group
/// and the topic it could not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_started_while_the_cluster_is_unreachable_waits_or_gives_up() {
    use goka::kafka::Backoff;
    use goka::processor::ProcessorError;

    let broker = TestBroker::start_behind_proxy();
    let notes = emitter(&broker).await;
    let proxy = broker.proxy().unwrap();
    proxy.set_mode(goka_tests::ProxyMode::Refuse);
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        reset_after: Duration::from_secs(60),
        give_up_after: Some(Duration::from_secs(4)),
    };

    let giving_up = Processor::new(
        Keeper,
        impatient_client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            backoff,
            ..goka_tests::from_oldest()
        },
    );
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        giving_up.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("gives up by itself")
    .expect_err("cannot start");
    match &error {
        ProcessorError::Unreachable {
            group,
            attempts,
            failing_for,
            source,
        } => {
            assert_eq!(*group, "option-keeper");
            assert!(*attempts >= 2, "{attempts} attempts");
            assert!(*failing_for >= Duration::from_secs(4));
            assert!(source.is_unreachable(), "{source}");
        }
        other => panic!("not an unreachable cluster: {other}"),
    }
    let message = error.to_string();
    assert!(message.contains("option-keeper"), "{message}");
    assert!(message.contains("option-notes"), "{message}");
    assert_eq!(giving_up.state(), ProcessorState::Stopped);

    let waiting = Arc::new(Processor::new(
        Keeper,
        impatient_client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            backoff: Backoff {
                give_up_after: None,
                ..backoff
            },
            ..goka_tests::from_oldest()
        },
    ));
    let mut run = start(&waiting);
    // Longer than an attempt takes: the processor tried, failed and waits to try again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        waiting.state(),
        ProcessorState::Starting,
        "{:?}",
        run.ended()
    );
    proxy.set_mode(goka_tests::ProxyMode::Forward);
    running(&waiting).await;
    notes
        .emit_sync(&"after".into(), &"the outage".into())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        || waiting.get(&"after".into()).unwrap().as_deref() == Some("the outage"),
        || format!("{:?}", waiting.get(&"after".into())),
    )
    .await;
    run.stop().await;
}

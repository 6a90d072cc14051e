//! Hot standby (`ProcessorConfig::hot_standby`): an instance follows the tables of the
//! partitions it does not own, shows them as standby, takes them over from where it got
//! instead of recovering them in full, and stops naming a panic in standby.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use goka::processor::{Processor, ProcessorConfig};
use goka_tests::counter::{
    emit, setup, start, view_of_counts, wait_for_counts, Counter, PARTITIONS,
};
use goka_tests::TestBroker;
use tokio_util::sync::CancellationToken;

/// A panic in hot standby (here the storage of the first table partition it follows) stops
/// the processor naming it, as a panic in a partition's task does, instead of vanishing
/// behind the full recovery a takeover would do anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_hot_standby_stops_the_processor_naming_it() {
    let broker = TestBroker::start();
    let (client, _emitter) = setup(&broker).await;
    let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let storage =
        move |topic: &str,
              partition: i32|
              -> Result<Box<dyn goka::storage::Storage>, goka::storage::StorageError> {
            // Standby follows every table partition while the group forms, before any task.
            if built.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                panic!("the storage of {topic} partition {partition} cannot be built");
            }
            Ok(Box::new(goka::storage::MemoryStorage::new(
                topic, partition,
            )))
        };
    let processor = Processor::new(
        Counter,
        client,
        ProcessorConfig {
            hot_standby: true,
            storage: Arc::new(storage),
            ..goka_tests::from_oldest()
        },
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        processor.run(CancellationToken::new()),
    )
    .await
    .expect("run stops by itself");
    let error = outcome.unwrap_err().to_string();
    assert!(
        error.contains("hot standby panicked") && error.contains("cannot be built"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_standby_follows_the_partitions_it_does_not_own_and_takes_over_without_recovering() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let standby = || ProcessorConfig {
        hot_standby: true,
        ..goka_tests::from_oldest()
    };
    let first = Arc::new(Processor::new(Counter, client.clone(), standby()));
    let (first_cancel, first_task) = start(&first);
    tokio::time::timeout(Duration::from_secs(60), first.recovered())
        .await
        .unwrap();
    let (view, view_running) = view_of_counts(&client).await;
    // In rounds, so the table's changelog is written in several batches.
    let mut expected = HashMap::new();
    for round in 0..4 {
        for (k, v) in emit(&emitter, round * 250..(round + 1) * 250, 40).await {
            *expected.entry(k).or_insert(0) += v;
        }
        wait_for_counts(&view, &expected).await;
    }

    // The second instance owns some partitions and follows the others' tables in standby,
    // up to their changelogs' ends.
    let second = Arc::new(Processor::new(Counter, client.clone(), standby()));
    let (second_cancel, second_task) = start(&second);
    let caught_up = |p: &goka::processor::ProcessorPartitionStats| matches!(p.tables.as_slice(), [t] if t.state == goka::table::TableState::Running && t.lag == 0);
    goka_tests::eventually(
        Duration::from_secs(60),
        || {
            let stats = second.partition_stats();
            let owned = second.partitions().len();
            let standby: Vec<_> = stats
                .iter()
                .filter(|p| p.state == goka::processor::PartitionState::Standby)
                .collect();
            owned > 0
                && owned + standby.len() == PARTITIONS as usize
                && standby.iter().all(|p| caught_up(p))
        },
        || {
            format!(
                "no split with caught-up standbys: {:?}",
                second.partition_stats()
            )
        },
    )
    .await;
    let followed: Vec<i32> = second
        .partition_stats()
        .iter()
        .filter(|p| p.state == goka::processor::PartitionState::Standby)
        .map(|p| p.partition)
        .collect();
    assert!(
        followed.iter().all(|p| first.partitions().contains_key(p)),
        "standby partitions {followed:?} are the first instance's {:?}",
        first.partitions()
    );

    // The monitor shows them as followed, not as owned.
    let monitor = goka::web::Monitor::new();
    monitor.processor(&second);
    let [stats] = monitor.stats().try_into().unwrap();
    let shown: Vec<(i32, Option<i64>)> = stats
        .partitions
        .iter()
        .filter(|p| p.state == "Standby")
        .map(|p| (p.partition, p.lag))
        .collect();
    assert_eq!(
        shown,
        followed.iter().map(|p| (*p, Some(0))).collect::<Vec<_>>(),
        "{stats:?}"
    );
    // The first instance leaves: the second takes its partitions over from the standby
    // copies, reading only what the first wrote after them, and counts on.
    first_cancel.cancel();
    first_task.await.unwrap().unwrap();
    goka_tests::eventually(
        Duration::from_secs(60),
        || {
            let stats = second.partition_stats();
            second.partitions().len() == PARTITIONS as usize
                && stats.len() == PARTITIONS as usize
                && stats.iter().all(caught_up)
        },
        || format!("no takeover: {:?}", second.partition_stats()),
    )
    .await;
    // Taken over from the standby copy: recovery started near the end. (It reads again from
    // the end the broker reports, which on the test broker is the first offset of the last
    // record batch: a changelog's suffix applied again leaves the rows as they were.)
    for p in second.partition_stats() {
        if followed.contains(&p.partition) {
            let [table] = p.tables.as_slice() else {
                panic!("{p:?}")
            };
            let rows = table.offset.unwrap() + 1;
            assert!(
                table.recovery.start > Some(0) && (table.recovery.messages as i64) < rows / 2,
                "partition {} was taken over from its standby copy: {p:?}",
                p.partition
            );
        }
    }
    let more = emit(&emitter, 1_000..1_500, 40).await;
    for (k, v) in more {
        *expected.get_mut(&k).unwrap() += v;
    }
    wait_for_counts(&view, &expected).await;
    for (key, count) in &expected {
        assert_eq!(second.get(key).unwrap(), Some(*count), "{key}");
    }
    second_cancel.cancel();
    second_task.await.unwrap().unwrap();
    view_running.stop().await;
}

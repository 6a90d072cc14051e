//! A rolling migration in one consumer group: goka instances (goka v1.1.15, the Go program in
//! `tests/goka`) and ours in the same group at once. goka's default rebalance strategy is its
//! own `copartition`, which librdkafka does not offer; a goka service that also offers
//! sarama's `range` (`Consumer.Group.Rebalance.GroupStrategies`) shares a group with ours,
//! whose members offer `range`: the broker picks the strategy every member offers.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::{GroupTable, Processor};
use goka::topic::Topic;
use goka_tests::goka_peer::GokaPeer;
use goka_tests::{client, Running, TestBroker, TestClient};

goka::stream!(pub Clicks = "mixed-clicks": String as StringCodec);

const PARTITIONS: u32 = 4;

fn user(i: usize) -> String {
    format!("user-{}", i % 20)
}

fn page(i: usize) -> String {
    format!("/page/{i}")
}

/// goka's counter of the group, written in Rust.
#[goka::processor(group = "interop-mixed")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter {
    /// Each click handled, with its partition.
    handled: Arc<Mutex<Vec<(String, i32)>>>,
}

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let partition = ctx.partition();
        self.handled.lock().unwrap().push((page, partition));
        Ok(())
    }
}

/// Waits until the group table, read by our view, counts clicks `0..n`.
async fn counted(client: &TestClient, n: usize) {
    let expected: BTreeMap<String, i64> = (0..n).fold(BTreeMap::new(), |mut counts, i| {
        *counts.entry(user(i)).or_default() += 1;
        counts
    });
    goka_tests::wait_for_rows::<GroupTable<Counter>>(client, &expected, Duration::from_secs(90))
        .await;
}

async fn emit_to<T: goka::topic::Stream<Key = String, Value = String>>(
    emitter: &Emitter<T>,
    clicks: std::ops::Range<usize>,
) {
    for i in clicks {
        emitter.emit_sync(&user(i), &page(i)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goka_and_our_instances_share_a_group_through_rebalances() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME], PARTITIONS).await;
    let emitter = Emitter::<Clicks>::new(&*client).await.unwrap();

    // A goka instance alone owns the group, on its default strategy first in its list.
    let mut goka = GokaPeer::new("count", &broker.bootstrap())
        .arg("group", "interop-mixed")
        .arg("stream", Clicks::NAME)
        .arg("strategy", "copartition,range")
        .spawn();
    goka.wait_assigned(Duration::from_secs(60), |p| p == [0, 1, 2, 3]);
    emit_to(&emitter, 0..100).await;
    counted(&client, 100).await;

    // Ours joins: the group moves to range, and each member gets two partitions of the four.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let ours = Arc::new(Processor::new(
        Counter {
            handled: handled.clone(),
        },
        client.clone(),
        goka::processor::ProcessorConfig::default(),
    ));
    let mut running = Running::spawn({
        let ours = ours.clone();
        move |cancel| async move { ours.run(cancel).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while ours.partitions().len() != 2 {
        assert!(
            !running.is_finished(),
            "ours stopped: {:?}",
            running.ended()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "ours owns {:?} after 90 s; goka's log:\n{}",
            ours.partitions(),
            goka.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (goka, gokas) = tokio::task::spawn_blocking(move || {
        let partitions = goka.wait_assigned(Duration::from_secs(30), |p| p.len() == 2);
        (goka, partitions)
    })
    .await
    .unwrap();
    let our_partitions: BTreeSet<i32> = ours.partitions().into_keys().collect();
    assert!(
        gokas.iter().all(|p| !our_partitions.contains(p)),
        "goka {gokas:?}, ours {our_partitions:?}"
    );
    emit_to(&emitter, 100..200).await;
    counted(&client, 200).await;

    // goka leaves: ours takes the whole group.
    let goka_report = goka.stop_to_end().await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || ours.partitions().len() == 4,
        || format!("ours owns {:?}", ours.partitions()),
    )
    .await;
    emit_to(&emitter, 200..300).await;
    counted(&client, 300).await;
    running.stop().await;

    // Every click handled once, each by the member that owned its partition.
    let by_goka: Vec<String> = serde_json::from_value(goka_report["values"].clone()).unwrap();
    let by_ours = handled.lock().unwrap().clone();
    let index = |page: &str| -> usize { page.trim_start_matches("/page/").parse().unwrap() };
    for (page, partition) in &by_ours {
        if (100..200).contains(&index(page)) {
            assert!(
                our_partitions.contains(partition),
                "ours handled {page} of partition {partition}, goka's while both ran"
            );
        }
    }
    let all: Vec<&str> = by_goka
        .iter()
        .map(String::as_str)
        .chain(by_ours.iter().map(|(page, _)| page.as_str()))
        .collect();
    let distinct: BTreeSet<&str> = all.iter().copied().collect();
    println!(
        "goka handled {}, ours {}; duplicates {}",
        by_goka.len(),
        by_ours.len(),
        all.len() - distinct.len()
    );
    assert_eq!(distinct.len(), 300, "every click handled");
    assert_eq!(all.len(), 300, "no click handled twice");
}

goka::stream!(pub Taps = "refused-taps": String as StringCodec);

/// A member of a group whose goka instances keep goka's default strategy.
#[goka::processor(group = "interop-refused")]
#[input(topic = Taps, handler = Self::on_tap)]
#[persist(value = i64, codec = Int64Codec)]
struct Refused;

impl Refused {
    fn on_tap(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_goka_instances_on_gokas_default_strategy_refuses_ours_and_run_says_why() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Taps::NAME], PARTITIONS).await;
    let mut goka = GokaPeer::new("count", &broker.bootstrap())
        .arg("group", "interop-refused")
        .arg("stream", Taps::NAME)
        .spawn();
    goka.wait_assigned(Duration::from_secs(60), |p| p == [0, 1, 2, 3]);

    let ours = Processor::new(Refused, client.clone(), Default::default());
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        ours.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("ours neither joined nor stopped")
    .expect_err("ours joined a group whose members offer only copartition");
    let text = error.to_string();
    println!("ours stopped: {text}");
    for part in ["interop-refused", "copartition", "GroupStrategies"] {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }

    // goka's instance kept the group and goes on.
    let taps = Emitter::<Taps>::new(&*client).await.unwrap();
    emit_to(&taps, 0..20).await;
    let expected: BTreeMap<String, i64> = (0..20).fold(BTreeMap::new(), |mut counts, i| {
        *counts.entry(user(i)).or_default() += 1;
        counts
    });
    goka_tests::wait_for_rows::<GroupTable<Refused>>(&client, &expected, Duration::from_secs(60))
        .await;
    let report = goka.stop_to_end().await;
    assert_eq!(report["handled"], 20, "{report}");
}

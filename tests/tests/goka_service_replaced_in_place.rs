//! Replacing a goka service in place, and back: a goka processor group (goka v1.1.15, the Go
//! program in `tests/goka`) counts clicks and is stopped mid-stream; our processor starts in
//! the same group on the same topics, continues from goka's committed offsets with the table
//! goka wrote, and is stopped mid-stream in turn; goka takes the group back from our commits
//! and our table. Every click is handled; what was handled twice is counted and reported.

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
use goka_tests::{client, TestBroker};
use tokio_util::sync::CancellationToken;

goka::stream!(pub Clicks = "replace-clicks": String as StringCodec);

const PARTITIONS: u32 = 4;

fn user(i: usize) -> String {
    format!("user-{}", i % 20)
}

fn page(i: usize) -> String {
    format!("/page/{i}")
}

/// The goka service's group, written in Rust: the same group name, input and table codec.
#[goka::processor(group = "interop-replace")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Replacement {
    handled: Arc<Mutex<Vec<String>>>,
    /// Stops the processor once it handled this many clicks, as an operator stops a service.
    stop_after: usize,
    stop: CancellationToken,
}

impl Replacement {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let mut handled = self.handled.lock().unwrap();
        handled.push(page);
        if handled.len() == self.stop_after {
            self.stop.cancel();
        }
        Ok(())
    }
}

fn values(report: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(report["values"].clone()).unwrap()
}

/// Runs `ours` (which cancels `stop` once its handler saw its `stop_after` messages) until it
/// handled the `left` messages goka left, then lets `more` emit the next ones and waits for
/// ours to stop by itself; returns what it handled.
async fn take_over<P: goka::processor::Handlers>(
    ours: Processor<P>,
    stop: CancellationToken,
    handled: &Mutex<Vec<String>>,
    left: usize,
    more: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    let ours = Arc::new(ours);
    let running = tokio::spawn({
        let ours = ours.clone();
        async move { ours.run(stop).await }
    });
    goka_tests::eventually(
        Duration::from_secs(60),
        || handled.lock().unwrap().len() >= left,
        || {
            format!(
                "ours handled {} of the {left} messages goka left",
                handled.lock().unwrap().len()
            )
        },
    )
    .await;
    more.await;
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("ours did not stop where it was told")
        .unwrap()
        .unwrap();
    handled.lock().unwrap().clone()
}

/// Every message of `emitted` handled across the hand-overs (goka, ours, goka again), each
/// once: graceful stops commit what was handled. Prints the split and the duplicates.
fn assert_handed_over_once(what: &str, emitted: &BTreeSet<String>, runs: [&[String]; 3]) {
    let all: Vec<&String> = runs.iter().flat_map(|run| run.iter()).collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    println!(
        "{what}: goka handled {}, ours {}, goka again {}; duplicates {}",
        runs[0].len(),
        runs[1].len(),
        runs[2].len(),
        all.len() - distinct.len()
    );
    let missing: Vec<&String> = emitted.iter().filter(|m| !distinct.contains(m)).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
    assert_eq!(
        all.len(),
        emitted.len(),
        "handled twice across the hand-overs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goka_service_is_replaced_by_ours_and_back_losing_nothing() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME], PARTITIONS).await;
    let clicks = Emitter::<Clicks>::new(&*client).await.unwrap();
    for i in 0..300 {
        clicks.emit_sync(&user(i), &page(i)).await.unwrap();
    }

    // goka runs the service and is stopped after 100 clicks (a few more may be under way
    // when it stops; they count as goka's).
    let first = GokaPeer::new("count", &broker.bootstrap())
        .arg("group", "interop-replace")
        .arg("stream", Clicks::NAME)
        .arg("messages", 100)
        .run_to_end()
        .await;
    let by_goka = values(&first);
    assert!(by_goka.len() >= 100, "{first}");

    // Ours takes over the group: it handles what goka left of the 300, and is stopped after
    // 50 of the next 150.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let left = 300 - by_goka.len();
    let ours = Processor::new(
        Replacement {
            handled: handled.clone(),
            stop_after: left + 50,
            stop: stop.clone(),
        },
        client.clone(),
        // goka ran briefly: a partition it never fetched has no commit, and starts at the
        // oldest message (the default, the newest, would skip its clicks). Partitions with a
        // commit start there: a start from the oldest would show as duplicates.
        goka_tests::from_oldest(),
    );
    let more = async {
        for i in 300..450 {
            clicks.emit_sync(&user(i), &page(i)).await.unwrap();
        }
    };
    let by_ours = take_over(ours, stop, &handled, left, more).await;
    assert!(
        by_ours.len() >= left + 50,
        "ours stopped before it was told"
    );

    // goka takes the group back from our commits and our table, until the table counts all
    // 450 clicks.
    let expected: BTreeMap<String, i64> = (0..450).fold(BTreeMap::new(), |mut counts, i| {
        *counts.entry(user(i)).or_default() += 1;
        counts
    });
    let back = GokaPeer::new("count", &broker.bootstrap())
        .arg("group", "interop-replace")
        .arg("stream", Clicks::NAME)
        .spawn();
    goka_tests::wait_for_rows::<GroupTable<Replacement>>(
        &client,
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let second = back.stop_to_end().await;
    let by_goka_again = values(&second);

    let emitted: BTreeSet<String> = (0..450).map(page).collect();
    assert_handed_over_once("count", &emitted, [&by_goka, &by_ours, &by_goka_again]);
}

goka::stream!(pub Shares = "replace-shares": String as StringCodec);

/// goka's loopback service, written in Rust: each share "TO|N" goes through the group's loop
/// topic to TO, where it is counted.
#[goka::processor(group = "interop-replace-loop")]
#[input(topic = Shares, handler = Self::on_share)]
#[loopback(value = String, codec = StringCodec, handler = Self::on_loop)]
#[persist(value = i64, codec = Int64Codec)]
struct LoopReplacement {
    handled: Arc<Mutex<Vec<String>>>,
    stop_after: usize,
    stop: CancellationToken,
}

impl LoopReplacement {
    fn on_share(&self, ctx: &mut Context<'_, Self>, share: String) -> Result<(), CallbackError> {
        let to = share.split('|').next().unwrap_or_default().to_owned();
        ctx.loopback(&to, &share)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, share: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let mut handled = self.handled.lock().unwrap();
        handled.push(share);
        if handled.len() == self.stop_after {
            self.stop.cancel();
        }
        Ok(())
    }
}

fn share(i: usize) -> String {
    format!("{}|{i}", user(i * 7 + 3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goka_loopback_service_is_replaced_with_loop_messages_in_flight() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Shares::NAME], PARTITIONS).await;
    let shares = Emitter::<Shares>::new(&*client).await.unwrap();
    for i in 0..200 {
        shares.emit_sync(&user(i), &share(i)).await.unwrap();
    }

    // goka stops after counting 60 shares in its loop handler; the rest of what its input
    // handler sent to the loop topic waits there for the next owner.
    let first = GokaPeer::new("loop", &broker.bootstrap())
        .arg("group", "interop-replace-loop")
        .arg("stream", Shares::NAME)
        .arg("messages", 60)
        .run_to_end()
        .await;
    let by_goka = values(&first);

    // Ours handles the rest, from goka's loop topic and the input, and stops 30 loop messages
    // into the next 100 shares.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let left = 200 - by_goka.len();
    let ours = Processor::new(
        LoopReplacement {
            handled: handled.clone(),
            stop_after: left + 30,
            stop: stop.clone(),
        },
        client.clone(),
        // goka ran briefly: a partition it never fetched has no commit, and starts at the
        // oldest message (the default, the newest, would skip its clicks). Partitions with a
        // commit start there: a start from the oldest would show as duplicates.
        goka_tests::from_oldest(),
    );
    let more = async {
        for i in 200..300 {
            shares.emit_sync(&user(i), &share(i)).await.unwrap();
        }
    };
    let by_ours = take_over(ours, stop, &handled, left, more).await;

    // goka takes the group back, loop messages ours left included.
    let expected: BTreeMap<String, i64> = (0..300).fold(BTreeMap::new(), |mut counts, i| {
        *counts.entry(user(i * 7 + 3)).or_default() += 1;
        counts
    });
    let back = GokaPeer::new("loop", &broker.bootstrap())
        .arg("group", "interop-replace-loop")
        .arg("stream", Shares::NAME)
        .spawn();
    goka_tests::wait_for_rows::<GroupTable<LoopReplacement>>(
        &client,
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let second = back.stop_to_end().await;
    let by_goka_again = values(&second);

    let emitted: BTreeSet<String> = (0..300).map(share).collect();
    assert_handed_over_once("loop", &emitted, [&by_goka, &by_ours, &by_goka_again]);
}

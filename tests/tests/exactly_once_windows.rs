//! Windows and timers under exactly-once on Kafka 4.4: a window's `on_close` output and a
//! timer's firing are part of the transaction of the message whose stream time brought
//! them. When that transaction aborts (a later message's handler fails), `read_committed`
//! readers see neither, the window's closed mark and the timer's removal are dropped with
//! it (also from the tables on disk, which the next run starts from), and the restart
//! closes and fires them again: each appears exactly once.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use goka::codec::{Int64Codec, Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::processor::{Guarantee, Processor, ProcessorConfig};
use goka::storage::RocksDbBuilder;
use goka::timer::TimerTime;
use goka::topic::Topic;
use goka::window::{ClosedWindow, WindowSpec};
use goka_tests::{client, read_until_at, Running, TestBroker};

goka::stream!(pub Clicks = "eosw-clicks": String as StringCodec);
goka::stream!(pub Alerts = "eosw-alerts": String as StringCodec);
goka::stream!(pub Reminders = "eosw-reminders": String as StringCodec);
goka::window!(
    /// Clicks per user and minute; late clicks count for 10 s after the minute.
    pub PerMinute = "per-minute": u64 as Json,
    WindowSpec::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10))
);
goka::timer!(
    /// Fires 90 s of stream time after a click, with the click's time.
    pub Remind: i64 as Int64Codec
);

/// Counts clicks per minute, says each minute's final count when it closes, and reminds
/// each click 90 s later; fails on the page "boom" when told to.
#[goka::processor(group = "eosw-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute, on_close = Self::minute_closed)]
#[timer(timer = Remind, handler = Self::on_remind)]
#[output(topic = Alerts)]
#[output(topic = Reminders)]
struct Counter {
    fail_on_boom: bool,
}

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        if page == "boom" && self.fail_on_boom {
            return Err("boom".into());
        }
        ctx.window::<PerMinute>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        let at = ctx.timestamp().unwrap_or_default();
        ctx.schedule::<Remind>(TimerTime::Stream(at + 90_000), &at)
    }

    fn minute_closed(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let text = format!(
            "{} clicks from {}",
            closed.value,
            closed.window.start / 1000
        );
        ctx.emit::<Alerts>(&user, &text)
    }

    fn on_remind(&self, ctx: &mut Context<'_, Self>, at: i64) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        ctx.emit::<Reminders>(&user, &format!("click at {at}"))
    }
}

/// A counter under exactly-once whose tables stay in `disk` from one run to the next, so
/// that what a run leaves in local storage is what the next one starts from.
fn processor(
    broker: &TestBroker,
    disk: &std::path::Path,
    fail_on_boom: bool,
    commit_interval: Duration,
) -> Processor<Counter> {
    Processor::new(
        Counter { fail_on_boom },
        client(broker),
        ProcessorConfig {
            guarantee: Guarantee::ExactlyOnce,
            commit_interval,
            storage: std::sync::Arc::new(RocksDbBuilder::new(disk).update_in_place()),
            ..goka_tests::from_oldest()
        },
    )
}

/// Runs `processor` on a task of its own.
fn spawn(processor: Processor<Counter>) -> Running<goka::processor::ProcessorError> {
    Running::spawn(move |cancel| async move { processor.run(cancel).await })
}

/// What `read_committed` readers see of `topic`, sorted, read until `enough` says so or
/// `within` passed.
fn seen(
    bootstrap: &str,
    topic: &str,
    within: Duration,
    enough: impl FnMut(&[goka_tests::RawMessage]) -> bool,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = read_until_at(bootstrap, topic, 1, within, enough)
        .into_iter()
        .map(|m| {
            (
                String::from_utf8(m.key).unwrap(),
                String::from_utf8(m.value.unwrap_or_default()).unwrap(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// What `read_committed` readers see of `topic`: read until more than `expected` came or
/// 5 s passed, so that a duplicate shows.
fn visible(broker: &TestBroker, topic: &str, expected: usize) -> Vec<(String, String)> {
    seen(&broker.bootstrap(), topic, Duration::from_secs(5), |m| {
        m.len() > expected
    })
}

fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn produce(broker: &TestBroker, clicks: &[(&str, &str, i64)]) {
    goka_tests::produce_at(broker, Clicks::NAME, 0, clicks).await;
}

/// Waits until `topic` shows exactly `expected`, as `read_committed` readers see it.
async fn wait_visible(broker: &TestBroker, topic: &'static str, expected: &[(String, String)]) {
    let (broker, expected) = (broker.bootstrap(), expected.to_vec());
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = seen(&broker, topic, Duration::from_secs(2), |m| {
                m.len() >= expected.len()
            });
            if seen == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{topic}: expected {expected:?}, saw {seen:?}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_and_timers_fire_once_also_across_an_aborted_transaction() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Alerts::NAME, Reminders::NAME], 1).await;
    let disk = tempfile::tempdir().unwrap();

    // Committed every 200 ms: at 70 s of stream time the first minute closes for ann and
    // bob; no reminder is due yet (the first at 91 s).
    let running = spawn(processor(
        &broker,
        disk.path(),
        true,
        Duration::from_millis(200),
    ));
    produce(
        &broker,
        &[
            ("ann", "a", 1_000),
            ("ann", "b", 30_000),
            ("bob", "c", 59_999),
            ("ann", "d", 61_000),
            ("cat", "e", 70_000),
        ],
    )
    .await;
    let minute_zero = pairs(&[("ann", "2 clicks from 0"), ("bob", "1 clicks from 0")]);
    wait_visible(&broker, Alerts::NAME, &minute_zero).await;
    running.stop().await;

    // One transaction (the commit interval is longer than the test): cat's click at 130 s
    // closes the second minute for ann and cat and fires ann's two reminders (91 s and
    // 120 s); then "boom" fails, and the transaction is aborted.
    produce(&broker, &[("cat", "f", 130_000), ("ann", "boom", 131_000)]).await;
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        processor(&broker, disk.path(), true, Duration::from_secs(600))
            .run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the failing processor did not stop")
    .expect_err("boom did not fail");
    assert!(error.to_string().contains("boom"), "{error}");
    assert_eq!(
        visible(&broker, Alerts::NAME, 2),
        minute_zero,
        "only the committed closings are visible"
    );
    assert_eq!(
        visible(&broker, Reminders::NAME, 0),
        Vec::new(),
        "the aborted reminders are not visible"
    );

    // The restart handles both clicks again: the second minute closes and the reminders
    // fire once more, this time committed, and nothing twice.
    let running = spawn(processor(
        &broker,
        disk.path(),
        false,
        Duration::from_millis(200),
    ));
    let mut alerts = minute_zero.clone();
    alerts.extend(pairs(&[
        ("ann", "1 clicks from 60"),
        ("cat", "1 clicks from 60"),
    ]));
    alerts.sort();
    let reminders = pairs(&[("ann", "click at 1000"), ("ann", "click at 30000")]);
    wait_visible(&broker, Alerts::NAME, &alerts).await;
    wait_visible(&broker, Reminders::NAME, &reminders).await;
    running.stop().await;
    assert_eq!(visible(&broker, Alerts::NAME, alerts.len()), alerts);
    assert_eq!(
        visible(&broker, Reminders::NAME, reminders.len()),
        reminders
    );
    println!(
        "exactly-once windows: closings {} and reminders {} visible, each once, after an \
         aborted transaction that had closed two windows and fired two timers",
        alerts.len(),
        reminders.len()
    );
}

//! Timers on the in-memory tester and the test broker: stream-time timers fire with the
//! message that reaches their time, cancelled ones never do, wall-clock timers fire at the
//! tester's clock, and timers survive a restart.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::tester::Tester;
use goka::timer::TimerTime;
use goka::topic::Topic;
use goka_tests::{client, from_oldest, Running, TestBroker};

goka::stream!(pub Clicks = "timer-clicks": String as StringCodec);
goka::stream!(pub Alerts = "timer-alerts": String as StringCodec);

goka::timer!(
    /// A user went a minute without a click; the payload is their last page.
    pub Quiet: String as StringCodec
);
goka::timer!(
    /// A reminder at a wall-clock time.
    pub Remind: String as StringCodec
);

const QUIET_AFTER: i64 = 60_000;

/// Alerts when a user goes quiet for a minute of event time; "remind" clicks ask for a
/// reminder five seconds of wall-clock time later.
#[goka::processor(group = "quiet-watch")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[timer(timer = Quiet, handler = Self::on_quiet)]
#[timer(timer = Remind, handler = Self::on_remind)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub struct QuietWatch;

impl QuietWatch {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default();
        if page == "remind" {
            return ctx.schedule::<Remind>(TimerTime::Wall(at + 5_000), &page);
        }
        if let Some(previous) = ctx.value()? {
            ctx.cancel::<Quiet>(TimerTime::Stream(previous + QUIET_AFTER))?;
        }
        ctx.set_value(&at)?;
        ctx.schedule::<Quiet>(TimerTime::Stream(at + QUIET_AFTER), &page)
    }

    fn on_quiet(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let at = ctx.timestamp().unwrap_or_default();
        ctx.emit::<Alerts>(&user, &format!("quiet at {} after {page}", at / 1000))
    }

    fn on_remind(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        ctx.emit::<Alerts>(&user, &"reminder".to_owned())
    }
}

async fn click(tester: &mut Tester, user: &str, page: &str, at: u64) {
    tester.set_time(UNIX_EPOCH + Duration::from_millis(at));
    tester
        .consume::<Clicks>(&user.to_owned(), &page.to_owned())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stream_time_timer_fires_once_at_its_time_and_a_cancelled_one_never() {
    let mut tester = Tester::new();
    tester.register(QuietWatch).await.unwrap();
    let mut alerts = tester.track::<Alerts>();

    click(&mut tester, "ann", "a", 0).await;
    // The second click moves ann's timer from 60 s to 90 s.
    click(&mut tester, "ann", "b", 30_000).await;
    click(&mut tester, "bob", "c", 89_999).await;
    assert!(
        alerts.next().unwrap().is_none(),
        "nothing is due before 90 s"
    );
    click(&mut tester, "bob", "d", 95_000).await;
    let alert = alerts.next().unwrap().expect("ann went quiet");
    assert_eq!(alert.key, "ann");
    assert_eq!(alert.value.as_deref(), Some("quiet at 90 after b"));
    alerts.expect_empty();
    // Fired timers are gone: nothing fires twice.
    click(&mut tester, "bob", "e", 96_000).await;
    alerts.expect_empty();
}

#[tokio::test]
async fn a_wall_clock_timer_fires_at_the_testers_clock() {
    let mut tester = Tester::new();
    tester.register(QuietWatch).await.unwrap();
    let mut alerts = tester.track::<Alerts>();
    click(&mut tester, "cat", "remind", 1_000_000).await;
    assert_eq!(tester.fire_timers().await.unwrap(), 0);
    tester.advance_time(Duration::from_millis(4_999));
    assert_eq!(tester.fire_timers().await.unwrap(), 0);
    tester.advance_time(Duration::from_millis(1));
    assert_eq!(tester.fire_timers().await.unwrap(), 1);
    let alert = alerts.next().unwrap().expect("the reminder");
    assert_eq!(
        (alert.key.as_str(), alert.value.as_deref()),
        ("cat", Some("reminder"))
    );
    assert_eq!(tester.fire_timers().await.unwrap(), 0);
}

goka::stream!(pub Delays = "timer-delays": i64 as Int64Codec);
goka::timer!(
    /// Fires, then schedules itself 10 ms later while its payload counts down.
    pub Relay: i64 as Int64Codec
);

/// Each message schedules a relay timer its value in milliseconds after its time; each relay
/// timer emits its time and schedules the next 10 ms later until its count runs out.
#[goka::processor(group = "relay-watch")]
#[input(topic = Delays, handler = Self::on_delay)]
#[timer(timer = Relay, handler = Self::on_relay)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub struct RelayWatch;

impl RelayWatch {
    fn on_delay(&self, ctx: &mut Context<'_, Self>, delay: i64) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default() + delay;
        ctx.schedule::<Relay>(TimerTime::Stream(at), &1)
    }

    fn on_relay(&self, ctx: &mut Context<'_, Self>, count: i64) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default();
        let key = ctx.key().clone();
        ctx.emit::<Alerts>(&key, &at.to_string())?;
        if count > 0 {
            ctx.schedule::<Relay>(TimerTime::Stream(at + 10), &(count - 1))?;
        }
        Ok(())
    }
}

async fn delay(tester: &mut Tester, key: &str, delay: i64, at: u64) {
    tester.set_time(UNIX_EPOCH + Duration::from_millis(at));
    tester
        .consume::<Delays>(&key.to_owned(), &delay)
        .await
        .unwrap();
}

/// A message whose stream time is before every timer's skips the timer scan; a timer
/// scheduled earlier than those stored, or by a firing timer, still fires on time.
#[tokio::test]
async fn timers_scheduled_before_the_earliest_or_by_a_timer_fire_on_time() {
    let mut tester = Tester::new();
    tester.register(RelayWatch).await.unwrap();
    let mut alerts = tester.track::<Alerts>();
    let mut fired = || {
        let mut times = Vec::new();
        while let Some(alert) = alerts.next().unwrap() {
            times.push(alert.value.unwrap());
        }
        times
    };

    delay(&mut tester, "late", 1_000, 1).await; // due at 1001
    delay(&mut tester, "early", 100, 2).await; // due at 102, before 1001
    assert!(fired().is_empty());
    // 102 fires and schedules 112, which this message's stream time already passed.
    delay(&mut tester, "x", 10_000, 200).await;
    assert_eq!(fired(), ["102"]);
    delay(&mut tester, "x", 10_000, 201).await;
    assert_eq!(fired(), ["112"], "the relay scheduled by a timer fires");
    delay(&mut tester, "x", 10_000, 1_001).await;
    assert_eq!(fired(), ["1001"]);
    delay(&mut tester, "x", 10_000, 1_100).await;
    assert_eq!(fired(), ["1011"]);
    delay(&mut tester, "x", 10_000, 1_200).await;
    assert!(fired().is_empty(), "every relay ran out");
}

async fn produce_clicks(broker: &TestBroker, clicks: &[(&str, &str, i64)]) {
    goka_tests::produce_at(broker, Clicks::NAME, 0, clicks).await;
}

fn start(broker: &TestBroker) -> Running<goka::processor::ProcessorError> {
    let processor = std::sync::Arc::new(goka::processor::Processor::new(
        QuietWatch,
        client(broker),
        goka::processor::ProcessorConfig {
            storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
            ..from_oldest()
        },
    ));
    Running::spawn(move |cancel| async move { processor.run(cancel).await })
}

/// On the test broker: a timer scheduled before a restart fires after it, from the timer
/// changelog; a wall-clock timer fires on the partition's tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_survive_a_restart_and_wall_clock_timers_fire_on_their_own() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Alerts::NAME], 1).await;

    let running = start(&broker);
    // (librdkafka takes a timestamp of 0 for "now": event times here start at 1 s.)
    produce_clicks(&broker, &[("ann", "a", 1_000), ("cat", "remind", 2_000)]).await;
    let read = |count: usize, within: u64| {
        goka_tests::read_pairs(&broker, Alerts::NAME, count, Duration::from_secs(within))
    };
    // The reminder was due long ago by the wall clock: the partition's next tick fires it.
    assert_eq!(read(1, 30), [("cat".to_owned(), "reminder".to_owned())]);
    running.stop().await;

    // ann's quiet timer (at 61 s of event time) is in the timer changelog: a new instance
    // fires it when stream time gets there, and the fired reminder does not come again.
    let running = start(&broker);
    produce_clicks(&broker, &[("bob", "b", 62_000)]).await;
    let expected = [
        ("ann".to_owned(), "quiet at 61 after a".to_owned()),
        ("cat".to_owned(), "reminder".to_owned()),
    ];
    assert_eq!(read(2, 30), expected);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(read(3, 2), expected);
    running.stop().await;
}

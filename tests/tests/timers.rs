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

goka::stream!(pub Pokes = "timer-pokes": String as StringCodec);
goka::timer!(
    /// A nudge a minute of event time after a poke; the payload is the poke.
    pub Nudge: String as StringCodec
);
goka::timer!(
    /// The nudge under another name.
    pub Prod: String as StringCodec
);

/// The nudge after its payload type changed.
mod retyped {
    goka::timer!(pub Nudge: i64 as goka::codec::Int64Codec);
}

/// Schedules a nudge a minute of event time after each poke.
#[goka::processor(group = "timer-policy")]
#[input(topic = Pokes, handler = Self::on_poke)]
#[timer(timer = Nudge, handler = Self::on_nudge)]
#[derive(Debug, Default)]
pub struct Nudging;

impl Nudging {
    fn on_poke(&self, ctx: &mut Context<'_, Self>, poke: String) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default();
        ctx.schedule::<Nudge>(TimerTime::Stream(at + QUIET_AFTER), &poke)
    }

    fn on_nudge(&self, _ctx: &mut Context<'_, Self>, _poke: String) -> Result<(), CallbackError> {
        Ok(())
    }
}

/// The same group after its timer's payload became a number.
#[goka::processor(group = "timer-policy")]
#[input(topic = Pokes, handler = Self::on_poke)]
#[timer(timer = retyped::Nudge, handler = Self::on_nudge)]
#[derive(Debug, Default)]
pub struct Retyped;

impl Retyped {
    fn on_poke(&self, _ctx: &mut Context<'_, Self>, _poke: String) -> Result<(), CallbackError> {
        Ok(())
    }

    fn on_nudge(&self, _ctx: &mut Context<'_, Self>, _count: i64) -> Result<(), CallbackError> {
        Ok(())
    }
}

/// The same group after its timer was renamed.
#[goka::processor(group = "timer-policy")]
#[input(topic = Pokes, handler = Self::on_poke)]
#[timer(timer = Prod, handler = Self::on_prod)]
#[derive(Debug, Default)]
pub struct Renamed;

impl Renamed {
    fn on_poke(&self, _ctx: &mut Context<'_, Self>, _poke: String) -> Result<(), CallbackError> {
        Ok(())
    }

    fn on_prod(&self, _ctx: &mut Context<'_, Self>, _poke: String) -> Result<(), CallbackError> {
        Ok(())
    }
}

fn policy_config(
    decode_errors: goka::codec::DecodeErrorPolicy,
) -> goka::processor::ProcessorConfig {
    goka::processor::ProcessorConfig {
        storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
        decode_errors: Some(decode_errors),
        ..from_oldest()
    }
}

/// Stores ann's nudge (due at 61 s of event time) in the group's timer changelog.
async fn store_a_nudge(broker: &TestBroker) {
    goka_tests::ensure_streams(broker, &[Pokes::NAME], 1).await;
    let processor = std::sync::Arc::new(goka::processor::Processor::new(
        Nudging,
        client(broker),
        policy_config(Default::default()),
    ));
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    goka_tests::produce_at(broker, Pokes::NAME, 0, &[("ann", "a", 1_000)]).await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.done_offsets().iter().any(|o| o.offset == 1),
        || format!("the poke was not done: {:?}", processor.done_offsets()),
    )
    .await;
    running.stop().await;
}

/// Starts `group` on the stored nudge and brings stream time past it.
async fn run_on_the_nudge<P: goka::processor::Handlers>(
    broker: &TestBroker,
    group: P,
    decode_errors: goka::codec::DecodeErrorPolicy,
) -> (
    std::sync::Arc<goka::processor::Processor<P>>,
    Running<goka::processor::ProcessorError>,
) {
    let processor = std::sync::Arc::new(goka::processor::Processor::new(
        group,
        client(broker),
        policy_config(decode_errors),
    ));
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    goka_tests::produce_at(broker, Pokes::NAME, 0, &[("bob", "b", 70_000)]).await;
    (processor, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_timer_that_no_longer_decodes_stops_run_saying_how_to_get_past_it() {
    let broker = TestBroker::start();
    store_a_nudge(&broker).await;
    let (_, mut running) = run_on_the_nudge(&broker, Retyped, Default::default()).await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || running.is_finished(),
        || "run goes on past a timer it cannot fire",
    )
    .await;
    let error = running.ended().unwrap_or_default();
    for part in [
        "Nudge",
        "\"ann\"",
        "does not decode",
        "SkipAndCount",
        "DeadLetter",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_timer_is_removed_and_counted_when_the_policy_skips() {
    use goka::codec::DecodeErrorPolicy;
    let broker = TestBroker::start();
    store_a_nudge(&broker).await;
    let (processor, running) =
        run_on_the_nudge(&broker, Renamed, DecodeErrorPolicy::SkipAndCount).await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.stats().decode_errors == 1 && processor.stats().messages_in == 1,
        || format!("{:?}", processor.stats()),
    )
    .await;
    running.stop().await;
    // Removed for good: under the failing policy the same group now runs past its time.
    let (processor, mut running) =
        run_on_the_nudge(&broker, Renamed, DecodeErrorPolicy::Fail).await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.stats().messages_in == 1 || running.is_finished(),
        || format!("{:?}", processor.stats()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running.ended(), None, "the removed timer came back");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_timer_that_no_longer_decodes_goes_to_the_dead_letter_topic() {
    use goka::codec::DecodeErrorPolicy;
    let broker = TestBroker::start();
    store_a_nudge(&broker).await;
    let (processor, running) =
        run_on_the_nudge(&broker, Retyped, DecodeErrorPolicy::DeadLetter).await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.stats().dead_letters == 1,
        || format!("{:?}", processor.stats()),
    )
    .await;
    let letters = goka_tests::read_all(&broker, "timer-policy-dead-letters", 1, 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].value.as_deref(),
        Some(&b"a"[..]),
        "the stored payload"
    );
    let reason = letters[0]
        .headers
        .iter()
        .find(|(name, _)| name == goka::processor::DEAD_LETTER_REASON)
        .map(|(_, value)| value.clone());
    assert_eq!(reason.as_deref(), Some(&b"timer"[..]));
    running.stop().await;
}

goka::stream!(pub SmallAlerts = "timer-small-alerts": String as StringCodec);

/// Nudges a minute of event time after each poke, saying so padded with `pad` bytes: more
/// than the alerts topic takes when `pad` is large.
#[goka::processor(group = "timer-padded")]
#[input(topic = Pokes, handler = Self::on_poke)]
#[timer(timer = Nudge, handler = Self::on_nudge)]
#[output(topic = SmallAlerts)]
#[derive(Debug, Default)]
pub struct PaddedNudging {
    pad: usize,
}

impl PaddedNudging {
    fn on_poke(&self, ctx: &mut Context<'_, Self>, poke: String) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default();
        ctx.schedule::<Nudge>(TimerTime::Stream(at + QUIET_AFTER), &poke)
    }

    fn on_nudge(&self, ctx: &mut Context<'_, Self>, poke: String) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let text = format!("nudge after {poke}{}", " ".repeat(self.pad));
        ctx.emit::<SmallAlerts>(&user, &text)
    }
}

/// On the test broker: when a fired timer's output is not delivered, its tombstone does not
/// reach the timer changelog either, so the next instance fires the timer again and its
/// output comes after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_whose_output_failed_fires_again_after_a_restart() {
    use goka::processor::{Processor, ProcessorConfig};
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Pokes::NAME], 1).await;
    goka_tests::create_topic_with(&broker, SmallAlerts::NAME, &[("max.message.bytes", "1024")])
        .await;
    let config = || ProcessorConfig {
        storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
        ..from_oldest()
    };
    let pokes = [("ann", "a", 1_000), ("bob", "b", 62_000)];
    goka_tests::produce_at(&broker, Pokes::NAME, 0, &pokes).await;
    // The poke at 62 s fires ann's nudge (due at 61 s): its alert is too large for the topic.
    let failing = Processor::new(PaddedNudging { pad: 4_000 }, client(&broker), config());
    let error = goka_tests::run_until_error(&failing).await;
    assert!(error.contains("offset 1"), "{error}");

    let processor = std::sync::Arc::new(Processor::new(
        PaddedNudging { pad: 0 },
        client(&broker),
        config(),
    ));
    let running = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    assert_eq!(
        goka_tests::read_pairs(&broker, SmallAlerts::NAME, 1, Duration::from_secs(30)),
        [("ann".to_owned(), "nudge after a".to_owned())]
    );
    running.stop().await;
}

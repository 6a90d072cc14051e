//! Windowed tables on the in-memory tester: tumbling and hopping windows over event time,
//! grace for late messages, `on_close` once per window, and dropping after retention; on the
//! test broker, recovery after a restart.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::tester::Tester;
use goka::topic::Topic;
use goka::window::{ClosedWindow, WindowRange, WindowSpec, WindowTable};
use goka_tests::{client, from_oldest, read_until, Running, TestBroker};

goka::stream!(pub Clicks = "window-clicks": String as StringCodec);
goka::stream!(pub Alerts = "window-alerts": String as StringCodec);

goka::window!(
    /// Clicks per user and minute; late clicks count for 10 s after the minute.
    pub PerMinute = "per-minute": u64 as Json,
    WindowSpec::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10))
);
goka::window!(
    /// Clicks per user over the last three minutes, every minute; no grace.
    pub LastThree = "last-three": u64 as Json,
    WindowSpec::hopping(Duration::from_secs(180), Duration::from_secs(60))
);

/// Counts clicks per minute and per three minutes; says each minute's final count.
#[goka::processor(group = "window-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute, on_close = Self::minute_closed)]
#[window(window = LastThree)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        ctx.window::<LastThree>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        Ok(())
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
}

/// Consumes a click of `user` at `at` ms of event time.
async fn click(tester: &mut Tester, user: &str, at: u64) {
    tester.set_time(UNIX_EPOCH + Duration::from_millis(at));
    tester
        .consume::<Clicks>(&user.to_owned(), &"page".to_owned())
        .await
        .unwrap();
}

#[tokio::test]
async fn clicks_are_counted_per_window_and_each_minute_closes_once_with_its_count() {
    let mut tester = Tester::new();
    tester.register(Counter).await.unwrap();
    let mut alerts = tester.track::<Alerts>();
    let minutes = tester.table::<WindowTable<Counter, PerMinute>>();
    let threes = tester.table::<WindowTable<Counter, LastThree>>();

    click(&mut tester, "ann", 1_000).await;
    click(&mut tester, "ann", 30_000).await;
    click(&mut tester, "bob", 59_999).await;
    click(&mut tester, "ann", 61_000).await;
    assert_eq!(minutes.get(&("ann".into(), 0)).unwrap(), Some(2));
    assert_eq!(minutes.get(&("ann".into(), 60_000)).unwrap(), Some(1));
    assert_eq!(minutes.get(&("bob".into(), 0)).unwrap(), Some(1));
    // Hopping: the click at 61 s is in the windows starting at -60 s, 0 and 60 s.
    assert_eq!(threes.get(&("ann".into(), -60_000)).unwrap(), Some(3));
    assert_eq!(threes.get(&("ann".into(), 0)).unwrap(), Some(3));
    assert_eq!(threes.get(&("ann".into(), 60_000)).unwrap(), Some(1));
    // Within the grace: a click at 5 s still counts for the first minute.
    click(&mut tester, "bob", 5_000).await;
    assert_eq!(minutes.get(&("bob".into(), 0)).unwrap(), Some(2));
    assert!(alerts.next().unwrap().is_none(), "nothing closed yet");

    // Stream time 70 s: the first minute closes (end 60 s + grace 10 s), once per key.
    click(&mut tester, "cat", 70_000).await;
    let mut closed: Vec<(String, String)> = Vec::new();
    while let Some(alert) = alerts.next().unwrap() {
        closed.push((alert.key, alert.value.unwrap_or_default()));
    }
    closed.sort();
    assert_eq!(
        closed,
        [
            ("ann".to_owned(), "2 clicks from 0".to_owned()),
            ("bob".to_owned(), "2 clicks from 0".to_owned())
        ]
    );
    // A click for the closed minute is late: counted nowhere, and it closes nothing again.
    click(&mut tester, "ann", 59_000).await;
    assert_eq!(minutes.get(&("ann".into(), 0)).unwrap(), Some(2));
    assert!(alerts.next().unwrap().is_none());
    // The closed minute stays readable for a window's length more, then is dropped.
    assert!(minutes.get(&("ann".into(), 0)).unwrap().is_some());
    click(&mut tester, "cat", 130_000).await;
    assert_eq!(minutes.get(&("ann".into(), 0)).unwrap(), None);
    assert_eq!(minutes.get(&("ann".into(), 60_000)).unwrap(), Some(1));
}

#[tokio::test]
async fn a_window_that_closed_takes_no_writes_and_a_misaligned_range_is_refused() {
    /// Writes a given window, to see what `set` refuses.
    #[goka::processor(group = "window-writer")]
    #[input(topic = Clicks, handler = Self::on_click)]
    #[window(window = PerMinute)]
    #[derive(Debug, Default)]
    pub struct Writer;

    impl Writer {
        fn on_click(
            &self,
            ctx: &mut Context<'_, Self>,
            start: String,
        ) -> Result<(), CallbackError> {
            let start: i64 = start.parse()?;
            let mut minutes = ctx.window::<PerMinute>()?;
            let window = WindowRange {
                start,
                end: start + 60_000,
            };
            minutes.set(window, &7)
        }
    }

    let mut tester = Tester::new();
    tester.register(Writer).await.unwrap();
    tester.set_time(UNIX_EPOCH + Duration::from_secs(200));
    tester
        .consume::<Clicks>(&"ann".to_owned(), &"180000".to_owned())
        .await
        .unwrap();
    let closed = tester
        .consume::<Clicks>(&"ann".to_owned(), &"0".to_owned())
        .await
        .unwrap_err()
        .to_string();
    assert!(closed.contains("closed at stream time 200000"), "{closed}");
    assert!(closed.contains("window-writer"), "{closed}");
    let misaligned = tester
        .consume::<Clicks>(&"ann".to_owned(), &"240500".to_owned())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        misaligned.contains("[240500, 300500) is not a window of per-minute"),
        "{misaligned}"
    );
}

/// Produces clicks at the given event times (ms) to the one partition of the clicks topic.
async fn produce_clicks(broker: &TestBroker, clicks: &[(&str, i64)]) {
    let rows: Vec<(&str, &str, i64)> = clicks
        .iter()
        .map(|(user, at)| (*user, "page", *at))
        .collect();
    goka_tests::produce_at(broker, Clicks::NAME, 0, &rows).await;
}

fn alerts(broker: &TestBroker, count: usize) -> Vec<(String, String)> {
    goka_tests::read_pairs(broker, Alerts::NAME, count, Duration::from_secs(30))
}

fn start(
    broker: &TestBroker,
) -> (
    std::sync::Arc<goka::processor::Processor<Counter>>,
    Running<goka::processor::ProcessorError>,
) {
    let processor = std::sync::Arc::new(goka::processor::Processor::new(
        Counter,
        client(broker),
        goka::processor::ProcessorConfig {
            storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
            ..from_oldest()
        },
    ));
    let running = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    (processor, running)
}

/// On the test broker: windows are changelogged and recovered by the next instance, a
/// window that closed before the restart does not close again, and dropping a window
/// tombstones it in the changelog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_survive_a_restart_and_close_once() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Alerts::NAME], 1).await;

    let (processor, running) = start(&broker);
    produce_clicks(
        &broker,
        &[
            ("ann", 1_000),
            ("ann", 30_000),
            ("bob", 59_999),
            ("ann", 61_000),
            ("cat", 70_000),
        ],
    )
    .await;
    assert_eq!(
        alerts(&broker, 2),
        [
            ("ann".to_owned(), "2 clicks from 0".to_owned()),
            ("bob".to_owned(), "1 clicks from 0".to_owned())
        ]
    );
    // A click for the closed minute is late: counted in the stats, applied nowhere.
    produce_clicks(&broker, &[("ann", 59_000)]).await;
    goka_tests::eventually(
        Duration::from_secs(30),
        || {
            processor
                .partition_stats()
                .iter()
                .flat_map(|p| &p.windows)
                .any(|w| w.window == "per-minute" && w.late == 1)
        },
        || format!("{:?}", processor.partition_stats()),
    )
    .await;
    let stats = processor.partition_stats();
    let minutes = stats[0]
        .windows
        .iter()
        .find(|w| w.window == "per-minute")
        .unwrap();
    assert_eq!(minutes.stream_time, Some(70_000));
    // ann's two minutes, bob's first, cat's second.
    assert_eq!(minutes.windows, 4);
    running.stop().await;

    // A new instance recovers the windows from their changelog.
    let (_, running) = start(&broker);
    produce_clicks(&broker, &[("cat", 130_000)]).await;
    assert_eq!(
        alerts(&broker, 4),
        [
            ("ann".to_owned(), "1 clicks from 60".to_owned()),
            ("ann".to_owned(), "2 clicks from 0".to_owned()),
            ("bob".to_owned(), "1 clicks from 0".to_owned()),
            ("cat".to_owned(), "1 clicks from 60".to_owned())
        ]
    );
    // Nothing more comes: the minute that closed before the restart did not close again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let more = goka_tests::read_pairs(&broker, Alerts::NAME, 5, Duration::from_secs(2));
    assert_eq!(more.len(), 4);
    running.stop().await;

    // The first minute of ann was dropped at 130 s: its last changelog write is a tombstone.
    let topic = <WindowTable<Counter, PerMinute> as Topic>::NAME;
    assert_eq!(topic, "window-counter-per-minute-window");
    let mut ann_first = Vec::new();
    goka::window::encode_window_key(b"ann", 0, &mut ann_first);
    let changelog = read_until(&broker, topic, 1, |m| {
        m.iter().any(|m| m.key == ann_first && m.value.is_none())
    });
    let last = changelog
        .iter()
        .rev()
        .find(|m| m.key == ann_first)
        .expect("ann's first minute in the changelog");
    assert_eq!(last.value, None);
}

goka::window!(
    /// Bursts of clicks per user: a click less than 30 s from a burst joins it; late clicks
    /// count for a minute more.
    pub Bursts = "bursts": u64 as Json,
    WindowSpec::session(Duration::from_secs(30)).grace(Duration::from_secs(60))
);

/// Counts clicks per burst; says each burst's count when it ends.
#[goka::processor(group = "burst-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = Bursts, on_close = Self::burst_ended)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub struct BurstCounter;

impl BurstCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        ctx.window::<Bursts>()?
            .update_session(|a, b| a + b, |_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }

    fn burst_ended(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let (start, end) = (closed.window.start / 1000, closed.window.end / 1000);
        ctx.emit::<Alerts>(
            &user,
            &format!("{} clicks in [{start}, {end}]", closed.value),
        )
    }
}

#[tokio::test]
async fn sessions_grow_merge_and_close_a_gap_after_their_last_click() {
    let mut tester = Tester::new();
    tester.register(BurstCounter).await.unwrap();
    let mut alerts = tester.track::<Alerts>();
    let bursts = tester.table::<WindowTable<BurstCounter, Bursts>>();

    click(&mut tester, "ann", 200_000).await;
    click(&mut tester, "ann", 250_000).await;
    // 50 s apart: two sessions.
    assert_eq!(bursts.get(&("ann".into(), 200_000)).unwrap(), Some(1));
    assert_eq!(bursts.get(&("ann".into(), 250_000)).unwrap(), Some(1));
    // A click within 30 s of both joins them into one (the first is past its gap at stream
    // time 250 s, but within its grace).
    click(&mut tester, "ann", 225_000).await;
    assert_eq!(bursts.get(&("ann".into(), 200_000)).unwrap(), Some(3));
    assert_eq!(bursts.get(&("ann".into(), 250_000)).unwrap(), None);
    assert!(alerts.next().unwrap().is_none());

    // Stream time 340 s, the gap and the grace after ann's last click: the session ends,
    // once.
    click(&mut tester, "bob", 339_999).await;
    assert!(alerts.next().unwrap().is_none());
    click(&mut tester, "bob", 340_000).await;
    let alert = alerts.next().unwrap().expect("ann's burst ended");
    assert_eq!(alert.key, "ann");
    assert_eq!(alert.value.as_deref(), Some("3 clicks in [200, 250]"));
    // A click of ann's closed session is late now; a later one starts a new session.
    click(&mut tester, "ann", 240_000).await;
    click(&mut tester, "ann", 345_000).await;
    assert_eq!(bursts.get(&("ann".into(), 345_000)).unwrap(), Some(1));
    assert_eq!(bursts.get(&("ann".into(), 240_000)).unwrap(), None);
    assert_eq!(bursts.get(&("ann".into(), 200_000)).unwrap(), Some(3));
    assert!(alerts.next().unwrap().is_none());
}

goka::stream!(pub CounterDeadLetters = "window-counter-dead-letters": String as StringCodec);

/// `LatePolicy::DeadLetter`: a late message is counted, skipped by the window, and sent to
/// the dead-letter topic once, with its coordinates and the reason.
#[tokio::test]
async fn a_late_message_goes_to_the_dead_letter_topic_when_told() {
    let mut tester = Tester::new();
    let config = goka::processor::ProcessorConfig {
        late_messages: goka::processor::LatePolicy::DeadLetter,
        ..Default::default()
    };
    tester.register_with(Counter, config).await.unwrap();
    let mut letters = tester.track::<CounterDeadLetters>();
    let minutes = tester.table::<WindowTable<Counter, PerMinute>>();
    click(&mut tester, "ann", 1_000).await;
    click(&mut tester, "bob", 250_000).await;
    letters.expect_empty();
    // Late for both of its windows (the minute and the three minutes): one dead letter.
    click(&mut tester, "ann", 2_000).await;
    let letter = letters.next().unwrap().expect("the late click");
    assert_eq!(letter.key, "ann");
    let header = |name: &str| {
        letter
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("dead-letter-reason").as_deref(), Some("late"));
    assert_eq!(
        header("dead-letter-topic").as_deref(),
        Some("window-clicks")
    );
    assert_eq!(header("dead-letter-timestamp").as_deref(), Some("2000"));
    let error = header("dead-letter-error").unwrap_or_default();
    assert!(error.contains("stream time 250000"), "{error}");
    letters.expect_empty();
    // The window did not count it (it is gone by now: dropped at 130 s).
    assert_eq!(minutes.get(&("ann".into(), 0)).unwrap(), None);
}

/// Hot standby: a second instance follows the window changelogs of the partition it does
/// not own and, when the owner leaves, takes the windows over and counts on: the window's
/// final count covers what both instances counted, and it closes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_standby_takes_the_windows_over_and_closes_them_once() {
    use goka::processor::{PartitionState, Processor, ProcessorConfig, ProcessorState};
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Alerts::NAME], 2).await;
    let standby = || ProcessorConfig {
        hot_standby: true,
        storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
        ..from_oldest()
    };
    let spawn = |processor: &std::sync::Arc<Processor<Counter>>| {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    let first = std::sync::Arc::new(Processor::new(Counter, client(&broker), standby()));
    let first_running = spawn(&first);
    tokio::time::timeout(Duration::from_secs(60), first.recovered())
        .await
        .unwrap();
    let second = std::sync::Arc::new(Processor::new(Counter, client(&broker), standby()));
    let second_running = spawn(&second);
    // Two partitions, two members: each owns one and follows the other's windows.
    goka_tests::eventually(
        Duration::from_secs(60),
        || {
            let stats = second.partition_stats();
            second.partitions().len() == 1
                && first.partitions().len() == 1
                && stats.iter().any(|p| p.state == PartitionState::Standby)
        },
        || format!("no split: {:?}", second.partition_stats()),
    )
    .await;
    let partition = *first.partitions().keys().next().unwrap();
    let clicks = |rows: &[(&'static str, i64)]| {
        rows.iter()
            .map(|(user, at)| (*user, "page", *at))
            .collect::<Vec<_>>()
    };
    let produce = |rows: Vec<(&'static str, &'static str, i64)>| {
        let broker = &broker;
        async move { goka_tests::produce_at(broker, Clicks::NAME, partition, &rows).await }
    };
    produce(clicks(&[("ann", 1_000), ("ann", 30_000)])).await;
    // The standby copy has both clicks' window writes.
    goka_tests::eventually(
        Duration::from_secs(60),
        || {
            second.partition_stats().iter().any(|p| {
                p.partition == partition
                    && p.state == PartitionState::Standby
                    && p.tables.iter().any(|t| t.messages >= 2 && t.lag == 0)
                    && p.tables.iter().all(|t| t.lag == 0)
            })
        },
        || format!("standby not caught up: {:?}", second.partition_stats()),
    )
    .await;
    first_running.stop().await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || second.partitions().len() == 2 && second.state() == ProcessorState::Running,
        || format!("no takeover: {:?}", second.partition_stats()),
    )
    .await;
    produce(clicks(&[("ann", 50_000), ("ann", 70_000)])).await;
    assert_eq!(
        goka_tests::read_pairs_in(&broker, Alerts::NAME, 2, 1, Duration::from_secs(30)),
        [("ann".to_owned(), "3 clicks from 0".to_owned())]
    );
    assert_eq!(
        goka_tests::read_pairs_in(&broker, Alerts::NAME, 2, 2, Duration::from_secs(2)).len(),
        1,
        "the minute closed once"
    );
    second_running.stop().await;
}

goka::visitor!(
    /// Adds its value to the current minute of every user.
    pub Bonus: u64
);

/// Keeps that a user clicked; a visit adds a bonus to the user's current minute, whose final
/// count is said when it closes.
#[goka::processor(group = "window-bonus")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = u64, codec = Json)]
#[window(window = PerMinute, on_close = Self::minute_closed)]
#[visit(visitor = Bonus, handler = Self::on_bonus)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub struct BonusCounter;

impl BonusCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        ctx.set_value(&1)
    }

    fn on_bonus(&self, ctx: &mut Context<'_, Self>, bonus: u64) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?
            .update(|_, count| count.unwrap_or(0) + bonus)?;
        Ok(())
    }

    fn minute_closed(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        ctx.emit::<Alerts>(
            &user,
            &format!("{} from {}", closed.value, closed.window.start / 1000),
        )
    }
}

#[tokio::test]
async fn a_window_row_written_by_a_visit_closes_like_any_other() {
    let mut tester = Tester::new();
    tester.register(BonusCounter).await.unwrap();
    let mut alerts = tester.track::<Alerts>();
    click(&mut tester, "ann", 1_000).await;
    tester.set_time(UNIX_EPOCH + Duration::from_millis(30_000));
    let visited = tester.visit_all::<BonusCounter, Bonus>(5).await.unwrap();
    assert_eq!(visited, 1);
    alerts.expect_empty();
    // Stream time passes ann's minute and its grace: the visit's window closes.
    click(&mut tester, "bob", 200_000).await;
    let alert = alerts.next().unwrap().expect("ann's minute closed");
    assert_eq!(
        (alert.key.as_str(), alert.value.as_deref()),
        ("ann", Some("5 from 0"))
    );
}

/// On the test broker: a window that closed before a restart stays closed after it. The
/// stream time committed with the input offsets is restored, not only a lower bound of it
/// (the latest window start, 60 s here): a late click for the first minute is late, and the
/// minute does not open and close a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_closed_before_a_restart_stays_closed_after_it() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Alerts::NAME], 1).await;

    let (_, running) = start(&broker);
    produce_clicks(&broker, &[("ann", 1_000), ("bob", 119_000)]).await;
    // Stream time 119 s passed ann's first minute (closes at 70 s).
    assert_eq!(
        alerts(&broker, 1),
        [("ann".to_owned(), "1 clicks from 0".to_owned())]
    );
    running.stop().await;

    let (processor, running) = start(&broker);
    let per_minute = |processor: &goka::processor::Processor<Counter>| {
        processor
            .partition_stats()
            .iter()
            .flat_map(|p| p.windows.clone())
            .find(|w| w.window == "per-minute")
    };
    goka_tests::eventually(
        Duration::from_secs(60),
        || per_minute(&processor).is_some_and(|w| w.stream_time == Some(119_000)),
        || format!("stream time not restored: {:?}", per_minute(&processor)),
    )
    .await;
    produce_clicks(&broker, &[("ann", 30_000)]).await;
    goka_tests::eventually(
        Duration::from_secs(30),
        || per_minute(&processor).is_some_and(|w| w.late == 1),
        || {
            format!(
                "the click at 30 s is not late: {:?}",
                per_minute(&processor)
            )
        },
    )
    .await;
    // Past bob's minute: it closes; ann's first minute does not close again.
    produce_clicks(&broker, &[("cat", 200_000)]).await;
    let mut closed = goka_tests::read_pairs(&broker, Alerts::NAME, 3, Duration::from_secs(10));
    closed.sort();
    assert_eq!(
        closed,
        [
            ("ann".to_owned(), "1 clicks from 0".to_owned()),
            ("bob".to_owned(), "1 clicks from 60".to_owned())
        ]
    );
    running.stop().await;
}

goka::stream!(pub SmallAlerts = "window-small-alerts": String as StringCodec);

/// Says each minute's count, padded with `pad` bytes: more than the alerts topic takes when
/// `pad` is large.
#[goka::processor(group = "window-padded")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute, on_close = Self::minute_closed)]
#[output(topic = SmallAlerts)]
#[derive(Debug, Default)]
pub struct PaddedCounter {
    pad: usize,
}

impl PaddedCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }

    fn minute_closed(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let text = format!(
            "{} clicks from {}{}",
            closed.value,
            closed.window.start / 1000,
            " ".repeat(self.pad)
        );
        ctx.emit::<SmallAlerts>(&user, &text)
    }
}

/// On the test broker: when the output of `on_close` is not delivered, the window's closed
/// mark does not reach its changelog either, so the next instance closes the window again
/// and its output comes after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_whose_on_close_output_failed_closes_again_after_a_restart() {
    use goka::processor::{Processor, ProcessorConfig};
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME], 1).await;
    goka_tests::create_topic_with(&broker, SmallAlerts::NAME, &[("max.message.bytes", "1024")])
        .await;
    let config = || ProcessorConfig {
        storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
        ..from_oldest()
    };
    produce_clicks(&broker, &[("ann", 1_000), ("bob", 70_000)]).await;
    // The click at 70 s closes ann's minute: its alert is too large for the topic.
    let failing = Processor::new(PaddedCounter { pad: 4_000 }, client(&broker), config());
    let error = goka_tests::run_until_error(&failing).await;
    assert!(error.contains("offset 1"), "{error}");

    let processor = std::sync::Arc::new(Processor::new(
        PaddedCounter { pad: 0 },
        client(&broker),
        config(),
    ));
    let running = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    assert_eq!(
        goka_tests::read_pairs(&broker, SmallAlerts::NAME, 1, Duration::from_secs(30)),
        [("ann".to_owned(), "1 clicks from 0".to_owned())]
    );
    running.stop().await;
}

/// A whole minute, in seconds since the epoch (2017-07-14): where the historical clicks of
/// the backfill tests start.
const HISTORY: u64 = 1_500_000_000;

/// Clicks of a backfill: user and second after [`HISTORY`]. Minutes 0 and 1 close with the
/// click at 130 s (each minute's end plus the 10 s grace); minute 2 only by idle time.
const BACKFILL: [(&str, u64); 5] = [
    ("ann", 0),
    ("ann", 30),
    ("bob", 59),
    ("ann", 61),
    ("ann", 130),
];

/// What the backfill's minutes say once they closed: all but the last, then the last.
fn backfill_alerts() -> (Vec<(String, String)>, (String, String)) {
    let said = |user: &str, count: u32, minute: u64| {
        let text = format!("{count} clicks from {}", HISTORY + 60 * minute);
        (user.to_owned(), text)
    };
    let mut closed = vec![said("ann", 2, 0), said("bob", 1, 0), said("ann", 1, 1)];
    closed.sort();
    (closed, said("ann", 1, 2))
}

/// Emits the backfill's clicks, each with its historical time.
async fn emit_backfill(emitter: &goka::emitter::Emitter<Clicks>) {
    for (user, second) in BACKFILL {
        let at = UNIX_EPOCH + Duration::from_secs(HISTORY + second);
        emitter
            .emit_at(&user.to_owned(), &"page".to_owned(), at)
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// A tester running `group`, whose partitions move their stream time on once idle for 5 s
/// of the tester's clock (at each `fire_timers`).
async fn idle_tester<P: goka::processor::Handlers>(group: P) -> Tester {
    let mut tester = Tester::new();
    let config = goka::processor::ProcessorConfig {
        idle_advance: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    tester.register_with(group, config).await.unwrap();
    tester
}

#[tokio::test]
async fn historical_clicks_fill_the_windows_of_their_times_and_an_idle_partition_closes_the_last() {
    let mut tester = idle_tester(Counter).await;
    let mut alerts = tester.track::<Alerts>();
    let minutes = tester.table::<WindowTable<Counter, PerMinute>>();
    let emitter = tester.emitter::<Clicks>().await.unwrap();
    emit_backfill(&emitter).await;
    tester.run_until_idle().await.unwrap();
    let start = |minute: u64| ((HISTORY + 60 * minute) * 1000) as i64;
    // Minute 0 closed and was dropped already (a window's length after its close).
    assert_eq!(minutes.get(&("ann".into(), start(0))).unwrap(), None);
    assert_eq!(minutes.get(&("ann".into(), start(1))).unwrap(), Some(1));
    assert_eq!(minutes.get(&("ann".into(), start(2))).unwrap(), Some(1));

    let mut said = Vec::new();
    while let Some(alert) = alerts.next().unwrap() {
        said.push((alert.key, alert.value.unwrap_or_default()));
    }
    said.sort();
    let (closed, last) = backfill_alerts();
    assert_eq!(said, closed, "the minutes later clicks closed");

    // Nothing more comes: the idle partition's stream time moves to the clock (today) minus
    // five seconds, and the last minute closes.
    tester.fire_timers().await.unwrap();
    let after: Vec<_> = std::iter::from_fn(|| alerts.next().unwrap())
        .map(|a| (a.key, a.value.unwrap_or_default()))
        .collect();
    assert_eq!(after, [last]);
    tester.fire_timers().await.unwrap();
    assert!(alerts.next().unwrap().is_none(), "closed once");
}

/// On the test broker: a backfill emitted with historical timestamps is counted in the
/// windows of its times, and the last window closes once the partition has been idle for
/// `idle_advance`. A timestamp before 1970 is refused, naming topic and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_with_historical_timestamps_closes_every_window_on_kafka() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Alerts::NAME], 1).await;
    let client = client(&broker);
    let clicks = goka::emitter::Emitter::<Clicks>::new(&*client)
        .await
        .unwrap();
    let refused = clicks
        .emit_with(
            &"eve".to_owned(),
            Some(&"page".to_owned()),
            &goka::emitter::EmitOptions::new().at_millis(-5),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("window-clicks") && refused.contains("\"eve\"") && refused.contains("-5"),
        "{refused}"
    );
    emit_backfill(&clicks).await;

    let (mut expected, last) = backfill_alerts();
    expected.push(last);
    expected.sort();
    alerts_once_idle(&broker, Counter, &expected).await;
}

/// Runs `group` on the test broker from the oldest message, its windows in memory, moving an
/// idle partition's stream time on after two seconds, and expects exactly the `expected`
/// alerts (sorted), each once.
async fn alerts_once_idle<P: goka::processor::Handlers>(
    broker: &TestBroker,
    group: P,
    expected: &[(String, String)],
) {
    let processor = std::sync::Arc::new(goka::processor::Processor::new(
        group,
        client(broker),
        goka::processor::ProcessorConfig {
            storage: std::sync::Arc::new(goka::storage::MemoryBuilder),
            idle_advance: Some(Duration::from_secs(2)),
            ..from_oldest()
        },
    ));
    let running = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    assert_eq!(alerts(broker, expected.len()), expected);
    // Nothing closes twice: a longer look finds no more.
    let again = goka_tests::read_pairs(
        broker,
        Alerts::NAME,
        expected.len() + 1,
        Duration::from_secs(5),
    );
    assert_eq!(again, expected, "each window closed once");
    running.stop().await;
}

/// A purchase, stamped with when it was made: a backfill's records are written today, their
/// purchases were made years ago.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Purchase {
    /// When it was made, in ms since the epoch; 0 if unknown.
    pub at: i64,
    pub amount: u64,
}

goka::stream!(pub Purchases = "window-purchases": Purchase as Json);
goka::window!(
    /// What each user spent per minute of purchase time.
    pub SpentPerMinute = "spent-per-minute": u64 as Json,
    WindowSpec::tumbling(Duration::from_secs(60))
);

/// Sums purchases per minute of the time they were made, read from the purchase itself.
#[goka::processor(group = "window-spending")]
#[input(topic = Purchases, handler = Self::on_purchase, event_time = Self::made_at)]
#[window(window = SpentPerMinute, on_close = Self::minute_closed)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub struct Spending;

impl Spending {
    fn made_at(&self, purchase: &Purchase) -> Option<i64> {
        (purchase.at > 0).then_some(purchase.at)
    }

    fn on_purchase(
        &self,
        ctx: &mut Context<'_, Self>,
        purchase: Purchase,
    ) -> Result<(), CallbackError> {
        assert_eq!(ctx.timestamp(), self.made_at(&purchase).or(ctx.timestamp()));
        ctx.window::<SpentPerMinute>()?
            .update(|_, spent| spent.unwrap_or(0) + purchase.amount)?;
        Ok(())
    }

    fn minute_closed(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let text = format!("spent {} from {}", closed.value, closed.window.start / 1000);
        ctx.emit::<Alerts>(&user, &text)
    }
}

/// Purchases of a backfill: user, second after [`HISTORY`], amount.
const PURCHASES: [(&str, u64, u64); 4] = [
    ("ann", 5, 10),
    ("bob", 50, 7),
    ("ann", 70, 3),
    ("ann", 65, 1),
];

/// What the purchases' minutes say once closed, sorted.
fn spending_alerts() -> Vec<(String, String)> {
    let mut said = vec![
        ("ann".to_owned(), format!("spent 10 from {HISTORY}")),
        ("bob".to_owned(), format!("spent 7 from {HISTORY}")),
        ("ann".to_owned(), format!("spent 4 from {}", HISTORY + 60)),
    ];
    said.sort();
    said
}

fn purchase(second: u64, amount: u64) -> Purchase {
    Purchase {
        at: ((HISTORY + second) * 1000) as i64,
        amount,
    }
}

#[tokio::test]
async fn the_event_time_read_from_a_value_places_it_in_its_window_and_stamps_what_it_causes() {
    let mut tester = idle_tester(Spending).await;
    let mut alerts = tester.track::<Alerts>();
    let spent = tester.table::<WindowTable<Spending, SpentPerMinute>>();
    // The records are written today, by the tester's clock.
    for (user, second, amount) in PURCHASES {
        tester
            .consume::<Purchases>(&user.to_owned(), &purchase(second, amount))
            .await
            .unwrap();
    }
    let minute = |m: u64| ((HISTORY + 60 * m) * 1000) as i64;
    assert_eq!(spent.get(&("ann".into(), minute(0))).unwrap(), Some(10));
    assert_eq!(spent.get(&("ann".into(), minute(1))).unwrap(), Some(4));
    // Stream time is the purchase time, 70 s after HISTORY: minute 0 closed, minute 1 closes
    // once the idle partition's stream time moves on.
    let mut said = Vec::new();
    for idle in [false, true] {
        if idle {
            tester.fire_timers().await.unwrap();
        }
        while let Some(alert) = alerts.next().unwrap() {
            // What on_close produced carries the stream time that closed it.
            assert!(idle || alert.timestamp < minute(2), "{}", alert.timestamp);
            said.push((alert.key, alert.value.unwrap_or_default()));
        }
        assert_eq!(said.len(), if idle { 3 } else { 2 }, "{said:?}");
    }
    said.sort();
    assert_eq!(said, spending_alerts());

    // A purchase without its time keeps the record's: today, long after those minutes.
    tester
        .consume::<Purchases>(&"cat".to_owned(), &Purchase { at: 0, amount: 2 })
        .await
        .unwrap();
    let today = tester
        .time()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let rows = spent.rows().unwrap();
    let cat: Vec<_> = rows.iter().filter(|((user, _), _)| user == "cat").collect();
    assert_eq!(cat.len(), 1, "{rows:?}");
    assert_eq!(cat[0].0 .1, today - today % 60_000);
}

/// On the test broker: records written now whose values carry their purchase times land in
/// the windows of those times, and every window closes (the last by `idle_advance`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_time_read_from_a_value_closes_historical_windows_on_kafka() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &[Purchases::NAME, Alerts::NAME], 1).await;
    let client = client(&broker);
    let purchases = goka::emitter::Emitter::<Purchases>::new(&*client)
        .await
        .unwrap();
    for (user, second, amount) in PURCHASES {
        purchases
            .emit_sync(&user.to_owned(), &purchase(second, amount))
            .await
            .unwrap();
    }
    alerts_once_idle(&broker, Spending, &spending_alerts()).await;
}

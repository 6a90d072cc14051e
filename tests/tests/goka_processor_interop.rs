//! goka itself beside ours on Kafka 4.4, each direction (goka v1.1.15 and its sarama, the Go
//! program in `tests/goka`): group tables read by the other side's view, joined and looked up
//! by the other side's processor; each side's emitter feeding the other's processor, keys in
//! the partitions the other expects, headers carried; loopback on each side with the other
//! reading the result.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::kafka::Headers;
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::processor::{GroupTable, Processor};
use goka::topic::Topic;
use goka::view::View;
use goka_tests::goka_peer::GokaPeer;
use goka_tests::{client, read_all, Running, TestBroker};

const PARTITIONS: u32 = 4;
const USERS: usize = 20;

fn user(i: usize) -> String {
    format!("user-{}", i % USERS)
}

/// Whom message `i` refers (the loopback's target).
fn referred(i: usize) -> String {
    user(i * 7 + 3)
}

/// Message `i` of the loopback's input: its target, then its number.
fn referral(i: usize) -> String {
    format!("{}|{i}", referred(i))
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A message our processor handled: key, partition and the headers that came with it.
type Seen = Arc<Mutex<Vec<(String, i32, Headers)>>>;

fn counts(keys: impl IntoIterator<Item = String>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    counts
}

// ---- goka writes, ours reads -------------------------------------------------------------

goka::stream!(pub Clicks = "interop-clicks": String as StringCodec);
goka::stream!(pub Referrals = "interop-referrals": String as StringCodec);
goka::stream!(pub Questions = "interop-questions": String as StringCodec);
goka::stream!(pub Answers = "interop-answers": String as StringCodec);
// The group tables goka's processors write: its counter, and its loopback's referral counts.
goka::table!(pub GokaClicks = "interop-counter-table": i64 as Int64Codec);
goka::table!(pub GokaReferrals = "interop-goka-loop-table": i64 as Int64Codec);

/// Answers each question with the joined click count of its user (goka's co-partitioned
/// table) and the looked-up referral count (goka's loopback result), with the question's
/// headers and one of its own.
#[goka::processor(group = "interop-asker")]
#[input(topic = Questions, handler = Self::on_question)]
#[join(table = GokaClicks)]
#[lookup(table = GokaReferrals)]
#[output(topic = Answers)]
struct Asker {
    seen: Seen,
}

impl Asker {
    fn on_question(
        &self,
        ctx: &mut Context<'_, Self>,
        _question: String,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let clicks = ctx.join::<GokaClicks>()?;
        let referrals = ctx.lookup::<GokaReferrals>(&user)?;
        let mut headers = ctx.headers().clone();
        headers.insert("answered-by", "goka-rs");
        let answer = format!("clicks={clicks:?} referrals={referrals:?}");
        ctx.emit_with_headers::<Answers>(&user, &answer, Some(headers))?;
        let seen = (user, ctx.partition(), ctx.headers().clone());
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goka_processors_tables_are_read_joined_and_looked_up_by_ours() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let streams = [
        Clicks::NAME,
        Referrals::NAME,
        Questions::NAME,
        Answers::NAME,
    ];
    goka_tests::ensure_streams(&broker, &streams, PARTITIONS).await;

    // Our emitter feeds goka's counter, with headers.
    let clicks = Emitter::<Clicks>::new(&*client).await.unwrap();
    for i in 0..200 {
        let headers: Headers = [("origin", "goka-rs".to_owned()), ("seq", i.to_string())]
            .into_iter()
            .collect();
        let page = format!("/page/{i}");
        clicks
            .emit_with_headers(&user(i), &page, &headers)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let referrals = Emitter::<Referrals>::new(&*client).await.unwrap();
    for i in 0..60 {
        referrals.emit_sync(&user(i), &referral(i)).await.unwrap();
    }
    let clicked = counts((0..200).map(user));
    let referred_counts = counts((0..60).map(referred));

    let report = GokaPeer::new("count", &broker.bootstrap())
        .arg("group", "interop-counter")
        .arg("stream", Clicks::NAME)
        .arg("messages", 200)
        .run_to_end()
        .await;
    assert_eq!(report["handled"], 200, "{report}");
    let goka_counts: BTreeMap<String, i64> =
        serde_json::from_value(report["counts"].clone()).unwrap();
    assert_eq!(goka_counts, clicked, "goka handled each message once");
    // goka saw our headers: each key's last message is its last click.
    for (key, headers) in report["headers"].as_object().unwrap() {
        let last = (0..200).filter(|i| &user(*i) == key).max().unwrap();
        assert_eq!(headers["origin"], "goka-rs", "{key}: {headers}");
        assert_eq!(headers["seq"], last.to_string(), "{key}: {headers}");
    }

    // goka's loopback: each referral goes through goka's loop topic to the referred user.
    let report = GokaPeer::new("loop", &broker.bootstrap())
        .arg("group", "interop-goka-loop")
        .arg("stream", Referrals::NAME)
        .arg("messages", 60)
        .run_to_end()
        .await;
    assert_eq!(report["handled"], 60, "{report}");

    // Both of goka's tables, as goka wrote them, through our view.
    goka_tests::wait_for_rows::<GokaClicks>(&client, &clicked, Duration::from_secs(60)).await;
    goka_tests::wait_for_rows::<GokaReferrals>(&client, &referred_counts, Duration::from_secs(60))
        .await;

    // goka's emitter asks our processor, which joins goka's counts and looks up its referrals.
    let report = GokaPeer::new("emit", &broker.bootstrap())
        .arg("stream", Questions::NAME)
        .arg("messages", 40)
        .run_to_end()
        .await;
    assert_eq!(report["emitted"], 40, "{report}");
    let seen = Seen::default();
    let asker = Arc::new(Processor::new(
        Asker { seen: seen.clone() },
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let running = Running::spawn({
        let asker = asker.clone();
        move |cancel| async move { asker.run(cancel).await }
    });
    let answers = read_all(&broker, Answers::NAME, PARTITIONS as i32, 40);
    running.stop().await;
    assert_eq!(answers.len(), 40);
    for answer in &answers {
        let key = String::from_utf8(answer.key.clone()).unwrap();
        let text = String::from_utf8(answer.value.clone().unwrap()).unwrap();
        let expected = format!(
            "clicks={:?} referrals={:?}",
            clicked.get(&key),
            referred_counts.get(&key)
        );
        assert_eq!(text, expected, "{key}");
        let headers: BTreeMap<String, String> = answer
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(headers.get("origin").map(String::as_str), Some("goka"));
        assert_eq!(
            headers.get("answered-by").map(String::as_str),
            Some("goka-rs")
        );
    }
    // Each question came in the partition our partitioner gives its key, with goka's headers.
    assert_each_from_gokas_emitter_once(&seen, 40);
}

/// What our processor saw of goka's emitter (`goka-peer emit`: key user-(i%20), headers
/// origin=goka and seq=i): messages `0..count`, each once, each in the partition our
/// partitioner gives its key, with its headers.
fn assert_each_from_gokas_emitter_once(seen: &Seen, count: usize) {
    let seen = seen.lock().unwrap();
    let mut seqs: Vec<usize> = Vec::new();
    for (key, partition, headers) in seen.iter() {
        assert_eq!(
            *partition,
            GokaPartitioner.partition(key.as_bytes(), PARTITIONS),
            "{key}"
        );
        assert_eq!(header(headers, "origin").as_deref(), Some("goka"), "{key}");
        let seq: usize = header(headers, "seq").unwrap().parse().unwrap();
        assert_eq!(user(seq), *key);
        seqs.push(seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "each message once");
}

// ---- ours writes, goka reads -------------------------------------------------------------

goka::stream!(pub Visits = "interop-visits": String as StringCodec);
goka::stream!(pub Shares = "interop-shares": String as StringCodec);
goka::stream!(pub GokaQuestions = "interop-goka-questions": String as StringCodec);
goka::stream!(pub GokaAnswers = "interop-goka-answers": String as StringCodec);

/// Counts visits per user; keeps what came with each.
#[goka::processor(group = "interop-ours")]
#[input(topic = Visits, handler = Self::on_visit)]
#[persist(value = i64, codec = Int64Codec)]
struct Visitors {
    seen: Seen,
}

impl Visitors {
    fn on_visit(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let seen = (ctx.key().clone(), ctx.partition(), ctx.headers().clone());
        self.seen.lock().unwrap().push(seen);
        Ok(())
    }
}

/// Sends each share, "TO|N", through its loop topic to the user TO, and counts it there.
#[goka::processor(group = "interop-our-loop")]
#[input(topic = Shares, handler = Self::on_share)]
#[loopback(value = String, codec = StringCodec, handler = Self::on_loop)]
#[persist(value = i64, codec = Int64Codec)]
struct Sharers;

impl Sharers {
    fn on_share(&self, ctx: &mut Context<'_, Self>, share: String) -> Result<(), CallbackError> {
        let to = share.split('|').next().unwrap_or_default().to_owned();
        ctx.loopback(&to, &share)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, _share: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

/// goka's view of one of our tables: its rows.
async fn goka_view(broker: &TestBroker, table: &'static str) -> BTreeMap<String, i64> {
    let report = GokaPeer::new("view", &broker.bootstrap())
        .arg("table", table)
        .run_to_end()
        .await;
    serde_json::from_value(report["rows"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_processors_tables_are_read_joined_and_looked_up_by_goka() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let streams = [
        Visits::NAME,
        Shares::NAME,
        GokaQuestions::NAME,
        GokaAnswers::NAME,
    ];
    goka_tests::ensure_streams(&broker, &streams, PARTITIONS).await;

    // goka's emitter feeds our counter (key user-(i%20), value /page/i, headers origin=goka
    // and seq=i); our emitter feeds our loopback.
    let report = GokaPeer::new("emit", &broker.bootstrap())
        .arg("stream", Visits::NAME)
        .arg("messages", 200)
        .run_to_end()
        .await;
    assert_eq!(report["emitted"], 200, "{report}");
    let shares = Emitter::<Shares>::new(&*client).await.unwrap();
    for i in 0..60 {
        shares.emit_sync(&user(i), &referral(i)).await.unwrap();
    }
    let visited = counts((0..200).map(user));
    let shared = counts((0..60).map(referred));

    let seen = Seen::default();
    let visitors = Arc::new(Processor::new(
        Visitors { seen: seen.clone() },
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let sharers = Arc::new(Processor::new(
        Sharers,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let visitors_running = Running::spawn({
        let p = visitors.clone();
        move |cancel| async move { p.run(cancel).await }
    });
    let sharers_running = Running::spawn({
        let p = sharers.clone();
        move |cancel| async move { p.run(cancel).await }
    });
    let recovered = async { (visitors.recovered().await, sharers.recovered().await) };
    let states = tokio::time::timeout(Duration::from_secs(60), recovered)
        .await
        .expect("our processors did not recover in 60 s");
    let running = goka::processor::ProcessorState::Running;
    assert_eq!(states, (running, running));
    goka_tests::wait_for_rows::<GroupTable<Visitors>>(&client, &visited, Duration::from_secs(60))
        .await;
    goka_tests::wait_for_rows::<GroupTable<Sharers>>(&client, &shared, Duration::from_secs(60))
        .await;
    visitors_running.stop().await;
    sharers_running.stop().await;

    // Each of goka's messages came in the partition goka's emitter chose, with its headers.
    assert_each_from_gokas_emitter_once(&seen, 200);

    // goka's view reads both of our tables as we wrote them.
    assert_eq!(goka_view(&broker, "interop-ours-table").await, visited);
    assert_eq!(goka_view(&broker, "interop-our-loop-table").await, shared);

    // goka's processor joins our counts, looks up our loopback's, and answers with our
    // emitter's headers and one of its own.
    let questions = Emitter::<GokaQuestions>::new(&*client).await.unwrap();
    for i in 0..40 {
        let headers: Headers = [("origin", "goka-rs")].into_iter().collect();
        questions
            .emit_with_headers(&user(i), &user(i + 1), &headers)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let report = GokaPeer::new("join", &broker.bootstrap())
        .arg("group", "interop-goka-asker")
        .arg("stream", GokaQuestions::NAME)
        .arg("table", "interop-ours-table")
        .arg("lookup", "interop-our-loop-table")
        .arg("output", GokaAnswers::NAME)
        .arg("messages", 40)
        .run_to_end()
        .await;
    assert_eq!(report["handled"], 40, "{report}");
    let answers = read_all(&broker, GokaAnswers::NAME, PARTITIONS as i32, 40);
    assert_eq!(answers.len(), 40);
    let show = |v: Option<&i64>| v.map_or_else(|| "nil".to_owned(), ToString::to_string);
    let mut got = Vec::new();
    for answer in &answers {
        let text = String::from_utf8(answer.value.clone().unwrap()).unwrap();
        let key = String::from_utf8(answer.key.clone()).unwrap();
        assert_eq!(
            answer.partition,
            GokaPartitioner.partition(&answer.key, PARTITIONS),
            "{key}"
        );
        let headers: BTreeMap<&str, &[u8]> = answer
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(headers.get("origin"), Some(&&b"goka-rs"[..]), "{key}");
        assert_eq!(headers.get("answered-by"), Some(&&b"goka"[..]), "{key}");
        got.push(text);
    }
    let mut expected: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "{} joined={} looked-up={}",
                user(i),
                show(visited.get(&user(i))),
                show(shared.get(&user(i + 1)))
            )
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

// ---- a codec mismatch ----------------------------------------------------------------------

goka::stream!(pub Taps = "mismatch-taps": String as StringCodec);
// goka's group writes "N visits" (codec.String); this side expects codec.Int64.
goka::table!(pub MismatchTable = "interop-mismatch-table": i64 as Int64Codec);

/// The goka group taken over with the wrong table codec.
#[goka::processor(group = "interop-mismatch")]
#[input(topic = Taps, handler = Self::on_tap)]
#[persist(value = i64, codec = Int64Codec)]
struct WrongCodec;

impl WrongCodec {
    fn on_tap(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goka_row_our_codec_cannot_decode_is_an_error_that_names_it() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Taps::NAME], PARTITIONS).await;
    let taps = Emitter::<Taps>::new(&*client).await.unwrap();
    for i in 0..40 {
        taps.emit_sync(&user(i), &format!("/page/{i}"))
            .await
            .unwrap();
    }
    let report = GokaPeer::new("count", &broker.bootstrap())
        .arg("group", "interop-mismatch")
        .arg("stream", Taps::NAME)
        .arg("codec", "string")
        .arg("messages", 40)
        .run_to_end()
        .await;
    assert_eq!(report["handled"], 40, "{report}");

    // A view stops at the first row, naming its place in the changelog and the codec.
    let view = View::<MismatchTable>::builder(client.clone())
        .build()
        .await
        .unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        view.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the view neither failed nor stopped")
    .expect_err("the view applied rows its codec cannot decode");
    let text = error.to_string();
    for part in [
        "interop-mismatch-table",
        "partition",
        "offset",
        "int64 codec",
        " visits\"",
    ] {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }

    // The group taken over with the wrong codec: the first message that reads a goka row
    // stops the processor (the default decode-error policy), naming the message, the row and
    // the codec; the message stays uncommitted.
    taps.emit_sync(&user(3), &"/page/40".to_owned())
        .await
        .unwrap();
    let processor = Processor::new(WrongCodec, client.clone(), Default::default());
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        processor.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the processor neither failed nor stopped")
    .expect_err("the processor read a row its codec cannot decode");
    let text = error.to_string();
    println!("processor stopped: {text}");
    for part in [
        "interop-mismatch",
        "mismatch-taps",
        "partition",
        "offset",
        "user-3",
        "row \"user-3\" of table interop-mismatch-table does not decode",
        "int64 codec: \"2 visits\"",
    ] {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }

    // Under SkipAndCount it skips that message, counts it, and leaves the row as goka wrote it.
    let config = goka::processor::ProcessorConfig {
        decode_errors: Some(goka::codec::DecodeErrorPolicy::SkipAndCount),
        ..Default::default()
    };
    let processor = Arc::new(Processor::new(WrongCodec, client.clone(), config));
    let running = Running::spawn({
        let p = processor.clone();
        move |cancel| async move { p.run(cancel).await }
    });
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.stats().decode_errors == 1,
        || format!("decode errors counted: {:?}", processor.stats()),
    )
    .await;
    running.stop().await;

    // Under DeadLetter the next such message goes to the dead-letter topic with the error.
    taps.emit_sync(&user(5), &"/page/41".to_owned())
        .await
        .unwrap();
    let config = goka::processor::ProcessorConfig {
        decode_errors: Some(goka::codec::DecodeErrorPolicy::DeadLetter),
        ..Default::default()
    };
    let processor = Arc::new(Processor::new(WrongCodec, client.clone(), config));
    let running = Running::spawn({
        let p = processor.clone();
        move |cancel| async move { p.run(cancel).await }
    });
    let letters = read_all(&broker, "interop-mismatch-dead-letters", 1, 1);
    running.stop().await;
    assert_eq!(letters.len(), 1);
    let error = letters[0]
        .headers
        .iter()
        .find(|(name, _)| name == goka::processor::DEAD_LETTER_ERROR)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default();
    assert!(
        error.contains("row \"user-5\" of table interop-mismatch-table does not decode"),
        "{error}"
    );
    assert_eq!(letters[0].key, b"user-5");
}

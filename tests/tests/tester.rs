//! The in-memory tester runs processors through the production code paths, deterministically:
//! counting, joins and emits, loopback chains, processors wired through a topic, views and
//! emitters on the tester, failures with coordinates, and the nil and decode policies.

use goka::codec::{Int64Codec, Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::processor::{GroupTable, ProcessorError};
use goka::tester::Tester;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub to: String,
    pub text: String,
}

goka::stream!(pub Clicks = "clicks": String as StringCodec);
goka::stream!(pub Sent = "sent": Message as Json);
goka::stream!(pub Delivered = "delivered": Message as Json);
goka::stream!(pub Alerts = "alerts": String as StringCodec);
goka::table!(pub Blocked = "blocked": String as StringCodec);

fn s(text: &str) -> String {
    text.to_owned()
}

/// Counts clicks per user; fails on a click on "/boom"; deletes the count on a tombstone.
#[goka::processor(group = "counter", nil_handling = "restore")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Alerts)]
#[derive(Debug)]
pub struct Counter {
    alert_every: i64,
}

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        if page == "/boom" {
            return Err(format!("cannot count {page}").into());
        }
        let count = ctx.value()?.unwrap_or(0) + 1;
        ctx.set_value(&count)?;
        if count % self.alert_every == 0 {
            let user = ctx.key().clone();
            ctx.emit::<Alerts>(&user, &format!("{user} clicked {count} times"))?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_counting_processor_keeps_state_per_key_and_emits() {
    let mut tester = Tester::new();
    tester.register(Counter { alert_every: 2 }).await.unwrap();
    let mut alerts = tester.track::<Alerts>();
    for (user, page) in [("alice", "/a"), ("bob", "/b"), ("alice", "/c")] {
        tester.consume::<Clicks>(&s(user), &s(page)).await.unwrap();
    }
    let table = tester.table::<GroupTable<Counter>>();
    assert_eq!(table.get(&s("alice")).unwrap(), Some(2));
    assert_eq!(table.get(&s("bob")).unwrap(), Some(1));
    assert_eq!(table.get(&s("carol")).unwrap(), None);
    let alert = alerts.next().unwrap().expect("one alert");
    assert_eq!(
        (alert.key, alert.value),
        (s("alice"), Some(s("alice clicked 2 times")))
    );
    alerts.expect_empty();

    // nil_handling = "restore": a tombstone deletes the row.
    tester
        .consume_tombstone::<Clicks>(&s("alice"))
        .await
        .unwrap();
    assert_eq!(
        tester
            .table::<GroupTable<Counter>>()
            .get(&s("alice"))
            .unwrap(),
        None
    );
    assert_eq!(
        tester.table::<GroupTable<Counter>>().rows().unwrap(),
        vec![(s("bob"), 1)]
    );
}

#[tokio::test]
async fn a_failing_handler_returns_the_production_error_with_coordinates() {
    let mut tester = Tester::new();
    tester.register(Counter { alert_every: 10 }).await.unwrap();
    tester
        .consume::<Clicks>(&s("alice"), &s("/a"))
        .await
        .unwrap();
    let error = tester
        .consume::<Clicks>(&s("alice"), &s("/boom"))
        .await
        .unwrap_err();
    match &error {
        ProcessorError::Callback {
            group,
            topic,
            partition,
            offset,
            key,
            message,
        } => {
            assert_eq!(
                (*group, topic.as_str(), *partition, *offset, key.as_str()),
                ("counter", "clicks", 0, 1, "alice")
            );
            assert!(message.contains("cannot count /boom"), "{message}");
        }
        other => panic!("expected a callback error, got {other}"),
    }
    // The failed message changed nothing; later messages are handled.
    tester
        .consume::<Clicks>(&s("alice"), &s("/b"))
        .await
        .unwrap();
    assert_eq!(
        tester
            .table::<GroupTable<Counter>>()
            .get(&s("alice"))
            .unwrap(),
        Some(2)
    );
}

/// goka's messaging example, in small: the blocker drops messages from blocked senders
/// (a join), and forwards the rest to the delivered stream.
#[goka::processor(group = "filter")]
#[input(topic = Sent, handler = Self::on_sent)]
#[join(table = Blocked)]
#[output(topic = Delivered)]
#[derive(Debug)]
pub struct Filter;

impl Filter {
    async fn on_sent(
        &self,
        ctx: &mut Context<'_, Self>,
        message: Message,
    ) -> Result<(), CallbackError> {
        tokio::task::yield_now().await; // async handlers run as in production
        if ctx.join::<Blocked>()?.is_some() {
            return Ok(());
        }
        let sender = ctx.key().clone();
        ctx.emit::<Delivered>(&sender, &message)
    }
}

/// Keeps the last message delivered to each recipient, fed by the filter's output.
#[goka::processor(group = "inbox")]
#[input(topic = Delivered, handler = Self::on_delivered)]
#[loopback(value = Message, codec = Json, handler = Self::on_loop)]
#[persist(value = Message, codec = Json)]
#[derive(Debug)]
pub struct Inbox;

impl Inbox {
    fn on_delivered(
        &self,
        ctx: &mut Context<'_, Self>,
        message: Message,
    ) -> Result<(), CallbackError> {
        // Inputs are keyed by sender; the inbox row belongs to the recipient.
        let recipient = message.to.clone();
        ctx.loopback(&recipient, &message)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, message: Message) -> Result<(), CallbackError> {
        ctx.set_value(&message)
    }
}

#[tokio::test]
async fn joins_loopbacks_and_two_processors_wired_through_a_topic() {
    let mut tester = Tester::with_partitions(3);
    tester.register(Filter).await.unwrap();
    tester.register(Inbox).await.unwrap();
    tester
        .set_table_value::<Blocked>(&s("spammer"), &s("yes"))
        .unwrap();
    let mut delivered = tester.track::<Delivered>();

    let hello = Message {
        to: s("bob"),
        text: s("hello"),
    };
    let spam = Message {
        to: s("bob"),
        text: s("buy now"),
    };
    tester.consume::<Sent>(&s("alice"), &hello).await.unwrap();
    tester.consume::<Sent>(&s("spammer"), &spam).await.unwrap();

    let first = delivered.next().unwrap().expect("alice's message");
    assert_eq!(
        (first.key.as_str(), first.value.as_ref()),
        ("alice", Some(&hello))
    );
    assert_eq!(
        first.partition,
        GokaPartitioner.partition(b"alice", 3),
        "emits use goka's partitioner"
    );
    delivered.expect_empty();
    // The loopback moved the message to the recipient's row, in the recipient's partition.
    let inbox = tester.table::<GroupTable<Inbox>>();
    assert_eq!(inbox.get(&s("bob")).unwrap(), Some(hello.clone()));
    assert_eq!(inbox.get(&s("alice")).unwrap(), None);

    // Unblocking takes effect on the next message.
    tester.delete_table_value::<Blocked>(&s("spammer")).unwrap();
    tester.consume::<Sent>(&s("spammer"), &spam).await.unwrap();
    assert_eq!(
        tester.table::<GroupTable<Inbox>>().get(&s("bob")).unwrap(),
        Some(spam)
    );
}

#[tokio::test]
async fn views_and_emitters_work_against_the_tester() {
    let mut tester = Tester::with_partitions(2);
    tester.register(Counter { alert_every: 100 }).await.unwrap();
    let view = tester.view::<GroupTable<Counter>>().await.unwrap();
    let emitter = tester.emitter::<Clicks>().await.unwrap();
    for user in ["alice", "bob", "alice", "alice"] {
        emitter.emit_sync(&s(user), &s("/page")).await.unwrap();
    }
    // Emitted messages wait for the tester to handle them.
    assert_eq!(view.get(&s("alice")).unwrap(), None);
    tester.run_until_idle().await.unwrap();
    assert_eq!(view.get(&s("alice")).unwrap(), Some(3));
    assert_eq!(view.get(&s("bob")).unwrap(), Some(1));
    let mut rows: Vec<(String, i64)> = view.iter().map(|row| row.unwrap()).collect();
    rows.sort();
    assert_eq!(rows, vec![(s("alice"), 3), (s("bob"), 1)]);
}

/// Skips what does not decode and takes tombstones as `None`.
#[goka::processor(group = "lenient", nil_handling = "process", decode_errors = "skip")]
#[input(topic = Sent, handler = Self::on_sent)]
#[persist(value = String, codec = StringCodec)]
#[derive(Debug)]
pub struct Lenient;

impl Lenient {
    fn on_sent(
        &self,
        ctx: &mut Context<'_, Self>,
        message: Option<Message>,
    ) -> Result<(), CallbackError> {
        match message {
            Some(message) => ctx.set_value(&message.text),
            None => ctx.set_value(&s("(deleted)")),
        }
    }
}

goka::stream!(pub RawSent = "sent": String as StringCodec);

#[tokio::test]
async fn decode_and_nil_policies_apply_as_in_production() {
    let mut tester = Tester::new();
    tester.register(Lenient).await.unwrap();
    // Bytes that are not JSON, written through a second type of the same topic.
    tester
        .consume::<RawSent>(&s("alice"), &s("not json"))
        .await
        .unwrap();
    let table = tester.table::<GroupTable<Lenient>>();
    assert_eq!(table.get(&s("alice")).unwrap(), None, "skipped");
    tester.consume_tombstone::<Sent>(&s("alice")).await.unwrap();
    assert_eq!(table.get(&s("alice")).unwrap(), Some(s("(deleted)")));
}

#[tokio::test]
async fn topics_that_are_not_copartitioned_fail_registration() {
    let mut tester = Tester::with_partitions(3);
    tester.set_partitions::<Blocked>(2);
    let error = tester.register(Filter).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("not co-partitioned") && text.contains("\"blocked\" has 2"),
        "{text}"
    );
}

goka::table!(pub Languages = "languages": String as StringCodec);
goka::stream!(pub Translated = "translated": String as StringCodec);

/// Translates a word through a lookup table that is not co-partitioned with the input.
#[goka::processor(group = "translator")]
#[input(topic = Clicks, handler = Self::on_word)]
#[lookup(table = Languages)]
#[output(topic = Translated)]
#[derive(Debug)]
pub struct Translator;

impl Translator {
    fn on_word(&self, ctx: &mut Context<'_, Self>, word: String) -> Result<(), CallbackError> {
        let translated = ctx.lookup::<Languages>(&word)?.unwrap_or(word);
        let key = ctx.key().clone();
        ctx.emit::<Translated>(&key, &translated)
    }
}

#[tokio::test]
async fn lookups_read_any_key_of_a_table_with_its_own_partition_count() {
    let mut tester = Tester::with_partitions(4);
    tester.set_partitions::<Languages>(1);
    tester.register(Translator).await.unwrap();
    tester
        .set_table_value::<Languages>(&s("hello"), &s("hallo"))
        .unwrap();
    let mut out = tester.track::<Translated>();
    for (user, word) in [("alice", "hello"), ("bob", "world")] {
        tester.consume::<Clicks>(&s(user), &s(word)).await.unwrap();
    }
    let mut got: Vec<(String, Option<String>)> = out
        .drain()
        .unwrap()
        .into_iter()
        .map(|m| (m.key, m.value))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(s("alice"), Some(s("hallo"))), (s("bob"), Some(s("world")))]
    );
}

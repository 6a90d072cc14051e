//! Dead letters: a message whose value does not decode or whose handler fails goes to the
//! group's dead-letter topic with its coordinates when the policy says so, and the partition
//! goes on; without the policy the failure stops `run`. First on the in-memory tester, then on
//! the test broker. The dead letters of windows (a late message) and timers (a stored timer
//! that no longer decodes) are tested with their features, in `windows.rs` and `timers.rs`;
//! a dead-lettered message with deferred work in `processor_options.rs`.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::kafka::Headers;
use goka::processor::{GroupStart, GroupTable, Processor, ProcessorConfig};
use goka::storage::MemoryBuilder;
use goka::tester::Tester;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::{client, eventually, Running, TestBroker};

goka::stream!(pub Shipped = "shipped": String as StringCodec);

fn s(text: &str) -> String {
    text.to_owned()
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

goka::stream!(pub Payments = "payments": i64 as Int64Codec);

/// Books payments; a negative one is refused by the handler.
#[goka::processor(group = "ledger", decode_errors = "dead-letter")]
#[input(topic = Payments, handler = Self::on_payment)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Shipped)]
#[derive(Debug)]
pub struct Ledger;

impl Ledger {
    fn on_payment(&self, ctx: &mut Context<'_, Self>, amount: i64) -> Result<(), CallbackError> {
        let key = ctx.key().clone();
        ctx.emit::<Shipped>(&key, &format!("booking {amount}"))?;
        if amount < 0 {
            return Err(format!("refusing a negative payment of {amount}").into());
        }
        let balance = ctx.value()?.unwrap_or(0) + amount;
        ctx.set_value(&balance)
    }
}

goka::stream!(pub DeadLetters = "ledger-dead-letters": String as StringCodec);
// The same topic as `Payments`, written as text: "oops" is no int64.
goka::stream!(pub PaymentsAsText = "payments": String as StringCodec);

#[tokio::test]
async fn bad_messages_go_to_the_dead_letter_topic_with_their_coordinates() {
    use goka::processor::{
        HandlerErrorPolicy, DEAD_LETTER_ERROR, DEAD_LETTER_OFFSET, DEAD_LETTER_REASON,
        DEAD_LETTER_TOPIC,
    };
    let mut tester = Tester::new();
    let config = ProcessorConfig {
        handler_errors: HandlerErrorPolicy::DeadLetter,
        ..Default::default()
    };
    tester.register_with(Ledger, config).await.unwrap();
    let mut letters = tester.track::<DeadLetters>();
    let mut shipped = tester.track::<Shipped>();
    tester.consume::<Payments>(&s("ann"), &10).await.unwrap();
    // Not an int64: a decode error, under decode_errors = "dead-letter".
    tester
        .consume::<PaymentsAsText>(&s("ann"), &s("oops"))
        .await
        .unwrap();
    tester.consume::<Payments>(&s("ann"), &-5).await.unwrap();
    tester.consume::<Payments>(&s("ann"), &7).await.unwrap();
    assert_eq!(
        tester.table::<GroupTable<Ledger>>().get(&s("ann")).unwrap(),
        Some(17),
        "the good payments were booked, the bad ones did not stop anything"
    );
    assert_eq!(
        shipped.drain().unwrap().len(),
        2,
        "what a failed handler emitted was not sent"
    );
    let letters = letters.drain().unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let head = |i: usize, name: &str| header(&letters[i].headers, name).unwrap_or_default();
    assert_eq!(
        (letters[0].key.as_str(), letters[0].value.as_deref()),
        ("ann", Some("oops")),
        "the message as it came"
    );
    assert_eq!(head(0, DEAD_LETTER_TOPIC), "payments");
    assert_eq!(head(0, DEAD_LETTER_OFFSET), "1");
    assert_eq!(head(0, DEAD_LETTER_REASON), "decode");
    assert_eq!(head(1, DEAD_LETTER_OFFSET), "2");
    assert_eq!(head(1, DEAD_LETTER_REASON), "handler");
    assert!(head(1, DEAD_LETTER_ERROR).contains("refusing a negative payment of -5"));
}

#[tokio::test]
async fn without_a_dead_letter_policy_a_failing_handler_still_stops() {
    let mut tester = Tester::new();
    tester.register(Ledger).await.unwrap();
    let error = tester
        .consume::<Payments>(&s("ann"), &-5)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("refusing a negative payment"), "{error}");
}

goka::stream!(pub Notes = "letter-notes": String as StringCodec);

const PARTITIONS: u32 = 2;

async fn notes(broker: &TestBroker) -> Emitter<Notes> {
    let client = client(broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    Emitter::<Notes>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap()
}

/// Keeps notes; refuses the note "poison".
#[goka::processor(group = "letter-careful")]
#[input(topic = Notes, handler = Self::on_note)]
#[persist(value = String, codec = StringCodec)]
#[derive(Debug)]
pub struct Careful;

impl Careful {
    fn on_note(&self, ctx: &mut Context<'_, Self>, note: String) -> Result<(), CallbackError> {
        if note == "poison" {
            return Err("cannot keep poison".into());
        }
        ctx.set_value(&note)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_goes_to_the_dead_letter_topic_and_the_partition_goes_on() {
    use goka::partitioner::Partitioner;
    let broker = TestBroker::start();
    let notes = notes(&broker).await;
    for note in ["one", "poison", "two"] {
        notes.emit_sync(&"k".into(), &note.into()).await.unwrap();
    }
    let processor = Arc::new(Processor::new(
        Careful,
        client(&broker),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            new_group_start: GroupStart::Oldest,
            handler_errors: goka::processor::HandlerErrorPolicy::DeadLetter,
            ..Default::default()
        },
    ));
    let run = {
        let processor = processor.clone();
        Running::spawn(move |cancel| async move { processor.run(cancel).await })
    };
    let partition = goka::partitioner::GokaPartitioner.partition(b"k", PARTITIONS);
    eventually(
        Duration::from_secs(60),
        || {
            processor.get(&"k".into()).unwrap().as_deref() == Some("two")
                && processor
                    .done_offsets()
                    .iter()
                    .any(|o| o.partition == partition && o.offset == 3)
        },
        || {
            format!(
                "{:?} {:?}",
                processor.get(&"k".into()),
                processor.done_offsets()
            )
        },
    )
    .await;
    assert_eq!(processor.stats().dead_letters, 1);
    let letters =
        goka_tests::read_all(&broker, "letter-careful-dead-letters", PARTITIONS as i32, 1);
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.key.as_slice(), letter.value.as_deref()),
        (&b"k"[..], Some(&b"poison"[..]))
    );
    let head = |name: &str| {
        letter
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(head(goka::processor::DEAD_LETTER_TOPIC), "letter-notes");
    assert_eq!(
        head(goka::processor::DEAD_LETTER_PARTITION),
        partition.to_string()
    );
    assert_eq!(head(goka::processor::DEAD_LETTER_OFFSET), "1");
    assert_eq!(head(goka::processor::DEAD_LETTER_GROUP), "letter-careful");
    assert!(head(goka::processor::DEAD_LETTER_ERROR).contains("cannot keep poison"));
    run.stop().await;
}

//! Faults that used to fail silently, each injected exactly: every one either heals (every
//! message handled) or stops `run` with an error naming group, topic, partition and offset.
//! Never a hang, never `Ok` after lost work.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use goka::codec::{Codec, CodecError, Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::{
    Ack, Admin, Client, ConsumedBatch, GroupConsumer, HeaderUse, Headers, KafkaError,
    MemberOptions, OutgoingRecord, PartitionConsumer, Producer, RebalanceListener, SendError,
    StartOffset,
};
use goka::processor::{GroupTable, Processor, ProcessorConfig, ProcessorError};
use goka::storage::RocksDbBuilder;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka_tests::{client, config, eventually, ProxyMode, Running, TestBroker, TestClient};

goka::stream!(Clicks = "fault-clicks": String as StringCodec);

const PARTITIONS: u32 = 2;
/// A header name that is not UTF-8, as a Go or Java producer may write one.
const HOSTILE_NAME: &[u8] = b"\xff\xfeorigin";

/// Counts clicks per user; remembers the header names it saw.
#[goka::processor(group = "fault-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter {
    names: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Time each message takes, so that a backlog waits in the queues.
    pause: Duration,
}

impl Counter {
    fn new() -> Self {
        Self {
            names: Arc::default(),
            pause: Duration::ZERO,
        }
    }

    async fn on_click(
        &self,
        ctx: &mut Context<'_, Self>,
        _page: String,
    ) -> Result<(), CallbackError> {
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        let names: Vec<Vec<u8>> = ctx.headers().iter().map(|(n, _)| n.to_vec()).collect();
        self.names.lock().unwrap().extend(names);
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

async fn setup(broker: &TestBroker) -> (TestClient, Emitter<Clicks>) {
    let client = client(broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Clicks>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap();
    (client, emitter)
}

/// Emits `n` clicks over `users` users; returns the expected count per user.
async fn emit(emitter: &Emitter<Clicks>, n: usize, users: usize) -> HashMap<String, i64> {
    let mut expected = HashMap::new();
    let mut pending = Vec::new();
    for i in 0..n {
        let user = format!("user-{}", i % users);
        *expected.entry(user.clone()).or_insert(0) += 1;
        pending.push(emitter.emit(&user, &format!("page-{i}")).await.unwrap());
    }
    for delivery in pending {
        delivery.await.unwrap();
    }
    expected
}

fn spawn<P: goka::processor::Handlers>(processor: &Arc<Processor<P>>) -> Running<ProcessorError> {
    let processor = processor.clone();
    Running::spawn(move |cancel| async move { processor.run(cancel).await })
}

fn counts(processor: &Processor<Counter>, expected: &HashMap<String, i64>) -> HashMap<String, i64> {
    expected
        .keys()
        .filter_map(|k| processor.get(k).unwrap().map(|v| (k.clone(), v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_reaches_the_handler_and_a_view() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let mut hostile = Headers::new();
    hostile
        .insert(HOSTILE_NAME, b"go".to_vec())
        .insert("trace", "t1");
    let mut expected = emit(&emitter, 500, 10).await;
    emitter
        .emit_with_headers(&"user-0".into(), &"page".into(), &hostile)
        .await
        .unwrap()
        .await
        .unwrap();
    *expected.get_mut("user-0").unwrap() += 1;
    for (user, more) in emit(&emitter, 499, 10).await {
        *expected.get_mut(&user).unwrap() += more;
    }

    let counter = Counter::new();
    let names = counter.names.clone();
    let processor = Arc::new(Processor::new(
        counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let mut running = spawn(&processor);
    eventually(
        Duration::from_secs(60),
        || counts(&processor, &expected) == expected || running.is_finished(),
        || {
            format!(
                "counts {:?}, stats {:?}",
                counts(&processor, &expected),
                processor.stats()
            )
        },
    )
    .await;
    assert!(
        !running.is_finished(),
        "the processor stopped: {:?}",
        running.ended()
    );
    assert_eq!(
        processor.stats().messages_in,
        1_000,
        "every message handled once"
    );
    assert_eq!(
        *names.lock().unwrap(),
        vec![HOSTILE_NAME.to_vec(), b"trace".to_vec()],
        "the handler sees the name's bytes as written"
    );
    running.stop().await;

    // A view with an update callback reads the same message's headers.
    goka::table!(ClicksAsTable = "fault-clicks": String as StringCodec);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let view = View::<ClicksAsTable>::builder(client.clone())
        .update_callback({
            let seen = seen.clone();
            move |storage, message| {
                if let Some(value) = message.headers.get(HOSTILE_NAME) {
                    seen.lock().unwrap().push(value.to_vec());
                }
                match &message.value {
                    Some(value) => storage.set(&message.key, value),
                    None => storage.delete(&message.key),
                }
            }
        })
        .build()
        .await
        .unwrap();
    let mut view_running = goka_tests::spawn_view(&view);
    tokio::time::timeout(Duration::from_secs(60), view.recovered())
        .await
        .unwrap();
    assert!(
        !view_running.is_finished(),
        "the view stopped: {:?}",
        view_running.ended()
    );
    assert_eq!(*seen.lock().unwrap(), vec![b"go".to_vec()]);
    view_running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_after_queueing_stops_run_naming_the_input() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let (_, emitter) = setup(&broker).await;
    let expected = emit(&emitter, 400, 20).await;
    // Deliveries give up after 2 s: the outage below outlasts that.
    let client = Arc::new(RdKafkaClient::new(
        config(&broker).set("message.timeout.ms", "2000"),
    ));
    let mut counter = Counter::new();
    counter.pause = Duration::from_millis(10);
    let processor = Arc::new(Processor::new(
        counter,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let started = spawn(&processor);
    eventually(
        Duration::from_secs(60),
        || processor.stats().messages_in >= 20,
        || format!("nothing handled: {:?}", processor.stats()),
    )
    .await;
    // The backlog is fetched already: its changelog writes cannot reach the broker.
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let mut started = started;
        loop {
            if let Some(ended) = started.ended() {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("run stops by itself instead of spinning on the failed delivery");
    assert!(outcome.contains("HandlerProduce"), "{outcome}");
    for part in [
        "fault-counter",
        "fault-clicks",
        "partition",
        "offset",
        "fault-counter-table",
    ] {
        assert!(outcome.contains(part), "{part} missing: {outcome}");
    }

    // Nothing was committed past the lost write: a new run counts every click.
    proxy.set_mode(ProxyMode::Forward);
    let processor = Arc::new(Processor::new(
        Counter::new(),
        client,
        goka_tests::from_oldest(),
    ));
    let running = spawn(&processor);
    eventually(
        Duration::from_secs(60),
        || {
            let counted = counts(&processor, &expected);
            expected
                .iter()
                .all(|(k, v)| counted.get(k).is_some_and(|c| c >= v))
        },
        || format!("counts {:?} of {expected:?}", counts(&processor, &expected)),
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_partition_queues_are_full_loses_none() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    // Several times the queue waits on each partition, so both queues are full.
    let expected = emit(&emitter, 2_000, 40).await;
    let config = ProcessorConfig {
        partition_queue: 50,
        ..goka_tests::from_oldest()
    };
    let mut counter = Counter::new();
    counter.pause = Duration::from_millis(2);
    let first = Arc::new(Processor::new(counter, client.clone(), config.clone()));
    let first_running = spawn(&first);
    eventually(
        Duration::from_secs(60),
        || first.stats().messages_in >= 100,
        || format!("nothing handled: {:?}", first.stats()),
    )
    .await;
    // A second member joins: every partition is revoked, and one comes back to the first.
    let second = Arc::new(Processor::new(Counter::new(), client.clone(), config));
    let second_running = spawn(&second);
    let deadline = Duration::from_secs(90);
    eventually(
        deadline,
        || {
            let (a, b) = (counts(&first, &expected), counts(&second, &expected));
            expected
                .iter()
                .all(|(k, v)| a.get(k).or(b.get(k)).is_some_and(|c| c >= v))
        },
        || {
            format!(
                "stalled: first {:?} {:?}, second {:?} {:?}",
                first.partition_stats(),
                first.stats(),
                second.partition_stats(),
                second.stats()
            )
        },
    )
    .await;
    first_running.stop().await;
    second_running.stop().await;
}

/// Decodes keys, panicking on one.
#[derive(Debug)]
struct TouchyKeys;

impl Codec<String> for TouchyKeys {
    const NAME: &'static str = "touchy";
    fn encode(value: &String, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        StringCodec::encode(value, buf)
    }
    fn decode(bytes: &[u8]) -> Result<String, CodecError> {
        assert!(bytes != b"boom", "the key codec cannot take this");
        StringCodec::decode(bytes)
    }
}

goka::stream!(Touchy = "fault-touchy": String as StringCodec, key: String as TouchyKeys);

#[goka::processor(group = "fault-touchy-counter")]
#[input(topic = Touchy, handler = Self::on_message)]
#[persist(value = i64, codec = Int64Codec)]
struct TouchyCounter;

impl TouchyCounter {
    fn on_message(&self, ctx: &mut Context<'_, Self>, _v: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_key_codec_stops_run_with_coordinates() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Touchy>::ensuring(&*client, &manager, 1)
        .await
        .unwrap();
    emitter
        .emit_sync(&"fine".into(), &"a".into())
        .await
        .unwrap();
    let boom = emitter
        .emit_sync(&"boom".into(), &"b".into())
        .await
        .unwrap();
    let processor = Processor::new(TouchyCounter, client, goka_tests::from_oldest());
    let error = goka_tests::run_until_error(&processor).await;
    assert!(
        error.contains("fault-touchy-counter")
            && error.contains("fault-touchy")
            && error.contains(&format!("partition {}", boom.partition))
            && error.contains(&format!("offset {}", boom.offset))
            && error.contains("key codec panicked")
            && error.contains("cannot take this"),
        "{error}"
    );
}

/// A client of the test broker with one fault injected.
struct Faulty {
    inner: TestClient,
    fault: Fault,
}

enum Fault {
    /// The ordered producer (the processor's) fails changelog writes of one key: at once
    /// (`at_queue`) or when the answer comes.
    FailingWrites { key: &'static [u8], at_queue: bool },
    /// Group members never finish a synchronous commit or leaving the group, as a client
    /// waiting for a coordinator that does not come back.
    StuckStopping,
    /// Consumers of tables (a view's reader) never finish closing.
    StuckClosing,
}

/// A table consumer whose closing never returns, as a client waiting for a cluster that
/// does not answer.
struct StuckOnClose(Box<dyn PartitionConsumer>);

impl PartitionConsumer for StuckOnClose {
    fn next_batch(&mut self) -> BoxFuture<'_, Option<Result<ConsumedBatch, KafkaError>>> {
        self.0.next_batch()
    }
}

impl Drop for StuckOnClose {
    fn drop(&mut self) {
        hang_forever();
    }
}

struct FailingProducer {
    inner: Arc<dyn Producer>,
    key: &'static [u8],
    at_queue: bool,
}

impl Producer for FailingProducer {
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError> {
        if record.topic.ends_with("-table") && record.key == self.key {
            let error = KafkaError::Produce {
                topic: record.topic.to_owned(),
                partition: record.partition,
                message: "injected: the broker refused the batch".into(),
            };
            return match self.at_queue {
                true => Err(SendError::Failed(error)),
                false => Ok(Ack::ready(Err(error))),
            };
        }
        self.inner.try_send(record)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), KafkaError>> {
        self.inner.flush(timeout)
    }
}

impl Client for Faulty {
    fn with_client_id(self: Arc<Self>, _id: &str) -> Arc<dyn Client> {
        self
    }

    fn producer(&self) -> Result<Arc<dyn Producer>, KafkaError> {
        self.inner.producer()
    }
    fn ordered_producer(&self) -> Result<Arc<dyn Producer>, KafkaError> {
        let inner = self.inner.ordered_producer()?;
        Ok(match self.fault {
            Fault::FailingWrites { key, at_queue } => Arc::new(FailingProducer {
                inner,
                key,
                at_queue,
            }),
            Fault::StuckStopping | Fault::StuckClosing => inner,
        })
    }
    fn admin(&self) -> Result<Arc<dyn Admin>, KafkaError> {
        self.inner.admin()
    }
    fn reported_end_may_lag(&self) -> bool {
        self.inner.reported_end_may_lag()
    }
    fn consume(
        &self,
        topic: &str,
        partitions: &[(i32, StartOffset)],
        headers: HeaderUse,
    ) -> Result<Box<dyn PartitionConsumer>, KafkaError> {
        let consumer = self.inner.consume(topic, partitions, headers)?;
        Ok(match self.fault {
            Fault::StuckClosing => Box::new(StuckOnClose(consumer)),
            _ => consumer,
        })
    }
    fn join_group(
        &self,
        group: &str,
        topics: &[&str],
        options: MemberOptions,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<Box<dyn GroupConsumer>, KafkaError> {
        let member = self.inner.join_group(group, topics, options, listener)?;
        Ok(match self.fault {
            Fault::StuckStopping => Box::new(StuckMember(member)),
            Fault::FailingWrites { .. } | Fault::StuckClosing => member,
        })
    }
}

/// A changelog write of `user-0` fails (at queueing or at delivery): `run` stops naming the
/// message, and the local row that write covered does not survive: the next run, on the
/// same disk, counts exactly what the changelog and the uncommitted inputs say.
async fn a_failed_changelog_write_leaves_no_local_row(at_queue: bool) {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessorConfig {
        storage: Arc::new(RocksDbBuilder::new(dir.path())),
        ..goka_tests::from_oldest()
    };
    // user-1 first, then user-0's first click, whose changelog write fails.
    emitter
        .emit_sync(&"user-1".into(), &"a".into())
        .await
        .unwrap();
    emitter
        .emit_sync(&"user-1".into(), &"b".into())
        .await
        .unwrap();
    let poisoned = emitter
        .emit_sync(&"user-0".into(), &"c".into())
        .await
        .unwrap();
    let failing = Faulty {
        inner: client.clone(),
        fault: Fault::FailingWrites {
            key: b"user-0",
            at_queue,
        },
    };
    let processor = Processor::new(Counter::new(), Arc::new(failing), config.clone());
    let error = goka_tests::run_until_error(&processor).await;
    assert!(
        error.contains("fault-clicks")
            && error.contains(&format!("partition {}", poisoned.partition))
            && error.contains(&format!("offset {}", poisoned.offset))
            && error.contains("user-0")
            && error.contains("injected"),
        "{error}"
    );

    // user-0's click was not committed and its row never reached the changelog: the next
    // run on the same disk handles it once, so its count is 1, not 2.
    let processor = Arc::new(Processor::new(Counter::new(), client.clone(), config));
    let running = spawn(&processor);
    let expected = HashMap::from([("user-0".to_string(), 1), ("user-1".to_string(), 2)]);
    eventually(
        Duration::from_secs(60),
        || counts(&processor, &expected) == expected,
        || format!("counts {:?}", counts(&processor, &expected)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counts(&processor, &expected),
        expected,
        "nothing counted twice"
    );
    running.stop().await;

    // And the changelog agrees with the local table.
    let (view, view_running) = goka_tests::running_view::<GroupTable<Counter>>(&client).await;
    for (key, count) in &expected {
        assert_eq!(
            view.get(key).unwrap(),
            Some(*count),
            "{key} in the changelog"
        );
    }
    view_running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_write_failing_at_delivery_leaves_no_local_row() {
    a_failed_changelog_write_leaves_no_local_row(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_write_failing_at_queueing_leaves_no_local_row() {
    a_failed_changelog_write_leaves_no_local_row(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_partitions_is_running_not_starting() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Clicks>::ensuring(&*client, &manager, 1)
        .await
        .unwrap();
    emitter
        .emit_sync(&"user-0".into(), &"a".into())
        .await
        .unwrap();
    let first = Arc::new(Processor::new(
        Counter::new(),
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let first_running = spawn(&first);
    tokio::time::timeout(Duration::from_secs(60), first.recovered())
        .await
        .unwrap();
    // One partition, two instances: the second owns nothing and says so by running idle.
    let second = Arc::new(Processor::new(
        Counter::new(),
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let second_running = spawn(&second);
    eventually(
        Duration::from_secs(60),
        || {
            let owned = first.partitions().len() + second.partitions().len();
            owned == 1
                && [first.state(), second.state()]
                    .iter()
                    .all(|s| *s == goka::processor::ProcessorState::Running)
        },
        || {
            format!(
                "first {:?} {:?}, second {:?} {:?}",
                first.state(),
                first.partitions(),
                second.state(),
                second.partitions()
            )
        },
    )
    .await;
    let idle = if first.partitions().is_empty() {
        &first
    } else {
        &second
    };
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), idle.recovered())
            .await
            .ok(),
        Some(goka::processor::ProcessorState::Running),
        "recovered() answers for the idle member"
    );
    first_running.stop().await;
    second_running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_bound_smaller_than_a_message_still_handles_every_message() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    // Each message is larger than the bound: one at a time waits, the rest stay paused, so
    // every message costs a pause and a fetch round trip. Few messages keep the test short.
    let expected = emit(&emitter, 120, 10).await;
    let config = ProcessorConfig {
        partition_queue_bytes: 4,
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(Counter::new(), client, config));
    let running = spawn(&processor);
    eventually(
        Duration::from_secs(60),
        || counts(&processor, &expected) == expected,
        || {
            format!(
                "counts {:?}, {:?}",
                counts(&processor, &expected),
                processor.stats()
            )
        },
    )
    .await;
    assert_eq!(processor.stats().messages_in, 120);
    running.stop().await;
}

/// A member whose last commit and whose leaving never return.
struct StuckMember(Box<dyn GroupConsumer>);

impl GroupConsumer for StuckMember {
    fn poll(&mut self, timeout: Duration) -> Result<Option<KafkaError>, KafkaError> {
        self.0.poll(timeout)
    }

    fn commit(
        &mut self,
        offsets: &[goka::kafka::TopicPartitionOffset],
        sync: bool,
    ) -> Result<(), KafkaError> {
        if sync {
            hang_forever();
        }
        self.0.commit(offsets, sync)
    }

    fn close(self: Box<Self>) {
        hang_forever();
    }
}

fn hang_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// A member that never finishes stopping (its last commit and its leaving hang longer than
/// any client timeout) is abandoned after `stop_timeout`: `run` returns an error naming the
/// group instead of hanging, and the processor shows `Stopped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_finishes_stopping_is_abandoned_and_run_says_so() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let expected = emit(&emitter, 50, 5).await;
    let stop_timeout = Duration::from_secs(2);
    let config = ProcessorConfig {
        stop_timeout,
        ..goka_tests::from_oldest()
    };
    let processor = Arc::new(Processor::new(
        Counter::new(),
        Arc::new(Faulty {
            inner: client,
            fault: Fault::StuckStopping,
        }),
        config,
    ));
    let running = spawn(&processor);
    eventually(
        Duration::from_secs(60),
        || counts(&processor, &expected) == expected,
        || format!("counts {:?} of {expected:?}", counts(&processor, &expected)),
    )
    .await;
    let (took, error) = stop_abandoned(
        running,
        stop_timeout,
        &["fault-counter", "stop_timeout", "abandoned"],
    )
    .await;
    assert_eq!(processor.state(), goka::processor::ProcessorState::Stopped);
    println!("a member stuck stopping: run returned after {took:.1?} with: {error}");
}

/// A view whose table consumer never finishes closing is abandoned after its stop timeout:
/// `run` returns an error naming the table instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_never_finishes_stopping_is_abandoned_and_run_says_so() {
    let broker = TestBroker::start();
    let (client, emitter) = setup(&broker).await;
    let expected = emit(&emitter, 20, 2).await;
    let processor = Arc::new(Processor::new(
        Counter::new(),
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let running = spawn(&processor);
    eventually(
        Duration::from_secs(60),
        || counts(&processor, &expected) == expected,
        || format!("counts {:?} of {expected:?}", counts(&processor, &expected)),
    )
    .await;
    running.stop().await;

    let stop_timeout = Duration::from_secs(2);
    let view = View::<GroupTable<Counter>>::builder(Arc::new(Faulty {
        inner: client,
        fault: Fault::StuckClosing,
    }))
    .stop_timeout(stop_timeout)
    .build()
    .await
    .unwrap();
    let view_running = goka_tests::spawn_view(&view);
    tokio::time::timeout(Duration::from_secs(60), view.recovered())
        .await
        .unwrap();
    let (took, error) = stop_abandoned(
        view_running,
        stop_timeout,
        &["fault-counter-table", "stop_timeout", "abandoned"],
    )
    .await;
    println!("a view stuck stopping: run returned after {took:.1?} with: {error}");
}

goka::stream!(TimedClicks = "fault-timed-clicks": String as StringCodec);
goka::timer!(
    /// Writes its payload to the key's row when it fires.
    pub Remember: i64 as Int64Codec
);

/// A click "later" asks a timer, a second of stream time later, to write the clicking
/// key's row; the handlers of clicks write no row themselves.
#[goka::processor(group = "fault-timed")]
#[input(topic = TimedClicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[timer(timer = Remember, handler = Self::on_remember)]
struct Timed;

impl Timed {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        if page != "later" {
            return Ok(());
        }
        let at = ctx.timestamp().unwrap_or_default();
        ctx.schedule::<Remember>(goka::timer::TimerTime::Stream(at + 1_000), &7)
    }

    fn on_remember(&self, ctx: &mut Context<'_, Self>, value: i64) -> Result<(), CallbackError> {
        ctx.set_value(&value)
    }
}

/// The changelog write of a row a timer wrote (its key is the timer's, not that of the
/// message whose stream time fired it) fails: the row that write covered is the one
/// removed, so the next run on the same disk holds what the changelog holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_changelog_write_of_a_timer_leaves_no_local_row_of_its_key() {
    let broker = TestBroker::start();
    goka_tests::ensure_streams(&broker, &["fault-timed-clicks"], 1).await;
    let client = client(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessorConfig {
        storage: Arc::new(RocksDbBuilder::new(dir.path())),
        ..goka_tests::from_oldest()
    };
    // user-y's click brings stream time past user-x's timer, whose row write fails.
    goka_tests::produce_at(
        &broker,
        "fault-timed-clicks",
        0,
        &[("user-x", "later", 1_000), ("user-y", "tick", 5_000)],
    )
    .await;
    let failing = Faulty {
        inner: client.clone(),
        fault: Fault::FailingWrites {
            key: b"user-x",
            at_queue: false,
        },
    };
    let processor = Processor::new(Timed, Arc::new(failing), config.clone());
    let error = goka_tests::run_until_error(&processor).await;
    assert!(
        error.contains("user-y") && error.contains("injected"),
        "{error}"
    );

    let processor = Arc::new(Processor::new(Timed, client.clone(), config));
    let running = spawn(&processor);
    tokio::time::timeout(Duration::from_secs(60), processor.recovered())
        .await
        .unwrap();
    let view = View::<GroupTable<Timed>>::builder(client)
        .build()
        .await
        .unwrap();
    let view_running = goka_tests::spawn_view(&view);
    tokio::time::timeout(Duration::from_secs(60), view.recovered())
        .await
        .unwrap();
    let key = "user-x".to_string();
    assert_eq!(
        processor.get(&key).unwrap(),
        view.get(&key).unwrap(),
        "the local row of the timer's key agrees with the changelog"
    );
    view_running.stop().await;
    running.stop().await;
}

/// Stops `running`, whose stop never finishes by itself: `run` must return within a minute,
/// no sooner than `stop_timeout`, with an error holding every one of `parts`. Returns how
/// long it took and the error.
async fn stop_abandoned<E: std::fmt::Debug + std::fmt::Display + Send + 'static>(
    running: Running<E>,
    stop_timeout: Duration,
    parts: &[&str],
) -> (Duration, String) {
    let stopping = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(60), running.cancel_and_wait())
        .await
        .expect("run returns although what it stops never finishes stopping");
    let took = stopping.elapsed();
    let error = outcome
        .expect_err("an abandoned stop is an error")
        .to_string();
    for part in parts {
        assert!(error.contains(part), "{part} missing: {error}");
    }
    assert!(
        took >= stop_timeout,
        "returned after {took:?}, before the stop timeout"
    );
    (took, error)
}

//! Test support for goka's integration tests, examples and benchmarks: a real broker per test
//! on free ports (Apache Kafka 4.4, or Tansu with `GOKA_TEST_BROKER=tansu`), three-node Kafka
//! clusters for the tests that move leaders, and a TCP fault proxy that can cut, stall or
//! refuse connections between clients and a broker.
//!
//! A test that cannot start or reach the broker fails with a message saying why; nothing here
//! skips.

pub mod bench;
pub mod broker;
pub mod counter;
pub mod goka_peer;
pub mod ports;
pub mod proxy;

pub use bench::{bench_json, bench_runtime, bench_size};
pub use broker::{
    track_pid, BrokerError, BrokerKind, KafkaCluster, KafkaNode, PersistentBroker, TestBroker,
};
pub use proxy::{FaultProxy, ProxyMode};

use std::sync::Arc;

use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::KafkaConfig;

/// The client type [`client`] returns.
pub type TestClient = Arc<RdKafkaClient>;

/// A goka client of `broker`, with delivery timeouts short enough for tests to see
/// failures in seconds rather than minutes.
pub fn client(broker: &TestBroker) -> TestClient {
    Arc::new(RdKafkaClient::new(config(broker)))
}

/// The configuration [`client`] uses, to extend.
pub fn config(broker: &TestBroker) -> KafkaConfig {
    config_for(&broker.bootstrap())
}

/// The configuration of [`config`] for the broker at `bootstrap`.
pub fn config_for(bootstrap: &str) -> KafkaConfig {
    let config = KafkaConfig::new(bootstrap)
        .client_id("goka-tests")
        .set("message.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        // The broker's minimum: groups form and take over in about 3 s.
        .set("session.timeout.ms", "6000");
    for_broker(config, BrokerKind::current())
}

/// `config` with what the stand-in broker needs (nothing for Kafka): Tansu reports the end of
/// a partition as the first offset of its last record batch, and wrong watermarks with
/// idempotent producers. With `GOKA_TEST_GROUP_PROTOCOL=consumer` groups use Kafka 4's
/// consumer protocol (KIP-848), whose session timeout is the broker's: a session timeout set
/// on the client is dropped.
pub fn for_broker(config: KafkaConfig, kind: BrokerKind) -> KafkaConfig {
    let config = match group_protocol() {
        GroupProtocol::Classic => config,
        GroupProtocol::Consumer => config
            .set("group.protocol", "consumer")
            .unset("session.timeout.ms"),
    };
    match kind {
        BrokerKind::Kafka => config,
        BrokerKind::Tansu => config
            .reported_end_may_lag(true)
            .set("enable.idempotence", "false"),
    }
}

/// The consumer group protocol the tests' groups use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The classic protocol (the default): the client's range assignor, eager rebalances.
    Classic,
    /// Kafka 4's consumer protocol (KIP-848): the broker assigns, incrementally.
    Consumer,
}

/// The group protocol `GOKA_TEST_GROUP_PROTOCOL` selects (`classic`, the default, or
/// `consumer`); any other value fails the test that asks.
pub fn group_protocol() -> GroupProtocol {
    match std::env::var("GOKA_TEST_GROUP_PROTOCOL").as_deref() {
        Err(_) | Ok("") | Ok("classic") => GroupProtocol::Classic,
        Ok("consumer") => GroupProtocol::Consumer,
        Ok(other) => {
            panic!("GOKA_TEST_GROUP_PROTOCOL={other}: expected classic (the default) or consumer")
        }
    }
}

/// A plain rdkafka configuration for `broker`, for checks that bypass goka.
pub fn rdkafka_config(broker: &TestBroker) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    config
}

/// The offset `group` committed for `topic`'s `partition` on `broker`, if any.
pub fn committed_offset(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka_config(broker)
        .set("group.id", group)
        .create()
        .unwrap_or_else(|e| panic!("a consumer of group {group}: {e}"));
    let mut asked = rdkafka::TopicPartitionList::new();
    asked.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(asked, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("committed offsets of group {group}: {e}"));
    let offset = committed
        .find_partition(topic, partition)
        .map(|e| e.offset());
    match offset {
        Some(rdkafka::Offset::Offset(offset)) => Some(offset),
        _ => None,
    }
}

/// Polls `done` every 50 ms until it holds; once `within` passed, fails the test with what
/// `why` says (built only then, so it can show the state that was awaited). Integration tests
/// wait this way for what processors and views do on other tasks.
pub async fn eventually<W: std::fmt::Display>(
    within: std::time::Duration,
    mut done: impl FnMut() -> bool,
    why: impl Fn() -> W,
) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?}: {}",
            why()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Reads `topic` (all `partitions`) from the beginning, waiting up to 30 s for `expected`
/// messages. Returns them in arrival order.
pub fn read_all(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<RawMessage> {
    read_until(broker, topic, partitions, |messages| {
        messages.len() >= expected
    })
}

/// Reads `topic` (all `partitions`) from the beginning until `done` holds for what was read,
/// or 30 s passed. Returns the messages in arrival order.
pub fn read_until(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    done: impl FnMut(&[RawMessage]) -> bool,
) -> Vec<RawMessage> {
    let within = std::time::Duration::from_secs(30);
    read_until_at(&broker.bootstrap(), topic, partitions, within, done)
}

/// [`read_until`] for the broker at `bootstrap`, giving up after `within`.
pub fn read_until_at(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    within: std::time::Duration,
    mut done: impl FnMut(&[RawMessage]) -> bool,
) -> Vec<RawMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers as _;
    use rdkafka::Message;

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "goka-tests-reader")
        // A position the broker lost across a restart starts over, never skips ahead.
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + within;
    while !done(&out) && std::time::Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(RawMessage {
                timestamp: m.timestamp().to_millis(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            // The broker may be restarting under a reader that lives through a scenario.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::AllBrokersDown
                | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The keys and values of partition 0 of `topic` as text, sorted, once `count` were read
/// or `within` passed.
pub fn read_pairs(
    broker: &TestBroker,
    topic: &str,
    count: usize,
    within: std::time::Duration,
) -> Vec<(String, String)> {
    read_pairs_in(broker, topic, 1, count, within)
}

/// [`read_pairs`] of every one of `partitions` partitions.
pub fn read_pairs_in(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    count: usize,
    within: std::time::Duration,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        read_until_at(&broker.bootstrap(), topic, partitions, within, |m| {
            m.len() >= count
        })
        .into_iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.key).into_owned(),
                String::from_utf8_lossy(&m.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// A message as read back by [`read_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes, `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp (milliseconds since the epoch), if it has one.
    pub timestamp: Option<i64>,
}

/// Produces raw messages (a table's changelog written "by someone else") and waits for each.
pub async fn produce_raw(
    broker: &TestBroker,
    topic: &str,
    partition: i32,
    rows: &[(&str, Option<&str>)],
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka_config(broker).create().expect("raw producer");
    for (key, value) in rows {
        let mut record = FutureRecord::to(topic)
            .partition(partition)
            .key(key.as_bytes());
        if let Some(value) = value {
            record = record.payload(value.as_bytes());
        }
        producer
            .send(record, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {key} to {topic}/{partition}: {e}"));
    }
}

/// Creates each of `topics` as a stream of `partitions` partitions on `broker`.
pub async fn ensure_streams(broker: &TestBroker, topics: &[&str], partitions: u32) {
    let client = client(broker);
    let manager = goka::topic_manager::TopicManager::new(
        &*client,
        goka::topic_manager::TopicManagerConfig::default(),
    )
    .expect("topic manager");
    for topic in topics {
        manager
            .ensure_stream(topic, partitions)
            .await
            .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    }
}

/// Creates `topic` with one partition and the topic `configs` given (e.g. a small
/// `max.message.bytes`, so that the broker refuses a larger record's delivery).
pub async fn create_topic_with(broker: &TestBroker, topic: &str, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        rdkafka_config(broker).create().expect("admin client");
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (name, value) in configs {
        new = new.set(name, value);
    }
    let created = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    for result in created {
        result.unwrap_or_else(|(name, e)| panic!("create {name}: {e}"));
    }
}

/// Produces `(key, value, timestamp)` rows to partition `partition` of `topic` and waits for
/// each: event-time inputs of window and timer tests. (librdkafka takes a timestamp of 0
/// for "now".)
pub async fn produce_at(
    broker: &TestBroker,
    topic: &str,
    partition: i32,
    rows: &[(&str, &str, i64)],
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka_config(broker).create().expect("producer");
    for (key, value, at) in rows {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key.as_bytes())
            .payload(value.as_bytes())
            .timestamp(*at);
        producer
            .send(record, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {key} to {topic}/{partition}: {e}"));
    }
}

/// Runs `processor` until it stops by itself (at most 60 s); returns its error message.
/// Panics if it does not stop or stops without an error.
pub async fn run_until_error<P: goka::processor::Handlers>(
    processor: &goka::processor::Processor<P>,
) -> String {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        processor.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("run stops by itself")
    .expect_err("run fails")
    .to_string()
}

/// A `run(cancel)` loop (of a view or processor) running in a task, stopped on demand.
#[derive(Debug)]
pub struct Running<E> {
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug + Send + 'static> Running<E> {
    /// Spawns `run` with a fresh cancellation token.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    {
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(cancel.clone()));
        Self { cancel, task }
    }

    /// Whether the loop ended by itself.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// How the loop ended, if it ended by itself (for a failing test's message; takes the
    /// outcome, so ask once).
    pub fn ended(&mut self) -> Option<String> {
        use std::future::Future;
        if !self.task.is_finished() {
            return None;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut self.task).poll(&mut cx) {
            std::task::Poll::Ready(outcome) => Some(format!("{outcome:?}")),
            std::task::Poll::Pending => None,
        }
    }

    /// Cancels the loop and panics unless it then ends cleanly.
    pub async fn stop(self) {
        if let Err(e) = self.cancel_and_wait().await {
            panic!("run ended with an error: {e:?}");
        }
    }

    /// Cancels the loop and returns how it ended.
    pub async fn cancel_and_wait(self) -> Result<(), E> {
        self.cancel.cancel();
        self.task.await.expect("the run task panicked")
    }
}

/// Runs `view` on a task of its own; `Running::stop` stops it.
pub fn spawn_view<T: goka::topic::Table>(
    view: &goka::view::View<T>,
) -> Running<goka::view::ViewError> {
    let view = view.clone();
    Running::spawn(move |cancel| async move { view.run(cancel).await })
}

/// A view of table `T` running on a task of its own, once it recovered (a test fails if it
/// does not within 60 s). `Running::stop` stops it.
pub async fn running_view<T: goka::topic::Table>(
    client: &TestClient,
) -> (goka::view::View<T>, Running<goka::view::ViewError>) {
    let view = goka::view::View::<T>::builder(client.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("view of {}: {e}", T::NAME));
    let running = spawn_view(&view);
    tokio::time::timeout(std::time::Duration::from_secs(60), view.recovered())
        .await
        .unwrap_or_else(|_| panic!("the view of {} did not recover in 60 s", T::NAME));
    (view, running)
}

/// Reads table `T` through a view until its rows equal `expected` (a test fails with what
/// differs after `within`), then stops the view.
pub async fn wait_for_rows<T>(
    client: &TestClient,
    expected: &std::collections::BTreeMap<T::Key, T::Value>,
    within: std::time::Duration,
) where
    T: goka::topic::Table,
    T::Key: Ord + std::fmt::Debug,
    T::Value: PartialEq + std::fmt::Debug,
{
    let (view, running) = running_view::<T>(client).await;
    let rows = || -> std::collections::BTreeMap<T::Key, T::Value> {
        view.iter()
            .map(|row| row.unwrap_or_else(|e| panic!("reading {}: {e}", T::NAME)))
            .collect()
    };
    eventually(
        within,
        || &rows() == expected,
        || format!("{} holds {:?}, expected {expected:?}", T::NAME, rows()),
    )
    .await;
    running.stop().await;
}

/// An edge with string keys, for hand-written group graphs in tests.
pub const fn string_edge(
    kind: goka::graph::EdgeKind,
    topic: &'static str,
    value_codec: &'static str,
) -> goka::graph::Edge {
    goka::graph::Edge::new(kind, topic, "string", value_codec)
}

/// A minimal HTTP/1.1 GET against `address`: the status code and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get_with(address, path, &[]).await
}

/// [`http_get`] with extra request headers (`("Authorization", "Bearer ...")`).
pub async fn http_get_with(
    address: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{extra}\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("send GET {path}: {e}"));
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e}"));
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs headless Chromium on `url`: `--dump-dom` returns the rendered DOM, or with
/// `screenshot` a PNG is written there.
pub fn chromium(url: &str, screenshot: Option<&std::path::Path>) -> String {
    chromium_sized(url, screenshot, (1200, 700))
}

/// [`chromium`] with a window of `size` (width, height) pixels.
pub fn chromium_sized(url: &str, screenshot: Option<&std::path::Path>, size: (u32, u32)) -> String {
    let binary = std::env::var("GOKA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut command = std::process::Command::new(&binary);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ]);
    command.arg(format!("--window-size={},{}", size.0, size.1));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = command.arg(url).output().unwrap_or_else(|e| {
        panic!("cannot run {binary} (scripts/prerequisites.sh --browser installs it): {e}")
    });
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The processor configuration of tests and benchmarks: the defaults, except that a new
/// group starts at the oldest message, since they write their inputs before they start
/// the processor (a new group starts at the newest by default, as goka's).
pub fn from_oldest() -> goka::processor::ProcessorConfig {
    goka::processor::ProcessorConfig {
        new_group_start: goka::processor::GroupStart::Oldest,
        ..Default::default()
    }
}

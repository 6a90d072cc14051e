//! The seam implemented on librdkafka (the `rdkafka` crate, tokio runtime).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::rdkafka_consumer::{add_polled, fetch_defaults, set_default, Polled};
use super::rdkafka_producer::RdProducer;
use super::{
    Admin, Client, ConsumedBatch, HeaderUse, KafkaConfig, KafkaError, PartitionConsumer, Producer,
    StartOffset, TopicSpec, TransactionalProducer,
};

/// How long a transaction call (init, send offsets, commit, abort) may wait for the
/// transaction coordinator: librdkafka's default `transaction.timeout.ms`, after which the
/// broker aborts an open transaction by itself.
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long metadata and admin requests may take: librdkafka's `socket.timeout.ms` where
/// it is set lower.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// [`REQUEST_TIMEOUT`], or the configuration's `socket.timeout.ms` where that is shorter.
fn request_timeout(config: &ClientConfig) -> Duration {
    config
        .get("socket.timeout.ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(REQUEST_TIMEOUT, |ms| {
            Duration::from_millis(ms).min(REQUEST_TIMEOUT)
        })
}

/// The [`Client`] on librdkafka. Creates one producer and one admin client lazily and shares
/// them; every [`consume`](Client::consume) opens a consumer of its own.
#[derive(Debug)]
pub struct RdKafkaClient {
    config: KafkaConfig,
    producer: std::sync::OnceLock<Arc<RdProducer>>,
    ordered: std::sync::OnceLock<Arc<RdProducer>>,
    admin: std::sync::OnceLock<Arc<RdAdmin>>,
}

impl RdKafkaClient {
    /// A client of the cluster described by `config`.
    pub fn new(config: KafkaConfig) -> Self {
        Self {
            config,
            producer: std::sync::OnceLock::new(),
            ordered: std::sync::OnceLock::new(),
            admin: std::sync::OnceLock::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// A client of the same cluster and settings whose connections identify as `id`.
    pub fn renamed(&self, id: &str) -> Self {
        Self::new(self.config.clone().client_id(id))
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in self.config.properties() {
            config.set(key, value);
        }
        config
    }

    /// A client config without the producer-only properties, for consumers and admins.
    fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        for producer_only in [
            "enable.idempotence",
            "linger.ms",
            "acks",
            "batch.size",
            "compression.type",
        ] {
            config.remove(producer_only);
        }
        config
    }
}

impl Client for RdKafkaClient {
    fn reported_end_may_lag(&self) -> bool {
        self.config.reports_lagging_end()
    }

    fn with_client_id(self: Arc<Self>, id: &str) -> Arc<dyn Client> {
        Arc::new(self.renamed(id))
    }

    fn producer(&self) -> Result<Arc<dyn Producer>, KafkaError> {
        if let Some(producer) = self.producer.get() {
            return Ok(producer.clone());
        }
        let producer = RdProducer::new(&self.client_config())?;
        Ok(self.producer.get_or_init(|| Arc::new(producer)).clone())
    }

    fn ordered_producer(&self) -> Result<Arc<dyn Producer>, KafkaError> {
        if let Some(producer) = self.ordered.get() {
            return Ok(producer.clone());
        }
        let mut config = self.client_config();
        // An idempotent producer (goka's default) keeps each partition's order through
        // retries with up to five requests in flight. Without idempotence librdkafka sends up
        // to a million requests per connection at once; a retried batch can then land after
        // a later one, and a changelog would end with an older value of a key. One request
        // at a time keeps the order then.
        if config.get("enable.idempotence") != Some("true") {
            set_default(&mut config, "max.in.flight.requests.per.connection", "1");
        }
        let producer = RdProducer::new(&config)?;
        Ok(self.ordered.get_or_init(|| Arc::new(producer)).clone())
    }

    fn transactional_producer<'a>(
        &'a self,
        transactional_id: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn TransactionalProducer>, KafkaError>> {
        Box::pin(async move {
            let producer = super::rdkafka_transaction::RdTransactional::new(
                self.client_config(),
                transactional_id,
                TRANSACTION_CALL_TIMEOUT,
            )
            .await?;
            Ok(Arc::new(producer) as Arc<dyn TransactionalProducer>)
        })
    }

    fn admin(&self) -> Result<Arc<dyn Admin>, KafkaError> {
        if let Some(admin) = self.admin.get() {
            return Ok(admin.clone());
        }
        let mut config = self.consumer_config();
        // Metadata requests must never create the topics they ask about.
        config.set("allow.auto.create.topics", "false");
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| KafkaError::Config(format!("admin client: {e}")))?;
        let metadata: rdkafka::consumer::BaseConsumer = config
            .create()
            .map_err(|e| KafkaError::Config(format!("metadata client: {e}")))?;
        let admin = RdAdmin {
            timeout: request_timeout(&config),
            admin,
            metadata: Arc::new(metadata),
        };
        Ok(self.admin.get_or_init(|| Arc::new(admin)).clone())
    }

    fn consume(
        &self,
        topic: &str,
        partitions: &[(i32, StartOffset)],
        headers: HeaderUse,
    ) -> Result<Box<dyn PartitionConsumer>, KafkaError> {
        let consume_error = |message: String| KafkaError::Consume {
            topic: topic.to_owned(),
            message,
        };
        let mut config = self.consumer_config();
        config
            .set("group.id", format!("goka-partition-reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("allow.auto.create.topics", "false")
            // A start offset out of range (retention removed it, the topic was made anew)
            // reads the partition from its oldest message: librdkafka's default, the end,
            // would leave rows out of a table without a word.
            .set("auto.offset.reset", "earliest");
        fetch_defaults(&mut config);
        set_default(&mut config, "fetch.wait.max.ms", TABLE_FETCH_WAIT_MS);
        let consumer: BaseConsumer = config.create().map_err(|e| consume_error(e.to_string()))?;
        let mut assignment = TopicPartitionList::new();
        for &(partition, start) in partitions {
            let offset = match start {
                StartOffset::Beginning => Offset::Beginning,
                StartOffset::At(offset) => Offset::Offset(offset),
            };
            assignment
                .add_partition_offset(topic, partition, offset)
                .map_err(|e| consume_error(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| consume_error(e.to_string()))?;
        Ok(Box::new(RdPartitionConsumer::start(
            consumer,
            topic.into(),
            headers,
        )?))
    }

    fn join_group(
        &self,
        group: &str,
        topics: &[&str],
        options: super::MemberOptions,
        listener: Arc<dyn super::RebalanceListener>,
    ) -> Result<Box<dyn super::GroupConsumer>, KafkaError> {
        let consumer = super::rdkafka_group::RdGroupConsumer::join(
            self.consumer_config(),
            group,
            topics,
            options,
            listener,
        )?;
        Ok(Box::new(consumer))
    }
}

struct RdAdmin {
    /// How long a request may take.
    timeout: Duration,
    admin: AdminClient<DefaultClientContext>,
    metadata: Arc<rdkafka::consumer::BaseConsumer>,
}

impl std::fmt::Debug for RdAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RdAdmin")
    }
}

impl RdAdmin {
    /// Runs a blocking metadata call off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        topic: &str,
        call: impl FnOnce(&rdkafka::consumer::BaseConsumer) -> Result<T, RdError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let metadata = self.metadata.clone();
        tokio::task::spawn_blocking(move || call(&metadata))
            .await
            .map_err(|e| KafkaError::Admin {
                operation,
                topic: topic.to_owned(),
                message: e.to_string(),
            })?
            .map_err(|e| admin_failure(operation, topic, &e))
    }
}

impl Admin for RdAdmin {
    fn partitions(&self, topic: &str) -> BoxFuture<'_, Result<Option<u32>, KafkaError>> {
        let name = topic.to_owned();
        async move {
            let (lookup, timeout) = (name.clone(), self.timeout);
            let found = self
                .blocking("read partition count", &name, move |client| {
                    let metadata = fetch_metadata(client, &lookup, timeout)?;
                    Ok(metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == lookup)
                        .map(|t| (t.error(), t.partitions().len())))
                })
                .await?;
            match found {
                None => Ok(None),
                Some((None, 0)) => Ok(None),
                Some((None, n)) => Ok(Some(n as u32)),
                Some((Some(code), _)) => {
                    let code = RDKafkaErrorCode::from(code);
                    if matches!(
                        code,
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    ) {
                        Ok(None)
                    } else {
                        Err(admin_code("read partition count", &name, code))
                    }
                }
            }
        }
        .boxed()
    }

    fn create_topic(&self, spec: &TopicSpec) -> BoxFuture<'_, Result<(), KafkaError>> {
        let spec = spec.clone();
        async move {
            let mut topic = NewTopic::new(
                &spec.name,
                spec.partitions as i32,
                // -1 asks the broker for its default replication factor.
                TopicReplication::Fixed(spec.replication.map_or(-1, i32::from)),
            );
            for (key, value) in &spec.config {
                topic = topic.set(key, value);
            }
            let options = AdminOptions::new()
                .operation_timeout(Some(self.timeout))
                .request_timeout(Some(self.timeout));
            let operation = "create topic";
            let results = self
                .admin
                .create_topics([&topic], &options)
                .await
                .map_err(|e| admin_failure(operation, &spec.name, &e))?;
            for result in results {
                match result {
                    Ok(_) => {}
                    Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        return Err(KafkaError::TopicExists(name))
                    }
                    Err((_, code)) => return Err(admin_code(operation, &spec.name, code)),
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn topic_config(
        &self,
        topic: &str,
    ) -> BoxFuture<'_, Result<BTreeMap<String, String>, KafkaError>> {
        let topic = topic.to_owned();
        async move {
            let operation = "describe topic config";
            let options = AdminOptions::new().request_timeout(Some(self.timeout));
            let results = self
                .admin
                .describe_configs([&ResourceSpecifier::Topic(&topic)], &options)
                .await
                .map_err(|e| admin_failure(operation, &topic, &e))?;
            let mut config = BTreeMap::new();
            for result in results {
                let resource = result.map_err(|code| admin_code(operation, &topic, code))?;
                for entry in resource.entries {
                    if let Some(value) = entry.value {
                        config.insert(entry.name, value);
                    }
                }
            }
            Ok(config)
        }
        .boxed()
    }

    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> BoxFuture<'_, Result<(i64, i64), KafkaError>> {
        let name = topic.to_owned();
        async move {
            let (lookup, timeout) = (name.clone(), self.timeout);
            self.blocking("read watermarks", &name, move |client| {
                client.fetch_watermarks(&lookup, partition, timeout)
            })
            .await
        }
        .boxed()
    }
}

/// An admin or metadata request's failure: [`KafkaError::Unreachable`] where the cluster did
/// not answer (so that trying again later may help), [`KafkaError::Admin`] otherwise.
fn admin_failure(operation: &'static str, topic: &str, error: &RdError) -> KafkaError {
    let code = match error {
        RdError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(code) if is_unreachable(code) => KafkaError::Unreachable {
            operation,
            topic: topic.to_owned(),
            message: error.to_string(),
        },
        _ => KafkaError::Admin {
            operation,
            topic: topic.to_owned(),
            message: error.to_string(),
        },
    }
}

/// One topic's metadata. librdkafka fails a request locally with `UnsupportedFeature` when,
/// at the moment it is sent, the versions negotiated on the connection do not cover it. That
/// happened once, intermittently, on a broker started seconds before on a loaded machine (a
/// connection between negotiations, not a broker without the request); asking again a moment
/// later is the cure. A broker that really lacks the request fails every attempt, and that
/// error is returned.
fn fetch_metadata(
    client: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<rdkafka::metadata::Metadata, RdError> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match client.fetch_metadata(Some(topic), timeout) {
            Err(e)
                if attempt < ATTEMPTS
                    && e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnsupportedFeature) =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            answer => return answer,
        }
    }
}

/// [`admin_failure`] for an error code the broker gave for one topic.
fn admin_code(operation: &'static str, topic: &str, code: RDKafkaErrorCode) -> KafkaError {
    admin_failure(operation, topic, &RdError::AdminOp(code))
}

/// Codes that say the cluster did not answer, not that it refused.
fn is_unreachable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::CoordinatorNotAvailable
    )
}

/// Batches in flight between the polling thread and the async side: bounds memory.
const EVENT_BATCHES: usize = 16;

/// Reads partitions with a `BaseConsumer` polled on a thread of its own, handing events over
/// in batches: an async wake-up or an allocation per message would cost more than the message.
struct RdPartitionConsumer {
    batches: tokio::sync::mpsc::Receiver<Result<ConsumedBatch, KafkaError>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RdPartitionConsumer {
    fn start(
        consumer: BaseConsumer,
        topic: Arc<str>,
        headers: HeaderUse,
    ) -> Result<Self, KafkaError> {
        let (sender, batches) = tokio::sync::mpsc::channel(EVENT_BATCHES);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("goka-read-{topic}"))
            .spawn(move || poll_loop(consumer, topic, headers, sender, thread_stop))
            .map_err(|e| KafkaError::Config(format!("cannot start a consumer thread: {e}")))?;
        Ok(Self { batches, stop })
    }
}

impl Drop for RdPartitionConsumer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

fn poll_loop(
    consumer: BaseConsumer,
    topic: Arc<str>,
    headers: HeaderUse,
    sender: tokio::sync::mpsc::Sender<Result<ConsumedBatch, KafkaError>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    // The next batch reserves what the last one needed, so its buffers rarely grow.
    let mut batch = ConsumedBatch::new(topic.clone(), 0, 0);
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        // Block briefly for the first event, then take what is ready without waiting.
        let timeout = if batch.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        let (hand_over, fatal) = match add_polled(&mut batch, consumer.poll(timeout), headers) {
            Polled::More => continue,
            Polled::Full => (true, None),
            // Nothing more ready: hand over what there is.
            Polled::Nothing => (!batch.is_empty(), None),
            Polled::Fatal(error) => (true, Some(error)),
        };
        if !hand_over {
            continue;
        }
        let next = ConsumedBatch::new(topic.clone(), batch.len(), batch.bytes());
        let full = std::mem::replace(&mut batch, next);
        if !full.is_empty() && sender.blocking_send(Ok(full)).is_err() {
            return;
        }
        if let Some(error) = fatal {
            let _ = sender.blocking_send(Err(error));
            return;
        }
    }
}

impl PartitionConsumer for RdPartitionConsumer {
    fn next_batch(&mut self) -> BoxFuture<'_, Option<Result<ConsumedBatch, KafkaError>>> {
        self.batches.recv().boxed()
    }
}

/// How long a broker may hold a fetch of a partition reader (views, joined tables,
/// recoveries) that found nothing new. A view serves reads, so it should see a table's
/// updates soon; the cost is one empty fetch per broker this often while the table is quiet
/// (goka's client waits 250 ms, librdkafka's default is 500 ms). Brokers that hold every
/// fetch for part of this time, as the bundled test broker does, also answer sooner.
const TABLE_FETCH_WAIT_MS: &str = "100";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_client_keeps_every_setting_but_the_client_id() {
        let client = RdKafkaClient::new(
            KafkaConfig::new("broker:9092")
                .client_id("service")
                .set("security.protocol", "SSL"),
        );
        let renamed = client.renamed("service-orders");
        assert_eq!(renamed.config().get("client.id"), Some("service-orders"));
        assert_eq!(renamed.config().brokers(), "broker:9092");
        assert_eq!(renamed.config().get("security.protocol"), Some("SSL"));
        assert_eq!(client.config().get("client.id"), Some("service"));
    }

    struct Unused;

    impl super::super::RebalanceListener for Unused {
        fn assigned(&self, _: Vec<super::super::AssignedPartition>) {}
        fn revoking(&self, _: &[(String, i32)]) -> Vec<super::super::TopicPartitionOffset> {
            Vec::new()
        }
    }

    fn options() -> super::super::MemberOptions {
        super::super::MemberOptions {
            bounds: super::super::PartitionQueueBounds {
                messages: 10,
                bytes: 1000,
            },
            new_group_start: super::super::GroupStart::default(),
        }
    }

    fn join_error(config: KafkaConfig) -> String {
        let client = RdKafkaClient::new(config);
        match client.join_group("orders", &["events"], options(), Arc::new(Unused)) {
            Ok(_) => panic!("joined with {:?}", client.config()),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_consumer_group_protocol_joins_with_the_range_assignor_of_the_broker() {
        let client =
            RdKafkaClient::new(KafkaConfig::new("broker:9092").set("group.protocol", "consumer"));
        if let Err(error) = client.join_group("orders", &["events"], options(), Arc::new(Unused)) {
            panic!("group.protocol=consumer refused: {error}");
        }
        let text = join_error(
            KafkaConfig::new("broker:9092")
                .set("group.protocol", "consumer")
                .set("group.remote.assignor", "uniform"),
        );
        assert!(
            text.contains("group.remote.assignor=uniform") && text.contains("orders"),
            "{text}"
        );
    }

    #[test]
    fn settings_the_consumer_protocol_leaves_to_the_broker_are_refused_naming_them() {
        let text = join_error(
            KafkaConfig::new("broker:9092")
                .set("group.protocol", "consumer")
                .set("session.timeout.ms", "6000"),
        );
        assert!(
            text.contains("session.timeout.ms") && text.contains("orders"),
            "{text}"
        );
        let text = join_error(KafkaConfig::new("broker:9092").set("group.protocol", "streams"));
        assert!(text.contains("group.protocol=streams"), "{text}");
    }
}

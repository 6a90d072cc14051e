//! Transactions on librdkafka: the producer of [`super::rdkafka_producer`] with a
//! `transactional.id`, its blocking transaction calls run off the async threads.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::ClientConfig;

use super::rdkafka_producer::{AckContext, RdProducer};
use super::{
    Ack, GroupMetadata, KafkaError, OutgoingRecord, Producer, SendError, TopicPartitionOffset,
    TransactionalProducer,
};

/// A transactional producer on librdkafka.
#[derive(Debug)]
pub(super) struct RdTransactional {
    producer: Arc<RdProducer>,
    id: String,
    /// How long a transaction call may wait for the coordinator.
    timeout: Duration,
    /// `transaction.timeout.ms`: how long the broker lets a transaction stay open.
    open_for: Duration,
}

impl RdTransactional {
    /// Creates the producer as `id` and registers it with the transaction coordinator,
    /// which fences earlier producers of the same id.
    pub(super) async fn new(
        mut config: ClientConfig,
        id: &str,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        config.set("transactional.id", id);
        // A member that dies with a transaction open holds up every read_committed reader of
        // what it wrote until the broker aborts the transaction: 10 s (Kafka Streams'
        // choice under exactly-once) rather than librdkafka's minute, unless set.
        super::rdkafka_consumer::set_default(&mut config, "transaction.timeout.ms", "10000");
        let open_for = config
            .get("transaction.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let producer = Arc::new(RdProducer::new(&config)?);
        let this = Self {
            producer,
            id: id.to_owned(),
            timeout,
            open_for,
        };
        this.call("init", move |p, t| p.init_transactions(t))
            .await?;
        Ok(this)
    }

    /// Runs a blocking transaction call on a blocking thread.
    fn call(
        &self,
        operation: &'static str,
        f: impl FnOnce(&BaseProducer<AckContext>, Duration) -> Result<(), RdError> + Send + 'static,
    ) -> BoxFuture<'static, Result<(), KafkaError>> {
        let (producer, id, timeout) = (self.producer.clone(), self.id.clone(), self.timeout);
        async move {
            tokio::task::spawn_blocking(move || f(producer.native(), timeout))
                .await
                .map_err(|e| transaction_error(&id, operation, &e.to_string(), false, false))?
                .map_err(|e| client_error(&id, operation, &e))
        }
        .boxed()
    }
}

/// librdkafka's error of a transaction call: fenced where it is fatal, abortable where the
/// transaction must be aborted.
fn client_error(id: &str, operation: &'static str, error: &RdError) -> KafkaError {
    match error {
        RdError::Transaction(rd) => transaction_error(
            id,
            operation,
            &rd.to_string(),
            rd.is_fatal() || superseded(rd),
            rd.txn_requires_abort(),
        ),
        other => transaction_error(id, operation, &other.to_string(), false, false),
    }
}

/// Whether the group or the transaction coordinator moved past this member: a member paused
/// past its session (its generation is gone: the offsets it sends are refused) or a producer
/// of the same id that took over. What the open transaction holds can never commit.
fn superseded(error: &rdkafka::error::RDKafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.code(),
        Code::UnknownMemberId
            | Code::IllegalGeneration
            | Code::FencedInstanceId
            | Code::ProducerFenced
            | Code::InvalidProducerEpoch
    ) || ["Unknown member", "Illegal generation", "fenced"]
        .iter()
        .any(|said| error.string().contains(said))
}

fn transaction_error(
    id: &str,
    operation: &'static str,
    message: &str,
    fenced: bool,
    abortable: bool,
) -> KafkaError {
    KafkaError::Transaction {
        transactional_id: id.to_owned(),
        operation,
        message: message.to_owned(),
        fenced,
        abortable,
    }
}

impl Producer for RdTransactional {
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError> {
        self.producer.try_send(record)
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), KafkaError>> {
        self.producer.flush(timeout)
    }
}

impl TransactionalProducer for RdTransactional {
    fn transactional_id(&self) -> &str {
        &self.id
    }

    fn transaction_timeout(&self) -> Duration {
        self.open_for
    }

    fn begin(&self) -> Result<(), KafkaError> {
        self.producer
            .native()
            .begin_transaction()
            .map_err(|e| client_error(&self.id, "begin", &e))
    }

    fn send_offsets<'a>(
        &'a self,
        offsets: &'a [TopicPartitionOffset],
        group: &'a GroupMetadata,
    ) -> BoxFuture<'a, Result<(), KafkaError>> {
        let Some(metadata) = group.0.downcast_ref::<Arc<ConsumerGroupMetadata>>() else {
            return futures::future::ready(Err(transaction_error(
                &self.id,
                "send offsets",
                "the group metadata is another client's",
                false,
                false,
            )))
            .boxed();
        };
        let list = match super::rdkafka_group::offsets_list(offsets) {
            Ok(list) => list,
            Err(e) => {
                let message = format!("offsets {offsets:?}: {e}");
                return futures::future::ready(Err(transaction_error(
                    &self.id,
                    "send offsets",
                    &message,
                    false,
                    false,
                )))
                .boxed();
            }
        };
        let metadata = metadata.clone();
        self.call("send offsets", move |p, t| {
            p.send_offsets_to_transaction(&list, &metadata, t)
        })
    }

    fn commit(&self) -> BoxFuture<'_, Result<(), KafkaError>> {
        self.call("commit", |p, t| p.commit_transaction(t))
    }

    fn abort(&self) -> BoxFuture<'_, Result<(), KafkaError>> {
        self.call("abort", |p, t| p.abort_transaction(t))
    }
}

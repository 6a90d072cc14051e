//! The producer on librdkafka: each message's [`Ack`] is completed from librdkafka's delivery
//! report, on whichever thread serves the reports.
//!
//! The sending thread serves them between its sends (every [`SERVE_EVERY`]th send, where a
//! bare rdkafka loop polls after each): librdkafka frees each message on the thread that
//! serves its report, and frees on the thread that allocated are cheap, while a second
//! thread freeing the sender's memory and writing its acknowledgements costs more than the
//! sending itself. A thread of its own serves them once the sender has been quiet for a turn
//! ([`TURN`]), so the last messages of a burst and a lone message are acknowledged soon
//! after the broker answers.
//!
//! The reporting thread never waits inside librdkafka's poll: rdkafka's poll loops until its
//! deadline and spends the last millisecond of every wait spinning (it passes the remaining
//! time to librdkafka in whole milliseconds), which kept an idle producer at a tenth of a
//! core, and a thread inside a wait keeps serving while the sender has resumed. It serves
//! what is ready without waiting, once a turn while messages are in flight, and sleeps while
//! nothing is in flight until the next send wakes it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, Message};

use super::ack_ring::AckRing;
use super::{Ack, Delivery, KafkaError, OutgoingRecord, Producer, SendError, Sent};

/// How often the reporting thread looks for reports while messages are in flight: at most
/// this late is a report acknowledged once the sender went quiet.
const TURN: Duration = Duration::from_millis(1);
/// How long the reporting thread sleeps at once while nothing is in flight (a send or the
/// producer's drop wakes it sooner); it serves errors reported meanwhile then.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// The sending thread serves reports after every this many sends: an answer covers a
/// produce request's worth of messages, and a poll costs about what a send does.
const SERVE_EVERY: u64 = 16;
/// Events served in one go at most, so a thread that serves cannot be kept at it forever.
const SERVE_AT_ONCE: usize = 1_000;

/// What the sender, the reporting thread and the delivery callback share.
#[derive(Debug, Default)]
struct DeliveryState {
    /// The acknowledgements of messages sent; a message's delivery opaque is its slot.
    acks: Arc<AckRing>,
    /// Messages sent and not reported yet.
    in_flight: AtomicUsize,
    /// Bumped whenever the sender served reports.
    sender_polls: AtomicU64,
    stop: AtomicBool,
    /// The reporting thread, to wake when the first message goes out or the producer drops.
    reporter: std::sync::OnceLock<std::thread::Thread>,
}

impl DeliveryState {
    fn wake_reporter(&self) {
        if let Some(reporter) = self.reporter.get() {
            reporter.unpark();
        }
    }
}

/// Completes each message's [`Ack`] from librdkafka's delivery report.
pub(super) struct AckContext(Arc<DeliveryState>);

impl rdkafka::ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (outcome, message) = match result {
            Ok(message) => (
                Ok(Delivery {
                    partition: message.partition(),
                    offset: message.offset(),
                }),
                message,
            ),
            Err((error, message)) => (
                Err(KafkaError::Produce {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    message: error.to_string(),
                }),
                message,
            ),
        };
        let key = message.key().unwrap_or_default();
        let sent = Sent {
            key,
            bytes: key.len() + message.payload().map_or(0, <[u8]>::len),
        };
        self.0.acks.complete(seq as u64, outcome, sent);
    }
}

/// A librdkafka producer whose acknowledgements are [`Ack`]s answered through the slots of
/// its ring: no allocation and no future per message.
pub(super) struct RdProducer {
    inner: Arc<BaseProducer<AckContext>>,
    shared: Arc<DeliveryState>,
}

impl std::fmt::Debug for RdProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdProducer")
            .field("in_flight", &self.shared.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl RdProducer {
    /// Creates the producer and starts its reporting thread.
    pub(super) fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        let shared = Arc::new(DeliveryState::default());
        let inner: BaseProducer<AckContext> = config
            .create_with_context(AckContext(shared.clone()))
            .map_err(|e| KafkaError::Config(format!("producer: {e}")))?;
        let inner = Arc::new(inner);
        let (producer, thread_shared) = (inner.clone(), shared.clone());
        std::thread::Builder::new()
            .name("goka-producer-reports".into())
            .spawn(move || serve_reports(&producer, &thread_shared))
            .map_err(|e| KafkaError::Config(format!("cannot start the producer thread: {e}")))?;
        Ok(Self { inner, shared })
    }

    /// librdkafka's producer, for the calls of a transactional one.
    pub(super) fn native(&self) -> &BaseProducer<AckContext> {
        &self.inner
    }

    /// Serves the reports that are ready, on the sending thread, and keeps the reporting
    /// thread out of the way meanwhile.
    fn serve_reports(&self) {
        self.shared.sender_polls.fetch_add(1, Ordering::Relaxed);
        self.inner.poll(Duration::ZERO);
    }
}

impl Drop for RdProducer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_reporter();
    }
}

/// The reporting thread: serves delivery reports unless the sender served them within the
/// last turn. Ends (dropping its handle of the producer) once the producer was dropped and
/// nothing is in flight any more.
fn serve_reports(producer: &BaseProducer<AckContext>, shared: &DeliveryState) {
    // Set before the first look at `in_flight`: a send after it finds the thread to wake.
    let _ = shared.reporter.set(std::thread::current());
    let mut seen = shared.sender_polls.load(Ordering::Relaxed);
    loop {
        if shared.in_flight.load(Ordering::Relaxed) == 0 {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            serve_ready(producer, shared);
            // A send between the check and here leaves the wake-up pending: no sleep then.
            std::thread::park_timeout(IDLE_WAIT);
            continue;
        }
        let now = shared.sender_polls.load(Ordering::Relaxed);
        if now == seen {
            serve_ready(producer, shared);
        }
        seen = now;
        std::thread::sleep(TURN);
    }
}

/// Serves the reports that are ready, without waiting for more.
fn serve_ready(producer: &BaseProducer<AckContext>, shared: &DeliveryState) {
    for _ in 0..SERVE_AT_ONCE {
        let before = shared.in_flight.load(Ordering::Relaxed);
        // A zero timeout serves at most one event (a batch of reports).
        producer.poll(Duration::ZERO);
        if shared.in_flight.load(Ordering::Relaxed) == before {
            return;
        }
    }
}

impl Producer for RdProducer {
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError> {
        let seq = self.shared.acks.register();
        let ack = Ack::slot(self.shared.acks.clone(), seq);
        // Sequence numbers are 64-bit; so is usize where librdkafka runs.
        let mut rd = BaseRecord::with_opaque_to(record.topic, seq as usize)
            .partition(record.partition)
            .key(record.key);
        if let Some(value) = record.value {
            rd = rd.payload(value);
        }
        if let Some(headers) = record.headers {
            rd = rd.headers(super::rdkafka_headers::to_native(headers));
        }
        if let Some(timestamp) = record.timestamp {
            rd = rd.timestamp(timestamp);
        }
        // Counted before it is queued: its report may come before `send` returns.
        if self.shared.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            // The reporting thread sleeps while nothing is in flight.
            self.shared.wake_reporter();
        }
        let sent = self.inner.send(rd);
        if sent.is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            // Not queued: no answer will come, so the slot is answered here and freed when
            // the acknowledgement is dropped below.
            self.shared
                .acks
                .complete(seq, Err(KafkaError::Unacknowledged), Sent::default());
        }
        match sent {
            Ok(()) => {
                if seq % SERVE_EVERY == 0 {
                    self.serve_reports();
                }
                Ok(ack)
            }
            Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                // Reports free room: serve them all rather than wait for the reporting thread.
                self.shared.sender_polls.fetch_add(1, Ordering::Relaxed);
                serve_ready(&self.inner, &self.shared);
                Err(SendError::Full)
            }
            Err((e, _)) => Err(SendError::Failed(KafkaError::Produce {
                topic: record.topic.to_owned(),
                partition: record.partition,
                message: e.to_string(),
            })),
        }
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), KafkaError>> {
        let producer = self.inner.clone();
        async move {
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .map_err(|e| KafkaError::Timeout {
                    operation: format!("flush ({e})"),
                    timeout,
                })?
                .map_err(|_| KafkaError::Timeout {
                    operation: "flush of pending messages".into(),
                    timeout,
                })
        }
        .boxed()
    }
}

//! What the crate's librdkafka consumers share (partition readers and the group member):
//! the fetch settings set unless the user chose others, and how the result of one poll
//! lands in a batch of events.

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message};
use smallvec::SmallVec;

use super::{ConsumedBatch, HeaderUse, KafkaError};

/// Events handed from the polling thread to the async side at once, at most.
const EVENT_BATCH: usize = 1_024;
/// Key, value and header bytes after which a batch is handed over, whatever its length: with
/// the batch count below it bounds a reader's memory by bytes too (about 32 MiB with
/// 1 MB messages, where 1,024 messages a batch would allow 16 GiB).
const EVENT_BATCH_BYTES: usize = 1 << 20;
/// How long librdkafka waits before fetching again a partition whose local queue is over its
/// thresholds. Its default (1 s) stalls a reader that hands messages to another thread: the
/// queue is over the threshold for a moment after each large fetch, and the partition then
/// sits idle for a second (recovery ran at half speed with the default). The thresholds
/// still bound memory; this only makes the next fetch come sooner.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// What one poll of a librdkafka queue added to a batch.
pub(super) enum Polled {
    /// An event was added and there is room for more.
    More,
    /// An event was added and the batch is full: hand it over.
    Full,
    /// Nothing was ready.
    Nothing,
    /// An error the consumer cannot go on after (the topic is gone or forbidden).
    Fatal(KafkaError),
}

/// Adds what one poll returned to `batch`: messages, the end of a partition, or a problem
/// the client retries by itself.
pub(super) fn add_polled(
    batch: &mut ConsumedBatch,
    polled: Option<Result<BorrowedMessage<'_>, RdError>>,
    headers: HeaderUse,
) -> Polled {
    match polled {
        Some(Ok(message)) => push_borrowed(batch, &message, headers),
        Some(Err(RdError::PartitionEOF(partition))) => batch.push_end(partition),
        Some(Err(e)) => {
            let error = KafkaError::Consume {
                topic: batch.topic().to_string(),
                message: e.to_string(),
            };
            if is_fatal(&e) {
                return Polled::Fatal(error);
            }
            batch.push_transient(error);
        }
        None => return Polled::Nothing,
    }
    if batch.len() >= EVENT_BATCH || batch.bytes() >= EVENT_BATCH_BYTES {
        Polled::Full
    } else {
        Polled::More
    }
}

/// Consumer properties goka sets unless the user chose a value.
pub(super) fn fetch_defaults(config: &mut ClientConfig) {
    set_default(config, "fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
}

/// Sets `key` to `value` unless the user set it.
pub(super) fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

/// Errors the client does not recover from by retrying: the topic is gone or forbidden.
pub(super) fn is_fatal(error: &RdError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::Fatal
        )
    )
}

/// Copies a message of librdkafka's into a batch, with its headers if asked to.
fn push_borrowed(batch: &mut ConsumedBatch, message: &BorrowedMessage<'_>, headers: HeaderUse) {
    let mut names_and_values = SmallVec::<[(&[u8], &[u8]); 4]>::new();
    if headers == HeaderUse::Read {
        super::rdkafka_headers::for_each(message, |name, value| {
            names_and_values.push((name, value))
        });
    }
    batch.push_message(
        message.partition(),
        message.offset(),
        message.timestamp().to_millis(),
        message.key().unwrap_or_default(),
        message.payload(),
        names_and_values,
    );
}

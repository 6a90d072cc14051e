//! What happens besides the handler call, decided by the processor's configuration: the
//! policies for tombstones, undecodable input, failing handlers and late window messages,
//! and the dead letters some of them send.

use super::middleware::Middleware;
use super::{HandlerErrorPolicy, NilHandling, ProcessorConfig};
use crate::codec::DecodeErrorPolicy;
use crate::context::{Outgoing, OutgoingKind, PartitionResources};
use crate::group::Group;
use crate::kafka::{ConsumedMessage, Headers};

/// The dead-letter topic of `P` under `config`, if a policy sends messages there.
pub(crate) fn dead_letter_topic<P: Group>(config: &ProcessorConfig) -> Option<&'static str> {
    let decode = config.decode_errors.unwrap_or(P::DECODE_ERRORS) == DecodeErrorPolicy::DeadLetter;
    let handler = config.handler_errors == HandlerErrorPolicy::DeadLetter;
    let late = late_letter_topic::<P>(config).is_some();
    (decode || handler || late).then(|| config.dead_letter_topic.unwrap_or(P::DEAD_LETTERS))
}

/// Where late window messages go, if [`LatePolicy::DeadLetter`](super::LatePolicy) sends
/// them to the dead-letter topic.
pub(crate) fn late_letter_topic<P: Group>(config: &ProcessorConfig) -> Option<&'static str> {
    let windowed = !P::GRAPH.windows.is_empty();
    (windowed && config.late_messages == super::LatePolicy::DeadLetter)
        .then(|| config.dead_letter_topic.unwrap_or(P::DEAD_LETTERS))
}

/// The policies that decide what happens besides the handler call.
#[derive(Clone, Copy)]
pub(crate) struct Policies<'a> {
    pub(crate) nil_handling: NilHandling,
    pub(crate) decode_errors: DecodeErrorPolicy,
    /// Runs around each handler call.
    pub(crate) middleware: Option<&'a dyn Middleware>,
    /// Headers on everything produced (`ProcessorConfig::default_headers`).
    pub(crate) default_headers: &'a Headers,
    pub(crate) handler_errors: HandlerErrorPolicy,
    /// Where dead letters go, when a policy sends them.
    pub(crate) dead_letters: Option<&'static str>,
}

impl<'a> Policies<'a> {
    /// The policies of `config` for group `P`.
    pub(crate) fn of<P: Group>(config: &'a ProcessorConfig) -> Self {
        Self {
            nil_handling: config.nil_handling.unwrap_or(P::NIL_HANDLING),
            decode_errors: config.decode_errors.unwrap_or(P::DECODE_ERRORS),
            middleware: config.middleware.as_deref(),
            default_headers: &config.default_headers,
            handler_errors: config.handler_errors,
            dead_letters: dead_letter_topic::<P>(config),
        }
    }
}

/// Appends `message`, as it came, addressed to the dead-letter `topic` with its coordinates
/// and `error` in headers, to what `outgoing` holds.
pub(crate) fn push_dead_letter(
    group: &'static str,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    outgoing: &mut Outgoing,
    topic: &'static str,
    reason: &str,
    error: &str,
) {
    tracing::warn!(group, topic = %message.topic, partition = message.partition, offset = message.offset, %error, dead_letters = topic, "sending a message to the dead-letter topic");
    let mut headers = message.headers.clone();
    headers
        .insert(DEAD_LETTER_GROUP, group)
        .insert(DEAD_LETTER_TOPIC, message.topic.as_bytes())
        .insert(DEAD_LETTER_PARTITION, message.partition.to_string())
        .insert(DEAD_LETTER_OFFSET, message.offset.to_string())
        .insert(DEAD_LETTER_REASON, reason)
        .insert(DEAD_LETTER_ERROR, error);
    if let Some(timestamp) = message.timestamp {
        headers.insert(DEAD_LETTER_TIMESTAMP, timestamp.to_string());
    }
    let (key, value) = outgoing.scratch();
    key.extend_from_slice(&message.key);
    value.extend_from_slice(message.value.as_deref().unwrap_or_default());
    let count = resources.partition_counts.get(topic).copied().unwrap_or(1);
    let partition = resources.partitioner.partition(&message.key, count);
    outgoing.push_scratch(
        OutgoingKind::Emit,
        topic,
        partition,
        message.value.is_some(),
        Some(headers),
    );
}

/// Header of a dead letter: the group that could not handle it.
pub const DEAD_LETTER_GROUP: &str = "dead-letter-group";
/// Header of a dead letter: the topic it was read from.
pub const DEAD_LETTER_TOPIC: &str = "dead-letter-topic";
/// Header of a dead letter: its partition there.
pub const DEAD_LETTER_PARTITION: &str = "dead-letter-partition";
/// Header of a dead letter: its offset there.
pub const DEAD_LETTER_OFFSET: &str = "dead-letter-offset";
/// Header of a dead letter: its timestamp there (milliseconds since the epoch).
pub const DEAD_LETTER_TIMESTAMP: &str = "dead-letter-timestamp";
/// Header of a dead letter: `decode` or `handler`.
pub const DEAD_LETTER_REASON: &str = "dead-letter-reason";
/// Header of a dead letter: the error, as text.
pub const DEAD_LETTER_ERROR: &str = "dead-letter-error";

//! What happens to one consumed message, wherever it comes from: nil handling, key decoding,
//! the handler call (panics caught), the decode-error policy. The partition task of a
//! running processor and the tester both call [`handle`], so the tester exercises the same
//! code as production.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::firing::Fired;
use super::handlers::Handlers;
use super::middleware::{MessageInfo, Next};
use super::policies::{push_dead_letter, Policies};
use super::{HandlerErrorPolicy, NilHandling, ProcessorError};
use crate::codec::DecodeErrorPolicy;
use crate::context::{Context, Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::ConsumedMessage;
use crate::timer::Clock;

/// The outcome of one message.
#[derive(Debug)]
pub(crate) enum Handled {
    /// The handler ran (or nil handling deleted the row); what it produced is in the
    /// [`Outgoing`] passed to [`handle`], to go out in order.
    Produced,
    /// A tombstone that nil handling ignores.
    Ignored,
    /// Key or value did not decode and the policy skips such messages.
    Undecodable,
    /// The message did not decode or its handler failed, and the policy sends it to the
    /// dead-letter topic: the dead letter is in the [`Outgoing`], to go out like an emit.
    DeadLettered,
}

/// Handles `message` with `group`'s handler against `resources`; what it produces replaces
/// the contents of `outgoing`, which is empty unless the outcome is [`Handled::Produced`].
pub(crate) async fn handle<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    policies: Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<(Handled, Fired), ProcessorError> {
    let windowed = !resources.windows.tables.is_empty();
    let timed = resources.timers.is_some();
    if windowed || timed {
        resources.windows.advance(message.timestamp);
    }
    let handled = handle_message(group, resources, message, policies, outgoing).await?;
    let fired = stream_time_passed(group, resources, message, &policies, outgoing).await?;
    if windowed {
        index_windows(resources, outgoing);
    }
    if !matches!(handled, Handled::DeadLettered) && !policies.default_headers.is_empty() {
        outgoing.add_default_headers(policies.default_headers);
    }
    Ok((handled, fired))
}

/// Closes the windows and fires the stream-time timers the partition's stream time reached,
/// once `message` (or an idle partition's stand-in) moved it.
async fn stream_time_passed<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    policies: &Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<Fired, ProcessorError> {
    if !resources.windows.tables.is_empty() {
        super::closing::close_windows(group, resources, message, outgoing).await?;
    }
    let (Some(_), Some(now)) = (&resources.timers, resources.windows.stream_time()) else {
        return Ok(Fired::default());
    };
    let at = (message.partition, message.offset);
    super::firing::fire_timers(group, resources, at, Clock::Stream, now, policies, outgoing).await
}

/// The stream time an idle partition moves to at wall-clock time `now`:
/// [`ProcessorConfig::idle_advance`](super::ProcessorConfig::idle_advance) before it.
pub(crate) fn idle_time(idle: std::time::Duration, now: i64) -> i64 {
    now.saturating_sub(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX))
}

/// What closes next follows the window rows written, before they reach storage: only the
/// windows of earlier messages can be due before that.
fn index_windows(resources: &PartitionResources, outgoing: &Outgoing) {
    for out in outgoing.iter().filter(|o| o.kind == OutgoingKind::Window) {
        if let Some(table) = resources.windows.table(out.topic) {
            table.written(out.key, out.value);
        }
    }
}

/// Fires the wall-clock timers of `partition` due at `now` (milliseconds since the epoch);
/// with `idle_time` (an idle partition, [`ProcessorConfig::idle_advance`](super::ProcessorConfig::idle_advance)),
/// first moves the stream time on to it, closing the windows and firing the stream-time
/// timers it reaches. What they produce replaces the contents of `outgoing`. Returns how
/// many timers fired.
pub(crate) async fn handle_tick<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    partition: i32,
    now: i64,
    idle_time: Option<i64>,
    policies: Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<Fired, ProcessorError> {
    outgoing.clear();
    let windowed = !resources.windows.tables.is_empty();
    let mut fired = Fired::default();
    if let Some(time) = idle_time {
        let before = resources.windows.stream_time();
        let after = resources.windows.advance(Some(time));
        if let (true, Some(after)) = (after != before, after) {
            // The stand-in of the message that brought the time: none did, the idle
            // partition's first input topic and offset -1 say so in errors.
            let idle = ConsumedMessage {
                topic: std::sync::Arc::from(P::GRAPH.inputs.first().map_or("", |e| e.topic)),
                partition,
                offset: -1,
                key: Vec::new(),
                value: None,
                timestamp: Some(after),
                headers: crate::kafka::Headers::new(),
            };
            fired = stream_time_passed(group, resources, &idle, &policies, outgoing).await?;
        }
    }
    fired += super::firing::fire_timers(
        group,
        resources,
        (partition, -1),
        Clock::Wall,
        now,
        &policies,
        outgoing,
    )
    .await?;
    if windowed {
        index_windows(resources, outgoing);
    }
    if outgoing.iter().next().is_some() && !policies.default_headers.is_empty() {
        outgoing.add_default_headers(policies.default_headers);
    }
    Ok(fired)
}

async fn handle_message<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    policies: Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<Handled, ProcessorError> {
    outgoing.clear();
    if message.value.is_none() {
        match policies.nil_handling {
            NilHandling::Ignore => return Ok(Handled::Ignored),
            NilHandling::Process | NilHandling::Decode => {}
            NilHandling::Restore => return restore::<P>(resources, message, outgoing),
        }
    }
    let skip = policies.decode_errors == DecodeErrorPolicy::SkipAndCount;
    // Key decoding runs inside the panic guard too: a key codec is user code.
    let key_decoded = std::sync::atomic::AtomicBool::new(false);
    let outcome = AssertUnwindSafe(async {
        let mut ctx = Context::<P>::new(resources, message, outgoing).map_err(Failure::Key)?;
        key_decoded.store(true, std::sync::atomic::Ordering::Relaxed);
        let value = match (message.value.as_deref(), policies.nil_handling) {
            // The codec gets the tombstone as empty bytes.
            (None, NilHandling::Decode) => Some(&[][..]),
            (value, _) => value,
        };
        let call = group.dispatch(&mut ctx, value);
        match policies.middleware {
            None => call.await,
            Some(middleware) => middleware.around(info::<P>(message), Next(call)).await,
        }
        .map_err(Failure::Handler)
    })
    .catch_unwind()
    .await;
    let decode_letter = policies
        .dead_letters
        .filter(|_| policies.decode_errors == DecodeErrorPolicy::DeadLetter);
    let handler_letter = policies
        .dead_letters
        .filter(|_| policies.handler_errors == HandlerErrorPolicy::DeadLetter);
    match outcome {
        Ok(Ok(())) => Ok(Handled::Produced),
        Ok(Err(Failure::Key(e))) if decode_letter.is_some() => Ok(dead_letter::<P>(
            resources,
            message,
            outgoing,
            decode_letter,
            "decode",
            &format!("key does not decode: {e}"),
        )),
        Ok(Err(Failure::Handler(e))) if e.is_decode() && decode_letter.is_some() => {
            Ok(dead_letter::<P>(
                resources,
                message,
                outgoing,
                decode_letter,
                "decode",
                &e.to_string(),
            ))
        }
        Ok(Err(Failure::Handler(e))) if !e.is_decode() && handler_letter.is_some() => {
            Ok(dead_letter::<P>(
                resources,
                message,
                outgoing,
                handler_letter,
                "handler",
                &e.to_string(),
            ))
        }
        Ok(Err(Failure::Key(e))) if skip => {
            tracing::warn!(group = P::GRAPH.group, topic = %message.topic, partition = message.partition, offset = message.offset, error = %e, "skipping a message whose key does not decode");
            Ok(Handled::Undecodable)
        }
        Ok(Err(Failure::Key(e))) => Err(callback_error::<P>(
            message,
            format!("key does not decode: {e}"),
        )),
        Ok(Err(Failure::Handler(e))) if e.is_decode() && skip => {
            tracing::warn!(group = P::GRAPH.group, topic = %message.topic, partition = message.partition, offset = message.offset, error = %e, "skipping a message whose value does not decode");
            // Whatever the handler produced before it failed is not sent; work it deferred
            // is still awaited.
            outgoing.discard_messages();
            Ok(Handled::Undecodable)
        }
        Ok(Err(Failure::Handler(e))) => Err(callback_error::<P>(message, e.to_string())),
        Err(panic) => {
            let what = super::error::panic_text(&*panic);
            let place = if key_decoded.load(std::sync::atomic::Ordering::Relaxed) {
                "handler"
            } else {
                "key codec"
            };
            Err(callback_error::<P>(
                message,
                format!("{place} panicked: {what}"),
            ))
        }
    }
}

/// Replaces what the handler produced by the message itself, as it came, addressed to the
/// dead-letter `topic` with its coordinates and `error` in headers.
fn dead_letter<P: Handlers>(
    resources: &PartitionResources,
    message: &ConsumedMessage,
    outgoing: &mut Outgoing,
    topic: Option<&'static str>,
    reason: &str,
    error: &str,
) -> Handled {
    let Some(topic) = topic else {
        return Handled::DeadLettered;
    };
    // The handler's output is replaced; work it deferred is still awaited.
    outgoing.discard_messages();
    push_dead_letter(
        P::GRAPH.group,
        resources,
        message,
        outgoing,
        topic,
        reason,
        error,
    );
    Handled::DeadLettered
}

/// What a middleware learns of the message.
fn info<P: Handlers>(message: &ConsumedMessage) -> MessageInfo<'_> {
    MessageInfo {
        group: P::GRAPH.group,
        topic: &message.topic,
        partition: message.partition,
        offset: message.offset,
        key: &message.key,
        timestamp: message.timestamp,
        headers: &message.headers,
    }
}

/// Calls `group`'s handler of `visitor` for the key of `message` (a visit's stand-in for a
/// message: the visitor's name as its topic, offset -1); what it produces replaces the
/// contents of `outgoing`. Errors and panics stop the visit, naming the key.
pub(crate) async fn handle_visit<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    visitor: &str,
    value: &(dyn std::any::Any + Send + Sync),
    policies: Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<(), ProcessorError> {
    outgoing.clear();
    let outcome = AssertUnwindSafe(async {
        let mut ctx = Context::<P>::new(resources, message, outgoing)
            .map_err(|e| format!("key does not decode: {e}"))?;
        group
            .visit(&mut ctx, visitor, value)
            .await
            .map_err(|e| e.to_string())
    })
    .catch_unwind()
    .await;
    let failed = match outcome {
        Ok(Ok(())) => {
            // Window rows a visit writes close and drop like any others.
            if !resources.windows.tables.is_empty() {
                index_windows(resources, outgoing);
            }
            if !policies.default_headers.is_empty() {
                outgoing.add_default_headers(policies.default_headers);
            }
            return Ok(());
        }
        Ok(Err(message)) => message,
        Err(panic) => format!(
            "visit handler panicked: {}",
            super::error::panic_text(&*panic)
        ),
    };
    outgoing.clear();
    Err(callback_error::<P>(message, failed))
}

/// Why handling a message failed, before the policies decide what that means.
enum Failure {
    Key(crate::codec::CodecError),
    Handler(crate::context::CallbackError),
}

/// `NilHandling::Restore`: a tombstone on an input deletes the row (locally once the
/// changelog's tombstone is queued, like every table write).
fn restore<P: Handlers>(
    resources: &PartitionResources,
    message: &ConsumedMessage,
    outgoing: &mut Outgoing,
) -> Result<Handled, ProcessorError> {
    if let (Some(_), Some(edge)) = (&resources.table, P::GRAPH.table) {
        let (key, _) = outgoing.scratch();
        key.extend_from_slice(&message.key);
        outgoing.push_scratch(
            OutgoingKind::Table,
            edge.topic,
            message.partition,
            false,
            None,
        );
    }
    Ok(Handled::Produced)
}

/// Sets the timestamp of `message` to the event time its input's `event_time` method reads
/// from the value (`#[input(..., event_time = ...)]`), before anything else sees it: stream
/// time, windows, timers, `ctx.timestamp()` and the timestamp of what its handler produces
/// all go by it, as with Kafka Streams' timestamp extractors. `None` from the method keeps
/// the record's timestamp. A method that panics or gives a time before 1970 stops the
/// processor, naming the message.
pub(crate) fn apply_event_time<P: Handlers>(
    group: &P,
    message: &mut ConsumedMessage,
) -> Result<(), ProcessorError> {
    if !P::EVENT_TIME {
        return Ok(());
    }
    let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
        group.event_time(&message.topic, message.value.as_deref())
    }));
    match read {
        Ok(Some(at)) if at >= 0 => message.timestamp = Some(at),
        Ok(Some(at)) => {
            return Err(callback_error::<P>(
                message,
                format!(
                    "event_time gave {at} ms, a time before 1970; return None to keep the \
                     record's timestamp"
                ),
            ))
        }
        Ok(None) => {}
        Err(panic) => {
            let what = super::error::panic_text(&*panic);
            return Err(callback_error::<P>(
                message,
                format!("event_time panicked: {what}"),
            ));
        }
    }
    Ok(())
}

fn callback_error<P: Handlers>(message: &ConsumedMessage, error: String) -> ProcessorError {
    ProcessorError::Callback {
        group: P::GRAPH.group,
        topic: message.topic.to_string(),
        partition: message.partition,
        offset: message.offset,
        key: String::from_utf8_lossy(&message.key).into_owned(),
        message: error,
    }
}

#[cfg(test)]
mod tests;

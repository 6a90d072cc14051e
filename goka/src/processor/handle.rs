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
    if windowed {
        super::closing::close_windows(group, resources, message, outgoing).await?;
    }
    let mut fired = Fired::default();
    if let (true, Some(now)) = (timed, resources.windows.stream_time()) {
        let at = (message.partition, message.offset);
        fired = super::firing::fire_timers(
            group,
            resources,
            at,
            Clock::Stream,
            now,
            &policies,
            outgoing,
        )
        .await?;
    }
    if windowed {
        index_windows(resources, outgoing);
    }
    if !matches!(handled, Handled::DeadLettered) && !policies.default_headers.is_empty() {
        outgoing.add_default_headers(policies.default_headers);
    }
    Ok((handled, fired))
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
            if windowed {
                super::closing::close_windows(group, resources, &idle, outgoing).await?;
            }
            fired = super::firing::fire_timers(
                group,
                resources,
                (partition, -1),
                Clock::Stream,
                after,
                &policies,
                outgoing,
            )
            .await?;
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
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::fixture::{click, resources, written, Alerts, Counter};
    use super::super::policies::Policies;
    use super::super::{HandlerErrorPolicy, NilHandling, ProcessorConfig, ProcessorError};
    use super::{handle, Handled};
    use crate::codec::DecodeErrorPolicy;
    use crate::context::{Outgoing, OutgoingKind};
    use crate::kafka::Headers;

    const TABLE: &str = "unit-counter-table";

    async fn counter(
        config: &ProcessorConfig,
        message: &crate::kafka::ConsumedMessage,
    ) -> (Result<Handled, ProcessorError>, Outgoing) {
        let resources = resources::<Counter>();
        let mut outgoing = Outgoing::default();
        let handled = handle(
            &Counter,
            &resources,
            message,
            Policies::of::<Counter>(config),
            &mut outgoing,
        )
        .await
        .map(|(handled, _)| handled);
        (handled, outgoing)
    }

    #[tokio::test]
    async fn what_a_handler_writes_comes_out_in_order_and_nothing_reaches_a_store_yet() {
        let resources = resources::<Counter>();
        let config = ProcessorConfig::default();
        let mut outgoing = Outgoing::default();
        for offset in 0..2 {
            let (handled, fired) = handle(
                &Counter,
                &resources,
                &click(offset, "ann", Some("home"), 1_000),
                Policies::of::<Counter>(&config),
                &mut outgoing,
            )
            .await
            .unwrap();
            assert!(matches!(handled, Handled::Produced), "{handled:?}");
            assert_eq!(fired, Default::default());
            let out = written(&outgoing);
            assert_eq!(out.len(), 2, "{out:?}");
            assert_eq!(
                (out[0].0, out[0].1, out[0].2.as_str()),
                (OutgoingKind::Table, TABLE, "ann")
            );
            // The row is written by the collector once its changelog write is queued: the
            // second message still counts from nothing.
            assert_eq!(
                out[1],
                (
                    OutgoingKind::Emit,
                    <Alerts as crate::topic::Topic>::NAME,
                    "ann".into(),
                    Some("1 clicks".into()),
                    false
                )
            );
        }
        assert_eq!(resources.table.as_ref().unwrap().get(b"ann").unwrap(), None);
    }

    #[tokio::test]
    async fn a_tombstone_is_ignored_or_deletes_the_row_as_the_nil_handling_says() {
        let tombstone = click(4, "ann", None, 1_000);
        let ignore = ProcessorConfig {
            nil_handling: Some(NilHandling::Ignore),
            ..Default::default()
        };
        let (handled, outgoing) = counter(&ignore, &tombstone).await;
        assert!(matches!(handled, Ok(Handled::Ignored)), "{handled:?}");
        assert!(written(&outgoing).is_empty());

        let restore = ProcessorConfig {
            nil_handling: Some(NilHandling::Restore),
            ..Default::default()
        };
        let (handled, outgoing) = counter(&restore, &tombstone).await;
        assert!(matches!(handled, Ok(Handled::Produced)), "{handled:?}");
        assert_eq!(
            written(&outgoing),
            [(OutgoingKind::Table, TABLE, "ann".into(), None, false)],
            "the row's tombstone, nothing else"
        );
    }

    #[tokio::test]
    async fn a_failing_handler_stops_naming_its_message_or_becomes_a_dead_letter() {
        let failing = click(7, "ann", Some("fail"), 1_000);
        let (handled, _) = counter(&ProcessorConfig::default(), &failing).await;
        let error = handled.unwrap_err().to_string();
        for part in [
            "unit-counter",
            "unit-clicks",
            "partition 0",
            "offset 7",
            "\"ann\"",
            "refusing the page",
        ] {
            assert!(error.contains(part), "{part:?} missing from {error}");
        }

        let dead_letters = ProcessorConfig {
            handler_errors: HandlerErrorPolicy::DeadLetter,
            default_headers: [("team", "web")].into_iter().collect(),
            ..Default::default()
        };
        let (handled, outgoing) = counter(&dead_letters, &failing).await;
        assert!(matches!(handled, Ok(Handled::DeadLettered)), "{handled:?}");
        let out = written(&outgoing);
        assert_eq!(
            out,
            [(
                OutgoingKind::Emit,
                "unit-counter-dead-letters",
                "ann".into(),
                Some("fail".into()),
                false
            )],
            "the message as it came replaces the row and the emit the handler wrote"
        );
        let headers = outgoing
            .iter()
            .next()
            .unwrap()
            .headers
            .cloned()
            .unwrap_or_default();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(
            header(super::super::DEAD_LETTER_OFFSET).as_deref(),
            Some("7")
        );
        assert_eq!(
            header(super::super::DEAD_LETTER_REASON).as_deref(),
            Some("handler")
        );
        assert_eq!(
            header("team"),
            None,
            "a dead letter carries its own headers only"
        );
    }

    #[tokio::test]
    async fn a_panicking_handler_stops_naming_its_message() {
        let (handled, _) = counter(
            &ProcessorConfig::default(),
            &click(3, "bob", Some("panic"), 0),
        )
        .await;
        let error = handled.unwrap_err().to_string();
        assert!(error.contains("offset 3"), "{error}");
        assert!(
            error.contains("handler panicked: the page \"panic\""),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_undecodable_key_stops_or_is_skipped_as_the_policy_says() {
        let mut message = click(9, "x", Some("home"), 0);
        message.key = vec![0xff, 0xfe];
        let (handled, _) = counter(&ProcessorConfig::default(), &message).await;
        let error = handled.unwrap_err().to_string();
        assert!(
            error.contains("offset 9") && error.contains("key does not decode"),
            "{error}"
        );

        let skip = ProcessorConfig {
            decode_errors: Some(DecodeErrorPolicy::SkipAndCount),
            ..Default::default()
        };
        let (handled, outgoing) = counter(&skip, &message).await;
        assert!(matches!(handled, Ok(Handled::Undecodable)), "{handled:?}");
        assert!(written(&outgoing).is_empty());
    }

    #[tokio::test]
    async fn default_headers_go_under_every_write() {
        let config = ProcessorConfig {
            default_headers: [("team", "web")].into_iter().collect::<Headers>(),
            ..Default::default()
        };
        let (handled, outgoing) = counter(&config, &click(0, "ann", Some("home"), 0)).await;
        assert!(matches!(handled, Ok(Handled::Produced)));
        for out in outgoing.iter() {
            let team = out.headers.and_then(|h| h.get("team"));
            assert_eq!(team, Some(&b"web"[..]), "{:?} of {}", out.kind, out.topic);
        }
    }

    /// Reads a click's event time from its page, "at <ms>"; "panic" panics.
    #[goka::processor(group = "unit-stamped")]
    #[input(topic = super::super::fixture::Clicks, handler = Self::on_click, event_time = Self::clicked_at)]
    #[derive(Debug, Default)]
    struct Stamped;

    impl Stamped {
        fn clicked_at(&self, page: &String) -> Option<i64> {
            if page == "panic" {
                panic!("no time in a panic");
            }
            page.strip_prefix("at ").and_then(|at| at.parse().ok())
        }

        fn on_click(
            &self,
            _ctx: &mut crate::context::Context<'_, Self>,
            _page: String,
        ) -> Result<(), crate::context::CallbackError> {
            Ok(())
        }
    }

    #[test]
    fn the_event_time_read_from_the_value_replaces_the_records_or_stops_naming_the_message() {
        let stamped = |page: &str| {
            let mut message = click(4, "ann", Some(page), 1_000);
            super::apply_event_time(&Stamped, &mut message).map(|()| message.timestamp)
        };
        assert_eq!(stamped("at 42").unwrap(), Some(42));
        assert_eq!(
            stamped("home").unwrap(),
            Some(1_000),
            "None keeps the record's"
        );
        let mut counted = click(4, "ann", Some("at 42"), 1_000);
        super::apply_event_time(&Counter, &mut counted).unwrap();
        assert_eq!(counted.timestamp, Some(1_000), "a group without event_time");
        for (page, says) in [
            ("at -5", "before 1970"),
            ("panic", "event_time panicked: no time in a panic"),
        ] {
            let error = stamped(page).unwrap_err().to_string();
            assert!(
                error.contains("offset 4") && error.contains(says),
                "{error}"
            );
        }
    }
}

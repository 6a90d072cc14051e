//! What happens to one consumed message, wherever it comes from: nil handling, key decoding,
//! the handler call (panics caught), the decode-error policy. The partition task of a
//! running processor and the tester both call [`handle`], so the tester exercises the same
//! code as production.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::group::Group;
use super::middleware::{MessageInfo, Middleware, Next};
use super::{NilHandling, ProcessorConfig, ProcessorError};
use crate::codec::DecodeErrorPolicy;
use crate::context::{Context, Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::{ConsumedMessage, Headers};

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
}

impl<'a> Policies<'a> {
    /// The policies of `config` for group `P`.
    pub(crate) fn of<P: Group>(config: &'a ProcessorConfig) -> Self {
        Self {
            nil_handling: config.nil_handling.unwrap_or(P::NIL_HANDLING),
            decode_errors: config.decode_errors.unwrap_or(P::DECODE_ERRORS),
            middleware: config.middleware.as_deref(),
            default_headers: &config.default_headers,
        }
    }
}

/// Handles `message` with `group`'s handler against `resources`; what it produces replaces
/// the contents of `outgoing`, which is empty unless the outcome is [`Handled::Produced`].
pub(crate) async fn handle<P: Group>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    policies: Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<Handled, ProcessorError> {
    let handled = handle_message(group, resources, message, policies, outgoing).await?;
    if matches!(handled, Handled::Produced) && !policies.default_headers.is_empty() {
        outgoing.add_default_headers(policies.default_headers);
    }
    Ok(handled)
}

async fn handle_message<P: Group>(
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
    match outcome {
        Ok(Ok(())) => Ok(Handled::Produced),
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
            // Whatever the handler produced before it failed is not sent.
            outgoing.clear();
            Ok(Handled::Undecodable)
        }
        Ok(Err(Failure::Handler(e))) => Err(callback_error::<P>(message, e.to_string())),
        Err(panic) => {
            let what = super::consumer::panic_text(&*panic);
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

/// What a middleware learns of the message.
fn info<P: Group>(message: &ConsumedMessage) -> MessageInfo<'_> {
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

/// Why handling a message failed, before the policies decide what that means.
enum Failure {
    Key(crate::codec::CodecError),
    Handler(crate::context::CallbackError),
}

/// `NilHandling::Restore`: a tombstone on an input deletes the row (locally once the
/// changelog's tombstone is queued, like every table write).
fn restore<P: Group>(
    resources: &PartitionResources,
    message: &ConsumedMessage,
    outgoing: &mut Outgoing,
) -> Result<Handled, ProcessorError> {
    if let (Some(_), Some(edge)) = (&resources.table, P::GRAPH.table) {
        let (key, _) = outgoing.scratch();
        key.extend_from_slice(&message.key);
        outgoing.push_scratch(
            OutgoingKind::Changelog,
            edge.topic,
            message.partition,
            false,
            None,
        );
    }
    Ok(Handled::Produced)
}

fn callback_error<P: Group>(message: &ConsumedMessage, error: String) -> ProcessorError {
    ProcessorError::Callback {
        group: P::GRAPH.group,
        topic: message.topic.to_string(),
        partition: message.partition,
        offset: message.offset,
        key: String::from_utf8_lossy(&message.key).into_owned(),
        message: error,
    }
}

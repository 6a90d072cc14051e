//! What happens to one consumed message, wherever it comes from: nil handling, key decoding,
//! the handler call (panics caught), the decode-error policy. The partition task of a
//! running processor and the tester both call [`handle`], so the tester exercises the same
//! code as production.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::group::Group;
use super::{NilHandling, ProcessorError};
use crate::context::{Context, Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::ConsumedMessage;
use crate::view::DecodeErrorPolicy;

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
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policies {
    pub(crate) nil_handling: NilHandling,
    pub(crate) decode_errors: DecodeErrorPolicy,
}

/// Handles `message` with `group`'s handler against `resources`; what it produces replaces
/// the contents of `outgoing`, which is empty unless the outcome is [`Handled::Produced`].
pub(crate) async fn handle<P: Group>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    policies: Policies,
    outgoing: &mut Outgoing,
) -> Result<Handled, ProcessorError> {
    outgoing.clear();
    if message.value.is_none() {
        match policies.nil_handling {
            NilHandling::Ignore => return Ok(Handled::Ignored),
            NilHandling::Process => {}
            NilHandling::Restore => return restore::<P>(resources, message, outgoing),
        }
    }
    let skip = policies.decode_errors == DecodeErrorPolicy::SkipAndCount;
    let mut ctx = match Context::<P>::new(resources, message, outgoing) {
        Ok(ctx) => ctx,
        Err(e) if skip => {
            tracing::warn!(group = P::GRAPH.group, topic = %message.topic, partition = message.partition, offset = message.offset, error = %e, "skipping a message whose key does not decode");
            return Ok(Handled::Undecodable);
        }
        Err(e) => {
            return Err(callback_error::<P>(
                message,
                format!("key does not decode: {e}"),
            ))
        }
    };
    let outcome = AssertUnwindSafe(group.dispatch(&mut ctx, message.value.as_deref()))
        .catch_unwind()
        .await;
    match outcome {
        Ok(Ok(())) => Ok(Handled::Produced),
        Ok(Err(e)) if e.is_decode() && skip => {
            tracing::warn!(group = P::GRAPH.group, topic = %message.topic, partition = message.partition, offset = message.offset, error = %e, "skipping a message whose value does not decode");
            // Whatever the handler produced before it failed is not sent.
            outgoing.clear();
            Ok(Handled::Undecodable)
        }
        Ok(Err(e)) => Err(callback_error::<P>(message, e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(callback_error::<P>(
                message,
                format!("handler panicked: {what}"),
            ))
        }
    }
}

/// goka's `NilRestore`: a tombstone on an input deletes the row.
fn restore<P: Group>(
    resources: &PartitionResources,
    message: &ConsumedMessage,
    outgoing: &mut Outgoing,
) -> Result<Handled, ProcessorError> {
    if let (Some(table), Some(edge)) = (&resources.table, P::GRAPH.table) {
        table
            .delete(&message.key)
            .map_err(|source| ProcessorError::Storage {
                group: P::GRAPH.group,
                source,
            })?;
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

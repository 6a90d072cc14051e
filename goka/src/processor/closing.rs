//! Closing and dropping windows as stream time passes them: after each message, the windows
//! whose close or drop time it reached get their `on_close` call and their closed mark, or
//! their tombstone, as part of what that message produced. So they are committed with it:
//! a crash before its acknowledgements replays the message, and the windows close again.
//! A closed mark is produced only once the `on_close` output was acknowledged, so a lost
//! output never leaves a window marked closed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use super::handlers::Handlers;
use super::ProcessorError;
use crate::context::{Context, Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::ConsumedMessage;
use crate::window::partition::DueWindow;
use crate::window::row::{self, CLOSED};
use crate::window::{decode_window_key, WindowRange};

/// Windows closed or dropped after one message, at most: the rest follow with the next
/// messages. A message that moves stream time far (the first after a long pause, a clock
/// jump) would otherwise close every window of the partition in one go, and hold all
/// their output in memory at once.
const CLOSE_AT_ONCE: usize = 1_000;

/// Closes and drops the windows of the partition whose time `message` brought, appending to
/// `outgoing`. An `on_close` that fails or panics stops the processor, naming the window,
/// its key and the message that closed it.
pub(crate) async fn close_windows<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    outgoing: &mut Outgoing,
) -> Result<(), ProcessorError> {
    let windows = &resources.windows;
    let now = windows.stream_time().unwrap_or_default();
    for (index, due) in windows.take_due(CLOSE_AT_ONCE) {
        let table = &windows.tables[index];
        let edge = table.edge;
        let topic = edge.topic();
        match due {
            DueWindow::Drop { row } => {
                push(outgoing, (topic, message.partition), &row, None, false);
            }
            DueWindow::Close { row } => {
                let stored = table
                    .storage
                    .get(&row)
                    .map_err(|source| ProcessorError::Storage {
                        group: P::GRAPH.group,
                        source,
                    })?;
                let (Some(stored), Ok((_, start))) = (stored, decode_window_key(&row)) else {
                    continue;
                };
                let Some(parsed) = row::parse(&stored) else {
                    continue;
                };
                let window = WindowRange {
                    start,
                    end: parsed.end,
                };
                let value = parsed.value;
                if edge.on_close {
                    on_close(
                        group, resources, message, &row, edge.name, window, value, now, outgoing,
                    )
                    .await?;
                }
                let mut closed = Vec::with_capacity(stored.len());
                row::header(CLOSED, window.end, &mut closed);
                closed.extend_from_slice(value);
                // A window kept no longer than its grace goes at once.
                let keep = (edge.spec.dropped_at(window) > now).then_some(&closed[..]);
                // After the output of `on_close`: if that fails, a replay finds the window
                // open and closes it again.
                push(
                    outgoing,
                    (topic, message.partition),
                    &row,
                    keep,
                    edge.on_close,
                );
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn on_close<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    message: &ConsumedMessage,
    row: &[u8],
    name: &'static str,
    window: WindowRange,
    value: &[u8],
    now: i64,
    outgoing: &mut Outgoing,
) -> Result<(), ProcessorError> {
    let key = decode_window_key(row)
        .map(|(key, _)| key)
        .unwrap_or_default();
    // The window's stand-in for a message: its key, the window's name as topic, the offset
    // of the message that closed it, and the stream time.
    let closing = ConsumedMessage {
        topic: Arc::from(name),
        partition: message.partition,
        offset: message.offset,
        key: key.to_vec(),
        value: None,
        timestamp: Some(now),
        headers: crate::kafka::Headers::new(),
    };
    let outcome = AssertUnwindSafe(async {
        let mut ctx = Context::<P>::new(resources, &closing, outgoing)
            .map_err(|e| format!("key does not decode: {e}"))?;
        group
            .close_window(&mut ctx, name, window, value)
            .await
            .map_err(|e| e.to_string())
    })
    .catch_unwind()
    .await;
    let failed = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error,
        Err(panic) => format!("panicked: {}", super::error::panic_text(&*panic)),
    };
    Err(ProcessorError::Callback {
        group: P::GRAPH.group,
        topic: message.topic.to_string(),
        partition: message.partition,
        offset: message.offset,
        key: String::from_utf8_lossy(key).into_owned(),
        message: format!(
            "on_close of window {name} [{}, {}), closed by this message: {failed}",
            window.start, window.end
        ),
    })
}

/// Appends a write of `row` to the window changelog `topic` (a tombstone for `None`),
/// produced after the message's other output when it `follows` them.
fn push(
    outgoing: &mut Outgoing,
    (topic, partition): (&'static str, i32),
    row: &[u8],
    value: Option<&[u8]>,
    follows: bool,
) {
    let (key, bytes) = outgoing.scratch();
    key.extend_from_slice(row);
    if let Some(value) = value {
        bytes.extend_from_slice(value);
    }
    if follows {
        outgoing.push_scratch_following(OutgoingKind::Window, topic, partition, value.is_some());
    } else {
        outgoing.push_scratch(
            OutgoingKind::Window,
            topic,
            partition,
            value.is_some(),
            None,
        );
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::fixture::{
        click, click_and_store, emitted, resources, store, written, Minutes,
    };
    use super::super::handle::handle;
    use super::super::policies::Policies;
    use super::super::ProcessorConfig;
    use crate::context::{Outgoing, OutgoingKind, PartitionResources};

    /// Handles a click of `user` at `at` ms and stores what it wrote; returns its output.
    async fn click_at(
        resources: &PartitionResources,
        offset: i64,
        user: &str,
        at: i64,
    ) -> Outgoing {
        click_and_store(&Minutes, resources, (offset, user, "home", at))
            .await
            .1
    }

    #[tokio::test]
    async fn a_window_closes_once_when_stream_time_passes_it_and_its_mark_follows_its_output() {
        let resources = resources::<Minutes>();
        click_at(&resources, 0, "ann", 1_000).await;
        let out = click_at(&resources, 1, "ann", 59_999).await;
        assert!(emitted(&out).is_empty(), "the minute is still open");

        let out = click_at(&resources, 2, "bob", 60_000).await;
        assert_eq!(emitted(&out), [("ann".to_owned(), "2 from 0".to_owned())]);
        let windows: Vec<_> = written(&out)
            .into_iter()
            .filter(|w| w.0 == OutgoingKind::Window)
            .map(|(_, topic, _, value, follows)| (topic, value.is_some(), follows))
            .collect();
        let topic = "unit-minutes-unit-per-minute-window";
        assert_eq!(
            windows,
            [
                (topic, true, false),
                // The closed mark, produced only once the output of on_close was
                // acknowledged: a lost output leaves the window open, to close again.
                (topic, true, true),
            ],
            "bob's new row, then ann's closed window"
        );

        for (offset, at) in [(3, 60_500), (4, 61_000)] {
            let out = click_at(&resources, offset, "bob", at).await;
            assert!(
                emitted(&out).is_empty(),
                "ann's minute closed once: {out:?}"
            );
        }
        let out = click_at(&resources, 5, "ann", 120_000).await;
        assert_eq!(
            emitted(&out),
            [("bob".to_owned(), "3 from 60000".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_failing_on_close_stops_naming_the_window_and_the_message_that_closed_it() {
        let resources = resources::<Minutes>();
        click_at(&resources, 0, "bad", 1_000).await;
        let config = ProcessorConfig::default();
        let mut outgoing = Outgoing::default();
        let error = handle(
            &Minutes,
            &resources,
            &click(1, "ann", Some("home"), 70_000),
            Policies::of::<Minutes>(&config),
            &mut outgoing,
        )
        .await
        .unwrap_err()
        .to_string();
        for part in [
            "offset 1",
            "\"bad\"",
            "on_close of window",
            "[0, 60000)",
            "cannot say the minute",
        ] {
            assert!(error.contains(part), "{part:?} missing from {error}");
        }
    }

    #[tokio::test]
    async fn an_idle_partition_closes_its_windows_when_its_stream_time_is_moved_on() {
        let resources = resources::<Minutes>();
        click_at(&resources, 0, "ann", 1_000).await;
        let config = ProcessorConfig::default();
        let policies = Policies::of::<Minutes>(&config);
        let mut outgoing = Outgoing::default();
        for (idle_time, closes) in [
            (None, false),
            (Some(500), false),
            (Some(59_999), false),
            (Some(60_000), true),
        ] {
            super::super::handle::handle_tick(
                &Minutes,
                &resources,
                0,
                0,
                idle_time,
                policies,
                &mut outgoing,
            )
            .await
            .unwrap();
            let said = emitted(&outgoing);
            assert_eq!(!said.is_empty(), closes, "at {idle_time:?}: {said:?}");
        }
        assert_eq!(
            emitted(&outgoing),
            [("ann".to_owned(), "1 from 0".to_owned())]
        );
        assert_eq!(resources.windows.stream_time(), Some(60_000));
        store(&resources, &outgoing);
        super::super::handle::handle_tick(
            &Minutes,
            &resources,
            0,
            0,
            Some(30_000),
            policies,
            &mut outgoing,
        )
        .await
        .unwrap();
        assert!(written(&outgoing).is_empty(), "stream time never goes back");
        assert_eq!(resources.windows.stream_time(), Some(60_000));
    }
}

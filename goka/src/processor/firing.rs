//! Firing timers: after each message, the stream-time timers its stream time reached; on a
//! tick of the partition task (or `Tester::fire_timers`), the wall-clock timers that are
//! due. Each fired timer's handler runs for its key as a message would, and the timer is
//! removed with a tombstone in the timer changelog, produced with what the handler did.
//! Until the clock reaches the earliest timer the last scan saw or a handler scheduled since,
//! nothing is scanned: a message costs no storage read for timers that are not due.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use super::group::Group;
use super::ProcessorError;
use crate::context::{Context, Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::ConsumedMessage;
use crate::timer::parse_row;

/// Timers fired at once, at most: the rest fire with the next message or tick.
const FIRE_AT_ONCE: usize = 1_000;

/// Fires the timers of one clock (stream time or the wall clock) due at `now`, appending
/// what their handlers produce and their tombstones to `outgoing`; `offset` is the message
/// that brought the time (-1 for a tick). Returns how many fired. A handler that fails or
/// panics stops the processor, naming the timer, its key and its time.
pub(crate) async fn fire_timers<P: Group>(
    group: &P,
    resources: &PartitionResources,
    partition: i32,
    offset: i64,
    stream: bool,
    now: i64,
    outgoing: &mut Outgoing,
) -> Result<usize, ProcessorError> {
    let (Some(timers), Some(edge)) = (&resources.timers, P::GRAPH.timers) else {
        return Ok(0);
    };
    if !timers.may_be_due(stream, now) {
        return Ok(0);
    }
    let storage = &timers.storage;
    let storage_error = |source| ProcessorError::Storage {
        group: P::GRAPH.group,
        source,
    };
    let mut due = Vec::new();
    let mut next = i64::MAX;
    for row in storage
        .range(timers.scan_from(stream))
        .map_err(storage_error)?
    {
        let (row, payload) = row.map_err(storage_error)?;
        let Some(parsed) = parse_row(&row) else {
            continue;
        };
        let (_, at) = parsed.at.clock();
        if at > now || due.len() >= FIRE_AT_ONCE {
            next = at;
            break;
        }
        due.push((row, payload));
    }
    let mut fired = 0;
    for (row, stored) in due {
        // The handler of this message may have cancelled or replaced the timer.
        let payload = match outgoing.last_write(OutgoingKind::Timer, edge.topic, &row) {
            Some(None) => continue,
            Some(Some(replaced)) => replaced.to_vec(),
            None => stored,
        };
        let Some(parsed) = parse_row(&row) else {
            continue;
        };
        let (_, at) = parsed.at.clock();
        let name = P::GRAPH
            .timer_names
            .iter()
            .copied()
            .find(|n| *n == parsed.name)
            .unwrap_or("timer");
        // The timer's stand-in for a message: its key, its name as topic, its time.
        let firing = ConsumedMessage {
            topic: Arc::from(name),
            partition,
            offset,
            key: parsed.key.to_vec(),
            value: None,
            timestamp: Some(at),
            headers: crate::kafka::Headers::new(),
        };
        let outcome = AssertUnwindSafe(async {
            let mut ctx = Context::<P>::new(resources, &firing, outgoing)
                .map_err(|e| format!("key does not decode: {e}"))?;
            group
                .fire_timer(&mut ctx, name, &payload)
                .await
                .map_err(|e| e.to_string())
        })
        .catch_unwind()
        .await;
        let failed = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(panic) => Some(format!(
                "panicked: {}",
                super::consumer::panic_text(&*panic)
            )),
        };
        if let Some(failed) = failed {
            return Err(ProcessorError::Callback {
                group: P::GRAPH.group,
                topic: edge.topic.to_owned(),
                partition,
                offset,
                key: String::from_utf8_lossy(parsed.key).into_owned(),
                message: format!("timer {name} at {at} failed: {failed}"),
            });
        }
        let (key, _) = outgoing.scratch();
        key.extend_from_slice(&row);
        outgoing.push_scratch(OutgoingKind::Timer, edge.topic, partition, false, None);
        fired += 1;
    }
    // Timers scheduled by this message's handler or by the fired ones are not stored yet.
    let scheduled = outgoing
        .iter()
        .filter(|out| out.kind == OutgoingKind::Timer && out.value.is_some())
        .filter_map(|out| parse_row(out.key))
        .map(|row| row.at.clock())
        .filter_map(|(clock, at)| (clock == stream).then_some(at));
    timers.scanned(stream, scheduled.fold(next, i64::min));
    Ok(fired)
}

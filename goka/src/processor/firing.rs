//! Firing timers: after each message, the stream-time timers its stream time reached; on a
//! tick of the partition task (or `Tester::fire_timers`), the wall-clock timers that are
//! due. Each fired timer's handler runs for its key as a message would, and the timer is
//! removed with a tombstone in the timer changelog, produced once what the handler did was
//! acknowledged.
//! Until the clock reaches the earliest timer the last scan saw or a handler scheduled since,
//! nothing is scanned: a message costs no storage read for timers that are not due.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use super::handlers::Handlers;
use super::policies::Policies;
use super::ProcessorError;
use crate::codec::DecodeErrorPolicy;
use crate::context::{Context, Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::ConsumedMessage;
use crate::timer::{parse_row, Clock};

/// Timers fired at once, at most: the rest fire with the next message or tick.
const FIRE_AT_ONCE: usize = 1_000;

/// What firing the due timers did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fired {
    /// Timers whose handler ran.
    pub(crate) fired: usize,
    /// Stored timers that could not be fired (a payload that does not decode, a name the
    /// group no longer declares) and were removed under `DecodeErrorPolicy::SkipAndCount`.
    pub(crate) undecodable: usize,
    /// Such timers sent to the dead-letter topic under `DecodeErrorPolicy::DeadLetter`.
    pub(crate) dead_lettered: usize,
}

impl std::ops::AddAssign for Fired {
    fn add_assign(&mut self, other: Self) {
        self.fired += other.fired;
        self.undecodable += other.undecodable;
        self.dead_lettered += other.dead_lettered;
    }
}

/// Fires the timers of one clock (stream time or the wall clock) due at `now`, appending
/// what their handlers produce and their tombstones to `outgoing`; `offset` is the message
/// that brought the time (-1 for a tick). A handler that fails or panics stops the
/// processor, naming the timer, its key and its time. A stored timer that cannot be fired
/// (its payload does not decode, or its name is no longer the group's: a renamed or removed
/// timer) follows the decode-error policy: stop naming it, remove it and count it, or send
/// it to the dead-letter topic and remove it.
pub(crate) async fn fire_timers<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    (partition, offset): (i32, i64),
    clock: Clock,
    now: i64,
    policies: &Policies<'_>,
    outgoing: &mut Outgoing,
) -> Result<Fired, ProcessorError> {
    let mut outcome = Fired::default();
    let (Some(timers), Some(edge)) = (&resources.timers, P::GRAPH.timers) else {
        return Ok(outcome);
    };
    if !timers.may_be_due(clock, now) {
        return Ok(outcome);
    }
    let storage = &timers.storage;
    let storage_error = |source| ProcessorError::Storage {
        group: P::GRAPH.group,
        source,
    };
    let mut due = Vec::new();
    let mut next = i64::MAX;
    for row in storage
        .range(timers.scan_from(clock))
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
        let declared = P::GRAPH
            .timer_names
            .iter()
            .copied()
            .find(|n| *n == parsed.name);
        let attempt = match declared {
            Some(name) => {
                let fired = (partition, offset, at);
                call::<P>(
                    group, resources, fired, name, parsed.key, &payload, outgoing,
                )
                .await
            }
            None => Attempt::Unfireable(format!(
                "timer {:?} at {at} is not declared by the group (renamed or removed)",
                parsed.name
            )),
        };
        match attempt {
            Attempt::Fired => {}
            // A timer that cannot be fired goes by the decode-error policy.
            Attempt::Unfireable(why) => {
                unfireable::<P>(
                    resources,
                    (edge.topic, partition),
                    (offset, at),
                    (&row, parsed.key, &payload),
                    &why,
                    policies,
                    outgoing,
                    &mut outcome,
                )?;
                continue;
            }
            // One whose handler fails stops the processor.
            Attempt::Failed(message) => {
                return Err(ProcessorError::Callback {
                    group: P::GRAPH.group,
                    topic: edge.topic.to_owned(),
                    partition,
                    offset,
                    key: String::from_utf8_lossy(parsed.key).into_owned(),
                    message,
                })
            }
        }
        let (key, _) = outgoing.scratch();
        key.extend_from_slice(&row);
        // Removed only once what the handler produced is acknowledged: if that fails, the
        // timer is still stored and fires again.
        outgoing.push_scratch_following(OutgoingKind::Timer, edge.topic, partition, false);
        outcome.fired += 1;
    }
    // Timers scheduled by this message's handler or by the fired ones are not stored yet.
    let scheduled = outgoing
        .iter()
        .filter(|out| out.kind == OutgoingKind::Timer && out.value.is_some())
        .filter_map(|out| parse_row(out.key))
        .map(|row| row.at.clock())
        .filter_map(|(of, at)| (of == clock).then_some(at));
    timers.scanned(clock, scheduled.fold(next, i64::min));
    Ok(outcome)
}

/// What calling a stored timer's handler came to.
enum Attempt {
    Fired,
    /// It cannot be fired (its key or payload does not decode, its name is not the
    /// group's): why.
    Unfireable(String),
    /// Its handler failed or panicked: the error's text, naming the timer.
    Failed(String),
}

/// Why a timer's handler was not called.
enum Unfired {
    Key(crate::codec::CodecError),
    Handler(crate::context::CallbackError),
}

/// Calls the handler of timer `name` for `key` with `payload`, as a message at the timer's
/// time would be handled; `(partition, offset, at)` are the partition, the message that
/// brought the time and the timer's time.
async fn call<P: Handlers>(
    group: &P,
    resources: &PartitionResources,
    (partition, offset, at): (i32, i64, i64),
    name: &'static str,
    key: &[u8],
    payload: &[u8],
    outgoing: &mut Outgoing,
) -> Attempt {
    // The timer's stand-in for a message: its key, its name as topic, its time.
    let firing = ConsumedMessage {
        topic: Arc::from(name),
        partition,
        offset,
        key: key.to_vec(),
        value: None,
        timestamp: Some(at),
        headers: crate::kafka::Headers::new(),
    };
    let called = AssertUnwindSafe(async {
        let mut ctx = Context::<P>::new(resources, &firing, outgoing).map_err(Unfired::Key)?;
        group
            .fire_timer(&mut ctx, name, payload)
            .await
            .map_err(Unfired::Handler)
    })
    .catch_unwind()
    .await;
    match called {
        Ok(Ok(())) => Attempt::Fired,
        Ok(Err(Unfired::Key(error))) => Attempt::Unfireable(format!(
            "timer {name} at {at}: its key does not decode: {error}"
        )),
        Ok(Err(Unfired::Handler(error))) if error.is_decode() => {
            Attempt::Unfireable(format!("timer {name} at {at}: {error}"))
        }
        Ok(Err(Unfired::Handler(error))) => {
            Attempt::Failed(format!("timer {name} at {at} failed: {error}"))
        }
        Err(panic) => Attempt::Failed(format!(
            "timer {name} at {at} failed: panicked: {}",
            super::error::panic_text(&*panic)
        )),
    }
}

/// A stored timer that cannot be fired, under the decode-error policy: an error naming it
/// (with the way past it), or its removal, counted, after its dead letter where the policy
/// sends one. `at` is the message that brought the time and the timer's time; `stored` the
/// timer's row, key and payload.
#[allow(clippy::too_many_arguments)]
fn unfireable<P: Handlers>(
    resources: &PartitionResources,
    (topic, partition): (&'static str, i32),
    (offset, at): (i64, i64),
    (row, key, payload): (&[u8], &[u8], &[u8]),
    why: &str,
    policies: &Policies<'_>,
    outgoing: &mut Outgoing,
    outcome: &mut Fired,
) -> Result<(), ProcessorError> {
    let dead_letters = policies
        .dead_letters
        .filter(|_| policies.decode_errors == DecodeErrorPolicy::DeadLetter);
    match (policies.decode_errors, dead_letters) {
        (DecodeErrorPolicy::SkipAndCount, _) => {
            tracing::warn!(group = P::GRAPH.group, topic, partition, %why, "removing a stored timer that cannot be fired");
            outcome.undecodable += 1;
        }
        (DecodeErrorPolicy::DeadLetter, Some(dead_letters)) => {
            // The timer as it was stored: its row (name, time, key) and its payload.
            let stored = ConsumedMessage {
                topic: Arc::from(topic),
                partition,
                offset,
                key: row.to_vec(),
                value: Some(payload.to_vec()),
                timestamp: Some(at),
                headers: crate::kafka::Headers::new(),
            };
            super::policies::push_dead_letter(
                P::GRAPH.group,
                resources,
                &stored,
                outgoing,
                dead_letters,
                "timer",
                why,
            );
            outcome.dead_lettered += 1;
        }
        _ => {
            return Err(ProcessorError::Callback {
                group: P::GRAPH.group,
                topic: topic.to_owned(),
                partition,
                offset,
                key: String::from_utf8_lossy(key).into_owned(),
                message: format!(
                    "{why}; the stored timer cannot be fired: set ProcessorConfig::decode_errors \
                     to SkipAndCount (remove it) or DeadLetter (keep it in the dead-letter topic) \
                     to get past it"
                ),
            })
        }
    }
    let (tombstone, _) = outgoing.scratch();
    tombstone.extend_from_slice(row);
    // After its dead letter, if it has one.
    outgoing.push_scratch_following(OutgoingKind::Timer, topic, partition, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::fixture::{
        click, click_and_store, emitted, resources, store, written, Watch, QUIET_AFTER,
    };
    use super::super::handle::{handle, handle_tick};
    use super::super::policies::Policies;
    use super::super::ProcessorConfig;
    use super::Fired;
    use crate::context::{Outgoing, OutgoingKind, PartitionResources};

    /// Handles a click and stores what it wrote; returns what fired and the output.
    async fn click_at(
        resources: &PartitionResources,
        offset: i64,
        user: &str,
        page: &str,
        at: i64,
    ) -> (Fired, Outgoing) {
        click_and_store(&Watch, resources, (offset, user, page, at)).await
    }

    #[tokio::test]
    async fn a_stream_time_timer_fires_once_at_its_time_and_a_cancelled_one_never() {
        let resources = resources::<Watch>();
        click_at(&resources, 0, "ann", "home", 1_000).await;
        click_at(&resources, 1, "bob", "home", 30_000).await;
        let (fired, out) = click_at(&resources, 2, "bob", "cart", 1_000 + QUIET_AFTER - 1).await;
        assert_eq!(fired.fired, 0, "{out:?}");

        // Bob's click moved his timer; ann's is due.
        let (fired, out) = click_at(&resources, 3, "bob", "pay", 1_000 + QUIET_AFTER).await;
        assert_eq!(fired.fired, 1);
        assert_eq!(
            emitted(&out),
            [("ann".to_owned(), "quiet after home".to_owned())]
        );
        let last = written(&out).pop().unwrap();
        assert_eq!(
            (last.0, last.3, last.4),
            (OutgoingKind::Timer, None, true),
            "the fired timer's tombstone follows its output"
        );

        let (fired, _) = click_at(&resources, 4, "carl", "home", 70_000).await;
        assert_eq!(fired.fired, 0, "ann's timer fired once");
        let (fired, out) = click_at(&resources, 5, "carl", "home", 200_000).await;
        assert_eq!(
            emitted(&out),
            [("bob".to_owned(), "quiet after pay".to_owned())],
            "bob's cancelled timers never fire, his last one once"
        );
        assert_eq!(fired.fired, 1);
    }

    #[tokio::test]
    async fn a_wall_clock_timer_fires_on_a_tick_and_never_by_stream_time() {
        let resources = resources::<Watch>();
        let config = ProcessorConfig::default();
        click_at(&resources, 0, "ann", "remind", 1_000).await;
        let (fired, _) = click_at(&resources, 1, "bob", "home", 100_000).await;
        assert_eq!(
            fired.fired, 0,
            "stream time does not fire a wall-clock timer"
        );
        let mut outgoing = Outgoing::default();
        let policies = Policies::of::<Watch>(&config);
        let fired = handle_tick(&Watch, &resources, 0, 5_999, None, policies, &mut outgoing)
            .await
            .unwrap();
        assert_eq!(fired.fired, 0);
        let fired = handle_tick(&Watch, &resources, 0, 6_000, None, policies, &mut outgoing)
            .await
            .unwrap();
        assert_eq!(fired.fired, 1);
        assert_eq!(
            emitted(&outgoing),
            [("ann".to_owned(), "reminder".to_owned())]
        );
        store(&resources, &outgoing);
        let fired = handle_tick(&Watch, &resources, 0, 7_000, None, policies, &mut outgoing)
            .await
            .unwrap();
        assert_eq!(fired.fired, 0, "fired once");
    }

    #[tokio::test]
    async fn a_failing_timer_stops_naming_the_timer_its_key_and_its_time() {
        let resources = resources::<Watch>();
        click_at(&resources, 0, "bad", "home", 1_000).await;
        let config = ProcessorConfig::default();
        let mut outgoing = Outgoing::default();
        let error = handle(
            &Watch,
            &resources,
            &click(1, "ann", Some("home"), 90_000),
            Policies::of::<Watch>(&config),
            &mut outgoing,
        )
        .await
        .unwrap_err()
        .to_string();
        for part in [
            "\"bad\"",
            "timer",
            "61000",
            "cannot say that \"bad\" is quiet",
        ] {
            assert!(error.contains(part), "{part:?} missing from {error}");
        }
    }
}

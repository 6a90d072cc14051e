//! Input messages of one partition whose produced messages wait for acknowledgement, in
//! input order: an input is done only when all of its acknowledgements arrived and every
//! earlier input is done.
//!
//! Acknowledgements arrive almost always in the order messages were sent, so only the
//! oldest input is polled; a queue of plain entries costs no allocation per message, where
//! a set of boxed futures cost two.
//!
//! Some changelog writes are held back until the rest of their input's output was
//! acknowledged (a window's closed mark, a fired timer's tombstone): the queue produces them
//! when their input is the oldest and everything else of it arrived.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use smallvec::SmallVec;

use super::ProcessorError;
use crate::context::OutgoingKind;
use crate::kafka::{Ack, Headers, KafkaError, OutgoingRecord, Producer};

/// An input message whose produced messages were all acknowledged.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) topic: Arc<str>,
    pub(super) offset: i64,
    /// The partition's stream time once it was handled.
    pub(super) stream_time: Option<i64>,
    /// The highest acknowledged changelog offset of each store of the partition's own
    /// (group table, window tables, timers) its handling wrote, by changelog topic.
    pub(super) changelogs: Changelogs,
}

/// What a produced message is for, its topic, and its acknowledgement; deferred work has
/// no topic.
pub(super) type Sent = (OutgoingKind, &'static str, Ack);

/// The highest acknowledged offset per changelog topic (most inputs write one store).
pub(super) type Changelogs = SmallVec<[(&'static str, i64); 1]>;

/// A handled input message, as the queue keeps it.
#[derive(Debug)]
pub(super) struct Input {
    pub(super) topic: Arc<str>,
    /// -1 for a stand-in (a visit, a tick), which has no offset to commit.
    pub(super) offset: i64,
    /// The key, to name the input if a produce fails.
    pub(super) key: Vec<u8>,
    /// The partition's stream time once it was handled.
    pub(super) stream_time: Option<i64>,
}

/// A write to a partition's local store (its group table, a window table, its timers) made
/// while its changelog record was on its way: if the record never arrives, the local row
/// holds what the changelog does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LocalWrite {
    /// `Changelog` (the group table), `Window` or `Timer`.
    pub(super) kind: OutgoingKind,
    /// The changelog topic, which names the window table.
    pub(super) topic: &'static str,
    pub(super) key: Vec<u8>,
}

/// A changelog write produced only once every other message of its input was acknowledged
/// (`Outgoing::push_scratch_following`), or one to a key such a write is held for, to keep
/// the changelog's order.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) kind: OutgoingKind,
    pub(super) topic: &'static str,
    pub(super) partition: i32,
    pub(super) key: Vec<u8>,
    /// `None` is a tombstone.
    pub(super) value: Option<Vec<u8>>,
    pub(super) headers: Option<Headers>,
    pub(super) timestamp: Option<i64>,
}

impl Held {
    fn record(&self) -> OutgoingRecord<'_> {
        OutgoingRecord {
            topic: self.topic,
            partition: self.partition,
            key: &self.key,
            value: self.value.as_deref(),
            headers: self.headers.as_ref(),
            timestamp: self.timestamp,
        }
    }
}

/// An input message one of whose produced messages failed. It has left the queue: the
/// inputs after it are settled one by one, never stuck behind it.
#[derive(Debug)]
pub(super) struct Failed {
    /// The error, naming the input.
    pub(super) error: ProcessorError,
    /// The local writes of the input: their rows may hold values their changelogs never
    /// received.
    pub(super) unconfirmed: Vec<LocalWrite>,
    /// Whether deferred work failed (or its handle was dropped), not a produce.
    pub(super) deferred: bool,
}

/// The waiting inputs of one partition.
pub(super) struct Pending {
    group: &'static str,
    partition: i32,
    /// Produces the held writes.
    producer: Arc<dyn Producer>,
    queue: VecDeque<Waiting>,
    /// Whether an input failed: nothing after it may be committed.
    failed: bool,
    /// The keys of the held writes of the queue, by topic, each with how many hold it.
    held_keys: HashMap<&'static str, HashMap<Vec<u8>, usize>>,
}

struct Waiting {
    input: Input,
    /// The group table's topic if its handling wrote the input key's row (the usual local
    /// write, kept without a copy of the key).
    own_row: Option<&'static str>,
    /// The other local writes its handling made (a timer's, a window's, another key's).
    writes: SmallVec<[LocalWrite; 1]>,
    /// Acknowledgements still awaited, in send order (most handlers produce one or two).
    acks: SmallVec<[Sent; 2]>,
    /// How many of `acks` arrived.
    arrived: usize,
    changelogs: Changelogs,
    /// Writes produced once every ack arrived; kept until theirs arrived too.
    held: Vec<Held>,
    /// The production of `held`, once started.
    release: Option<Release>,
}

impl Pending {
    pub(super) fn new(group: &'static str, partition: i32, producer: Arc<dyn Producer>) -> Self {
        Self {
            group,
            partition,
            producer,
            queue: VecDeque::new(),
            failed: false,
            held_keys: HashMap::new(),
        }
    }

    /// Whether a waiting input holds back a write of `key` to `topic`: a later write of the
    /// same key must wait behind it, or the changelog would end with the older one.
    pub(super) fn holds(&self, topic: &str, key: &[u8]) -> bool {
        self.held_keys
            .get(topic)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// Whether a waiting input holds back a write to `topic`: until it is produced, the
    /// store of `topic` holds a row its changelog does not, so its offset is not saved.
    pub(super) fn holds_any(&self, topic: &str) -> bool {
        self.held_keys.contains_key(topic)
    }

    /// Counts the keys of `held` as held (`add`) or no longer.
    fn count_held(&mut self, held: &[Held], add: bool) {
        for write in held {
            let keys = self.held_keys.entry(write.topic).or_default();
            if add {
                *keys.entry(write.key.clone()).or_default() += 1;
            } else if let Some(count) = keys.get_mut(&write.key) {
                *count -= 1;
                if *count == 0 {
                    keys.remove(&write.key);
                }
            }
        }
        self.held_keys.retain(|_, keys| !keys.is_empty());
    }

    /// Whether an input failed since the partition started (a produce, or deferred work):
    /// the inputs after it are settled but never done, so the commit never passes it.
    pub(super) fn has_failed(&self) -> bool {
        self.failed
    }

    /// Number of waiting inputs.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Adds an input with the acknowledgements of what its handler produced, and the writes
    /// to produce once they all arrived.
    pub(super) fn push(
        &mut self,
        input: Input,
        acks: impl IntoIterator<Item = Sent>,
        own_row: Option<&'static str>,
        writes: SmallVec<[LocalWrite; 1]>,
        held: Vec<Held>,
    ) {
        if !held.is_empty() {
            self.count_held(&held, true);
        }
        self.queue.push_back(Waiting {
            input,
            own_row,
            writes,
            acks: acks.into_iter().collect(),
            arrived: 0,
            changelogs: Changelogs::new(),
            held,
            release: None,
        });
    }

    /// Gives up on every waiting input: none of them is done. Returns the local writes of
    /// those with a changelog record not acknowledged yet: their rows may hold values their
    /// changelogs never receive.
    pub(super) fn abandon(&mut self) -> Vec<LocalWrite> {
        self.held_keys.clear();
        self.queue
            .drain(..)
            .filter(|waiting| {
                !waiting.held.is_empty()
                    || waiting.acks[waiting.arrived..]
                        .iter()
                        .any(|(kind, _, _)| kind.writes_a_store())
            })
            .flat_map(Waiting::local_writes)
            .collect()
    }

    /// The oldest input once all of its acknowledgements arrived, or once one of them failed
    /// (then the input leaves the queue and the error names it). Pending forever while
    /// nothing waits.
    pub(super) fn next_done(&mut self) -> NextDone<'_> {
        NextDone(self)
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Result<Done, Failed>> {
        let Some(oldest) = self.queue.front_mut() else {
            return Poll::Pending;
        };
        while let Some((kind, topic, ack)) = oldest.acks.get_mut(oldest.arrived) {
            match Pin::new(ack).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(delivery)) => {
                    if kind.writes_a_store() {
                        match oldest.changelogs.iter_mut().find(|(t, _)| t == topic) {
                            Some((_, offset)) => *offset = (*offset).max(delivery.offset),
                            None => oldest.changelogs.push((topic, delivery.offset)),
                        }
                    }
                    oldest.arrived += 1;
                }
                Poll::Ready(Err(source)) => {
                    let deferred = *kind == OutgoingKind::Deferred;
                    return Poll::Ready(Err(self.fail_oldest(deferred, source)));
                }
            }
        }
        if !oldest.held.is_empty() {
            // Everything else arrived: now the held writes, in order; then their acks.
            let release = oldest.release.get_or_insert_with(|| {
                let producer = self.producer.clone();
                let held = oldest.held.clone();
                Box::pin(async move {
                    let mut acks = Vec::with_capacity(held.len());
                    for write in &held {
                        let ack = crate::kafka::send(&*producer, &write.record()).await?;
                        acks.push((write.kind, write.topic, ack));
                    }
                    Ok(acks)
                })
            });
            return match release.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(acks)) => {
                    oldest.release = None;
                    let held = std::mem::take(&mut oldest.held);
                    oldest.acks.extend(acks);
                    self.count_held(&held, false);
                    self.poll_done(cx)
                }
                Poll::Ready(Err(source)) => Poll::Ready(Err(self.fail_oldest(false, source))),
            };
        }
        let Some(done) = self.queue.pop_front() else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(Done {
            topic: done.input.topic,
            offset: done.input.offset,
            stream_time: done.input.stream_time,
            changelogs: done.changelogs,
        }))
    }

    /// Takes the oldest input out of the queue as failed: `source` failed one of its
    /// produces, or its deferred work.
    fn fail_oldest(&mut self, deferred: bool, source: KafkaError) -> Failed {
        let Some(oldest) = self.queue.pop_front() else {
            // Only called with an oldest input.
            return Failed {
                deferred,
                error: ProcessorError::Kafka {
                    group: self.group,
                    topic: String::new(),
                    source,
                },
                unconfirmed: Vec::new(),
            };
        };
        self.count_held(&oldest.held, false);
        let key = String::from_utf8_lossy(&oldest.input.key).into_owned();
        let error = if deferred {
            ProcessorError::Callback {
                group: self.group,
                topic: oldest.input.topic.to_string(),
                partition: self.partition,
                offset: oldest.input.offset,
                key,
                message: match source {
                    KafkaError::Unacknowledged => "deferred commit dropped without done() or \
                         fail(): the deferred work never finished"
                        .to_owned(),
                    other => format!("deferred work failed: {other}"),
                },
            }
        } else {
            ProcessorError::HandlerProduce {
                group: self.group,
                topic: oldest.input.topic.to_string(),
                partition: self.partition,
                offset: oldest.input.offset,
                key,
                source: Box::new(source),
            }
        };
        // Polled again, the failed entry would answer at once, forever: it left the queue.
        self.failed = true;
        Failed {
            deferred,
            error,
            unconfirmed: oldest.local_writes(),
        }
    }
}

impl Waiting {
    /// Every local write of the input, its own row included.
    fn local_writes(self) -> Vec<LocalWrite> {
        let mut writes = self.writes.into_vec();
        if let Some(topic) = self.own_row {
            writes.push(LocalWrite {
                kind: OutgoingKind::Table,
                topic,
                key: self.input.key,
            });
        }
        writes
    }
}

/// The production of an input's held writes: their acknowledgements, in order.
type Release = BoxFuture<'static, Result<Vec<Sent>, KafkaError>>;

/// The future of [`Pending::next_done`].
pub(super) struct NextDone<'a>(&'a mut Pending);

impl Future for NextDone<'_> {
    type Output = Result<Done, Failed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_done(cx)
    }
}

#[cfg(test)]
mod tests;

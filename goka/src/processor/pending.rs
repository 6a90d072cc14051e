//! Input messages of one partition whose produced messages wait for acknowledgement, in
//! input order: an input is done only when all of its acknowledgements arrived and every
//! earlier input is done.
//!
//! Acknowledgements arrive almost always in the order messages were sent, so only the
//! oldest input is polled; a queue of plain entries costs no allocation per message, where
//! a set of boxed futures cost two.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smallvec::SmallVec;

use super::ProcessorError;
use crate::context::OutgoingKind;
use crate::kafka::{Ack, KafkaError};

/// An input message whose produced messages were all acknowledged.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) topic: Arc<str>,
    pub(super) offset: i64,
    /// Highest acknowledged changelog offset of the group table, if the handler wrote it.
    pub(super) changelog: Option<i64>,
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
    queue: VecDeque<Waiting>,
    /// Whether an input failed: nothing after it may be committed.
    failed: bool,
}

struct Waiting {
    topic: Arc<str>,
    offset: i64,
    /// The input's key, to name it if a produce fails.
    key: Vec<u8>,
    /// The group table's topic if its handling wrote the input key's row (the usual local
    /// write, kept without a copy of the key).
    own_row: Option<&'static str>,
    /// The other local writes its handling made (a timer's, a window's, another key's).
    writes: SmallVec<[LocalWrite; 1]>,
    /// Acknowledgements still awaited, in send order (most handlers produce one or two).
    acks: SmallVec<[(OutgoingKind, Ack); 2]>,
    /// How many of `acks` arrived.
    arrived: usize,
    changelog: Option<i64>,
}

impl Pending {
    pub(super) fn new(group: &'static str, partition: i32) -> Self {
        Self {
            group,
            partition,
            queue: VecDeque::new(),
            failed: false,
        }
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

    /// Adds an input with the acknowledgements of what its handler produced.
    pub(super) fn push(
        &mut self,
        topic: Arc<str>,
        offset: i64,
        key: Vec<u8>,
        acks: impl IntoIterator<Item = (OutgoingKind, Ack)>,
        own_row: Option<&'static str>,
        writes: SmallVec<[LocalWrite; 1]>,
    ) {
        self.queue.push_back(Waiting {
            topic,
            offset,
            key,
            own_row,
            writes,
            acks: acks.into_iter().collect(),
            arrived: 0,
            changelog: None,
        });
    }

    /// Gives up on every waiting input: none of them is done. Returns the local writes of
    /// those with a changelog record not acknowledged yet: their rows may hold values their
    /// changelogs never receive.
    pub(super) fn abandon(&mut self) -> Vec<LocalWrite> {
        self.queue
            .drain(..)
            .filter(|waiting| {
                waiting.acks[waiting.arrived..].iter().any(|(kind, _)| {
                    matches!(
                        kind,
                        OutgoingKind::Changelog | OutgoingKind::Window | OutgoingKind::Timer
                    )
                })
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
        while let Some((kind, ack)) = oldest.acks.get_mut(oldest.arrived) {
            match Pin::new(ack).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(delivery)) => {
                    if *kind == OutgoingKind::Changelog {
                        oldest.changelog = oldest.changelog.max(Some(delivery.offset));
                    }
                    oldest.arrived += 1;
                }
                Poll::Ready(Err(source)) => {
                    let deferred = *kind == OutgoingKind::Deferred;
                    let key = String::from_utf8_lossy(&oldest.key).into_owned();
                    let error = if deferred {
                        ProcessorError::Callback {
                            group: self.group,
                            topic: oldest.topic.to_string(),
                            partition: self.partition,
                            offset: oldest.offset,
                            key,
                            message: match source {
                                KafkaError::Unacknowledged => "deferred commit dropped without \
                                     done() or fail(): the deferred work never finished"
                                    .to_owned(),
                                other => format!("deferred work failed: {other}"),
                            },
                        }
                    } else {
                        ProcessorError::HandlerProduce {
                            group: self.group,
                            topic: oldest.topic.to_string(),
                            partition: self.partition,
                            offset: oldest.offset,
                            key,
                            source: Box::new(source),
                        }
                    };
                    // Polled again, the failed entry would answer at once, forever.
                    let unconfirmed = self
                        .queue
                        .pop_front()
                        .map(Waiting::local_writes)
                        .unwrap_or_default();
                    self.failed = true;
                    return Poll::Ready(Err(Failed {
                        deferred,
                        error,
                        unconfirmed,
                    }));
                }
            }
        }
        let Some(done) = self.queue.pop_front() else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(Done {
            topic: done.topic,
            offset: done.offset,
            changelog: done.changelog,
        }))
    }
}

impl Waiting {
    /// Every local write of the input, its own row included.
    fn local_writes(self) -> Vec<LocalWrite> {
        let mut writes = self.writes.into_vec();
        if let Some(topic) = self.own_row {
            writes.push(LocalWrite {
                kind: OutgoingKind::Changelog,
                topic,
                key: self.key,
            });
        }
        writes
    }
}

/// The future of [`Pending::next_done`].
pub(super) struct NextDone<'a>(&'a mut Pending);

impl Future for NextDone<'_> {
    type Output = Result<Done, Failed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_done(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::Delivery;
    use futures::FutureExt;

    /// The group table row of `key`, written locally.
    fn row(key: &[u8]) -> SmallVec<[LocalWrite; 1]> {
        SmallVec::from_elem(
            LocalWrite {
                kind: OutgoingKind::Changelog,
                topic: "g-table",
                key: key.to_vec(),
            },
            1,
        )
    }

    fn delivered(offset: i64) -> Ack {
        Ack::ready(Ok(Delivery {
            partition: 0,
            offset,
        }))
    }

    #[test]
    fn inputs_are_done_in_order_once_all_their_acks_arrived() {
        let mut pending = Pending::new("g", 3);
        let (late, late_ack) = Ack::channel();
        pending.push(
            "in".into(),
            7,
            b"a".to_vec(),
            [
                (OutgoingKind::Changelog, delivered(40)),
                (OutgoingKind::Emit, late_ack),
            ],
            Some("g-table"),
            SmallVec::new(),
        );
        pending.push(
            "in".into(),
            8,
            b"b".to_vec(),
            [(OutgoingKind::Changelog, delivered(41))],
            Some("g-table"),
            SmallVec::new(),
        );
        assert!(
            pending.next_done().now_or_never().is_none(),
            "7 waits for its emit"
        );
        late.send(Ok(Delivery {
            partition: 1,
            offset: 99,
        }));
        let first = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect("ok");
        assert_eq!((first.offset, first.changelog), (7, Some(40)));
        let second = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect("ok");
        assert_eq!((second.offset, second.changelog), (8, Some(41)));
        assert!(pending.is_empty());
        assert!(
            pending.next_done().now_or_never().is_none(),
            "nothing waits"
        );
    }

    #[test]
    fn a_failed_ack_names_its_input() {
        let mut pending = Pending::new("g", 3);
        pending.push("in".into(), 5, Vec::new(), [], None, SmallVec::new());
        pending.push(
            "in".into(),
            6,
            b"k".to_vec(),
            [(
                OutgoingKind::Emit,
                Ack::ready(Err(KafkaError::Unacknowledged)),
            )],
            None,
            SmallVec::new(),
        );
        let done = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect("ok");
        assert_eq!((done.offset, done.changelog), (5, None));
        let failed = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect_err("failed");
        let text = failed.error.to_string();
        assert!(text.contains("offset 6"), "{text}");
        assert!(matches!(
            failed.error,
            ProcessorError::HandlerProduce {
                partition: 3,
                offset: 6,
                ..
            }
        ));
        assert!(failed.unconfirmed.is_empty(), "the input wrote no row");
    }

    #[test]
    fn a_failed_input_leaves_the_queue_and_the_next_one_settles() {
        let mut pending = Pending::new("g", 0);
        pending.push(
            "in".into(),
            1,
            b"hot".to_vec(),
            [
                (
                    OutgoingKind::Changelog,
                    Ack::ready(Err(KafkaError::Unacknowledged)),
                ),
                (OutgoingKind::Emit, delivered(3)),
            ],
            Some("g-table"),
            SmallVec::new(),
        );
        pending.push(
            "in".into(),
            2,
            b"next".to_vec(),
            [(OutgoingKind::Changelog, delivered(4))],
            Some("g-table"),
            SmallVec::new(),
        );
        let failed = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect_err("failed");
        assert_eq!(failed.unconfirmed, row(b"hot").to_vec());
        assert_eq!(pending.len(), 1, "the failed input is gone");
        let next = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect("ok");
        assert_eq!((next.offset, next.changelog), (2, Some(4)));
        assert!(pending.is_empty());
    }
}

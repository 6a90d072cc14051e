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
use crate::kafka::Ack;

/// An input message whose produced messages were all acknowledged.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) topic: Arc<str>,
    pub(super) offset: i64,
    /// Highest acknowledged changelog offset of the group table, if the handler wrote it.
    pub(super) changelog: Option<i64>,
}

/// The waiting inputs of one partition.
pub(super) struct Pending {
    group: &'static str,
    partition: i32,
    queue: VecDeque<Waiting>,
}

struct Waiting {
    topic: Arc<str>,
    offset: i64,
    /// The input's key, to name it if a produce fails.
    key: Vec<u8>,
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
        }
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
    ) {
        self.queue.push_back(Waiting {
            topic,
            offset,
            key,
            acks: acks.into_iter().collect(),
            arrived: 0,
            changelog: None,
        });
    }

    /// The oldest input once all of its acknowledgements arrived; an error names the input
    /// whose produce failed. Pending forever while nothing waits.
    pub(super) fn next_done(&mut self) -> NextDone<'_> {
        NextDone(self)
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Result<Done, ProcessorError>> {
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
                    return Poll::Ready(Err(ProcessorError::HandlerProduce {
                        group: self.group,
                        topic: oldest.topic.to_string(),
                        partition: self.partition,
                        offset: oldest.offset,
                        key: String::from_utf8_lossy(&oldest.key).into_owned(),
                        source: Box::new(source),
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

/// The future of [`Pending::next_done`].
pub(super) struct NextDone<'a>(&'a mut Pending);

impl Future for NextDone<'_> {
    type Output = Result<Done, ProcessorError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_done(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{Delivery, KafkaError};
    use futures::FutureExt;

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
        );
        pending.push(
            "in".into(),
            8,
            b"b".to_vec(),
            [(OutgoingKind::Changelog, delivered(41))],
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
        pending.push("in".into(), 5, Vec::new(), []);
        pending.push(
            "in".into(),
            6,
            b"k".to_vec(),
            [(
                OutgoingKind::Emit,
                Ack::ready(Err(KafkaError::Unacknowledged)),
            )],
        );
        let done = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect("ok");
        assert_eq!((done.offset, done.changelog), (5, None));
        let err = pending
            .next_done()
            .now_or_never()
            .expect("ready")
            .expect_err("failed");
        let text = err.to_string();
        assert!(text.contains("offset 6") || text.contains('6'), "{text}");
        assert!(matches!(
            err,
            ProcessorError::HandlerProduce {
                partition: 3,
                offset: 6,
                ..
            }
        ));
    }
}

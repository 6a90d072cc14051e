//! The acknowledgements of one producer as slots in send order.
//!
//! A producer's answers arrive long after the send, when the memory of an acknowledgement
//! allocated per message has left the cache: completing and reading those cells was most of
//! what an emit cost beyond a bare produce. Slots in send order are written when answers
//! arrive (in send order, nearly) and read when messages are awaited (in send order, mostly):
//! both walk memory forwards, which the processor's prefetcher follows. The delivery
//! callback gets the sequence number, not a reference-counted cell.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Delivery, KafkaError, Sent, Settle};

/// A delivery or why it failed; the rare error is boxed so every slot stays small.
type Outcome = Result<Delivery, Box<KafkaError>>;

#[derive(Debug)]
enum Slot {
    /// No answer yet; the waker of the task waiting for it, if one does.
    Waiting(Option<Waker>),
    /// No answer yet, and nobody will read it: freed when it comes.
    Abandoned,
    /// No answer yet; it goes to this settlement when it comes, and the slot is freed.
    Detached(Arc<dyn Settle>),
    /// Answered, not read yet.
    Done(Outcome),
    /// Read, or answered after it was abandoned.
    Free,
}

/// The slots of one producer. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct AckRing {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Sequence number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Slots that fell out of the ring unread: an acknowledgement kept unawaited for long
    /// must not keep every later slot alive.
    held: HashMap<u64, Slot>,
}

/// Slots kept in order at most; beyond, the oldest unread ones move to `held`.
const MAX_IN_ORDER: usize = if cfg!(test) { 1 << 10 } else { 1 << 20 };

impl Ring {
    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        match seq.checked_sub(self.base) {
            Some(index) => usize::try_from(index)
                .ok()
                .and_then(|index| self.slots.get_mut(index)),
            None => self.held.get_mut(&seq),
        }
    }

    fn free(&mut self, seq: u64) {
        if seq < self.base {
            self.held.remove(&seq);
            return;
        }
        if let Some(slot) = self.slot(seq) {
            *slot = Slot::Free;
        }
        self.drop_free_front();
    }

    fn drop_free_front(&mut self) {
        while matches!(self.slots.front(), Some(Slot::Free)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    fn push(&mut self) -> u64 {
        if self.slots.len() >= MAX_IN_ORDER {
            if let Some(oldest) = self.slots.pop_front() {
                if !matches!(oldest, Slot::Free) {
                    self.held.insert(self.base, oldest);
                }
                self.base += 1;
                self.drop_free_front();
            }
        }
        self.slots.push_back(Slot::Waiting(None));
        self.base + self.slots.len() as u64 - 1
    }
}

impl AckRing {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Every operation leaves the ring consistent; a panic elsewhere cannot break it.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new slot, waiting for its answer; returns its sequence number.
    pub(crate) fn register(&self) -> u64 {
        self.lock().push()
    }

    /// Records the answer for `seq`, a message of which the client still knows `sent`; the
    /// first answer counts.
    pub(crate) fn complete(&self, seq: u64, result: Result<Delivery, KafkaError>, sent: Sent<'_>) {
        let mut ring = self.lock();
        let Some(slot) = ring.slot(seq) else { return };
        match std::mem::replace(slot, Slot::Free) {
            Slot::Waiting(waker) => {
                *slot = Slot::Done(result.map_err(Box::new));
                drop(ring);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Slot::Detached(settle) => {
                ring.free(seq);
                drop(ring);
                settle.settle(result, sent);
            }
            Slot::Abandoned => ring.free(seq),
            answered @ (Slot::Done(_) | Slot::Free) => *slot = answered,
        }
    }

    /// Nobody will await `seq`: its answer goes to `settle` when it comes. Returns the
    /// answer instead if it is there already.
    pub(crate) fn settle_later(
        &self,
        seq: u64,
        settle: Arc<dyn Settle>,
    ) -> Option<Result<Delivery, KafkaError>> {
        let mut ring = self.lock();
        match ring.slot(seq) {
            Some(slot @ Slot::Waiting(_)) => {
                *slot = Slot::Detached(settle);
                None
            }
            Some(slot @ Slot::Done(_)) => {
                let Slot::Done(outcome) = std::mem::replace(slot, Slot::Free) else {
                    unreachable!("matched above")
                };
                ring.free(seq);
                Some(outcome.map_err(|e| *e))
            }
            Some(Slot::Abandoned | Slot::Detached(_) | Slot::Free) | None => {
                Some(Err(KafkaError::Unacknowledged))
            }
        }
    }

    /// The answer for `seq` once there is one (then the slot is freed).
    pub(crate) fn poll(
        &self,
        seq: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Delivery, KafkaError>> {
        let mut ring = self.lock();
        match ring.slot(seq) {
            Some(Slot::Waiting(waker)) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Some(slot @ Slot::Done(_)) => {
                let Slot::Done(outcome) = std::mem::replace(slot, Slot::Free) else {
                    unreachable!("matched above")
                };
                ring.free(seq);
                Poll::Ready(outcome.map_err(|e| *e))
            }
            Some(Slot::Abandoned | Slot::Detached(_) | Slot::Free) | None => {
                Poll::Ready(Err(KafkaError::Unacknowledged))
            }
        }
    }

    /// Nobody will read the answer for `seq`.
    pub(crate) fn abandon(&self, seq: u64) {
        let mut ring = self.lock();
        match ring.slot(seq) {
            Some(slot @ Slot::Waiting(_)) => *slot = Slot::Abandoned,
            Some(Slot::Done(_)) => ring.free(seq),
            Some(Slot::Abandoned | Slot::Detached(_) | Slot::Free) | None => {}
        }
    }

    /// Slots in order and held aside (for tests).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let ring = self.lock();
        (ring.slots.len(), ring.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    fn delivered(offset: i64) -> Result<Delivery, KafkaError> {
        Ok(Delivery {
            partition: 0,
            offset,
        })
    }

    fn poll(ring: &AckRing, seq: u64) -> Poll<Result<Delivery, KafkaError>> {
        let waker = noop_waker();
        ring.poll(seq, &mut Context::from_waker(&waker))
    }

    #[test]
    fn answers_are_read_once_in_any_order_and_the_ring_shrinks() {
        let ring = AckRing::default();
        let seqs: Vec<u64> = (0..4).map(|_| ring.register()).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert!(poll(&ring, 0).is_pending());
        ring.complete(1, delivered(11), Sent::default());
        ring.complete(1, Err(KafkaError::Unacknowledged), Sent::default()); // too late: the first counts
        assert!(matches!(
            poll(&ring, 1),
            Poll::Ready(Ok(Delivery { offset: 11, .. }))
        ));
        assert_eq!(ring.sizes(), (4, 0), "slot 0 still waits at the front");
        ring.complete(0, delivered(10), Sent::default());
        ring.complete(2, delivered(12), Sent::default());
        assert!(matches!(
            poll(&ring, 0),
            Poll::Ready(Ok(Delivery { offset: 10, .. }))
        ));
        assert_eq!(ring.sizes(), (2, 0), "0 and 1 are gone");
        ring.abandon(2);
        assert_eq!(ring.sizes(), (1, 0), "an answered, abandoned slot is freed");
        ring.abandon(3);
        ring.complete(3, delivered(13), Sent::default());
        assert_eq!(
            ring.sizes(),
            (0, 0),
            "an abandoned slot is freed when answered"
        );
        assert_eq!(ring.register(), 4);
    }

    #[test]
    fn a_failure_keeps_its_error_and_a_waiting_task_is_woken() {
        let ring = std::sync::Arc::new(AckRing::default());
        let seq = ring.register();
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = futures::task::waker(std::sync::Arc::new(Flag(woken.clone())));
        assert!(ring
            .poll(seq, &mut Context::from_waker(&waker))
            .is_pending());
        ring.complete(
            seq,
            Err(KafkaError::Produce {
                topic: "t".into(),
                partition: 1,
                message: "too large".into(),
            }),
            Sent::default(),
        );
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        let Poll::Ready(Err(error)) = ring.poll(seq, &mut Context::from_waker(&waker)) else {
            panic!("the failure is ready")
        };
        assert!(error.to_string().contains("too large"), "{error}");
        assert!(
            matches!(
                ring.poll(seq, &mut Context::from_waker(&waker)),
                Poll::Ready(Err(KafkaError::Unacknowledged))
            ),
            "read once"
        );
    }

    /// An offset delivered (or none), the key and the bytes a settlement was told.
    type Settled = (Option<i64>, Vec<u8>, usize);

    /// Remembers what it was told.
    #[derive(Debug, Default)]
    struct Told(Mutex<Vec<Settled>>);

    impl Settle for Told {
        fn settle(&self, result: Result<Delivery, KafkaError>, sent: Sent<'_>) {
            let offset = result.ok().map(|d| d.offset);
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
                offset,
                sent.key.to_vec(),
                sent.bytes,
            ));
        }
    }

    #[test]
    fn a_detached_slot_is_settled_when_answered_and_freed() {
        let ring = AckRing::default();
        let told = Arc::new(Told::default());
        let (early, late, failed) = (ring.register(), ring.register(), ring.register());
        ring.complete(early, delivered(5), Sent::default());
        assert!(
            matches!(
                ring.settle_later(early, told.clone()),
                Some(Ok(Delivery { offset: 5, .. }))
            ),
            "an answer that came already goes back to the caller"
        );
        assert!(ring.settle_later(late, told.clone()).is_none());
        assert!(ring.settle_later(failed, told.clone()).is_none());
        let sent = Sent {
            key: b"k",
            bytes: 4,
        };
        ring.complete(late, delivered(6), sent);
        ring.complete(late, delivered(7), sent); // too late: the first counts
        ring.complete(failed, Err(KafkaError::Unacknowledged), sent);
        assert_eq!(
            *told.0.lock().unwrap_or_else(|p| p.into_inner()),
            [(Some(6), b"k".to_vec(), 4), (None, b"k".to_vec(), 4)]
        );
        assert_eq!(ring.sizes(), (0, 0), "every slot is free");
        assert!(matches!(
            poll(&ring, late),
            Poll::Ready(Err(KafkaError::Unacknowledged))
        ));
    }

    struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl futures::task::ArcWake for Flag {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_slot_kept_unread_does_not_keep_the_later_ones() {
        let ring = AckRing::default();
        let kept = ring.register();
        ring.complete(kept, delivered(0), Sent::default());
        for _ in 0..MAX_IN_ORDER + 10 {
            let seq = ring.register();
            ring.complete(seq, delivered(1), Sent::default());
            assert!(poll(&ring, seq).is_ready());
        }
        let (in_order, held) = ring.sizes();
        assert!(
            in_order <= 1 && held == 1,
            "{in_order} in order, {held} held"
        );
        assert!(matches!(
            poll(&ring, kept),
            Poll::Ready(Ok(Delivery { offset: 0, .. }))
        ));
        assert_eq!(ring.sizes().1, 0);
    }
}

//! What one partition produces, writes locally and waits for (Kafka Streams' record
//! collector, the sending half of goka's `cbContext`): it produces what handlers wrote, in
//! order, writes the partition's own rows once their changelog record is queued, waits for
//! the acknowledgements of each input's output in input order, reports the input done for
//! the commit, saves the offset of every store the partition owns, and after a failed
//! changelog write removes the rows that write covered.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;

use super::config::OutputTime;
use super::error::ProcessorError;
use super::pending::{Changelogs, Done, Held, Input, LocalWrite, Pending, Sent};
use super::shared::Shared;
use super::state::Stores;
use crate::context::{Outgoing, OutgoingKind};
use crate::kafka::{ConsumedMessage, OutgoingRecord};

/// Inputs with store writes acknowledged between two saves of the stores' offsets.
const OFFSET_EVERY: u32 = 1_000;

/// The sending side of one running partition.
pub(super) struct Collector {
    shared: Arc<Shared>,
    partition: i32,
    /// Handled inputs waiting for their output's acknowledgements, in input order.
    pending: Pending,
    /// Local writes whose changelog records may never have arrived: their rows are removed
    /// before the partition closes.
    unconfirmed: Vec<LocalWrite>,
    /// The highest acknowledged changelog offset of each owned store, not saved yet.
    unsaved: Changelogs,
    /// Inputs with acknowledged store writes since the offsets were last saved.
    acked_since_save: u32,
}

impl Collector {
    pub(super) fn new(shared: &Arc<Shared>, partition: i32) -> Self {
        Self {
            pending: Pending::new(shared.group, partition, shared.producer.clone()),
            shared: shared.clone(),
            partition,
            unconfirmed: Vec::new(),
            unsaved: Changelogs::new(),
            acked_since_save: 0,
        }
    }

    /// Handled inputs whose output is not acknowledged yet.
    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Produces what a handler wrote, in order, and queues the input with their acks. A
    /// write to an owned store reaches it only once its changelog message is queued, so a
    /// handler that fails, a skipped message or a produce that cannot be queued leaves no
    /// local row behind. Writes that follow the rest (closed marks, fired timers'
    /// tombstones), and later writes of a key one of them holds, are written locally now
    /// and produced by the queue once the rest was acknowledged. A failure names the input
    /// message that caused the produce.
    pub(super) async fn send(
        &mut self,
        stores: &Stores,
        message: &ConsumedMessage,
        outgoing: &mut Outgoing,
    ) -> Result<(), ProcessorError> {
        let shared = &*self.shared;
        let mut acks = SmallVec::<[Sent; 2]>::new();
        let mut own_row = None;
        let mut writes = SmallVec::<[LocalWrite; 1]>::new();
        let mut held: Vec<Held> = Vec::new();
        let timestamp = match shared.config.output_time {
            OutputTime::Input => message.timestamp,
            OutputTime::Now => None,
        };
        for out in outgoing.iter() {
            let local = stores.owned_store(out.kind, out.topic);
            let holds = out.follows
                || (local.is_some()
                    && (held
                        .iter()
                        .any(|h| h.topic == out.topic && h.key == out.key)
                        || self.pending.holds(out.topic, out.key)));
            if holds {
                held.push(Held {
                    kind: out.kind,
                    topic: out.topic,
                    partition: out.partition,
                    key: out.key.to_vec(),
                    value: out.value.map(<[u8]>::to_vec),
                    headers: out.headers.cloned(),
                    timestamp,
                });
            } else {
                let record = OutgoingRecord {
                    topic: out.topic,
                    partition: out.partition,
                    key: out.key,
                    value: out.value,
                    headers: out.headers,
                    timestamp,
                };
                match crate::kafka::send(&*shared.producer, &record).await {
                    Ok(ack) => acks.push((out.kind, out.topic, ack)),
                    Err(source) => {
                        // What was queued already is still in flight: wait for it, so that
                        // nothing of this message is left unaccounted for. Held writes were
                        // written locally but never produced.
                        let mut lost_row = !held.is_empty();
                        for (kind, _, ack) in acks {
                            lost_row |= ack.await.is_err() && kind.writes_a_store();
                        }
                        if lost_row {
                            self.unconfirmed.extend(writes);
                            self.unconfirmed.extend(own_row.map(|topic| LocalWrite {
                                kind: OutgoingKind::Table,
                                topic,
                                key: message.key.clone(),
                            }));
                        }
                        return Err(ProcessorError::HandlerProduce {
                            group: shared.group,
                            topic: message.topic.to_string(),
                            partition: self.partition,
                            offset: message.offset,
                            key: String::from_utf8_lossy(&message.key).into_owned(),
                            source: Box::new(source),
                        });
                    }
                }
            }
            if let Some(storage) = local {
                match out.value {
                    Some(value) => storage.set(out.key, value),
                    None => storage.delete(out.key),
                }
                .map_err(|source| ProcessorError::Storage {
                    group: shared.group,
                    source,
                })?;
                // The key actually written: usually the input's own row (kept without a
                // copy), else a timer's, a window's or a visited one.
                if out.kind == OutgoingKind::Table && out.key == message.key.as_slice() {
                    own_row = Some(out.topic);
                } else {
                    writes.push(LocalWrite {
                        kind: out.kind,
                        topic: out.topic,
                        key: out.key.to_vec(),
                    });
                }
            }
            let bytes = out.key.len() + out.value.map_or(0, <[u8]>::len);
            shared.outputs.produced(out.topic, bytes);
            shared.stats.messages_out.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .bytes_out
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        acks.extend(
            outgoing
                .take_deferred()
                .map(|done| (OutgoingKind::Deferred, "", done)),
        );
        let input = Input {
            topic: message.topic.clone(),
            offset: message.offset,
            key: message.key.clone(),
            stream_time: stores.resources.windows.stream_time(),
        };
        self.pending.push(input, acks, own_row, writes, held);
        Ok(())
    }

    /// The oldest input once its output was acknowledged; pending forever while nothing
    /// waits. A failure names the input; the rows its writes covered are remembered to be
    /// removed.
    pub(super) async fn next_done(&mut self) -> Result<Done, ProcessorError> {
        self.pending.next_done().await.map_err(|failed| {
            self.unconfirmed.extend(failed.unconfirmed);
            failed.error
        })
    }

    /// Reports `done` for the commit and notes its stores' changelog offsets, saving them
    /// every [`OFFSET_EVERY`] inputs that wrote a store.
    pub(super) fn complete(&mut self, stores: &Stores, done: Done) -> Result<(), ProcessorError> {
        if !done.changelogs.is_empty() {
            // A store's saved offset follows its changelog's acks, written now and then and
            // on close: an older saved offset only means a longer, idempotent replay of the
            // changelog after a crash.
            for (topic, offset) in done.changelogs {
                match self.unsaved.iter_mut().find(|(t, _)| *t == topic) {
                    Some((_, unsaved)) => *unsaved = (*unsaved).max(offset),
                    None => self.unsaved.push((topic, offset)),
                }
            }
            self.acked_since_save += 1;
            if self.acked_since_save >= OFFSET_EVERY {
                self.save_offsets(stores)?;
            }
        }
        // A visit's or a tick's stand-in (offset -1) has no input offset to commit.
        if done.offset >= 0 {
            self.shared
                .offsets
                .done(&done.topic, self.partition, done.offset, done.stream_time);
        }
        Ok(())
    }

    /// Waits for the oldest input and completes it.
    pub(super) async fn settle_oldest(&mut self, stores: &Stores) -> Result<(), ProcessorError> {
        let done = self.next_done().await?;
        self.complete(stores, done)
    }

    /// Waits until every input's output is acknowledged, completing each.
    pub(super) async fn settle(&mut self, stores: &Stores) -> Result<(), ProcessorError> {
        while !self.is_idle() {
            self.settle_oldest(stores).await?;
        }
        Ok(())
    }

    /// Finishes what is in flight as the partition stops, also after `failure`: every input
    /// whose output was acknowledged is reported done, so a restart does not handle it
    /// twice. After a failed produce or failed deferred work nothing later is reported
    /// done: the commit must never pass the input whose output was lost or whose work did
    /// not finish.
    ///
    /// The wait is bounded (`drain_timeout`): a revoke waits for it, and with it the whole
    /// group's rebalance. What is not done by then is not committed; the next owner
    /// handles it again. Deferred work is told by the partition's token
    /// (`ctx.cancellation()`), and deferred work that fails or is dropped once the
    /// partition stops (not for a failure of its own) is handled again the same way
    /// instead of stopping the processor.
    pub(super) async fn drain(&mut self, stores: &Stores, failure: &mut Option<ProcessorError>) {
        let group = self.shared.group;
        let mut produce_failed = self.pending.has_failed()
            || matches!(failure, Some(ProcessorError::HandlerProduce { .. }));
        let stopping = failure.is_none();
        let deadline = tokio::time::Instant::now() + self.shared.config.drain_timeout;
        while !self.pending.is_empty() {
            let Ok(next) = tokio::time::timeout_at(deadline, self.pending.next_done()).await else {
                let left = self.pending.len();
                self.unconfirmed.extend(self.pending.abandon());
                tracing::warn!(
                    group,
                    partition = self.partition,
                    messages = left,
                    "deliveries or deferred work of handled messages did not finish within \
                     drain_timeout: they are not committed, and the next owner handles them again"
                );
                break;
            };
            match next {
                Ok(done) if !produce_failed => {
                    if let Err(error) = self.complete(stores, done) {
                        failure.get_or_insert(error);
                    }
                }
                // Acknowledged, so its rows are in the changelog; but not done.
                Ok(_) => {}
                Err(failed) if failed.deferred && stopping => {
                    produce_failed = true;
                    tracing::warn!(group, partition = self.partition, error = %failed.error, "deferred work ended without finishing as the partition stopped: the next owner handles the message again");
                }
                Err(failed) => {
                    produce_failed = true;
                    self.unconfirmed.extend(failed.unconfirmed);
                    failure.get_or_insert(failed.error);
                }
            }
        }
    }

    /// Removes the local rows whose changelog writes may never have arrived, and resets
    /// their stores to recover from the changelog's beginning ([`Stores::forget`]); their
    /// unsaved offsets are dropped, so closing does not overwrite the reset.
    pub(super) fn forget_unconfirmed(&mut self, stores: &Stores) -> Result<(), ProcessorError> {
        if self.unconfirmed.is_empty() {
            return Ok(());
        }
        let reset = stores.forget(&self.unconfirmed)?;
        self.unsaved.retain(|(topic, _)| !reset.contains(topic));
        self.unconfirmed.clear();
        Ok(())
    }

    /// Saves the acknowledged changelog offset of every owned store. A store with a held
    /// write not produced yet holds a row its changelog does not: it keeps its older offset
    /// until the write is produced, so a crash meanwhile replays from before it.
    pub(super) fn save_offsets(&mut self, stores: &Stores) -> Result<(), ProcessorError> {
        self.acked_since_save = 0;
        let pending = &self.pending;
        let mut saved = Ok(());
        self.unsaved.retain(|(topic, offset)| {
            if pending.holds_any(topic) {
                return true;
            }
            if saved.is_ok() {
                saved = stores.save_offset(topic, *offset);
            }
            false
        });
        saved
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use futures::FutureExt;
    use tokio_util::sync::CancellationToken;

    use super::super::fixture::{click, shared, Counter, Gate, Watch, QUIET_AFTER};
    use super::super::handle::handle;
    use super::super::policies::Policies;
    use super::super::shared::{Shared, Storages};
    use super::super::state::{Stores, RECOVER_FROM_BEGINNING};
    use super::super::ProcessorConfig;
    use super::Collector;
    use crate::context::Outgoing;
    use crate::group::Group;
    use crate::processor::Handlers;

    /// Partition 0 of group `P` producing through a new [`Gate`].
    struct Partition {
        gate: Arc<Gate>,
        shared: Arc<Shared>,
        stores: Stores,
        collector: Collector,
    }

    impl Partition {
        fn of<P: Group>() -> Self {
            let gate = Arc::new(Gate::default());
            let shared = shared::<P>(gate.clone(), ProcessorConfig::default());
            let stores =
                Stores::open::<P>(&shared, 0, &CancellationToken::new(), Storages::new()).unwrap();
            let collector = Collector::new(&shared, 0);
            Self {
                gate,
                shared,
                stores,
                collector,
            }
        }

        /// Handles a click with `group` and sends what it wrote.
        async fn click<P: Handlers>(
            &mut self,
            group: &P,
            offset: i64,
            user: &str,
            at: i64,
        ) -> Result<(), super::ProcessorError> {
            let config = ProcessorConfig::default();
            let message = click(offset, user, Some("home"), at);
            let mut outgoing = Outgoing::default();
            handle(
                group,
                &self.stores.resources,
                &message,
                Policies::of::<P>(&config),
                &mut outgoing,
            )
            .await
            .unwrap();
            self.collector
                .send(&self.stores, &message, &mut outgoing)
                .await
        }

        /// The row of `key` in the group table, as stored locally.
        fn row(&self, key: &str) -> Option<Vec<u8>> {
            let table = self.stores.resources.table.as_ref().unwrap();
            table.get(key.as_bytes()).unwrap()
        }

        /// The offsets of the input partition to commit next, with the stream time after them.
        fn committable(&self) -> Vec<(i64, Option<i64>)> {
            let offsets = self.shared.offsets.take_changed();
            assert!(offsets
                .iter()
                .all(|o| o.topic == "unit-clicks" && o.partition == 0));
            offsets
                .iter()
                .map(|o| (o.offset, super::super::stream_time::decode(&o.metadata)))
                .collect()
        }
    }

    #[tokio::test]
    async fn a_row_is_stored_once_queued_and_inputs_are_done_in_order_once_acknowledged() {
        let mut p = Partition::of::<Counter>();
        p.click(&Counter, 0, "ann", 0).await.unwrap();
        assert!(p.row("ann").is_some(), "queued, so written locally");
        p.click(&Counter, 1, "bob", 0).await.unwrap();
        let topics: Vec<String> = p.gate.queued().into_iter().map(|q| q.0).collect();
        assert_eq!(
            topics,
            [
                "unit-counter-table",
                "unit-alerts",
                "unit-counter-table",
                "unit-alerts"
            ]
        );

        // Bob's output is acknowledged first: nothing is done before ann's is.
        p.gate.acknowledge(2);
        p.gate.acknowledge(3);
        assert!(p.collector.next_done().now_or_never().is_none());
        p.gate.acknowledge(0);
        assert!(
            p.collector.next_done().now_or_never().is_none(),
            "ann's emit waits"
        );
        p.gate.acknowledge(1);
        p.collector.settle_oldest(&p.stores).await.unwrap();
        assert_eq!(p.committable(), [(1, None)]);
        p.collector.settle(&p.stores).await.unwrap();
        assert_eq!(p.committable(), [(2, None)]);
        assert!(p.collector.is_idle());

        // The table's saved offset is its changelog's last acknowledged write (bob's, at 2).
        p.collector.save_offsets(&p.stores).unwrap();
        let table = p.stores.resources.table.as_ref().unwrap();
        assert_eq!(table.offset().unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_produce_that_cannot_be_queued_stops_naming_the_input_and_leaves_no_row() {
        let mut p = Partition::of::<Counter>();
        p.gate.refuse(true);
        let error = p
            .click(&Counter, 5, "ann", 0)
            .await
            .unwrap_err()
            .to_string();
        for part in ["offset 5", "\"ann\"", "the client's queue failed"] {
            assert!(error.contains(part), "{part:?} missing from {error}");
        }
        assert_eq!(p.row("ann"), None);
        assert!(p.collector.is_idle());
    }

    #[tokio::test]
    async fn a_failed_changelog_delivery_stops_naming_the_input_and_its_row_is_removed() {
        let mut p = Partition::of::<Counter>();
        p.click(&Counter, 0, "ann", 0).await.unwrap();
        p.gate.fail(0);
        p.gate.acknowledge(1);
        let error = p.collector.next_done().await.unwrap_err().to_string();
        assert!(
            error.contains("offset 0") && error.contains("did not store"),
            "{error}"
        );
        assert!(
            p.row("ann").is_some(),
            "removed only when the partition closes"
        );
        p.collector.forget_unconfirmed(&p.stores).unwrap();
        assert_eq!(p.row("ann"), None);
        let table = p.stores.resources.table.as_ref().unwrap();
        assert_eq!(
            table.offset().unwrap(),
            Some(RECOVER_FROM_BEGINNING),
            "the next owner recovers the table from the changelog's beginning"
        );
        assert!(p.committable().is_empty());
    }

    #[tokio::test]
    async fn after_a_failed_delivery_nothing_later_is_reported_done() {
        let mut p = Partition::of::<Counter>();
        p.click(&Counter, 0, "ann", 0).await.unwrap();
        p.click(&Counter, 1, "bob", 0).await.unwrap();
        p.gate.acknowledge(0);
        p.gate.fail(1);
        p.gate.acknowledge_all();
        let mut failure = None;
        p.collector.drain(&p.stores, &mut failure).await;
        let error = failure.unwrap().to_string();
        assert!(error.contains("offset 0"), "{error}");
        assert!(
            p.committable().is_empty(),
            "bob's input was acknowledged but is not done"
        );
        p.collector.forget_unconfirmed(&p.stores).unwrap();
        assert_eq!(p.row("ann"), None);
    }

    #[tokio::test]
    async fn a_fired_timers_tombstone_is_produced_after_its_output_and_every_store_saves_its_offset(
    ) {
        let mut p = Partition::of::<Watch>();
        p.click(&Watch, 0, "ann", 1_000).await.unwrap();
        p.gate.acknowledge_all();
        p.collector.settle(&p.stores).await.unwrap();
        assert_eq!(p.gate.queued().len(), 2, "ann's row and her timer");

        // Bob's click brings ann's timer: its output goes now, its tombstone once that was
        // acknowledged, though the timer is gone from the local store at once.
        p.click(&Watch, 1, "bob", 1_000 + QUIET_AFTER)
            .await
            .unwrap();
        let queued: Vec<String> = p.gate.queued().into_iter().map(|q| q.0).collect();
        assert_eq!(queued.len(), 5, "{queued:?}");
        assert_eq!(queued[4], "unit-alerts");
        let timers = p.stores.resources.timers.as_ref().unwrap();
        let rows = timers.storage.iter().unwrap().count();
        assert_eq!(rows, 1, "bob's timer only");
        p.gate.acknowledge_all();
        assert!(
            p.collector.next_done().now_or_never().is_none(),
            "the tombstone is not acknowledged"
        );
        let queued = p.gate.queued();
        assert_eq!(queued.len(), 6);
        assert_eq!(
            (queued[5].0.as_str(), queued[5].2.as_deref()),
            ("unit-quiet-timers", None)
        );
        p.gate.acknowledge_all();
        p.collector.settle(&p.stores).await.unwrap();
        assert_eq!(p.committable(), [(2, Some(1_000 + QUIET_AFTER))]);

        p.collector.save_offsets(&p.stores).unwrap();
        assert_eq!(
            p.stores.resources.table.as_ref().unwrap().offset().unwrap(),
            Some(2)
        );
        assert_eq!(
            timers.storage.offset().unwrap(),
            Some(5),
            "the timers' store too"
        );
    }
}

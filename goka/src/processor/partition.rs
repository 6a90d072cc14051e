//! One partition of a running processor (goka's `PartitionProcessor`): recovers the group
//! table and joined tables of the partition, then reads the partition's input and loop
//! messages from their queues, handles them one at a time, in order, and reports each input
//! offset as done only when every message its handler produced was acknowledged, in offset
//! order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;

use super::firing::Fired;
use super::group::Group;
use super::handle::{handle, handle_visit, Handled};
use super::pending::{Done, Held, Input, LocalWrite, Pending};
use super::policies::Policies;
use super::OutputTime;
use super::{ProcessorError, Shared};
use crate::context::{Outgoing, OutgoingKind, PartitionResources};
use crate::kafka::{
    BatchEvent, ConsumedBatch, ConsumedMessage, HeaderUse, KafkaError, OutgoingRecord,
    PartitionConsumer,
};
use crate::storage::Storage;
use crate::table::{
    next_of_any, Apply, Step, TableError, TablePartition, TableProgress, TableReader,
};

/// How often a partition looks for wall-clock timers that are due.
const WALL_TIMER_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Input messages whose acknowledgements may be outstanding at once, per partition.
const MAX_IN_FLIGHT: usize = 10_000;

/// The visits asked of a partition task.
pub(super) type Visits = tokio::sync::mpsc::UnboundedReceiver<super::visit::VisitRequest>;

/// How a visit ended.
enum Visited {
    All(u64),
    Stopped { visited: u64, total: u64 },
}

/// Changelog acknowledgements between two writes of the table's stored offset.
const OFFSET_EVERY: u32 = 1_000;
/// A stored table offset that makes the next recovery start at the changelog's beginning
/// (set when local rows may not match the changelog).
pub(crate) const RECOVER_FROM_BEGINNING: i64 = -1;

pub(super) struct PartitionTask<P: Group> {
    pub(super) group: Arc<P>,
    pub(super) shared: Arc<Shared>,
    pub(super) partition: i32,
    pub(super) stop: CancellationToken,
    /// Highest acknowledged changelog offset not yet stored, -1 for none.
    pub(super) unsaved_offset: AtomicI64,
    /// Acknowledged changelog writes since the offset was last stored.
    pub(super) unsaved: AtomicU32,
    /// Figures of each consumed topic of the partition.
    pub(super) inputs: Arc<[super::stats::InputFigures]>,
    /// The stream time committed with the partition's input offsets, if it was.
    pub(super) committed_stream_time: Option<i64>,
}

impl<P: Group> PartitionTask<P> {
    /// Runs until stopped, reading the partition's messages of each consumed topic (inputs
    /// and the loop topic) from `inputs`; finishes in-flight work before returning.
    pub(super) async fn run(
        self,
        mut inputs: Vec<Box<dyn PartitionConsumer>>,
        mut visits: Visits,
    ) -> Result<(), ProcessorError> {
        let shared = self.shared.clone();
        let partition = self.partition;
        shared.set_partition_state(partition, super::PartitionState::Recovering);
        // A partition followed in hot standby hands over its tables, nearly recovered.
        let handed_over = shared.standbys.take(partition).await;
        let resources = self.open_storages(handed_over)?;
        let mut joined = Vec::new();
        match self.recover_tables(&resources, &mut joined).await {
            Ok(true) => {}
            Ok(false) => return self.close(&resources, joined),
            Err(error) => {
                if let Err(also) = self.close(&resources, joined) {
                    tracing::warn!(group = P::GRAPH.group, partition, error = %also, "closing the partition after a failed recovery failed too");
                }
                return Err(error);
            }
        }
        shared.set_partition_state(partition, super::PartitionState::Running);
        tracing::info!(
            group = P::GRAPH.group,
            partition,
            "partition recovered; processing"
        );

        let result = self
            .process_loop(&resources, &mut inputs, &mut joined, &mut visits)
            .await;
        let closed = self.close(&resources, joined);
        result.and(closed)
    }

    /// Recovers the group table, then each joined table, whose readers go to `joined` to
    /// follow on; false when the partition was stopped first.
    async fn recover_tables(
        &self,
        resources: &PartitionResources,
        joined: &mut Vec<TableReader>,
    ) -> Result<bool, ProcessorError> {
        if let (Some(table), Some(edge)) = (&resources.table, P::GRAPH.table) {
            // Its reader is done once recovered: from now on the partition writes the table.
            if self.recover(edge.topic, table.clone()).await?.is_none() {
                return Ok(false);
            }
        }
        for (&topic, storage) in &resources.joins {
            match self.recover(topic, storage.clone()).await? {
                Some(reader) => joined.push(reader),
                None => return Ok(false),
            }
        }
        // Windows and timers are written by the partition alone, as the group table is.
        let windows = resources
            .windows
            .tables
            .iter()
            .map(|table| (table.edge.edge.topic, &table.storage));
        let timers = P::GRAPH
            .timers
            .map(|e| e.topic)
            .zip(resources.timers.as_ref().map(|t| &t.storage));
        for (topic, storage) in windows.chain(timers) {
            if self.recover(topic, storage.clone()).await?.is_none() {
                return Ok(false);
            }
        }
        resources
            .windows
            .index_stored(self.committed_stream_time)
            .map_err(|source| ProcessorError::Storage {
                group: self.shared.group,
                source,
            })?;
        Ok(true)
    }

    /// Recovers one table partition of this partition from its changelog; `None` when the
    /// partition was stopped first. The reader is positioned after the end, to follow on.
    async fn recover(
        &self,
        topic: &'static str,
        storage: Arc<dyn Storage>,
    ) -> Result<Option<TableReader>, ProcessorError> {
        let shared = &self.shared;
        let group = shared.group;
        let error = |e| table_error(group, topic, e);
        let stored = storage
            .offset()
            .map_err(|source| ProcessorError::Storage { group, source })?;
        tracing::info!(
            group,
            topic,
            partition = self.partition,
            ?stored,
            "recovering table partition"
        );
        let start = read_table(
            shared,
            &shared.table_figures,
            topic,
            self.partition,
            storage,
            stored,
        );
        let mut reader = tokio::select! {
            reader = start => reader.map_err(error)?,
            _ = self.stop.cancelled() => return Ok(None),
        };
        tokio::select! {
            recovered = reader.recover() => recovered.map_err(error)?,
            _ = self.stop.cancelled() => {
                reader.stop().map_err(error)?;
                return Ok(None);
            }
        }
        Ok(Some(reader))
    }

    fn open_storages(
        &self,
        mut handed_over: super::standby::Storages,
    ) -> Result<PartitionResources, ProcessorError> {
        let shared = &self.shared;
        let storage_error = |source| ProcessorError::Storage {
            group: P::GRAPH.group,
            source,
        };
        let mut open = |topic: &str| -> Result<Arc<dyn Storage>, ProcessorError> {
            if let Some(storage) = handed_over.remove(topic) {
                return Ok(storage);
            }
            Ok(shared
                .config
                .storage
                .build(topic, self.partition)
                .map_err(storage_error)?
                .into())
        };
        let table = match P::GRAPH.table {
            Some(edge) => {
                let storage = open(edge.topic)?;
                shared
                    .tables
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(self.partition, storage.clone());
                Some(storage)
            }
            None => None,
        };
        let mut joins = HashMap::new();
        for edge in P::GRAPH.joins {
            joins.insert(edge.topic, open(edge.topic)?);
        }
        let mut windows = Vec::with_capacity(P::GRAPH.windows.len());
        for edge in P::GRAPH.windows {
            windows.push((edge, open(edge.edge.topic)?));
        }
        let timers = P::GRAPH
            .timers
            .map(|edge| open(edge.topic).map(crate::timer::PartitionTimers::new))
            .transpose()?;
        let windows = Arc::new(crate::window::partition::PartitionWindows::new(windows));
        if !windows.tables.is_empty() {
            shared
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.partition, windows.clone());
        }
        Ok(PartitionResources {
            group: P::GRAPH.group,
            table,
            joins,
            lookups: shared.lookups.clone(),
            partition_counts: shared.partition_counts.clone(),
            partitioner: shared.config.partitioner.clone(),
            // Fires when the partition is revoked or the processor stops.
            cancel: self.stop.clone(),
            windows,
            timers,
            late_letters: super::policies::late_letter_topic::<P>(&shared.config),
        })
    }

    async fn process_loop(
        &self,
        resources: &PartitionResources,
        inputs: &mut [Box<dyn PartitionConsumer>],
        joins: &mut [TableReader],
        visits: &mut Visits,
    ) -> Result<(), ProcessorError> {
        let mut pending =
            Pending::new(P::GRAPH.group, self.partition, self.shared.producer.clone());
        let mut failure = None;
        // Keys whose local row may hold a write its changelog never received: those whose
        // changelog write failed.
        let mut unconfirmed: Vec<LocalWrite> = Vec::new();
        // The message being handled and what its handler produces; their buffers serve
        // every message.
        let mut message = ConsumedMessage::empty();
        let mut outgoing = Outgoing::default();
        // Wall-clock timers are looked at every second.
        let mut ticks = tokio::time::interval(WALL_TIMER_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timed = resources.timers.is_some();
        loop {
            let join_update = next_join_update(P::GRAPH.group, joins);
            let step = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                done = pending.next_done(), if !pending.is_empty() => match done {
                    Ok(done) => self.complete(resources, done),
                    Err(failed) => {
                        unconfirmed.extend(failed.unconfirmed);
                        Err(failed.error)
                    }
                },
                batch = next_input(inputs), if pending.len() < MAX_IN_FLIGHT => match batch {
                    Some(Ok(batch)) => {
                        self.process_batch(resources, &batch, &mut message, &mut outgoing, &mut pending, &mut unconfirmed).await
                    }
                    Some(Err(source)) => Err(ProcessorError::Kafka {
                        group: P::GRAPH.group,
                        topic: match &source {
                            KafkaError::Consume { topic, .. } => topic.clone(),
                            _ => String::new(),
                        },
                        source,
                    }),
                    None => break,
                },
                update = join_update => update,
                Some(request) = visits.recv() => {
                    self.visit(resources, request, &mut outgoing, &mut pending, &mut unconfirmed).await
                }
                _ = ticks.tick(), if timed && pending.len() < MAX_IN_FLIGHT => {
                    self.tick(resources, &mut outgoing, &mut pending, &mut unconfirmed).await
                }
            };
            if let Err(error) = step {
                failure = Some(error);
                break;
            }
        }
        // Finish what is in flight, also after a failure: every message whose produces were
        // acknowledged is reported done, so a restart does not handle it twice. After a
        // failed produce or failed deferred work (here, in a visit or before the loop
        // stopped) nothing later is reported done: the commit must never pass the message
        // whose output was lost or whose work did not finish.
        //
        // The wait is bounded (`drain_timeout`): a revoke waits for it, and with it the whole
        // group's rebalance. What is not done by then is not committed; the next owner
        // handles it again. Deferred work is told by the partition's token
        // (`ctx.cancellation()`), and deferred work that fails or is dropped once the
        // partition stops (not for a failure of its own) is handled again the same way
        // instead of stopping the processor.
        let mut produce_failed =
            pending.has_failed() || matches!(failure, Some(ProcessorError::HandlerProduce { .. }));
        let stopping = failure.is_none();
        let deadline = tokio::time::Instant::now() + self.shared.config.drain_timeout;
        while !pending.is_empty() {
            let Ok(next) = tokio::time::timeout_at(deadline, pending.next_done()).await else {
                let left = pending.len();
                unconfirmed.extend(pending.abandon());
                tracing::warn!(
                    group = P::GRAPH.group,
                    partition = self.partition,
                    messages = left,
                    "deliveries or deferred work of handled messages did not finish within \
                     drain_timeout: they are not committed, and the next owner handles them again"
                );
                break;
            };
            match next {
                Ok(done) if !produce_failed => {
                    if let Err(error) = self.complete(resources, done) {
                        failure.get_or_insert(error);
                    }
                }
                // Acknowledged, so its rows are in the changelog; but not done.
                Ok(_) => {}
                Err(failed) if failed.deferred && stopping => {
                    produce_failed = true;
                    tracing::warn!(group = P::GRAPH.group, partition = self.partition, error = %failed.error, "deferred work ended without finishing as the partition stopped: the next owner handles the message again");
                }
                Err(failed) => {
                    produce_failed = true;
                    unconfirmed.extend(failed.unconfirmed);
                    failure.get_or_insert(failed.error);
                }
            }
        }
        if !unconfirmed.is_empty() {
            self.forget_unconfirmed(resources, &unconfirmed)?;
        }
        failure.map_or(Ok(()), Err)
    }

    /// After a failed changelog write a local store (the group table, a window table, the
    /// timers) may hold rows its changelog does not: the rows written are deleted and each
    /// store's offset is reset, so whoever owns the partition next recovers it from the
    /// changelog's beginning instead of trusting them.
    fn forget_unconfirmed(
        &self,
        resources: &PartitionResources,
        writes: &[LocalWrite],
    ) -> Result<(), ProcessorError> {
        let storage_error = |source| ProcessorError::Storage {
            group: P::GRAPH.group,
            source,
        };
        tracing::warn!(
            group = P::GRAPH.group,
            partition = self.partition,
            rows = writes.len(),
            "a changelog write failed: the local rows it covered are removed and their stores \
             recover from the changelog's beginning when the partition starts next"
        );
        let mut reset: Vec<&Arc<dyn Storage>> = Vec::new();
        for write in writes {
            let storage = match write.kind {
                OutgoingKind::Changelog => resources.table.as_ref(),
                OutgoingKind::Window => resources
                    .windows
                    .table(write.topic)
                    .map(|table| &table.storage),
                OutgoingKind::Timer => resources.timers.as_ref().map(|t| &t.storage),
                _ => None,
            };
            let Some(storage) = storage else {
                continue;
            };
            storage.delete(&write.key).map_err(storage_error)?;
            if !reset.iter().any(|r| Arc::ptr_eq(r, storage)) {
                reset.push(storage);
            }
        }
        if writes.iter().any(|w| w.kind == OutgoingKind::Changelog) {
            self.unsaved_offset.store(-1, Ordering::Relaxed);
            self.unsaved.store(0, Ordering::Relaxed);
        }
        for storage in reset {
            storage
                .set_offset(RECOVER_FROM_BEGINNING)
                .map_err(storage_error)?;
        }
        Ok(())
    }

    fn complete(&self, resources: &PartitionResources, done: Done) -> Result<(), ProcessorError> {
        if let Some(offset) = done.changelog {
            // The table's stored offset follows the changelog acks, written every
            // OFFSET_EVERY acks and on close: an older stored offset only means a longer,
            // idempotent replay of the changelog after a crash.
            self.unsaved_offset.store(offset, Ordering::Relaxed);
            if self.unsaved.fetch_add(1, Ordering::Relaxed) + 1 >= OFFSET_EVERY {
                self.save_offset(resources)?;
            }
        }
        // A visit's stand-in messages (offset -1) have no input offset to commit.
        if done.offset >= 0 {
            self.shared
                .offsets
                .done(&done.topic, self.partition, done.offset, done.stream_time);
        }
        Ok(())
    }

    /// Runs a visit over every key of the partition's group table, answers its requester,
    /// and goes on: a visit that the partition's stop interrupts is answered with an error
    /// but stops nothing; a failing visit handler stops the processor, as a handler does.
    /// Fires the wall-clock timers that are due; what they produce is sent as a visit's is
    /// (a stand-in without an offset: the commit follows inputs only).
    async fn tick(
        &self,
        resources: &PartitionResources,
        outgoing: &mut Outgoing,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        let policies = Policies::of::<P>(&self.shared.config);
        let now = crate::kafka::now_millis();
        let fired = super::handle::handle_tick(
            &*self.group,
            resources,
            self.partition,
            now,
            policies,
            outgoing,
        )
        .await?;
        self.count_unfired(fired);
        if fired == Fired::default() {
            return Ok(());
        }
        let message = ConsumedMessage {
            topic: Arc::from(P::GRAPH.timers.map_or("", |e| e.topic)),
            partition: self.partition,
            offset: -1,
            key: Vec::new(),
            value: None,
            timestamp: Some(now),
            headers: crate::kafka::Headers::new(),
        };
        self.send(resources, &message, outgoing, pending, unconfirmed)
            .await
    }

    async fn visit(
        &self,
        resources: &PartitionResources,
        request: super::visit::VisitRequest,
        outgoing: &mut Outgoing,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        let super::visit::VisitRequest {
            visitor,
            value,
            done,
        } = request;
        let visit_error = |message: String| ProcessorError::Visit {
            group: P::GRAPH.group,
            visitor,
            message,
        };
        let mut outcome = self
            .visit_keys(resources, visitor, &*value, outgoing, pending, unconfirmed)
            .await;
        if let Ok(Visited::All(_)) = outcome {
            // The visit is done once what it wrote is acknowledged: a caller reading the
            // table's changelog after `visit_all` returned finds every row there.
            if let Err(error) = self.settle(resources, pending, unconfirmed).await {
                outcome = Err(error);
            }
        }
        let (answer, result) = match outcome {
            Ok(Visited::All(count)) => (Ok(count), Ok(())),
            Ok(Visited::Stopped { visited, total }) => (
                Err(visit_error(format!(
                    "partition {} stopped after {visited} of {total} keys",
                    self.partition
                ))),
                Ok(()),
            ),
            Err(error) => (Err(visit_error(error.to_string())), Err(error)),
        };
        let _ = done.send(answer);
        result
    }

    async fn visit_keys(
        &self,
        resources: &PartitionResources,
        visitor: &'static str,
        value: &(dyn std::any::Any + Send + Sync),
        outgoing: &mut Outgoing,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<Visited, ProcessorError> {
        let storage_error = |source| ProcessorError::Storage {
            group: P::GRAPH.group,
            source,
        };
        let Some(table) = &resources.table else {
            return Ok(Visited::All(0));
        };
        // A visit handler writes only its own key's row and no input is handled meanwhile:
        // the keys stay those counted here, and are read a chunk at a time in key order
        // instead of all into memory.
        let mut total = 0u64;
        for row in table.iter().map_err(storage_error)? {
            row.map_err(storage_error)?;
            total += 1;
        }
        let progress = |visited: u64, finished: bool| {
            self.shared
                .visit_progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    self.partition,
                    super::VisitProgress {
                        visitor,
                        visited,
                        total,
                        finished,
                    },
                );
        };
        progress(0, false);
        tracing::info!(
            group = P::GRAPH.group,
            partition = self.partition,
            visitor,
            keys = total,
            "visiting the group table"
        );
        let policies = Policies::of::<P>(&self.shared.config);
        let mut message = ConsumedMessage {
            topic: Arc::from(visitor),
            partition: self.partition,
            offset: -1,
            key: Vec::new(),
            value: None,
            timestamp: Some(crate::kafka::now_millis()),
            headers: crate::kafka::Headers::new(),
        };
        let mut visited = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys =
                keys_after(&**table, after.as_deref(), VISIT_CHUNK).map_err(storage_error)?;
            let Some(last) = keys.last() else {
                break;
            };
            after = Some(last.clone());
            for key in keys {
                if self.stop.is_cancelled() {
                    progress(visited, false);
                    return Ok(Visited::Stopped { visited, total });
                }
                // What earlier keys produced must be acknowledged before too much waits.
                while pending.len() >= MAX_IN_FLIGHT {
                    self.settle_oldest(resources, pending, unconfirmed).await?;
                }
                message.key = key;
                handle_visit(
                    &*self.group,
                    resources,
                    &message,
                    visitor,
                    value,
                    policies,
                    outgoing,
                )
                .await?;
                self.send(resources, &message, outgoing, pending, unconfirmed)
                    .await?;
                if visited % 256 == 0 {
                    progress(visited + 1, false);
                }
                visited += 1;
                tokio::task::consume_budget().await;
            }
        }
        progress(visited, true);
        Ok(Visited::All(visited))
    }

    /// Waits for the oldest input in `pending` and completes it.
    async fn settle_oldest(
        &self,
        resources: &PartitionResources,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        match pending.next_done().await {
            Ok(done) => self.complete(resources, done),
            Err(failed) => {
                unconfirmed.extend(failed.unconfirmed);
                Err(failed.error)
            }
        }
    }

    /// Waits until everything in `pending` is acknowledged, completing it.
    async fn settle(
        &self,
        resources: &PartitionResources,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        while !pending.is_empty() {
            self.settle_oldest(resources, pending, unconfirmed).await?;
        }
        Ok(())
    }

    /// Handles the messages of `batch` one by one, each read into `message`, and queues each
    /// in `pending` with the acknowledgements of what it produced. Problems the client
    /// retries by itself are logged.
    async fn process_batch(
        &self,
        resources: &PartitionResources,
        batch: &ConsumedBatch,
        message: &mut ConsumedMessage,
        outgoing: &mut Outgoing,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        let shared = &self.shared;
        let policies = Policies::of::<P>(&shared.config);
        let figures = self.inputs.iter().find(|f| **batch.topic() == *f.topic());
        for event in batch.events() {
            match event {
                BatchEvent::Message(m) => {
                    m.copy_into(message);
                    self.process(resources, message, policies, outgoing, pending, unconfirmed)
                        .await?;
                    if let Some(figures) = figures {
                        let size = message.key.len() + message.value.as_ref().map_or(0, Vec::len);
                        figures.handled(message.offset, size, message.timestamp);
                    }
                    // Reading the partition's queue never waits while a backlog lasts: give
                    // the other tasks of the runtime their turn now and then, as a channel
                    // read would.
                    tokio::task::consume_budget().await;
                }
                BatchEvent::Transient(error) => {
                    tracing::warn!(group = P::GRAPH.group, partition = self.partition, %error, "input partition lost its connection; retrying");
                }
                BatchEvent::EndOfPartition { .. } => {}
            }
        }
        Ok(())
    }

    /// Counts the stored timers that could not be fired and were removed or dead-lettered.
    fn count_unfired(&self, fired: Fired) {
        let stats = &self.shared.stats;
        stats
            .decode_errors
            .fetch_add(fired.undecodable as u64, Ordering::Relaxed);
        stats
            .dead_letters
            .fetch_add(fired.dead_lettered as u64, Ordering::Relaxed);
    }

    /// Handles one message and queues it in `pending` with the acknowledgements of what it
    /// produced.
    async fn process(
        &self,
        resources: &PartitionResources,
        message: &ConsumedMessage,
        policies: Policies<'_>,
        outgoing: &mut Outgoing,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        let shared = &self.shared;
        shared.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        let size = message.key.len() + message.value.as_ref().map_or(0, Vec::len);
        shared
            .stats
            .bytes_in
            .fetch_add(size as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let handled = handle(&*self.group, resources, message, policies, outgoing).await;
        shared.stats.callback_latency.record(started.elapsed());
        let (handled, timers) = handled?;
        self.count_unfired(timers);
        match handled {
            Handled::Undecodable => {
                shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
            Handled::DeadLettered => {
                shared.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            }
            Handled::Produced | Handled::Ignored => {}
        }
        self.send(resources, message, outgoing, pending, unconfirmed)
            .await
    }

    /// Produces what a handler wrote, in order, and queues the input with their acks. A
    /// group table write reaches local storage only once its changelog message is queued,
    /// so a handler that fails, a skipped message or a produce that cannot be queued leaves
    /// no local row behind. Writes that follow the rest (closed marks, fired timers'
    /// tombstones), and later writes of a key one of them holds, are written locally now
    /// and produced by the queue once the rest was acknowledged. A failure names the input
    /// message that caused the produce.
    async fn send(
        &self,
        resources: &PartitionResources,
        message: &ConsumedMessage,
        outgoing: &mut Outgoing,
        pending: &mut Pending,
        unconfirmed: &mut Vec<LocalWrite>,
    ) -> Result<(), ProcessorError> {
        let shared = &self.shared;
        let mut acks = SmallVec::<[(OutgoingKind, crate::kafka::Ack); 2]>::new();
        let mut own_row = None;
        let mut writes = SmallVec::<[LocalWrite; 1]>::new();
        let mut held: Vec<Held> = Vec::new();
        let timestamp = match shared.config.output_time {
            OutputTime::Input => message.timestamp,
            OutputTime::Now => None,
        };
        for out in outgoing.iter() {
            let local = match out.kind {
                OutgoingKind::Changelog => resources.table.as_ref(),
                OutgoingKind::Window => resources
                    .windows
                    .table(out.topic)
                    .map(|table| &table.storage),
                OutgoingKind::Timer => resources.timers.as_ref().map(|t| &t.storage),
                _ => None,
            };
            let holds = out.follows
                || (local.is_some()
                    && (held
                        .iter()
                        .any(|h| h.topic == out.topic && h.key == out.key)
                        || pending.holds(out.topic, out.key)));
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
                    Ok(ack) => acks.push((out.kind, ack)),
                    Err(source) => {
                        // What was queued already is still in flight: wait for it, so that
                        // nothing of this message is left unaccounted for. Held writes were
                        // written locally but never produced.
                        let mut lost_row = !held.is_empty();
                        for (kind, ack) in acks {
                            lost_row |= ack.await.is_err()
                                && matches!(
                                    kind,
                                    OutgoingKind::Changelog
                                        | OutgoingKind::Window
                                        | OutgoingKind::Timer
                                );
                        }
                        if lost_row {
                            unconfirmed.extend(writes);
                            unconfirmed.extend(own_row.map(|topic| LocalWrite {
                                kind: OutgoingKind::Changelog,
                                topic,
                                key: message.key.clone(),
                            }));
                        }
                        return Err(ProcessorError::HandlerProduce {
                            group: P::GRAPH.group,
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
                    group: P::GRAPH.group,
                    source,
                })?;
                // The key actually written: usually the input's own row (kept without a
                // copy), else a timer's, a window's or a visited one.
                if out.kind == OutgoingKind::Changelog && out.key == message.key.as_slice() {
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
                .map(|done| (OutgoingKind::Deferred, done)),
        );
        let input = Input {
            topic: message.topic.clone(),
            offset: message.offset,
            key: message.key.clone(),
            stream_time: resources.windows.stream_time(),
        };
        pending.push(input, acks, own_row, writes, held);
        Ok(())
    }

    fn save_offset(&self, resources: &PartitionResources) -> Result<(), ProcessorError> {
        self.unsaved.store(0, Ordering::Relaxed);
        let offset = self.unsaved_offset.swap(-1, Ordering::Relaxed);
        match (&resources.table, offset >= 0) {
            (Some(table), true) => {
                table
                    .set_offset(offset)
                    .map_err(|source| ProcessorError::Storage {
                        group: P::GRAPH.group,
                        source,
                    })
            }
            _ => Ok(()),
        }
    }

    fn close(
        &self,
        resources: &PartitionResources,
        joined: Vec<TableReader>,
    ) -> Result<(), ProcessorError> {
        let storage_error = |source| ProcessorError::Storage {
            group: P::GRAPH.group,
            source,
        };
        for reader in joined {
            let topic = reader.topic();
            reader
                .stop()
                .map_err(|e| table_error(P::GRAPH.group, topic, e))?;
        }
        self.save_offset(resources)?;
        self.shared
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.partition);
        self.shared
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.partition);
        self.shared
            .set_partition_state(self.partition, super::PartitionState::Stopped);
        if let Some(table) = &resources.table {
            table.close().map_err(storage_error)?;
        }
        for storage in resources.joins.values() {
            storage.close().map_err(storage_error)?;
        }
        for table in &resources.windows.tables {
            table.storage.close().map_err(storage_error)?;
        }
        Ok(())
    }
}

/// The next batch of any input; `None` once one of them was closed.
async fn next_input(
    inputs: &mut [Box<dyn PartitionConsumer>],
) -> Option<Result<ConsumedBatch, crate::kafka::KafkaError>> {
    match inputs {
        [] => None,
        [only] => only.next_batch().await,
        several => {
            let nexts = several.iter_mut().map(|input| input.next_batch());
            futures::future::select_all(nexts).await.0
        }
    }
}

/// Starts a reader of one table partition of the processor, whose figures `figures` keeps
/// from now on. Table rows keep no headers, and a processor decodes them when a handler
/// reads them.
pub(super) async fn read_table(
    shared: &Shared,
    figures: &super::stats::Tables,
    topic: &'static str,
    partition: i32,
    storage: Arc<dyn Storage>,
    stored: Option<i64>,
) -> Result<TableReader, TableError> {
    let progress = Arc::new(TableProgress::new(topic, partition, stored));
    figures.add(partition, progress.clone());
    // The update callback applies the group table's changelog, not joined tables'.
    let apply = Apply {
        update: shared
            .config
            .update
            .clone()
            .filter(|_| Some(topic) == shared.table_topic),
        ..Apply::default()
    };
    TableReader::start(
        &*shared.client,
        topic,
        vec![TablePartition { storage, progress }],
        HeaderUse::Skip,
        apply,
    )
    .await
}

/// Waits for the next updates of any joined table and applies them; pending forever if there
/// are no joins.
async fn next_join_update(
    group: &'static str,
    joins: &mut [TableReader],
) -> Result<(), ProcessorError> {
    let (index, step) = next_of_any(joins).await;
    match step {
        Ok(Step::Closed) => futures::future::pending().await,
        Ok(_) => Ok(()),
        Err(error) => Err(table_error(group, joins[index].topic(), error)),
    }
}

/// A table reader's error, with the group and table it happened in.
fn table_error(group: &'static str, topic: &'static str, error: TableError) -> ProcessorError {
    match error {
        TableError::Storage(source) => ProcessorError::Storage { group, source },
        TableError::Kafka(source) => ProcessorError::Kafka {
            group,
            topic: topic.to_owned(),
            source,
        },
        // Processors read their tables unchecked; kept apart should that change.
        decode @ TableError::Decode { .. } => ProcessorError::Kafka {
            group,
            topic: topic.to_owned(),
            source: KafkaError::Consume {
                topic: topic.to_owned(),
                message: decode.to_string(),
            },
        },
    }
}

/// How many keys a visit reads from storage at a time.
const VISIT_CHUNK: usize = 1_024;

/// Up to `count` keys of `table` after `after` (from the first without it), in key order.
fn keys_after(
    table: &dyn crate::storage::Storage,
    after: Option<&[u8]>,
    count: usize,
) -> Result<Vec<Vec<u8>>, crate::storage::StorageError> {
    // The smallest key greater than `after` is `after` followed by a zero byte.
    let start = after.map(|after| [after, &[0]].concat());
    let range = crate::storage::KeyRange { start, end: None };
    table
        .range(range)?
        .take(count)
        .map(|row| row.map(|(key, _)| key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::keys_after;
    use crate::storage::{MemoryStorage, Storage};

    #[test]
    fn a_visit_reads_the_keys_in_chunks_each_after_the_last() {
        let table = MemoryStorage::new("t", 0);
        for key in [&b"a"[..], b"ab", b"b", b"c"] {
            table.set(key, b"v").unwrap();
        }
        let first = keys_after(&table, None, 2).unwrap();
        assert_eq!(first, [b"a".to_vec(), b"ab".to_vec()]);
        let second = keys_after(&table, Some(b"ab"), 2).unwrap();
        assert_eq!(second, [b"b".to_vec(), b"c".to_vec()]);
        assert!(keys_after(&table, Some(b"c"), 2).unwrap().is_empty());
    }
}

//! One partition of a running processor (goka's `PartitionProcessor`): opens and recovers
//! the partition's stores ([`Stores`]), then reads the partition's input and loop messages
//! from their queues and handles them one at a time, in order; the [`Collector`] produces
//! what each handler wrote and reports the input done once all of it was acknowledged, in
//! offset order. Visits and wall-clock timers run between messages.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::collector::Collector;
use super::error::ProcessorError;
use super::firing::Fired;
use super::handle::{handle, handle_visit, Handled};
use super::handlers::Handlers;
use super::policies::Policies;
use super::shared::Shared;
use super::state::{Joined, Stores};
use super::stats::PartitionState;
use crate::context::Outgoing;
use crate::kafka::{BatchEvent, ConsumedBatch, ConsumedMessage, KafkaError, PartitionConsumer};

/// How often a partition looks for wall-clock timers that are due.
const WALL_TIMER_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Input messages whose acknowledgements may be outstanding at once, per partition.
const MAX_IN_FLIGHT: usize = 10_000;

/// The visits asked of a partition task.
pub(super) type VisitRequests = tokio::sync::mpsc::UnboundedReceiver<super::visit::VisitRequest>;

/// How a visit ended.
enum Visited {
    All(u64),
    Stopped { visited: u64, total: u64 },
}

pub(super) struct PartitionTask<P: Handlers> {
    pub(super) group: Arc<P>,
    pub(super) shared: Arc<Shared>,
    pub(super) partition: i32,
    pub(super) stop: CancellationToken,
    /// Figures of each consumed topic of the partition.
    pub(super) inputs: Arc<[super::stats::InputFigures]>,
    /// The stream time committed with the partition's input offsets, if it was.
    pub(super) committed_stream_time: Option<i64>,
}

impl<P: Handlers> PartitionTask<P> {
    /// Runs until stopped, reading the partition's messages of each consumed topic (inputs
    /// and the loop topic) from `inputs`; finishes in-flight work before returning.
    pub(super) async fn run(
        self,
        mut inputs: Vec<Box<dyn PartitionConsumer>>,
        mut visits: VisitRequests,
    ) -> Result<(), ProcessorError> {
        let shared = self.shared.clone();
        let partition = self.partition;
        shared.set_partition_state(partition, PartitionState::Recovering);
        // A partition followed in hot standby hands over its tables, nearly recovered.
        let handed_over = shared.standbys.take(partition).await;
        let mut stores = Stores::open::<P>(&shared, partition, &self.stop, handed_over)?;
        let mut joined = Joined::default();
        let recovered = stores
            .recover(&self.stop, self.committed_stream_time, &mut joined)
            .await;
        match recovered {
            Ok(true) => {}
            Ok(false) => return stores.close(joined),
            Err(error) => {
                if let Err(also) = stores.close(joined) {
                    tracing::warn!(group = P::GRAPH.group, partition, error = %also, "closing the partition after a failed recovery failed too");
                }
                return Err(error);
            }
        }
        shared.set_partition_state(partition, PartitionState::Running);
        tracing::info!(
            group = P::GRAPH.group,
            partition,
            "partition recovered; processing"
        );
        let mut collector = Collector::new(&shared, partition);
        if let Some(transaction) = &shared.transaction {
            transaction.enter(partition, stores.hold_for_transaction());
        }
        let result = self
            .process_loop(
                &stores,
                &mut collector,
                &mut joined,
                &mut inputs,
                &mut visits,
            )
            .await;
        if let Some(transaction) = &shared.transaction {
            transaction.leave(partition);
        }
        let saved = collector.save_offsets(&stores);
        let closed = stores.close(joined);
        result.and(saved).and(closed)
    }

    async fn process_loop(
        &self,
        stores: &Stores,
        collector: &mut Collector,
        joined: &mut Joined,
        inputs: &mut [Box<dyn PartitionConsumer>],
        visits: &mut VisitRequests,
    ) -> Result<(), ProcessorError> {
        let mut failure = None;
        // The message being handled and what its handler produces; their buffers serve
        // every message.
        let mut message = ConsumedMessage::empty();
        let mut outgoing = Outgoing::default();
        // Wall-clock timers, and the stream time of an idle partition, are looked at every
        // second.
        let mut ticks = tokio::time::interval(WALL_TIMER_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Only an idle advance needs to know when the last message came.
        let idling = self.shared.config.idle_advance.is_some()
            && (stores.resources.timers.is_some() || !stores.resources.windows.tables.is_empty());
        let ticking = stores.resources.timers.is_some() || idling;
        let mut last_input = tokio::time::Instant::now();
        // Under exactly-once, a transaction's commit pauses the partition: it finishes what
        // it has in flight and takes nothing new until the commit is done.
        let mut gate = self.shared.transaction.as_ref().map(|t| t.gate());
        loop {
            let paused = match (&gate, &self.shared.transaction) {
                (Some(gate), Some(transaction)) => {
                    let now = *gate.borrow();
                    if now.paused && collector.is_idle() {
                        transaction.quiet(self.partition, now.round);
                    }
                    now.paused
                }
                _ => false,
            };
            let step = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                done = collector.next_done(), if !collector.is_idle() => {
                    done.and_then(|done| collector.complete(stores, done))
                }
                () = super::transaction::moved(&mut gate) => Ok(()),
                batch = next_input(inputs), if !paused && collector.in_flight() < MAX_IN_FLIGHT => match batch {
                    Some(Ok(batch)) => {
                        if idling && batch.has_messages() {
                            last_input = tokio::time::Instant::now();
                        }
                        self.process_batch(stores, collector, &batch, &mut message, &mut outgoing).await
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
                update = joined.next_update(P::GRAPH.group) => update,
                Some(request) = visits.recv(), if !paused => {
                    self.visit(stores, collector, request, &mut outgoing).await
                }
                _ = ticks.tick(), if !paused && ticking && collector.in_flight() < MAX_IN_FLIGHT => {
                    self.tick(stores, collector, last_input, &mut outgoing).await
                }
            };
            if let Err(error) = step {
                failure = Some(error);
                break;
            }
        }
        collector.drain(stores, &mut failure).await;
        collector.forget_unconfirmed(stores)?;
        failure.map_or(Ok(()), Err)
    }

    /// Fires the wall-clock timers that are due and, once the partition had no message for
    /// [`idle_advance`](super::ProcessorConfig::idle_advance), moves its stream time on to
    /// the wall clock minus that; what they produce is sent as a visit's is (a stand-in
    /// without an offset: the commit follows inputs only).
    async fn tick(
        &self,
        stores: &Stores,
        collector: &mut Collector,
        last_input: tokio::time::Instant,
        outgoing: &mut Outgoing,
    ) -> Result<(), ProcessorError> {
        let policies = Policies::of::<P>(&self.shared.config);
        let now = crate::kafka::now_millis();
        let idle_time = self
            .shared
            .config
            .idle_advance
            .filter(|idle| last_input.elapsed() >= *idle)
            .map(|idle| super::handle::idle_time(idle, now));
        let fired = super::handle::handle_tick(
            &*self.group,
            &stores.resources,
            self.partition,
            now,
            idle_time,
            policies,
            outgoing,
        )
        .await?;
        self.count_unfired(fired);
        if outgoing.iter().next().is_none() {
            return Ok(());
        }
        let stand_in = P::GRAPH.timers.or(P::GRAPH.inputs.first().copied());
        let message = ConsumedMessage {
            topic: Arc::from(stand_in.map_or("", |e| e.topic)),
            partition: self.partition,
            offset: -1,
            key: Vec::new(),
            value: None,
            timestamp: Some(now),
            headers: crate::kafka::Headers::new(),
        };
        collector.send(stores, &message, outgoing).await
    }

    /// Runs a visit over every key of the partition's group table, answers its requester
    /// once what it wrote is acknowledged, and goes on: a visit that the partition's stop
    /// interrupts is answered with an error but stops nothing; a failing visit handler stops
    /// the processor, as a handler does.
    async fn visit(
        &self,
        stores: &Stores,
        collector: &mut Collector,
        request: super::visit::VisitRequest,
        outgoing: &mut Outgoing,
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
            .visit_keys(stores, collector, visitor, &*value, outgoing)
            .await;
        if let Ok(Visited::All(_)) = outcome {
            // The visit is done once what it wrote is acknowledged: a caller reading the
            // table's changelog after `visit_all` returned finds every row there.
            if let Err(error) = collector.settle(stores).await {
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
        stores: &Stores,
        collector: &mut Collector,
        visitor: &'static str,
        value: &(dyn std::any::Any + Send + Sync),
        outgoing: &mut Outgoing,
    ) -> Result<Visited, ProcessorError> {
        let storage_error = |source| ProcessorError::Storage {
            group: P::GRAPH.group,
            source,
        };
        let Some(table) = &stores.resources.table else {
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
                while collector.in_flight() >= MAX_IN_FLIGHT {
                    collector.settle_oldest(stores).await?;
                }
                message.key = key;
                handle_visit(
                    &*self.group,
                    &stores.resources,
                    &message,
                    visitor,
                    value,
                    policies,
                    outgoing,
                )
                .await?;
                collector.send(stores, &message, outgoing).await?;
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

    /// Handles the messages of `batch` one by one, each read into `message`, and queues each
    /// in the collector with the acknowledgements of what it produced. Problems the client
    /// retries by itself are logged.
    async fn process_batch(
        &self,
        stores: &Stores,
        collector: &mut Collector,
        batch: &ConsumedBatch,
        message: &mut ConsumedMessage,
        outgoing: &mut Outgoing,
    ) -> Result<(), ProcessorError> {
        let shared = &self.shared;
        let policies = Policies::of::<P>(&shared.config);
        let figures = self.inputs.iter().find(|f| **batch.topic() == *f.topic());
        for event in batch.events() {
            match event {
                BatchEvent::Message(m) => {
                    m.copy_into(message);
                    // The figures follow the record's own time, the handlers the event time.
                    let record_time = message.timestamp;
                    super::handle::apply_event_time(&*self.group, message)?;
                    self.process(stores, collector, message, policies, outgoing)
                        .await?;
                    if let Some(figures) = figures {
                        let size = message.key.len() + message.value.as_ref().map_or(0, Vec::len);
                        figures.handled(message.offset, size, record_time);
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

    /// Handles one message and queues it in the collector with the acknowledgements of what it
    /// produced.
    async fn process(
        &self,
        stores: &Stores,
        collector: &mut Collector,
        message: &ConsumedMessage,
        policies: Policies<'_>,
        outgoing: &mut Outgoing,
    ) -> Result<(), ProcessorError> {
        let shared = &self.shared;
        shared.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        let size = message.key.len() + message.value.as_ref().map_or(0, Vec::len);
        shared
            .stats
            .bytes_in
            .fetch_add(size as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let handled = handle(&*self.group, &stores.resources, message, policies, outgoing).await;
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
        collector.send(stores, message, outgoing).await
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

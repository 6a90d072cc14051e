//! The reader of table partitions: starts each partition after its local state, applies the
//! changelog in batches, notices when a partition caught up, checks values and keeps the
//! figures. Views, group-table recoveries and joined tables all read through it.

use std::sync::Arc;

use futures::FutureExt;

use super::progress::{TableProgress, TableState};
use super::start::{ahead, table_start};
use crate::codec::{CodecError, DecodeErrorPolicy};
use crate::kafka::{
    BatchEvent, Client, ConsumedMessage, HeaderUse, KafkaError, MessageRef, PartitionConsumer,
    StartOffset,
};
use crate::storage::{Storage, StorageError, WriteBatch};

/// Changelog rows per storage write while a partition has more ready to read.
pub(crate) const RECOVERY_BATCH: usize = 5_000;

/// Checks that a changelog value decodes ([`Codec::validate`](crate::codec::Codec::validate)
/// of the table's value codec).
pub(crate) type Validate = fn(&[u8]) -> Result<(), CodecError>;

/// A table partition a reader keeps: its local storage and its figures.
#[derive(Clone)]
pub(crate) struct TablePartition {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) progress: Arc<TableProgress>,
}

/// How a changelog message is applied to local storage (goka's `UpdateCallback`). The
/// default sets the row, or deletes it for a tombstone.
pub type UpdateCallback =
    dyn Fn(&dyn Storage, &ConsumedMessage) -> Result<(), StorageError> + Send + Sync + 'static;

/// How a reader applies what it reads.
#[derive(Clone, Default)]
pub(crate) struct Apply {
    /// Checks each value before it is applied; `None` applies values unchecked (processors
    /// decode their tables' rows when a handler reads them).
    pub(crate) validate: Option<Validate>,
    /// What a value that does not decode does.
    pub(crate) decode_errors: DecodeErrorPolicy,
    /// Applies each message itself (goka's update callback) instead of the reader's batches.
    pub(crate) update: Option<Arc<UpdateCallback>>,
}

/// Why a reader stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TableError {
    /// The changelog cannot be read, or the local state does not fit it.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Local storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A value did not decode under [`DecodeErrorPolicy::Fail`].
    #[error(
        "value at partition {partition} offset {offset} (key {key:?}) does not decode: {source}"
    )]
    Decode {
        partition: i32,
        offset: i64,
        key: String,
        source: CodecError,
    },
}

/// What one read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Messages were read; no partition changed its state.
    Read,
    /// A partition caught up or lost its connection.
    StateChanged,
    /// The consumer was closed.
    Closed,
}

/// Reads the changelog of some partitions of one table topic with one consumer.
pub(crate) struct TableReader {
    consumer: Box<dyn PartitionConsumer>,
    tables: Tables,
}

/// The partitions of a reader with what each gathered since its last write: apart from the
/// consumer, so they can be written while a read is pending.
struct Tables {
    topic: &'static str,
    apply: Apply,
    slots: Vec<Slot>,
}

struct Slot {
    table: TablePartition,
    /// The offset the reader must reach before the partition's first end, where the local
    /// state was at or beyond the reported end.
    must_reach: Option<i64>,
    /// The offset after the last message read, or where reading started.
    reached: i64,
    batch: WriteBatch,
    /// Offset of the last message gathered (applied or skipped).
    last: Option<i64>,
    /// Messages, their bytes and skipped values gathered, published to the figures when
    /// written: one lock per write instead of per message.
    messages: u64,
    bytes: u64,
    skipped: u64,
}

impl TableReader {
    /// Starts reading `tables` of `topic`: each after the offset its local state holds, kept
    /// inside the partition's watermarks (see [`table_start`]), in recovery (bulk) mode until
    /// it catches up.
    pub(crate) async fn start(
        client: &dyn Client,
        topic: &'static str,
        tables: Vec<TablePartition>,
        headers: HeaderUse,
        apply: Apply,
    ) -> Result<Self, TableError> {
        let watermarks = read_watermarks(client, topic, &tables).await;
        let mut starts = Vec::with_capacity(tables.len());
        for (table, watermarks) in tables.iter().zip(watermarks) {
            let partition = table.progress.partition();
            let stored = table.storage.offset()?.filter(|offset| *offset >= 0);
            let start = table_start(
                topic,
                partition,
                stored,
                watermarks,
                client.reported_end_may_lag(),
            )?;
            table.storage.begin_recovery()?;
            let first = match start.from {
                StartOffset::At(offset) => Some(offset),
                StartOffset::Beginning => watermarks.map(|(low, _)| low),
            };
            table
                .progress
                .begin_recovery(first, watermarks.map(|(_, high)| high));
            tracing::debug!(
                topic,
                partition,
                ?start,
                ?watermarks,
                "reading table partition"
            );
            starts.push((partition, start, first));
        }
        let from: Vec<_> = starts
            .iter()
            .map(|(p, start, _)| (*p, start.from))
            .collect();
        let consumer = client.consume(topic, &from, headers)?;
        Ok(Self {
            consumer,
            tables: Tables {
                topic,
                apply,
                slots: tables
                    .into_iter()
                    .zip(starts)
                    .map(|(table, (_, start, first))| Slot {
                        table,
                        must_reach: start.must_reach,
                        reached: first.unwrap_or(0),
                        batch: WriteBatch::with_capacity(RECOVERY_BATCH),
                        last: None,
                        messages: 0,
                        bytes: 0,
                        skipped: 0,
                    })
                    .collect(),
            },
        })
    }

    /// Reads the next batch and applies it. What was gathered is written whenever the
    /// consumer has nothing ready right away, so the local state lags the changelog by at
    /// most one burst. Cancel-safe: dropped while waiting, it has written all it read.
    pub(crate) async fn next(&mut self) -> Result<Step, TableError> {
        let mut next = self.consumer.next_batch();
        let polled = match (&mut next).now_or_never() {
            Some(polled) => polled,
            None => {
                self.tables.write_all()?;
                next.await
            }
        };
        let batch = match polled {
            Some(Ok(batch)) => batch,
            Some(Err(source)) => {
                self.tables.write_all()?;
                return Err(source.into());
            }
            None => {
                self.tables.write_all()?;
                return Ok(Step::Closed);
            }
        };
        let mut step = Step::Read;
        for event in batch.events() {
            match event {
                BatchEvent::Message(message) => self.tables.gather(message)?,
                BatchEvent::EndOfPartition { partition } => {
                    self.tables.caught_up(partition)?;
                    step = Step::StateChanged;
                }
                BatchEvent::Transient(error) => {
                    tracing::warn!(topic = self.tables.topic, %error, "table reader lost its connection; retrying");
                    for slot in &self.tables.slots {
                        slot.table.progress.reconnecting();
                    }
                    step = Step::StateChanged;
                }
            }
        }
        Ok(step)
    }

    /// Reads until every partition caught up with its changelog once.
    pub(crate) async fn recover(&mut self) -> Result<(), TableError> {
        while self.recovering() {
            if self.next().await? == Step::Closed {
                break;
            }
        }
        self.tables.write_all()
    }

    /// The table topic.
    pub(crate) fn topic(&self) -> &'static str {
        self.tables.topic
    }

    /// Whether a partition is still recovering.
    pub(crate) fn recovering(&self) -> bool {
        self.tables
            .slots
            .iter()
            .any(|slot| slot.table.progress.state() == TableState::Recovering)
    }

    /// Writes what was gathered and leaves recovery mode where a partition had not caught up,
    /// so everything read is durable; the partitions show `Stopped`. The storages stay open
    /// for their owners.
    pub(crate) fn stop(mut self) -> Result<(), TableError> {
        self.tables.write_all()?;
        for slot in &self.tables.slots {
            if slot.table.progress.state() == TableState::Recovering {
                slot.table.storage.mark_recovered()?;
            }
            slot.table.progress.set_state(TableState::Stopped);
        }
        Ok(())
    }
}

impl Tables {
    fn index(&self, partition: i32) -> Option<usize> {
        // Views keep partitions 0..n in order; a processor's reader keeps one.
        match self.slots.get(partition.max(0) as usize) {
            Some(slot) if slot.table.progress.partition() == partition => Some(partition as usize),
            _ => self
                .slots
                .iter()
                .position(|slot| slot.table.progress.partition() == partition),
        }
    }

    fn gather(&mut self, message: MessageRef<'_>) -> Result<(), TableError> {
        let Some(index) = self.index(message.partition()) else {
            return Ok(()); // the consumer only reads the partitions it was given
        };
        let (key, value) = (message.key(), message.value());
        let reached = &mut self.slots[index].reached;
        *reached = (*reached).max(message.offset() + 1);
        if let (Some(validate), Some(value)) = (self.apply.validate, value) {
            if let Err(source) = validate(value) {
                match self.apply.decode_errors {
                    // A table reader has no dead-letter topic: it stops as with `Fail`.
                    DecodeErrorPolicy::Fail | DecodeErrorPolicy::DeadLetter => {
                        self.write(index)?;
                        return Err(TableError::Decode {
                            partition: message.partition(),
                            offset: message.offset(),
                            key: String::from_utf8_lossy(key).into_owned(),
                            source,
                        });
                    }
                    DecodeErrorPolicy::SkipAndCount => {
                        tracing::warn!(
                            topic = self.topic,
                            partition = message.partition(),
                            offset = message.offset(),
                            key = %String::from_utf8_lossy(key),
                            %source,
                            "skipping a changelog value that does not decode"
                        );
                        let slot = &mut self.slots[index];
                        slot.last = Some(message.offset());
                        slot.skipped += 1;
                        return Ok(());
                    }
                }
            }
        }
        let size = (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        if let Some(update) = self.apply.update.clone() {
            // The callback decides what a message does to the rows: it sees each one, after
            // everything gathered before it was written.
            self.write(index)?;
            let table = &self.slots[index].table;
            update(&*table.storage, &message.to_owned())?;
            table.storage.set_offset(message.offset())?;
            table.progress.applied(message.offset(), 1, size, 0);
            return Ok(());
        }
        let slot = &mut self.slots[index];
        slot.batch.set_or_delete(key, value);
        slot.last = Some(message.offset());
        slot.messages += 1;
        slot.bytes += size;
        if slot.batch.len() >= RECOVERY_BATCH {
            self.write(index)?;
        }
        Ok(())
    }

    /// The consumer reached the end of `partition`: write what it gathered, and leave
    /// recovery mode if this ends its recovery.
    fn caught_up(&mut self, partition: i32) -> Result<(), TableError> {
        let Some(index) = self.index(partition) else {
            return Ok(());
        };
        self.write(index)?;
        let slot = &mut self.slots[index];
        if let Some(need) = slot.must_reach.take() {
            if slot.reached < need {
                return Err(ahead(self.topic, partition, need - 1, slot.reached).into());
            }
        }
        let table = &slot.table;
        if table.progress.caught_up() {
            table.storage.mark_recovered()?;
            let stats = table.progress.stats();
            tracing::info!(
                topic = self.topic,
                partition,
                rows = stats.recovery.messages,
                offset = ?stats.offset,
                elapsed = ?stats.recovery.elapsed,
                "table partition recovered"
            );
        }
        Ok(())
    }

    fn write(&mut self, index: usize) -> Result<(), TableError> {
        let slot = &mut self.slots[index];
        let Some(last) = slot.last.take() else {
            return Ok(());
        };
        slot.table.storage.apply(&slot.batch, Some(last))?;
        slot.batch.clear();
        slot.table.progress.applied(
            last,
            std::mem::take(&mut slot.messages),
            std::mem::take(&mut slot.bytes),
            std::mem::take(&mut slot.skipped),
        );
        Ok(())
    }

    fn write_all(&mut self) -> Result<(), TableError> {
        (0..self.slots.len()).try_for_each(|index| self.write(index))
    }
}

/// The next step of whichever of `readers` has one first, with its index; pending forever
/// when there are none. Cancel-safe, as [`TableReader::next`] is.
pub(crate) async fn next_of_any(readers: &mut [TableReader]) -> (usize, Result<Step, TableError>) {
    if readers.is_empty() {
        return futures::future::pending().await;
    }
    let nexts = readers
        .iter_mut()
        .enumerate()
        .map(|(index, reader)| async move { (index, reader.next().await) }.boxed());
    futures::future::select_all(nexts).await.0
}

/// The `(low, high)` watermarks of each table partition, read at once; `None` where they
/// could not be read (the reader then starts after the local state and the consumer resets
/// an offset out of range to the oldest message).
async fn read_watermarks(
    client: &dyn Client,
    topic: &str,
    tables: &[TablePartition],
) -> Vec<Option<(i64, i64)>> {
    let Ok(admin) = client.admin() else {
        return vec![None; tables.len()];
    };
    let reads = tables.iter().map(|table| {
        let (admin, partition) = (&admin, table.progress.partition());
        async move {
            match admin.watermarks(topic, partition).await {
                Ok(watermarks) => Some(watermarks),
                Err(error) => {
                    tracing::warn!(topic, partition, %error, "cannot read the watermarks of a table partition; starting after its local state");
                    None
                }
            }
        }
    });
    futures::future::join_all(reads).await
}

/// Reads the high watermark of each of `tables` every `every` until `cancel` fires, on a task
/// of its own, so lag follows the changelog's end also while a reader is busy, and a read
/// that waits out the client's timeout during an outage holds up neither reading nor
/// stopping. A partition shown reconnecting runs again once the cluster answers for it: a
/// quiet table would otherwise show `Reconnecting` until its next message. `after_each_read`
/// runs after each round, for owners that derive a state of their own.
pub(crate) async fn follow_high_watermarks(
    client: Arc<dyn Client>,
    topic: &'static str,
    tables: impl Fn() -> Vec<Arc<TableProgress>>,
    after_each_read: impl Fn(),
    every: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let Ok(admin) = client.admin() else {
        return;
    };
    loop {
        let tables = tables();
        let reads = tables.iter().map(|progress| {
            let admin = &admin;
            async move {
                if let Ok((_, high)) = admin.watermarks(topic, progress.partition()).await {
                    progress.saw_high_watermark(high);
                }
            }
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = futures::future::join_all(reads) => {}
        }
        after_each_read();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

//! The loop of a running view: one consumer for all partitions of the table, one write batch
//! per partition, written whenever the consumer has nothing ready.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{DecodeErrorPolicy, ViewError, ViewInner, ViewState, RECOVERY_BATCH};
use crate::kafka::{BatchEvent, HeaderUse, MessageRef, PartitionConsumer, StartOffset};
use crate::storage::{StorageError, WriteBatch};

/// How often a running view reads its partitions' high watermarks (for lag).
const WATERMARK_REFRESH: Duration = Duration::from_secs(2);

/// The loop of [`View::run`]: one consumer for all partitions, one write batch per partition.
pub(super) struct Runner<'a> {
    inner: &'a ViewInner,
    batches: Vec<Unwritten>,
}

/// What a partition gathered since its last write.
#[derive(Default)]
struct Unwritten {
    batch: WriteBatch,
    /// Offset of the last message gathered.
    last: Option<i64>,
    /// Messages and their bytes, published to the stats when written: counting each message
    /// in the shared stats would cost two atomic updates per message.
    messages: u64,
    bytes: u64,
}

impl<'a> Runner<'a> {
    pub(super) fn new(inner: &'a ViewInner) -> Self {
        Self {
            inner,
            batches: inner
                .partitions
                .iter()
                .map(|_| Unwritten::default())
                .collect(),
        }
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) -> Result<(), ViewError> {
        let topic = self.inner.topic;
        let kafka = |source| ViewError::Kafka { topic, source };
        let mut starts = Vec::with_capacity(self.inner.partitions.len());
        for p in &self.inner.partitions {
            let offset = p.offset.load(Ordering::Relaxed);
            starts.push((
                p.partition,
                if offset >= 0 {
                    StartOffset::At(offset + 1)
                } else {
                    StartOffset::Beginning
                },
            ));
            p.storage
                .begin_recovery()
                .map_err(|source| self.storage_error(source))?;
            p.set_state(ViewState::Recovering);
        }
        self.inner.state.send_replace(ViewState::Recovering);
        // Rows keep no headers: only an update callback might look at them.
        let headers = if self.inner.update.is_some() {
            HeaderUse::Read
        } else {
            HeaderUse::Skip
        };
        // The consumer starts fetching while the watermarks (for stats) are asked for.
        let mut consumer: Box<dyn PartitionConsumer> = self
            .inner
            .client
            .consume(topic, &starts, headers)
            .map_err(kafka)?;
        'consume: loop {
            let mut next = consumer.next_batch();
            // Write what was gathered whenever the consumer has nothing ready right away, so
            // reads lag the changelog by at most what arrived in one burst.
            let polled = match (&mut next).now_or_never() {
                Some(polled) => polled,
                None => {
                    self.flush_all()?;
                    tokio::select! {
                        _ = cancel.cancelled() => break 'consume,
                        polled = next => polled,
                    }
                }
            };
            match polled {
                None => break,
                Some(Err(source)) => {
                    self.flush_all()?;
                    return Err(kafka(source));
                }
                Some(Ok(events)) => {
                    // Messages after a reconnect bring the view back to its partitions' state.
                    if *self.inner.state.borrow() == ViewState::Reconnecting {
                        self.update_view_state();
                    }
                    for event in events.events() {
                        self.handle(event)?;
                    }
                }
            }
            if cancel.is_cancelled() {
                break;
            }
        }
        self.flush_all()?;
        for p in &self.inner.partitions {
            if p.state() == ViewState::Recovering {
                p.storage
                    .mark_recovered()
                    .map_err(|source| self.storage_error(source))?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: BatchEvent<'_>) -> Result<(), ViewError> {
        match event {
            BatchEvent::Message(message) => self.apply(message),
            BatchEvent::EndOfPartition { partition } => {
                let index = self.index(partition);
                self.flush(index)?;
                let table = &self.inner.partitions[index];
                let offset = table.offset.load(Ordering::Relaxed);
                table
                    .high_watermark
                    .fetch_max(offset + 1, Ordering::Relaxed);
                if matches!(table.state(), ViewState::Recovering) {
                    table
                        .storage
                        .mark_recovered()
                        .map_err(|source| self.storage_error(source))?;
                    tracing::info!(
                        topic = self.inner.topic,
                        partition,
                        offset,
                        "view partition recovered"
                    );
                }
                table.set_state(ViewState::Running);
                self.update_view_state();
                Ok(())
            }
            BatchEvent::Transient(error) => {
                tracing::warn!(topic = self.inner.topic, %error, "view lost its connection; retrying");
                if self
                    .inner
                    .partitions
                    .iter()
                    .all(|p| p.state() != ViewState::Recovering)
                {
                    self.inner.state.send_replace(ViewState::Reconnecting);
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, message: MessageRef<'_>) -> Result<(), ViewError> {
        let index = self.index(message.partition());
        let table = &self.inner.partitions[index];
        let (key, value) = (message.key(), message.value());
        if let Some(value) = value {
            if let Err(source) = (self.inner.validate)(value) {
                match self.inner.decode_errors {
                    DecodeErrorPolicy::Fail => {
                        self.flush(index)?;
                        return Err(ViewError::Decode {
                            topic: self.inner.topic,
                            partition: message.partition(),
                            offset: message.offset(),
                            key: String::from_utf8_lossy(key).into_owned(),
                            source,
                        });
                    }
                    DecodeErrorPolicy::SkipAndCount => {
                        table.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            topic = self.inner.topic,
                            partition = message.partition(),
                            offset = message.offset(),
                            key = %String::from_utf8_lossy(key),
                            %source,
                            "skipping a changelog value that does not decode"
                        );
                        self.batches[index].last = Some(message.offset());
                        return Ok(());
                    }
                }
            }
        }
        let size = (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        if let Some(update) = &self.inner.update {
            self.flush(index)?;
            table.messages.fetch_add(1, Ordering::Relaxed);
            table.bytes.fetch_add(size, Ordering::Relaxed);
            update(&*table.storage, &message.to_owned())
                .map_err(|source| self.storage_error(source))?;
            table
                .storage
                .set_offset(message.offset())
                .map_err(|source| self.storage_error(source))?;
            table.offset.store(message.offset(), Ordering::Relaxed);
            return Ok(());
        }
        let unwritten = &mut self.batches[index];
        unwritten.batch.set_or_delete(key, value);
        unwritten.last = Some(message.offset());
        unwritten.messages += 1;
        unwritten.bytes += size;
        if unwritten.batch.len() >= RECOVERY_BATCH {
            self.flush(index)?;
        }
        Ok(())
    }

    fn flush(&mut self, index: usize) -> Result<(), ViewError> {
        let unwritten = &mut self.batches[index];
        let Some(last) = unwritten.last.take() else {
            return Ok(());
        };
        let table = &self.inner.partitions[index];
        table
            .storage
            .apply(&unwritten.batch, Some(last))
            .map_err(|source| ViewError::Storage {
                topic: self.inner.topic,
                source,
            })?;
        unwritten.batch.clear();
        table
            .messages
            .fetch_add(std::mem::take(&mut unwritten.messages), Ordering::Relaxed);
        table
            .bytes
            .fetch_add(std::mem::take(&mut unwritten.bytes), Ordering::Relaxed);
        table.offset.store(last, Ordering::Relaxed);
        table.high_watermark.fetch_max(last + 1, Ordering::Relaxed);
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), ViewError> {
        (0..self.batches.len()).try_for_each(|index| self.flush(index))
    }

    fn index(&self, partition: i32) -> usize {
        // The consumer only returns assigned partitions, 0..n.
        (partition.max(0) as usize).min(self.inner.partitions.len() - 1)
    }

    fn update_view_state(&self) {
        update_view_state(self.inner);
    }

    fn storage_error(&self, source: StorageError) -> ViewError {
        ViewError::Storage {
            topic: self.inner.topic,
            source,
        }
    }
}

/// Reads the high watermarks of the view's partitions every [`WATERMARK_REFRESH`] until
/// `cancel` fires, on a task of its own: the view's lag follows the changelog's end also
/// while the view is busy catching up, and a read waiting out the client's request timeout
/// during an outage holds up neither consuming nor stopping. When every partition answers
/// while the view shows `Reconnecting`, the cluster is reachable again: a quiet table would
/// otherwise show `Reconnecting` until its next message.
pub(super) async fn follow_watermarks(inner: Arc<ViewInner>, cancel: CancellationToken) {
    let Ok(admin) = inner.client.admin() else {
        return;
    };
    let inner = &*inner;
    loop {
        let asks = inner.partitions.iter().map(|p| {
            let admin = &admin;
            async move {
                match admin.watermarks(inner.topic, p.partition).await {
                    Ok((_, high)) => {
                        p.high_watermark.fetch_max(high, Ordering::Relaxed);
                        true
                    }
                    Err(_) => false,
                }
            }
        });
        let answered = tokio::select! {
            _ = cancel.cancelled() => return,
            answered = futures::future::join_all(asks) => answered,
        };
        if answered.iter().all(|ok| *ok) && *inner.state.borrow() == ViewState::Reconnecting {
            update_view_state(inner);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(WATERMARK_REFRESH) => {}
        }
    }
}

/// `Running` once every partition runs, `Recovering` before.
fn update_view_state(inner: &ViewInner) {
    let all_running = inner
        .partitions
        .iter()
        .all(|p| p.state() == ViewState::Running);
    let state = if all_running {
        ViewState::Running
    } else {
        ViewState::Recovering
    };
    inner.state.send_if_modified(|s| {
        let changed = *s != state;
        *s = state;
        changed
    });
}

//! The stores of one partition (Kafka Streams' state manager, goka's partition table):
//! opening them or taking them over from hot standby, recovering them from their
//! changelogs, following the joined tables, removing rows a failed changelog write left,
//! saving offsets and closing. The active partition task keeps one [`Stores`]; hot standby
//! opens and reads its tables through [`open_store`] and [`read_table`].

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::error::ProcessorError;
use super::pending::LocalWrite;
use super::shared::{Shared, Storages};
use super::stats::{PartitionState, Tables};
use crate::context::{OutgoingKind, PartitionResources};
use crate::group::Group;
use crate::kafka::{HeaderUse, KafkaError};
use crate::partitioner::Partitioner;
use crate::storage::{Storage, StorageError};
use crate::table::{
    next_of_any, Apply, Step, TableError, TablePartition, TableProgress, TableReader,
};
use crate::timer::PartitionTimers;
use crate::window::partition::PartitionWindows;

/// A stored table offset that makes the next recovery start at the changelog's beginning
/// (set when local rows may not match the changelog).
pub(crate) const RECOVER_FROM_BEGINNING: i64 = -1;

/// Opens the store of table `topic`'s `partition` as the processor's configuration says.
pub(super) fn open_store(
    shared: &Shared,
    topic: &str,
    partition: i32,
) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(shared.config.storage.build(topic, partition)?.into())
}

/// Starts a reader of one table partition of the processor, whose figures `figures` keeps
/// from now on. Table rows keep no headers, and a processor decodes them when a handler
/// reads them.
pub(super) async fn read_table(
    shared: &Shared,
    figures: &Tables,
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

/// What the handlers of every partition of an instance share besides their stores.
pub(crate) struct Common {
    /// Views of the lookup tables.
    pub(crate) lookups: HashMap<&'static str, Arc<crate::view::ViewInner>>,
    /// The partition count of every topic the group writes to.
    pub(crate) partition_counts: HashMap<&'static str, u32>,
    pub(crate) partitioner: Arc<dyn Partitioner>,
    /// Where late window messages go, when `LatePolicy::DeadLetter` sends them.
    pub(crate) late_letters: Option<&'static str>,
}

/// Opens the stores of one partition of group `P` with `open` (a table topic's store):
/// the group table, the joined tables, the window tables and the timers, as its handlers
/// see them. `cancel` fires when the partition is revoked or the processor stops. The
/// running processor and the tester both build their partitions here.
pub(crate) fn open_resources<P: Group, E>(
    mut open: impl FnMut(&'static str) -> Result<Arc<dyn Storage>, E>,
    common: &Common,
    cancel: CancellationToken,
) -> Result<PartitionResources, E> {
    let table = P::GRAPH.table.map(|edge| open(edge.topic)).transpose()?;
    let mut joins = HashMap::new();
    for edge in P::GRAPH.joins {
        joins.insert(edge.topic, open(edge.topic)?);
    }
    let mut windows = Vec::with_capacity(P::GRAPH.windows.len());
    for edge in P::GRAPH.windows {
        windows.push((edge, open(edge.topic())?));
    }
    let timers = P::GRAPH
        .timers
        .map(|edge| open(edge.topic).map(PartitionTimers::new))
        .transpose()?;
    Ok(PartitionResources {
        group: P::GRAPH.group,
        table,
        joins,
        lookups: common.lookups.clone(),
        partition_counts: common.partition_counts.clone(),
        partitioner: common.partitioner.clone(),
        cancel,
        windows: Arc::new(PartitionWindows::new(windows)),
        timers,
        late_letters: common.late_letters,
    })
}

/// A store the partition alone writes (the group table, a window table, the timers), with
/// its changelog topic.
pub(super) struct Owned<'a> {
    pub(super) topic: &'static str,
    pub(super) storage: &'a Arc<dyn Storage>,
}

/// The stores of one running partition.
pub(super) struct Stores {
    shared: Arc<Shared>,
    partition: i32,
    /// The group table's and the timers' changelog topics, if the group has them.
    table_topic: Option<&'static str>,
    timers_topic: Option<&'static str>,
    /// What handlers see of the partition: its stores and what every message shares.
    pub(super) resources: PartitionResources,
}

/// The readers of a partition's joined tables, following them once recovered. Kept apart
/// from [`Stores`], which handlers share across await points: a reader is not `Sync`.
#[derive(Default)]
pub(super) struct Joined(Vec<TableReader>);

impl Joined {
    /// Waits for the next updates of any joined table and applies them; pending forever if
    /// there are no joins.
    pub(super) async fn next_update(&mut self, group: &'static str) -> Result<(), ProcessorError> {
        let (index, step) = next_of_any(&mut self.0).await;
        match step {
            Ok(Step::Closed) => futures::future::pending().await,
            Ok(_) => Ok(()),
            Err(error) => Err(table_error(group, self.0[index].topic(), error)),
        }
    }
}

impl Stores {
    /// Opens every store of `partition` of group `P` (or takes it over from hot standby,
    /// `handed_over`), and registers the group table and windows for queries and figures.
    /// `stop` fires when the partition is revoked or the processor stops.
    pub(super) fn open<P: Group>(
        shared: &Arc<Shared>,
        partition: i32,
        stop: &CancellationToken,
        mut handed_over: Storages,
    ) -> Result<Self, ProcessorError> {
        let storage_error = |source| ProcessorError::Storage {
            group: P::GRAPH.group,
            source,
        };
        let open = |topic: &'static str| match handed_over.remove(topic) {
            Some(storage) => Ok(storage),
            None => open_store(shared, topic, partition).map_err(storage_error),
        };
        let common = Common {
            lookups: shared.lookups.clone(),
            partition_counts: shared.partition_counts.clone(),
            partitioner: shared.config.partitioner.clone(),
            late_letters: super::policies::late_letter_topic::<P>(&shared.config),
        };
        let resources = open_resources::<P, _>(open, &common, stop.clone())?;
        if let Some(table) = &resources.table {
            shared
                .tables
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(partition, table.clone());
        }
        if !resources.windows.tables.is_empty() {
            shared
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(partition, resources.windows.clone());
        }
        Ok(Self {
            shared: shared.clone(),
            partition,
            table_topic: P::GRAPH.table.map(|edge| edge.topic),
            timers_topic: P::GRAPH.timers.map(|edge| edge.topic),
            resources,
        })
    }

    /// The stores the partition alone writes: the group table, each window table, the
    /// timers. Every place that treats them alike iterates this list.
    pub(super) fn owned(&self) -> impl Iterator<Item = Owned<'_>> {
        let resources = &self.resources;
        let table = self
            .table_topic
            .zip(resources.table.as_ref())
            .map(|(topic, storage)| Owned { topic, storage });
        let windows = resources.windows.tables.iter().map(|table| Owned {
            topic: table.topic(),
            storage: &table.storage,
        });
        let timers = self
            .timers_topic
            .zip(resources.timers.as_ref())
            .map(|(topic, timers)| Owned {
                topic,
                storage: &timers.storage,
            });
        table.into_iter().chain(windows).chain(timers)
    }

    /// The store a write of `kind` to `topic` goes to locally, if it is one the partition
    /// owns.
    pub(super) fn owned_store(&self, kind: OutgoingKind, topic: &str) -> Option<&Arc<dyn Storage>> {
        match kind {
            OutgoingKind::Table => self.resources.table.as_ref(),
            OutgoingKind::Window => self
                .resources
                .windows
                .table(topic)
                .map(|table| &table.storage),
            OutgoingKind::Timer => self.resources.timers.as_ref().map(|t| &t.storage),
            OutgoingKind::Emit | OutgoingKind::Loop | OutgoingKind::Deferred => None,
        }
    }

    /// Recovers every store from its changelog: the group table, then each joined table
    /// (whose readers go to `joined` to follow on), then windows and timers. False when
    /// `stop` fired first.
    pub(super) async fn recover(
        &self,
        stop: &CancellationToken,
        committed_stream_time: Option<i64>,
        joined: &mut Joined,
    ) -> Result<bool, ProcessorError> {
        let owned: Vec<(&'static str, Arc<dyn Storage>)> = self
            .owned()
            .map(|owned| (owned.topic, owned.storage.clone()))
            .collect();
        let joins: Vec<(&'static str, Arc<dyn Storage>)> = self
            .resources
            .joins
            .iter()
            .map(|(topic, storage)| (*topic, storage.clone()))
            .collect();
        // The group table first: joined tables and windows are no use without it.
        let (table, rest) = match self.table_topic {
            Some(_) => owned.split_at(1),
            None => owned.split_at(0),
        };
        for (topic, storage) in table {
            // Its reader is done once recovered: from now on the partition writes the table.
            if self
                .recover_one(stop, topic, storage.clone())
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        for (topic, storage) in joins {
            match self.recover_one(stop, topic, storage).await? {
                Some(reader) => joined.0.push(reader),
                None => return Ok(false),
            }
        }
        for (topic, storage) in rest {
            if self
                .recover_one(stop, topic, storage.clone())
                .await?
                .is_none()
            {
                return Ok(false);
            }
        }
        self.resources
            .windows
            .index_stored(committed_stream_time)
            .map_err(|source| ProcessorError::Storage {
                group: self.shared.group,
                source,
            })?;
        Ok(true)
    }

    /// Recovers one table partition from its changelog; `None` when `stop` fired first. The
    /// reader is positioned after the end, to follow on.
    async fn recover_one(
        &self,
        stop: &CancellationToken,
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
            _ = stop.cancelled() => return Ok(None),
        };
        tokio::select! {
            recovered = reader.recover() => recovered.map_err(error)?,
            _ = stop.cancelled() => {
                reader.stop().map_err(error)?;
                return Ok(None);
            }
        }
        Ok(Some(reader))
    }

    /// After a failed changelog write an owned store may hold rows its changelog does not:
    /// the rows written are deleted and each such store's offset is reset, so whoever owns
    /// the partition next recovers it from the changelog's beginning instead of trusting
    /// them. Returns the topics of the stores reset.
    pub(super) fn forget(
        &self,
        writes: &[LocalWrite],
    ) -> Result<Vec<&'static str>, ProcessorError> {
        let storage_error = |source| ProcessorError::Storage {
            group: self.shared.group,
            source,
        };
        tracing::warn!(
            group = self.shared.group,
            partition = self.partition,
            rows = writes.len(),
            "a changelog write failed: the local rows it covered are removed and their stores \
             recover from the changelog's beginning when the partition starts next"
        );
        let mut reset: Vec<&'static str> = Vec::new();
        for write in writes {
            let Some(storage) = self.owned_store(write.kind, write.topic) else {
                continue;
            };
            storage.delete(&write.key).map_err(storage_error)?;
            if !reset.contains(&write.topic) {
                storage
                    .set_offset(RECOVER_FROM_BEGINNING)
                    .map_err(storage_error)?;
                reset.push(write.topic);
            }
        }
        Ok(reset)
    }

    /// Stores `offset` as the last changelog offset the store of `topic` holds.
    pub(super) fn save_offset(&self, topic: &str, offset: i64) -> Result<(), ProcessorError> {
        let Some(owned) = self.owned().find(|owned| owned.topic == topic) else {
            return Ok(());
        };
        owned
            .storage
            .set_offset(offset)
            .map_err(|source| ProcessorError::Storage {
                group: self.shared.group,
                source,
            })
    }

    /// Under exactly-once, puts every store the partition writes (the group table, the
    /// window tables, the timers) behind the member's transaction, after recovery (which
    /// writes straight to storage): handlers read their writes, the storage gets them when
    /// the transaction commits. Returns the held stores.
    ///
    /// What the partition keeps in memory beside them (the windows' index of what closes
    /// when, the stream time, the timers' next due time) may run ahead of the storage until
    /// the commit; only an abort parts them, and an abort stops the processor: the next
    /// start rebuilds them from the committed rows.
    pub(super) fn hold_for_transaction(&mut self) -> Vec<Arc<crate::storage::Uncommitted>> {
        let mut held = Vec::new();
        let mut hold = |storage: &Arc<dyn Storage>| -> Arc<dyn Storage> {
            let store = Arc::new(crate::storage::Uncommitted::new(storage.clone()));
            held.push(store.clone());
            store
        };
        let resources = &mut self.resources;
        if let Some(table) = &resources.table {
            resources.table = Some(hold(table));
        }
        if !resources.windows.tables.is_empty() {
            resources.windows = Arc::new(resources.windows.held(&mut hold));
            self.shared
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.partition, resources.windows.clone());
        }
        if let Some(timers) = &mut resources.timers {
            timers.storage = hold(&timers.storage);
        }
        held
    }

    /// Stops following the joined tables, unregisters the partition and closes every store.
    pub(super) fn close(self, joined: Joined) -> Result<(), ProcessorError> {
        let group = self.shared.group;
        let storage_error = |source| ProcessorError::Storage { group, source };
        let mut first = None;
        for reader in joined.0 {
            let topic = reader.topic();
            if let Err(error) = reader.stop() {
                first.get_or_insert(table_error(group, topic, error));
            }
        }
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
            .set_partition_state(self.partition, PartitionState::Stopped);
        let stores = self.owned().map(|owned| owned.storage);
        for storage in stores.chain(self.resources.joins.values()) {
            if let Err(source) = storage.close() {
                first.get_or_insert(storage_error(source));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A table reader's error, with the group and table it happened in.
pub(super) fn table_error(
    group: &'static str,
    topic: &'static str,
    error: TableError,
) -> ProcessorError {
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

//! What a running processor's member thread, partition tasks and standby tasks share: the
//! client and producer, the offsets waiting to be committed, figures, and the first failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::ProcessorConfig;
use super::error::ProcessorError;
use super::stats::{Counters, Tables};
use super::stats::{PartitionState, ProcessorState};
use crate::group::Group;
use crate::kafka::{Client, Producer, TopicPartitionOffset};
use crate::storage::Storage;

/// The views of the lookup tables, by table.
pub(super) type LookupViews = HashMap<&'static str, Arc<crate::view::ViewInner>>;

/// Offsets the partition tasks report done, waiting to be committed.
#[derive(Debug, Default)]
pub(super) struct OffsetTable {
    /// Per topic partition: the next offset to commit.
    pub(super) next: Mutex<HashMap<TopicPartition, NextOffset>>,
}

pub(super) type TopicPartition = (Arc<str>, i32);

/// The next offset to commit for one topic partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct NextOffset {
    pub(super) offset: i64,
    /// The partition's stream time once the message before `offset` was handled.
    pub(super) stream_time: Option<i64>,
    /// Whether it changed since the last commit.
    changed: bool,
}

impl NextOffset {
    /// What a commit sends: the offset, with the stream time in its metadata.
    pub(super) fn commit(&self, topic: &str, partition: i32) -> TopicPartitionOffset {
        TopicPartitionOffset {
            topic: topic.to_owned(),
            partition,
            offset: self.offset,
            metadata: self
                .stream_time
                .map(super::stream_time::encode)
                .unwrap_or_default(),
        }
    }
}

impl OffsetTable {
    /// Input message `offset` of `topic`/`partition` and everything before it are done;
    /// after it the partition's stream time was `stream_time`.
    pub(super) fn done(
        &self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        stream_time: Option<i64>,
    ) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.insert(
            (topic.clone(), partition),
            NextOffset {
                offset: offset + 1,
                stream_time,
                changed: true,
            },
        );
    }

    /// Offsets changed since the last call.
    pub(super) fn take_changed(&self) -> Vec<TopicPartitionOffset> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        next.iter_mut()
            .filter(|(_, next)| next.changed)
            .map(|((topic, partition), next)| {
                next.changed = false;
                next.commit(topic, *partition)
            })
            .collect()
    }

    /// A commit of `offsets` failed: the next commit sends them again (or newer ones).
    pub(super) fn retry(&self, offsets: &[TopicPartitionOffset]) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        for o in offsets {
            let key = (Arc::<str>::from(o.topic.as_str()), o.partition);
            if let Some(next) = next.get_mut(&key) {
                if next.offset >= o.offset {
                    next.changed = true;
                }
            }
        }
    }

    /// Removes and returns the offsets of `partitions` (when they are revoked).
    pub(super) fn remove(&self, partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        partitions
            .iter()
            .filter_map(|(topic, partition)| {
                let key = (Arc::<str>::from(topic.as_str()), *partition);
                next.remove(&key).map(|next| next.commit(topic, *partition))
            })
            .collect()
    }
}

/// The storages of one partition's tables, by table topic.
pub(super) type Storages = HashMap<&'static str, Arc<dyn Storage>>;

/// The partitions followed in standby.
#[derive(Default)]
pub(super) struct Standbys {
    partitions: Mutex<HashMap<i32, Standby>>,
}

struct Standby {
    stop: CancellationToken,
    handle: JoinHandle<Storages>,
}

impl Standbys {
    /// Starts the standby task `start` makes for `partition`, unless one follows it already.
    pub(super) fn start_once(
        &self,
        partition: i32,
        start: impl FnOnce() -> (CancellationToken, JoinHandle<Storages>),
    ) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::hash_map::Entry::Vacant(entry) = partitions.entry(partition) {
            let (stop, handle) = start();
            entry.insert(Standby { stop, handle });
        }
    }

    /// Stops following `partition` and hands over the storages its tables were kept in (none
    /// if it was not followed).
    pub(super) async fn take(&self, partition: i32) -> Storages {
        let standby = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
        let Some(standby) = standby else {
            return Storages::new();
        };
        standby.stop.cancel();
        // A standby that panicked stopped the processor already; the takeover recovers in
        // full meanwhile.
        standby.handle.await.unwrap_or_default()
    }

    /// The partitions followed.
    pub(super) fn partitions(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        partitions.sort_unstable();
        partitions
    }

    /// Stops following every partition and waits until each wrote what it read.
    pub(super) async fn stop_all(&self) {
        let all: Vec<Standby> = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, standby)| standby)
            .collect();
        for standby in &all {
            standby.stop.cancel();
        }
        for standby in all {
            let _ = standby.handle.await;
        }
    }
}

/// What the processor's threads and tasks share.
pub(super) struct Shared {
    pub(super) group: &'static str,
    /// The group table's topic, if the group has one.
    pub(super) table_topic: Option<&'static str>,
    pub(super) client: Arc<dyn Client>,
    pub(super) config: ProcessorConfig,
    pub(super) producer: Arc<dyn Producer>,
    /// The member's transaction, under exactly-once.
    pub(super) transaction: Option<Arc<super::transaction::Transaction>>,
    pub(super) partition_counts: HashMap<&'static str, u32>,
    /// Views of the lookup tables, shared by every partition of this instance.
    pub(super) lookups: LookupViews,
    pub(super) offsets: OffsetTable,
    pub(super) stats: Counters,
    /// Figures of the table partitions of each running partition.
    pub(super) table_figures: Tables,
    /// Figures of the consumed topics of each running partition.
    pub(super) input_figures: super::stats::Inputs,
    /// Figures of the topics the processor writes.
    pub(super) outputs: super::stats::Outputs,
    /// Partitions followed in hot standby, and the figures of their tables.
    pub(super) standbys: Standbys,
    pub(super) standby_figures: Tables,
    /// Group table storage of each running partition, for `Processor::get`.
    pub(super) tables: Mutex<HashMap<i32, Arc<dyn Storage>>>,
    /// The windows of each partition running here, for their figures.
    pub(super) windows: Mutex<HashMap<i32, Arc<crate::window::partition::PartitionWindows>>>,
    pub(super) states: Mutex<HashMap<i32, PartitionState>>,
    /// Where to ask each running partition task for a visit.
    pub(super) visitors:
        Mutex<HashMap<i32, tokio::sync::mpsc::UnboundedSender<super::visit::VisitRequest>>>,
    /// How far the last visit of each running partition got.
    pub(super) visit_progress: Mutex<HashMap<i32, super::VisitProgress>>,
    /// Last read high watermark per input topic and partition.
    pub(super) high_watermarks: Mutex<HashMap<(&'static str, i32), i64>>,
    pub(super) state: watch::Sender<ProcessorState>,
    /// Set once `run` returned: a member abandoned while stopping no longer touches the
    /// processor's state, which belongs to the next run.
    pub(super) ended: std::sync::atomic::AtomicBool,
    /// Fires on shutdown and on the first error.
    pub(super) cancel: CancellationToken,
    pub(super) failure: Mutex<Option<ProcessorError>>,
}

impl Shared {
    /// What a run of group `P` shares, before any partition started: the member thread
    /// writes `state` and everything stops with `cancel`.
    pub(super) fn new<P: Group>(
        client: Arc<dyn Client>,
        config: ProcessorConfig,
        producer: Arc<dyn Producer>,
        partition_counts: HashMap<&'static str, u32>,
        lookups: LookupViews,
        state: watch::Sender<ProcessorState>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            group: P::GRAPH.group,
            table_topic: P::GRAPH.table.map(|edge| edge.topic),
            client,
            config,
            producer,
            transaction: None,
            outputs: super::stats::Outputs::new(partition_counts.keys().copied()),
            partition_counts,
            lookups,
            offsets: OffsetTable::default(),
            stats: Counters::default(),
            table_figures: Tables::default(),
            input_figures: super::stats::Inputs::default(),
            standbys: Standbys::default(),
            standby_figures: Tables::default(),
            tables: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            visitors: Mutex::new(HashMap::new()),
            visit_progress: Mutex::new(HashMap::new()),
            high_watermarks: Mutex::new(HashMap::new()),
            state,
            ended: std::sync::atomic::AtomicBool::new(false),
            cancel,
            failure: Mutex::new(None),
        }
    }

    /// Under exactly-once: the member's transaction, whose producer is `producer`.
    pub(super) fn with_transaction(
        mut self,
        transaction: Option<Arc<super::transaction::Transaction>>,
    ) -> Self {
        self.transaction = transaction;
        self
    }

    pub(super) fn set_partition_state(&self, partition: i32, state: PartitionState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if state == PartitionState::Stopped {
            states.remove(&partition);
            self.table_figures.forget(partition);
            self.input_figures.forget(partition);
            self.visitors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&partition);
            self.visit_progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&partition);
        } else {
            states.insert(partition, state);
        }
        drop(states);
        self.refresh_state();
    }

    /// Sets the processor's state from its partitions' while it starts or runs: recovering
    /// while any partition recovers, running otherwise (also with no partition at all).
    pub(super) fn refresh_state(&self) {
        let overall = if self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|s| *s == PartitionState::Recovering)
        {
            ProcessorState::Recovering
        } else {
            ProcessorState::Running
        };
        self.update_state(|s| {
            let update = matches!(
                *s,
                ProcessorState::Starting | ProcessorState::Recovering | ProcessorState::Running
            ) && *s != overall;
            if update {
                *s = overall;
            }
            update
        });
    }

    /// Sets the processor's state, unless its run has returned.
    pub(super) fn set_state(&self, state: ProcessorState) {
        self.update_state(|s| {
            *s = state;
            true
        });
    }

    /// Changes the processor's state with `change`, which says whether it changed it, unless
    /// the run has returned: the state then belongs to the next run.
    pub(super) fn update_state(&self, change: impl FnOnce(&mut ProcessorState) -> bool) {
        self.state.send_if_modified(|s| {
            !self.ended.load(std::sync::atomic::Ordering::Acquire) && change(s)
        });
    }

    /// Records the first error and stops everything.
    /// Stops the processor with `error` in place of an earlier one: for a cause that comes
    /// before any failure it brings about (a member paused past its transaction timeout sees
    /// its messages purged and its commit refused as it resumes, and any of those may be
    /// reported first).
    pub(super) fn fail_superseding(&self, error: ProcessorError) {
        tracing::error!(group = self.group, %error, "processor stops");
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.cancel.cancel();
    }

    pub(super) fn fail(&self, error: ProcessorError) {
        tracing::error!(group = self.group, %error, "processor stops");
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            *failure = Some(error);
        }
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(topic: &str, partition: i32, offset: i64) -> TopicPartitionOffset {
        TopicPartitionOffset {
            topic: topic.to_owned(),
            partition,
            offset,
            metadata: String::new(),
        }
    }

    #[test]
    fn a_failed_commit_is_committed_again() {
        let table = OffsetTable::default();
        let clicks: Arc<str> = Arc::from("clicks");
        table.done(&clicks, 0, 9, None);
        table.done(&clicks, 1, 4, None);
        let sent = table.take_changed();
        assert_eq!(sent.len(), 2);
        assert!(table.take_changed().is_empty(), "nothing new");

        // The commit failed and nothing moved on since: the next commit sends it again.
        table.retry(&sent);
        let mut again = table.take_changed();
        again.sort_by_key(|o| o.partition);
        assert_eq!(again, [offset("clicks", 0, 10), offset("clicks", 1, 5)]);

        // Progress after the failed commit wins; a revoked partition is not committed again.
        table.done(&clicks, 0, 19, None);
        table.remove(&[("clicks".to_owned(), 1)]);
        table.retry(&again);
        assert_eq!(table.take_changed(), [offset("clicks", 0, 20)]);
    }

    #[test]
    fn a_commit_carries_the_stream_time_after_its_last_message() {
        let table = OffsetTable::default();
        let clicks: Arc<str> = Arc::from("clicks");
        table.done(&clicks, 0, 9, Some(70_000));
        let sent = table.take_changed();
        assert_eq!(sent[0].offset, 10);
        assert_eq!(
            super::super::stream_time::decode(&sent[0].metadata),
            Some(70_000)
        );
        table.done(&clicks, 0, 10, Some(75_000));
        let revoked = table.remove(&[("clicks".to_owned(), 0)]);
        assert_eq!(
            super::super::stream_time::decode(&revoked[0].metadata),
            Some(75_000)
        );
    }
}

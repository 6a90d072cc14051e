//! Exactly-once ([`Guarantee::ExactlyOnce`](super::Guarantee::ExactlyOnce)): everything the
//! member's partitions produce between two commits, and the input offsets of what they
//! handled, go in one Kafka transaction of the member's transactional producer (EOS v2,
//! KIP-447: the offsets carry the member's generation, so a member the group moved past
//! cannot commit). The partitions' own table rows are held in front of their storage
//! ([`Uncommitted`]) until the transaction commits, and dropped when it does not: local state
//! never runs ahead of the committed changelog.
//!
//! A commit pauses the partitions: each finishes what it has in flight and takes no new
//! input until the transaction committed, so that the offsets sent are exactly those of the
//! inputs whose outputs the transaction holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;

use super::error::ProcessorError;
use crate::kafka::{GroupMetadata, KafkaError, TopicPartitionOffset, TransactionalProducer};
use crate::storage::Uncommitted;

/// What the partitions see of the member's transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Gate {
    /// A commit waits: take no new input.
    pub(super) paused: bool,
    /// The commit's number.
    pub(super) round: u64,
}

/// The member's transaction: its producer, the partitions taking part and their held rows.
pub(super) struct Transaction {
    group: &'static str,
    producer: Arc<dyn TransactionalProducer>,
    gate: watch::Sender<Gate>,
    partitions: Mutex<Partitions>,
    /// Woken when a partition reports quiet or leaves.
    changed: Condvar,
    /// The member's identity at its current generation, refreshed after each poll.
    metadata: Mutex<Option<GroupMetadata>>,
}

#[derive(Default)]
struct Partitions {
    /// Partitions handling messages.
    active: HashSet<i32>,
    /// The round each active partition is quiet for.
    quiet: HashMap<i32, u64>,
    /// Each partition's rows held for the transaction.
    stores: HashMap<i32, Vec<Arc<Uncommitted>>>,
}

impl Transaction {
    /// Opens the first transaction of `producer`.
    pub(super) fn begin(
        group: &'static str,
        producer: Arc<dyn TransactionalProducer>,
    ) -> Result<Self, ProcessorError> {
        producer
            .begin()
            .map_err(|source| ProcessorError::Produce { group, source })?;
        Ok(Self {
            group,
            producer,
            gate: watch::channel(Gate::default()).0,
            partitions: Mutex::new(Partitions::default()),
            changed: Condvar::new(),
            metadata: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Partitions> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate a partition watches.
    pub(super) fn gate(&self) -> watch::Receiver<Gate> {
        self.gate.subscribe()
    }

    /// `partition` starts handling messages, writing its rows through `stores`.
    pub(super) fn enter(&self, partition: i32, stores: Vec<Arc<Uncommitted>>) {
        let mut partitions = self.lock();
        partitions.active.insert(partition);
        partitions.stores.insert(partition, stores);
    }

    /// `partition` stopped: its rows not committed yet are dropped with its storage.
    pub(super) fn leave(&self, partition: i32) {
        let mut partitions = self.lock();
        partitions.active.remove(&partition);
        partitions.quiet.remove(&partition);
        partitions.stores.remove(&partition);
        self.changed.notify_all();
    }

    /// `partition` has nothing in flight while the commit of `round` waits.
    pub(super) fn quiet(&self, partition: i32, round: u64) {
        let mut partitions = self.lock();
        if partitions.quiet.insert(partition, round) != Some(round) {
            self.changed.notify_all();
        }
    }

    /// The member's identity for the next commit.
    pub(super) fn set_metadata(&self, metadata: Option<GroupMetadata>) {
        *self.metadata.lock().unwrap_or_else(|p| p.into_inner()) = metadata;
    }

    fn error(&self, source: KafkaError) -> ProcessorError {
        ProcessorError::Produce {
            group: self.group,
            source,
        }
    }

    /// Commits the open transaction with the offsets `done` gives once the partitions are
    /// quiet (the offsets done and not committed yet), applies the held rows, and opens the
    /// next one; the partitions pause meanwhile and wait at most `quiet_within` to finish
    /// what they have in flight. Runs on the member's thread.
    pub(super) fn commit(
        &self,
        done: impl FnOnce() -> Vec<TopicPartitionOffset>,
        runtime: &Handle,
        quiet_within: Duration,
    ) -> Result<(), ProcessorError> {
        let round = self.gate.borrow().round + 1;
        self.gate.send_replace(Gate {
            paused: true,
            round,
        });
        let result = self.commit_round(done, runtime, quiet_within, round);
        self.gate.send_replace(Gate {
            paused: false,
            round,
        });
        result
    }

    fn commit_round(
        &self,
        done: impl FnOnce() -> Vec<TopicPartitionOffset>,
        runtime: &Handle,
        quiet_within: Duration,
        round: u64,
    ) -> Result<(), ProcessorError> {
        let deadline = Instant::now() + quiet_within;
        let mut partitions = self.lock();
        loop {
            let busy: Vec<i32> = partitions
                .active
                .iter()
                .filter(|p| partitions.quiet.get(p) != Some(&round))
                .copied()
                .collect();
            if busy.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.error(KafkaError::Timeout {
                    operation: format!(
                        "a transaction commit waiting for partitions {busy:?} to finish their \
                         in-flight messages"
                    ),
                    timeout: quiet_within,
                }));
            }
            partitions = self
                .changed
                .wait_timeout(partitions, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let stores: Vec<Arc<Uncommitted>> = partitions.stores.values().flatten().cloned().collect();
        drop(partitions);

        let done = done();
        if !done.is_empty() {
            let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
            let Some(metadata) = metadata.as_ref() else {
                return Err(self.error(KafkaError::Consume {
                    topic: String::new(),
                    message: format!(
                        "group {}: the member has no group generation to commit offsets with",
                        self.group
                    ),
                }));
            };
            runtime
                .block_on(self.producer.send_offsets(&done, metadata))
                .map_err(|e| self.error(e))?;
        }
        runtime
            .block_on(self.producer.commit())
            .map_err(|e| self.error(e))?;
        for store in &stores {
            store.commit().map_err(|source| ProcessorError::Storage {
                group: self.group,
                source,
            })?;
        }
        self.producer.begin().map_err(|e| self.error(e))
    }

    /// The error of a member whose process stood still for `paused` (stopped, or starved):
    /// at least the transaction timeout, so the broker aborted the open transaction, and the
    /// group may have given the member's partitions to others. `None` for a shorter pause.
    pub(super) fn paused(&self, paused: Duration) -> Option<ProcessorError> {
        let open_for = self.producer.transaction_timeout();
        (paused >= open_for).then(|| {
            self.error(KafkaError::Transaction {
                transactional_id: self.producer.transactional_id().to_owned(),
                operation: "commit",
                message: format!(
                    "this member stood still for {paused:.1?}, longer than the transaction \
                     timeout ({open_for:?}): the broker aborted its open transaction, and the \
                     group gives its partitions to members that go on from the last commit"
                ),
                fenced: true,
                abortable: false,
            })
        })
    }

    /// Aborts the open transaction (the processor stops on an error): nothing of it is
    /// visible to `read_committed` readers, its offsets are not committed, and the held rows
    /// are dropped.
    pub(super) fn abort(&self, runtime: &Handle) {
        for store in self.lock().stores.values().flatten() {
            store.abort();
        }
        if let Err(error) = runtime.block_on(self.producer.abort()) {
            tracing::warn!(group = self.group, %error, "aborting the transaction failed; the broker aborts it once it times out");
        }
    }
}

/// Waits until the gate changes; pending for ever without one (at least once).
pub(super) async fn moved(gate: &mut Option<watch::Receiver<Gate>>) {
    match gate {
        Some(gate) => {
            if gate.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        }
        None => futures::future::pending().await,
    }
}

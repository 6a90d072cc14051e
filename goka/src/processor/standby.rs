//! Hot standby (goka's `WithHotStandby`): an instance keeps following the tables (group
//! table and joined tables) of the partitions it does not own, from the moment it starts,
//! so a rebalance that hands it one only reads what was written since: a takeover in
//! milliseconds instead of a full recovery. The partition's task takes the storages over,
//! written and out of recovery mode, and recovers from where the standby stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use futures::FutureExt;

use super::consumer::panic_text;
use super::partition::read_table;
use super::{ProcessorError, Shared};
use crate::storage::Storage;
use crate::table::{next_of_any, Step};

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
    /// Starts following the tables `topics` of `partition`, unless they are followed already.
    pub(super) fn follow(
        &self,
        shared: &Arc<Shared>,
        runtime: &Handle,
        topics: &[&'static str],
        partition: i32,
    ) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if partitions.contains_key(&partition) || shared.cancel.is_cancelled() {
            return;
        }
        let stop = shared.cancel.child_token();
        let following = follow(shared.clone(), topics.to_vec(), partition, stop.clone());
        let shared = shared.clone();
        let handle = runtime.spawn(async move {
            // Standby never decides what a table holds, but a panic in it (storage, a codec)
            // is a fault like one in the partition's task: the processor stops, naming it.
            match std::panic::AssertUnwindSafe(following).catch_unwind().await {
                Ok(storages) => storages,
                Err(panic) => {
                    shared.fail(ProcessorError::PartitionPanicked {
                        group: shared.group,
                        partition,
                        message: format!("hot standby panicked: {}", panic_text(&*panic)),
                    });
                    Storages::new()
                }
            }
        });
        partitions.insert(partition, Standby { stop, handle });
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

/// Follows the tables `topics` of `partition` until `stop` fires; returns their storages.
/// A table that cannot be opened or read is logged and left to the full recovery a takeover
/// would do anyway: standby makes takeovers fast, it never decides what the table holds.
async fn follow(
    shared: Arc<Shared>,
    topics: Vec<&'static str>,
    partition: i32,
    stop: CancellationToken,
) -> Storages {
    let group = shared.group;
    let mut storages = Storages::new();
    let mut readers = Vec::new();
    for topic in topics {
        let storage: Arc<dyn Storage> = match shared.config.storage.build(topic, partition) {
            Ok(storage) => storage.into(),
            Err(error) => {
                tracing::warn!(group, topic, partition, %error, "hot standby cannot open the table partition; a takeover recovers it in full");
                continue;
            }
        };
        storages.insert(topic, storage.clone());
        let stored = storage.offset().ok().flatten();
        let start = read_table(
            &shared,
            &shared.standby_figures,
            topic,
            partition,
            storage,
            stored,
        );
        tokio::select! {
            started = start => match started {
                Ok(reader) => readers.push(reader),
                Err(error) => tracing::warn!(group, topic, partition, %error, "hot standby cannot read the table partition; a takeover recovers it"),
            },
            _ = stop.cancelled() => break,
        }
    }
    tracing::debug!(
        group,
        partition,
        tables = readers.len(),
        "following table partitions in standby"
    );
    while !readers.is_empty() {
        let (index, step) = tokio::select! {
            _ = stop.cancelled() => break,
            next = next_of_any(&mut readers) => next,
        };
        match step {
            Ok(Step::Read | Step::StateChanged) => {}
            Ok(Step::Closed) => {
                readers.swap_remove(index);
            }
            Err(error) => {
                let reader = readers.swap_remove(index);
                tracing::warn!(group, topic = reader.topic(), partition, %error, "hot standby stopped following the table partition; a takeover recovers from where it got");
                let _ = reader.stop();
            }
        }
    }
    for reader in readers {
        let topic = reader.topic();
        if let Err(error) = reader.stop() {
            tracing::warn!(group, topic, partition, %error, "hot standby could not write what it read");
        }
    }
    shared.standby_figures.forget(partition);
    storages
}

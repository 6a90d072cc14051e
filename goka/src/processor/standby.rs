//! Hot standby (goka's `WithHotStandby`): an instance keeps following the tables (group
//! table and joined tables) of the partitions it does not own, from the moment it starts,
//! so a rebalance that hands it one only reads what was written since: a takeover in
//! milliseconds instead of a full recovery. The partition's task takes the storages over,
//! written and out of recovery mode, and recovers from where the standby stopped.

use std::sync::Arc;

use futures::FutureExt;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::error::{panic_text, ProcessorError};
use super::shared::{Shared, Storages};
use super::state::read_table;
use crate::storage::Storage;
use crate::table::{next_of_any, Step};

/// Starts following the tables `topics` of `partition`, unless they are followed already.
pub(super) fn start(
    shared: &Arc<Shared>,
    runtime: &Handle,
    topics: &[&'static str],
    partition: i32,
) {
    if shared.cancel.is_cancelled() {
        return;
    }
    shared.standbys.start_once(partition, || {
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
        (stop, handle)
    });
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

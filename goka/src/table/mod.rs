//! Table partitions kept from their changelogs (goka's `PartitionTable`).
//!
//! One reader serves every place that keeps a table: a view's partitions, the recovery of a
//! processor's group table and the tables a processor joins. It decides where a partition
//! starts (after its local state, inside what the changelog still has), applies the
//! changelog in batches, notices when a partition caught up, checks values, and keeps each
//! partition's figures ([`TableStats`]) for stats and the monitor.

mod progress;
mod reader;
mod start;

pub(crate) use self::progress::TableProgress;
pub use self::progress::{RecoveryStats, TableState, TableStats};
pub use self::reader::UpdateCallback;
pub(crate) use self::reader::{
    follow_high_watermarks, next_of_any, Apply, Step, TableError, TablePartition, TableReader,
    Validate,
};

#[cfg(test)]
mod tests;

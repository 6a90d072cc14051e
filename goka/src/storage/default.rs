//! The storage processors and views use unless told otherwise: on disk, in RocksDB, under a
//! directory of their own in the system's temporary directory, removed when they are dropped.
//!
//! On disk because a table can be far larger than memory (goka's default is on disk too). A
//! directory per instance because two instances of one group, or two test runs against
//! brokers that were started anew, must never open each other's rows: a table found on disk
//! is trusted up to its stored offset. State that should survive a restart needs a path the
//! next run finds again: `RocksDbBuilder::new(path)`.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Storage, StorageBuilder, StorageError};

/// The default [`StorageBuilder`] of [`ProcessorConfig`](crate::processor::ProcessorConfig)
/// and [`View`](crate::view::View)s. See the [storage module](crate::storage).
///
/// Each processor group or view it is given to gets a directory of its own,
/// `<tmp>/goka/<processor|view>/<group or table>/<pid>-<n>`, removed when the processor or
/// view is dropped. Tables are written without RocksDB's write-ahead log (the changelog is
/// the source of truth); a processor's tables update their rows in place and share 64 MiB of
/// memtables. Without the `rocksdb` feature, tables are kept in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultStorage;

/// The memtables of all table partitions of one processor, together.
#[cfg(feature = "rocksdb")]
const PROCESSOR_MEMTABLES: usize = 64 << 20;

/// Who a [`DefaultStorage`] is scoped to.
#[derive(Debug, Clone, Copy)]
// Without RocksDB the default is memory, which is scoped by nature: the names go unread.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
pub(crate) enum Owner<'a> {
    /// The group table and joined tables of a processor group.
    Processor(&'a str),
    /// The table of a view.
    View(&'a str),
}

impl StorageBuilder for DefaultStorage {
    /// Opens the storage in a directory of this process's own, for builders used on their
    /// own (processors and views scope it first).
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        shared_unscoped().build(topic, partition)
    }

    fn scoped_default(&self) -> bool {
        true
    }
}

/// The builder `owner` uses: `builder` itself, or, where that is [`DefaultStorage`], a
/// directory of the owner's own, removed with the returned builder.
pub(crate) fn scoped(
    builder: Arc<dyn StorageBuilder>,
    owner: Owner<'_>,
) -> Arc<dyn StorageBuilder> {
    if builder.scoped_default() {
        default_for(owner)
    } else {
        builder
    }
}

#[cfg(feature = "rocksdb")]
fn default_for(owner: Owner<'_>) -> Arc<dyn StorageBuilder> {
    let (kind, name, in_place) = match owner {
        // A group table's rows are rewritten message after message.
        Owner::Processor(group) => ("processor", group, true),
        // A view loads rows in bulk, which in-place updates slow down.
        Owner::View(table) => ("view", table, false),
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = std::env::temp_dir()
        .join("goka")
        .join(kind)
        .join(name)
        .join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
    let mut rocksdb = super::RocksDbBuilder::new(&root);
    if in_place {
        // Memory stays flat however many partitions the instance owns.
        rocksdb = rocksdb
            .update_in_place()
            .memtable_budget(PROCESSOR_MEMTABLES);
    }
    Arc::new(Scoped {
        rocksdb,
        root: RemovedOnDrop(root),
    })
}

/// Held while a default directory is created and while emptied parents are removed: one
/// owner's cleanup never removes a parent another owner of this process is creating its
/// directory in.
static PARENTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(not(feature = "rocksdb"))]
fn default_for(_owner: Owner<'_>) -> Arc<dyn StorageBuilder> {
    Arc::new(super::MemoryBuilder)
}

/// A [`DefaultStorage`] used outside a processor or view: one directory per process.
fn shared_unscoped() -> &'static Arc<dyn StorageBuilder> {
    static SHARED: std::sync::OnceLock<Arc<dyn StorageBuilder>> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| default_for(Owner::Processor("unscoped")))
}

/// The default storage of one processor group or view.
#[cfg(feature = "rocksdb")]
struct Scoped {
    rocksdb: super::RocksDbBuilder,
    /// Removed after every storage the builder opened is gone (the owner drops it last).
    root: RemovedOnDrop,
}

#[cfg(feature = "rocksdb")]
impl StorageBuilder for Scoped {
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        {
            let _creating = PARENTS.lock().unwrap_or_else(|p| p.into_inner());
            std::fs::create_dir_all(&self.root.0).map_err(|e| StorageError::Open {
                topic: topic.to_owned(),
                partition,
                path: self.root.0.clone(),
                message: e.to_string(),
            })?;
        }
        self.rocksdb.build(topic, partition)
    }
}

/// A directory under `<tmp>/goka` removed (with everything in it) when this is dropped, and
/// its parents up to `<tmp>/goka` with it once they are empty: a run leaves nothing behind.
#[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _removing = PARENTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), %error, "cannot remove a table directory");
                return;
            }
        }
        let top = std::env::temp_dir();
        // `remove_dir` removes only an empty directory: the first parent still in use (by
        // another owner, another process) ends the walk.
        for parent in self.0.ancestors().skip(1) {
            if parent == top || !parent.starts_with(&top) || std::fs::remove_dir(parent).is_err() {
                break;
            }
        }
    }
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{default_for, Owner};

    #[test]
    fn a_dropped_default_storage_leaves_no_directory_behind() {
        let group = format!("unit-leaves-nothing-{}", std::process::id());
        let dir = std::env::temp_dir()
            .join("goka")
            .join("processor")
            .join(&group);
        let (first, second) = (
            default_for(Owner::Processor(&group)),
            default_for(Owner::Processor(&group)),
        );
        let table = first.build("clicks-table", 0).unwrap();
        let other = second.build("clicks-table", 0).unwrap();
        drop(table);
        drop(first);
        assert!(
            dir.is_dir(),
            "the other instance's directory is still in use"
        );
        drop(other);
        drop(second);
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
}

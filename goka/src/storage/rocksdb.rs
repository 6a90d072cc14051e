//! RocksDB storage: the default backend, one database per topic partition at
//! `<root>/<topic>.<partition>`.
//!
//! Rows live in the default column family; the offset lives under `__offset` in a column
//! family of its own (`goka`), written in the same write batch as the rows it covers. Atomic
//! flush keeps the two column families consistent when the write-ahead log is off during
//! recovery, so a crash can lose the tail of a bulk load but never leave the offset ahead of
//! the rows.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ::rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBRawIteratorWithThreadMode, FlushOptions, Options, ReadOptions, WriteOptions, DB,
};

use super::{
    partition_path, BatchOp, KeyRange, PartitionId, Storage, StorageBuilder, StorageError,
    StorageIter, WriteBatch, OFFSET_KEY,
};

/// Name of the column family holding `__offset`.
const META_CF: &str = "goka";

/// Storage of one topic partition in a RocksDB database.
pub struct RocksDbStorage {
    id: PartitionId,
    path: PathBuf,
    db: DB,
    recovering: AtomicBool,
    /// Whether normal writes go through the write-ahead log.
    wal: bool,
    closed: AtomicBool,
}

impl fmt::Debug for RocksDbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbStorage")
            .field("topic", &self.id.topic)
            .field("partition", &self.id.partition)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksDbStorage {
    /// Opens or creates the database of `partition` of `topic` in the directory `path`.
    pub fn open(path: impl AsRef<Path>, topic: &str, partition: i32) -> Result<Self, StorageError> {
        Self::open_with(path, topic, partition, |_| {})
    }

    /// Like [`open`](Self::open), letting `tune` adjust the RocksDB options first.
    pub fn open_with(
        path: impl AsRef<Path>,
        topic: &str,
        partition: i32,
        tune: impl FnOnce(&mut Options),
    ) -> Result<Self, StorageError> {
        let path = path.as_ref().to_owned();
        let id = PartitionId::new(topic, partition);
        let open_error = |message: String| {
            if message.contains("lock") {
                StorageError::Locked {
                    topic: topic.to_owned(),
                    partition,
                    path: path.clone(),
                }
            } else {
                StorageError::Open {
                    topic: topic.to_owned(),
                    partition,
                    path: path.clone(),
                    message,
                }
            }
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| open_error(format!("cannot create the directory: {e}")))?;

        let mut opts = default_options();
        tune(&mut opts);
        let cfs = [
            ColumnFamilyDescriptor::new(::rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
        ];
        let db =
            DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| open_error(e.into_string()))?;
        let storage = Self {
            id,
            path,
            db,
            recovering: AtomicBool::new(false),
            wal: true,
            closed: AtomicBool::new(false),
        };
        // Fail at open, not at first use, when the stored offset is unreadable.
        storage.offset()?;
        Ok(storage)
    }

    /// Writes without the write-ahead log from now on, also outside recovery. Faster; a crash
    /// then loses what was not flushed yet, rows and offset together (atomic flush), so the
    /// partition replays a longer stretch of its changelog. Suits tables whose changelog is
    /// the source of truth, as a processor's group table.
    pub fn without_wal(mut self) -> Self {
        self.wal = false;
        self
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(&self) -> Result<&ColumnFamily, StorageError> {
        self.db.cf_handle(META_CF).ok_or_else(|| {
            self.id
                .backend("open column family", "column family `goka` is missing")
        })
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.id.closed());
        }
        Ok(())
    }

    fn write_options(&self) -> WriteOptions {
        let mut opts = WriteOptions::default();
        // Bulk loads skip the WAL; mark_recovered flushes the memtables instead.
        opts.disable_wal(!self.wal || self.recovering.load(Ordering::Acquire));
        opts
    }

    fn write(
        &self,
        batch: ::rocksdb::WriteBatch,
        operation: &'static str,
    ) -> Result<(), StorageError> {
        self.check_open()?;
        self.db
            .write_opt(batch, &self.write_options())
            .map_err(|e| self.id.backend(operation, e))
    }

    /// Flushes the memtables of both column families together; `wait` blocks until the
    /// files are written.
    fn flush_all(&self, wait: bool) -> Result<(), StorageError> {
        let meta = self.meta()?;
        let default = self
            .db
            .cf_handle(::rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .ok_or_else(|| self.id.backend("flush", "default column family is missing"))?;
        self.db
            .flush_cfs_opt(&[default, meta], &{
                let mut opts = FlushOptions::default();
                opts.set_wait(wait);
                opts
            })
            .map_err(|e| self.id.backend("flush", e))
    }
}

/// Batches at least this long are written in key order.
const SORT_BATCHES_FROM: usize = 64;

fn default_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Rows and offset live in two column families: flush them together so a crash with the
    // WAL off never persists an offset without its rows.
    opts.set_atomic_flush(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.increase_parallelism(std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    let mut table = BlockBasedOptions::default();
    // Lookups of missing keys (joins, `has`) skip data blocks.
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts
}

impl Storage for RocksDbStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.check_open()?;
        match self.db.get_pinned(key) {
            Ok(value) => Ok(value.map(|v| v.to_vec())),
            Err(e) => Err(self.id.backend("get", e)),
        }
    }

    fn get_with(&self, key: &[u8], read: &mut dyn FnMut(&[u8])) -> Result<bool, StorageError> {
        self.check_open()?;
        match self.db.get_pinned(key) {
            Ok(Some(value)) => {
                read(&value);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(self.id.backend("get", e)),
        }
    }

    fn has(&self, key: &[u8]) -> Result<bool, StorageError> {
        self.check_open()?;
        match self.db.get_pinned(key) {
            Ok(value) => Ok(value.is_some()),
            Err(e) => Err(self.id.backend("has", e)),
        }
    }

    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut batch = ::rocksdb::WriteBatch::default();
        batch.put(key, value);
        self.write(batch, "set")
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let mut batch = ::rocksdb::WriteBatch::default();
        batch.delete(key);
        self.write(batch, "delete")
    }

    fn apply(&self, batch: &WriteBatch, offset: Option<i64>) -> Result<(), StorageError> {
        // Room for every record (a tag and two lengths besides the bytes) and the offset, so
        // the batch does not grow by copying itself.
        let mut raw =
            ::rocksdb::WriteBatch::with_capacity_bytes(batch.bytes() + 16 * batch.len() + 64);
        let mut ops: Vec<BatchOp<'_>> = batch.ops().collect();
        // The memtable is a skip list: keys inserted in order reuse the previous insert's
        // position instead of searching from the top with a cache miss per level (random
        // order made these searches 60% of a bulk load). The sort is stable, so several
        // writes of one key keep their order and the last one wins.
        if ops.len() >= SORT_BATCHES_FROM {
            ops.sort_by(|a, b| a.key().cmp(b.key()));
        }
        for op in ops {
            match op {
                BatchOp::Set { key, value } => raw.put(key, value),
                BatchOp::Delete { key } => raw.delete(key),
            }
        }
        if let Some(offset) = offset {
            raw.put_cf(self.meta()?, OFFSET_KEY, offset.to_string());
        }
        self.write(raw, "apply")
    }

    fn offset(&self) -> Result<Option<i64>, StorageError> {
        self.check_open()?;
        let raw = self
            .db
            .get_pinned_cf(self.meta()?, OFFSET_KEY)
            .map_err(|e| self.id.backend("read offset", e))?;
        raw.map(|raw| self.id.parse_offset(&self.path, &raw))
            .transpose()
    }

    fn range(&self, range: KeyRange) -> Result<Box<dyn StorageIter + '_>, StorageError> {
        self.check_open()?;
        let mut opts = ReadOptions::default();
        if let Some(end) = &range.end {
            opts.set_iterate_upper_bound(end.clone());
        }
        // A scan should not push hot rows out of the block cache.
        opts.fill_cache(false);
        let mut inner = self.db.raw_iterator_opt(opts);
        match &range.start {
            Some(start) => inner.seek(start),
            None => inner.seek_to_first(),
        }
        Ok(Box::new(RocksDbIter {
            inner,
            range,
            id: &self.id,
            advance: false,
            failed: false,
        }))
    }

    fn begin_recovery(&self) -> Result<(), StorageError> {
        self.check_open()?;
        self.db
            .set_options(&[("disable_auto_compactions", "true")])
            .map_err(|e| self.id.backend("begin recovery", e))?;
        self.recovering.store(true, Ordering::Release);
        Ok(())
    }

    fn mark_recovered(&self) -> Result<(), StorageError> {
        self.check_open()?;
        if self.recovering.load(Ordering::Acquire) {
            // What was written without the WAL becomes durable here. With the WAL, later
            // writes would be in the log while recovered rows were not on disk yet, so wait;
            // without it, rows and offset only ever reach disk together, so the flush may run
            // in the background while the partition goes on.
            self.flush_all(self.wal)?;
            self.recovering.store(false, Ordering::Release);
            self.db
                .set_options(&[("disable_auto_compactions", "false")])
                .map_err(|e| self.id.backend("mark recovered", e))?;
        }
        Ok(())
    }

    fn close(&self) -> Result<(), StorageError> {
        self.check_open()?;
        // Without the WAL, only a flush makes the last writes durable: a clean close should
        // not cost the next start a replay.
        if self.recovering.load(Ordering::Acquire) || !self.wal {
            self.flush_all(true)?;
        } else {
            self.db
                .flush_wal(true)
                .map_err(|e| self.id.backend("close", e))?;
        }
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

struct RocksDbIter<'a> {
    inner: DBRawIteratorWithThreadMode<'a, DB>,
    range: KeyRange,
    id: &'a PartitionId,
    /// Whether `next` must step before reading: false right after a seek.
    advance: bool,
    /// An error was reported; the iterator is finished.
    failed: bool,
}

impl Iterator for RocksDbIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.advance {
            self.inner.next();
        }
        self.advance = true;
        match self.inner.item() {
            Some((key, value)) => Some(Ok((key.to_vec(), value.to_vec()))),
            None => match self.inner.status() {
                Ok(()) => None,
                Err(e) => {
                    self.failed = true;
                    Some(Err(self.id.backend("iterate", e)))
                }
            },
        }
    }
}

impl StorageIter for RocksDbIter<'_> {
    fn seek(&mut self, key: &[u8]) {
        let target = self.range.clamp_seek(key).to_vec();
        self.inner.seek(target);
        self.advance = false;
    }
}

/// A user hook adjusting RocksDB options before a database opens.
type TuneOptions = dyn Fn(&mut Options) + Send + Sync;

/// Opens a [`RocksDbStorage`] per topic partition under one root directory, at
/// `<root>/<topic>.<partition>` (goka's `storage.DefaultBuilder`).
#[derive(Clone)]
pub struct RocksDbBuilder {
    root: PathBuf,
    tune: Option<Arc<TuneOptions>>,
    wal: bool,
    in_place: bool,
    budget: Option<(usize, ::rocksdb::WriteBufferManager)>,
}

impl fmt::Debug for RocksDbBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbBuilder")
            .field("root", &self.root)
            .field("tuned", &self.tune.is_some())
            .field("wal", &self.wal)
            .field("in_place", &self.in_place)
            .field(
                "memtable_budget",
                &self.budget.as_ref().map(|(bytes, _)| bytes),
            )
            .finish()
    }
}

impl RocksDbBuilder {
    /// Databases go under `root`, one directory per topic partition, written without the
    /// write-ahead log (see [`with_wal`](Self::with_wal)).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            tune: None,
            wal: false,
            in_place: false,
            budget: None,
        }
    }

    /// Bounds the memtables of every database this builder opens to `bytes` in total: when
    /// they hold more, RocksDB flushes the largest. Without a budget each partition's
    /// memtables grow to RocksDB's own limits (64 MiB, twice) before flushing, so resident
    /// memory follows the number of partitions times that.
    pub fn memtable_budget(mut self, bytes: usize) -> Self {
        let manager = ::rocksdb::WriteBufferManager::new_write_buffer_manager(bytes, false);
        self.budget = Some((bytes, manager));
        self
    }

    /// Writes through RocksDB's write-ahead log. Off by default: a table's changelog is its
    /// source of truth, and rows and stored offset reach disk together either way (RocksDB
    /// flushes them atomically), so a crash without the log only loses the last rows
    /// written *and* the offset that covers them, and recovery reads that stretch of the
    /// changelog again. The log costs every write (about an eighth of the processor's CPU
    /// in the bench); it is worth it only for tables that are not changelogged.
    pub fn with_wal(mut self) -> Self {
        self.wal = true;
        self
    }

    /// Opens every storage [`without_wal`](RocksDbStorage::without_wal) (the default).
    pub fn without_wal(mut self) -> Self {
        self.wal = false;
        self
    }

    /// Updates a row in place when its new value is no longer than the old one, for tables
    /// whose rows are rewritten message after message (a processor's group table, e.g. a
    /// counter). Otherwise each update leaves a version in the memtable until it is flushed,
    /// and every read and write searches them all: in the processor bench this option cut
    /// the time spent in RocksDB by about a third. The price: every write first looks its
    /// key up, which slows bulk loads of new rows (a view's recovery by about a tenth), and,
    /// per RocksDB, iterators see no point-in-time snapshot of rows changing under them and
    /// cannot go backwards (goka's iterators make no such promise; ours go forwards only).
    pub fn update_in_place(mut self) -> Self {
        self.in_place = true;
        self
    }

    /// Adjusts the RocksDB options of every database this builder opens (memtable size,
    /// block cache, compression, ...).
    pub fn with_options(mut self, tune: impl Fn(&mut Options) + Send + Sync + 'static) -> Self {
        self.tune = Some(Arc::new(tune));
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl StorageBuilder for RocksDbBuilder {
    fn build(&self, topic: &str, partition: i32) -> Result<Box<dyn Storage>, StorageError> {
        let path = partition_path(&self.root, topic, partition);
        let tune = self.tune.clone();
        let storage = RocksDbStorage::open_with(path, topic, partition, |opts| {
            if let Some((_, manager)) = &self.budget {
                opts.set_write_buffer_manager(manager);
            }
            if self.in_place {
                // In-place updates need memtable writes from one thread at a time, as a
                // partition's are.
                opts.set_allow_concurrent_memtable_write(false);
                opts.set_inplace_update_support(true);
            }
            if let Some(tune) = tune {
                tune(opts);
            }
        })?;
        Ok(Box::new(if self.wal {
            storage
        } else {
            storage.without_wal()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;
    use proptest::prelude::*;

    crate::storage_suite!(|dir| Box::new(RocksDbStorage::open(dir, "suite", 0).unwrap()));

    mod in_place {
        use super::*;

        crate::storage_suite!(|dir| RocksDbBuilder::new(dir)
            .update_in_place()
            .build("suite", 0)
            .unwrap());

        #[test]
        fn shorter_and_longer_values_read_back_and_survive_a_reopen() {
            let dir = tempfile::tempdir().unwrap();
            let builder = RocksDbBuilder::new(dir.path()).update_in_place();
            {
                let s = builder.build("t", 0).unwrap();
                for value in [&b"100"[..], b"7", b"12345", b""] {
                    s.set(b"count", value).unwrap();
                    assert_eq!(s.get(b"count").unwrap().as_deref(), Some(value));
                }
                s.set(b"other", b"x").unwrap();
                let rows: Vec<_> = s.iter().unwrap().map(Result::unwrap).collect();
                assert_eq!(
                    rows,
                    [
                        (b"count".to_vec(), Vec::new()),
                        (b"other".to_vec(), b"x".to_vec())
                    ]
                );
                s.set(b"count", b"42").unwrap();
                s.close().unwrap();
            }
            let s = builder.build("t", 0).unwrap();
            assert_eq!(s.get(b"count").unwrap().as_deref(), Some(&b"42"[..]));
        }
    }

    mod without_wal {
        use super::*;

        crate::storage_suite!(|dir| Box::new(
            RocksDbStorage::open(dir, "suite", 0).unwrap().without_wal()
        ));

        #[test]
        fn reopen_after_close_keeps_rows_and_offset() {
            let dir = tempfile::tempdir().unwrap();
            let builder = RocksDbBuilder::new(dir.path()).without_wal();
            {
                let s = builder.build("t", 0).unwrap();
                let mut batch = WriteBatch::new();
                batch.set(b"k", b"v");
                s.apply(&batch, Some(3)).unwrap();
                s.close().unwrap();
            }
            let s = builder.build("t", 0).unwrap();
            assert_eq!(s.offset().unwrap(), Some(3), "close flushed the memtables");
            assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        }
    }

    #[test]
    fn reopen_after_close_keeps_rows_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let builder = RocksDbBuilder::new(dir.path());
        {
            let s = builder.build("clicks-table", 3).unwrap();
            let mut batch = WriteBatch::new();
            batch.set(b"alice", b"3");
            batch.set(b"bob", b"5");
            s.apply(&batch, Some(17)).unwrap();
            s.delete(b"bob").unwrap();
            s.close().unwrap();
        }
        assert!(
            dir.path().join("clicks-table.3").is_dir(),
            "goka's <topic>.<partition> layout"
        );
        let s = builder.build("clicks-table", 3).unwrap();
        assert_eq!(s.offset().unwrap(), Some(17));
        assert_eq!(s.get(b"alice").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(s.get(b"bob").unwrap(), None);
    }

    #[test]
    fn dropping_without_close_keeps_consistent_state() {
        let dir = tempfile::tempdir().unwrap();
        for recovering in [false, true] {
            let path = dir.path().join(format!("p-{recovering}"));
            {
                let s = RocksDbStorage::open(&path, "t", 0).unwrap();
                if recovering {
                    s.begin_recovery().unwrap();
                }
                load(&s, 0..20_000, 1000);
            }
            let s = RocksDbStorage::open(&path, "t", 0).unwrap();
            check_offset_covers_rows(&s);
        }
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RocksDbStorage::open(dir.path(), "views-table", 1).unwrap();
        let err = RocksDbStorage::open(dir.path(), "views-table", 1).unwrap_err();
        assert!(matches!(err, StorageError::Locked { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("views-table") && text.contains("partition 1"),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
    }

    #[test]
    fn an_unusable_path_is_reported_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = RocksDbStorage::open(file.join("db"), "t", 2).unwrap_err();
        assert!(matches!(err, StorageError::Open { .. }), "{err}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn a_corrupt_offset_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksDbStorage::open(dir.path(), "t", 0).unwrap();
            let mut raw = ::rocksdb::WriteBatch::default();
            raw.put_cf(s.meta().unwrap(), OFFSET_KEY, b"12x");
            s.db.write(raw).unwrap();
        }
        let err = RocksDbStorage::open(dir.path(), "t", 5).unwrap_err();
        assert!(matches!(err, StorageError::CorruptOffset { .. }), "{err}");
        assert!(err.to_string().contains("12x"), "{err}");
    }

    /// Writes rows `key-i -> value-i` in batches, each with the offset of its last row.
    fn load(s: &dyn Storage, rows: std::ops::Range<u64>, batch_size: u64) {
        let mut batch = WriteBatch::with_capacity(batch_size as usize);
        for i in rows {
            batch.set(
                format!("key-{i:08}").into_bytes(),
                format!("value-{i}").into_bytes(),
            );
            if (i + 1) % batch_size == 0 {
                s.apply(&batch, Some(i as i64)).unwrap();
                batch.clear();
            }
        }
    }

    /// Every row up to the stored offset is there with its value: the offset never points
    /// past a missing row. Returns the offset.
    fn check_offset_covers_rows(s: &dyn Storage) -> Option<i64> {
        let offset = s.offset().unwrap();
        if let Some(offset) = offset {
            for i in 0..=offset {
                let value = s.get(format!("key-{i:08}").as_bytes()).unwrap();
                assert_eq!(
                    value,
                    Some(format!("value-{i}").into_bytes()),
                    "row {i} of offset {offset}"
                );
            }
        }
        offset
    }

    const CRASH_DIR: &str = "GOKA_STORAGE_CRASH_DIR";
    const CRASH_MODE: &str = "GOKA_STORAGE_CRASH_MODE";

    /// Run by `killed_in_the_middle_of_a_load_*` in a child process: loads rows forever
    /// until killed.
    #[test]
    #[ignore = "child process of the crash tests"]
    fn crash_child_loads_until_killed() {
        let (Ok(dir), Ok(mode)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_MODE)) else {
            panic!("run by the crash tests only");
        };
        let mut s = RocksDbStorage::open(dir, "t", 0).unwrap();
        if mode == "no-wal" {
            s = s.without_wal();
        }
        if mode == "recovery" {
            s.begin_recovery().unwrap();
        }
        let start = s.offset().unwrap().map_or(0, |o| o as u64 + 1);
        println!("loading");
        load(&s, start..u64::MAX, 500);
    }

    fn kill_child_mid_load(mode: &str) {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut last = None;
        for round in 0..3u64 {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "storage::rocksdb::tests::crash_child_loads_until_killed",
                ])
                .env(CRASH_DIR, dir.path())
                .env(CRASH_MODE, mode)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(700 + 300 * round));
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(
                !status.success(),
                "the child must have been killed, not finished"
            );
            let s = RocksDbStorage::open(dir.path(), "t", 0).unwrap();
            let offset = check_offset_covers_rows(&s);
            if mode == "normal" {
                assert!(
                    offset.is_some(),
                    "with the WAL on, a load of 0.7 s persists rows"
                );
                assert!(
                    offset >= last,
                    "offsets never go backwards: {offset:?} < {last:?}"
                );
            }
            last = offset;
        }
    }

    #[test]
    fn killed_in_the_middle_of_a_load_keeps_offset_and_rows_consistent() {
        kill_child_mid_load("normal");
    }

    #[test]
    fn killed_in_the_middle_of_a_recovery_keeps_offset_and_rows_consistent() {
        kill_child_mid_load("recovery");
    }

    #[test]
    fn killed_in_the_middle_of_a_load_without_wal_keeps_offset_and_rows_consistent() {
        kill_child_mid_load("no-wal");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
        Apply(Vec<(Vec<u8>, Option<Vec<u8>>)>, Option<i64>),
    }

    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        // A tiny alphabet with 0xff so prefixes, overwrites and deletes collide often.
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0xffu8)], 0..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        let value = proptest::collection::vec(any::<u8>(), 0..8);
        prop_oneof![
            (small_key(), value.clone()).prop_map(|(k, v)| Op::Set(k, v)),
            small_key().prop_map(Op::Delete),
            (
                proptest::collection::vec((small_key(), proptest::option::of(value)), 0..6),
                proptest::option::of(0i64..1000)
            )
                .prop_map(|(ops, offset)| Op::Apply(ops, offset)),
        ]
    }

    fn run(s: &dyn Storage, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Set(k, v) => s.set(k, v).unwrap(),
                Op::Delete(k) => s.delete(k).unwrap(),
                Op::Apply(rows, offset) => {
                    let mut batch = WriteBatch::new();
                    for (k, v) in rows {
                        batch.set_or_delete(k, v.as_ref());
                    }
                    s.apply(&batch, *offset).unwrap();
                }
            }
        }
    }

    fn collect(s: &dyn Storage, range: KeyRange, seek: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut it = s.range(range).unwrap();
        if let Some(key) = seek {
            it.seek(key);
        }
        it.collect::<Result<_, _>>().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn rocksdb_and_memory_agree(
            ops in proptest::collection::vec(op(), 0..40),
            a in small_key(),
            b in small_key(),
            seek in small_key(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let rocks = RocksDbStorage::open(dir.path(), "prop", 0).unwrap();
            let memory = MemoryStorage::new("prop", 0);
            run(&rocks, &ops);
            run(&memory, &ops);
            prop_assert_eq!(rocks.offset().unwrap(), memory.offset().unwrap());
            let ranges = [
                KeyRange::all(),
                KeyRange::prefix(a.clone()),
                KeyRange::between(a.clone(), b.clone()),
                KeyRange { start: Some(b.clone()), end: None },
            ];
            for range in ranges {
                for seek in [None, Some(seek.as_slice())] {
                    prop_assert_eq!(
                        collect(&rocks, range.clone(), seek),
                        collect(&memory, range.clone(), seek),
                        "range {:?} seek {:?}", range, seek
                    );
                }
            }
            for key in [&a, &b, &seek] {
                prop_assert_eq!(rocks.get(key).unwrap(), memory.get(key).unwrap());
                prop_assert_eq!(rocks.has(key).unwrap(), memory.has(key).unwrap());
            }
        }
    }
}

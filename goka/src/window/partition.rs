//! The windows of one partition of a running processor (or of the tester): each window
//! declaration's local storage, the partition's stream time, and which windows close or are
//! dropped next.
//!
//! A stored row holds its window's state and end before the value ([`super::row`]). Closing
//! writes the row again marked closed, so that a restarted partition does not close it a
//! second time; dropping writes a tombstone.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::key::decode_window_key;
use super::WindowRange;
use crate::graph::WindowEdge;
use crate::storage::{Storage, StorageError};

use super::row::{self, CLOSED};

/// No message handled yet.
const NO_TIME: i64 = i64::MIN;

/// The windows of one partition.
pub(crate) struct PartitionWindows {
    /// The highest timestamp the partition handled (Kafka Streams' stream time).
    stream_time: AtomicI64,
    pub(crate) tables: Vec<WindowStore>,
}

/// One window declaration's rows in one partition: its store and the index of when each
/// row closes and is dropped. (`WindowTable<P, W>` is the table topic users read.)
pub(crate) struct WindowStore {
    pub(crate) edge: &'static WindowEdge,
    pub(crate) storage: Arc<dyn Storage>,
    /// Rows not closed yet, by the stream time they close at; rows closed, by the stream
    /// time they are dropped at.
    due: Mutex<Due>,
    /// Messages that came for windows of this table that had closed.
    pub(crate) late: AtomicU64,
}

#[derive(Default)]
struct Due {
    closing: BTreeSet<(i64, Vec<u8>)>,
    dropping: BTreeSet<(i64, Vec<u8>)>,
    /// Where each row is: in `closing` (true) or `dropping`, at which time.
    rows: HashMap<Vec<u8>, (bool, i64)>,
}

/// A window whose time came: close it (call `on_close`, mark it closed) or drop it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DueWindow {
    Close { row: Vec<u8> },
    Drop { row: Vec<u8> },
}

impl PartitionWindows {
    /// The windows of `edges` in their storages, none indexed yet.
    pub(crate) fn new(tables: Vec<(&'static WindowEdge, Arc<dyn Storage>)>) -> Self {
        Self {
            stream_time: AtomicI64::new(NO_TIME),
            tables: tables
                .into_iter()
                .map(|(edge, storage)| WindowStore {
                    edge,
                    storage,
                    due: Mutex::new(Due::default()),
                    late: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// The same windows, their stores replaced by `hold(store)` (exactly-once puts each
    /// behind the member's transaction), with their index, stream time and late counts.
    pub(crate) fn held(&self, mut hold: impl FnMut(&Arc<dyn Storage>) -> Arc<dyn Storage>) -> Self {
        Self {
            stream_time: AtomicI64::new(self.stream_time.load(Ordering::Relaxed)),
            tables: self
                .tables
                .iter()
                .map(|table| WindowStore {
                    edge: table.edge,
                    storage: hold(&table.storage),
                    due: Mutex::new(std::mem::take(&mut *table.lock())),
                    late: AtomicU64::new(table.late.load(Ordering::Relaxed)),
                })
                .collect(),
        }
    }

    /// The table of the window whose changelog is `topic`.
    pub(crate) fn table(&self, topic: &str) -> Option<&WindowStore> {
        self.tables.iter().find(|t| t.topic() == topic)
    }

    /// The stream time, `None` before the first message.
    pub(crate) fn stream_time(&self) -> Option<i64> {
        Some(self.stream_time.load(Ordering::Relaxed)).filter(|t| *t != NO_TIME)
    }

    /// Moves stream time to `timestamp` if that is later; returns the stream time.
    pub(crate) fn advance(&self, timestamp: Option<i64>) -> Option<i64> {
        if let Some(timestamp) = timestamp {
            self.stream_time.fetch_max(timestamp, Ordering::Relaxed);
        }
        self.stream_time()
    }

    /// Indexes every stored row after recovery and sets the stream time.
    ///
    /// With the stream time committed with the partition's input offsets (`committed`),
    /// that is the stream time: exactly that of the messages committed. A row marked closed
    /// whose window closes later than that was closed by a message handled after the
    /// commit, which comes again: the window is open again until that message closes it
    /// once more (`on_close` runs again, as at-least-once allows).
    ///
    /// Without one (a partition this library never committed, or whose commit metadata
    /// could not be read), the stream time is the latest window start found: a lower bound
    /// of the stream time before the restart, so nothing closes early; a window may then
    /// close once more.
    pub(crate) fn index_stored(&self, committed: Option<i64>) -> Result<(), StorageError> {
        if let Some(time) = committed {
            self.stream_time.store(time, Ordering::Relaxed);
        }
        for table in &self.tables {
            let mut due = table.lock();
            *due = Due::default();
            for row in table.storage.iter()? {
                let (row, value) = row?;
                let (Ok((_, start)), Some(value)) = (decode_window_key(&row), row::parse(&value))
                else {
                    continue;
                };
                let window = WindowRange {
                    start,
                    end: value.end,
                };
                let state = match committed {
                    Some(time) if table.edge.spec.closes_at(window) > time => row::OPEN,
                    Some(_) => value.state,
                    None => {
                        // Some message came at the window's start (a session's end) or
                        // later.
                        let seen = match table.edge.spec.kind() {
                            super::WindowKind::Session => value.end.saturating_sub(1),
                            _ => start,
                        };
                        self.stream_time.fetch_max(seen, Ordering::Relaxed);
                        value.state
                    }
                };
                due.index(table.edge, row, window, state);
            }
        }
        Ok(())
    }

    /// The windows of every table whose close or drop time stream time reached, removed
    /// from the index, `limit` at most (the rest stay due); a table's closes first, each in
    /// time order, and its drops only once every close due is taken.
    pub(crate) fn take_due(&self, limit: usize) -> Vec<(usize, DueWindow)> {
        let Some(now) = self.stream_time() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (index, table) in self.tables.iter().enumerate() {
            let mut due = table.lock();
            while let Some((at, row)) = due.closing.first().cloned() {
                if at > now {
                    break;
                }
                if out.len() >= limit {
                    return out;
                }
                due.closing.pop_first();
                due.rows.remove(&row);
                out.push((index, DueWindow::Close { row }));
            }
            while let Some((at, row)) = due.dropping.first().cloned() {
                if at > now {
                    break;
                }
                if out.len() >= limit {
                    return out;
                }
                due.dropping.pop_first();
                due.rows.remove(&row);
                out.push((index, DueWindow::Drop { row }));
            }
        }
        out
    }
}

impl PartitionWindows {
    /// The figures of each window.
    pub(crate) fn stats(&self) -> Vec<super::WindowStats> {
        let stream_time = self.stream_time();
        self.tables
            .iter()
            .map(|table| {
                let due = table.lock();
                super::WindowStats {
                    window: table.edge.name,
                    topic: table.topic(),
                    stream_time,
                    windows: due.closing.len() + due.dropping.len(),
                    late: table.late.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl WindowStore {
    /// The changelog topic of the window's table.
    pub(crate) fn topic(&self) -> &'static str {
        self.edge.topic()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `window` closed by stream time `now`.
    pub(crate) fn closed(&self, window: WindowRange, now: Option<i64>) -> bool {
        now.is_some_and(|now| self.edge.spec.closes_at(window) <= now)
    }

    /// Keeps the index in step with a row written to storage (`None`: deleted).
    pub(crate) fn written(&self, row: &[u8], value: Option<&[u8]>) {
        let mut due = self.lock();
        due.remove(row);
        let (Ok((_, start)), Some(value)) = (decode_window_key(row), value.and_then(row::parse))
        else {
            return;
        };
        due.index(
            self.edge,
            row.to_vec(),
            WindowRange {
                start,
                end: value.end,
            },
            value.state,
        );
    }
}

impl Due {
    fn index(&mut self, edge: &WindowEdge, row: Vec<u8>, window: WindowRange, state: u8) {
        self.remove(&row);
        // Nothing to call at close: only the drop is due.
        let closing = state != CLOSED && edge.on_close;
        let at = if closing {
            edge.spec.closes_at(window)
        } else {
            edge.spec.dropped_at(window)
        };
        self.rows.insert(row.clone(), (closing, at));
        if closing {
            self.closing.insert((at, row));
        } else {
            self.dropping.insert((at, row));
        }
    }

    /// Forgets `row` (a session's end moves, so its entry is found by the row).
    fn remove(&mut self, row: &[u8]) {
        if let Some((closing, at)) = self.rows.remove(row) {
            let entry = (at, row.to_vec());
            if closing {
                self.closing.remove(&entry);
            } else {
                self.dropping.remove(&entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::graph::{Edge, EdgeKind};
    use crate::storage::MemoryStorage;
    use crate::window::row::OPEN;
    use crate::window::{encode_window_key, WindowSpec};

    const EDGE: WindowEdge = WindowEdge {
        edge: Edge::new(EdgeKind::Window, "g-w-window", "string", "json"),
        name: "w",
        spec: WindowSpec::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10)),
        on_close: true,
    };

    fn row(key: &str, start: i64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_window_key(key.as_bytes(), start, &mut out);
        out
    }

    fn val(state: u8, end: i64) -> Vec<u8> {
        let mut out = Vec::new();
        row::header(state, end, &mut out);
        out.push(b'1');
        out
    }

    fn windows() -> PartitionWindows {
        PartitionWindows::new(vec![(&EDGE, Arc::new(MemoryStorage::new("g-w-window", 0)))])
    }

    #[test]
    fn a_window_closes_at_end_plus_grace_then_drops_at_end_plus_retention() {
        let w = windows();
        let table = &w.tables[0];
        table.written(&row("a", 0), Some(&val(OPEN, 60_000)));
        assert_eq!(w.advance(Some(69_999)), Some(69_999));
        assert!(w.take_due(usize::MAX).is_empty());
        w.advance(Some(70_000));
        assert_eq!(
            w.take_due(usize::MAX),
            [(0, DueWindow::Close { row: row("a", 0) })]
        );
        // The close writes the row again, marked closed: now only its drop is due, at
        // end + grace + size.
        table.written(&row("a", 0), Some(&val(CLOSED, 60_000)));
        w.advance(Some(129_999));
        assert!(w.take_due(usize::MAX).is_empty());
        w.advance(Some(130_000));
        assert_eq!(
            w.take_due(usize::MAX),
            [(0, DueWindow::Drop { row: row("a", 0) })]
        );
    }

    #[test]
    fn stream_time_never_goes_back_and_late_windows_are_seen_as_closed() {
        let w = windows();
        assert_eq!(w.stream_time(), None);
        w.advance(Some(100_000));
        assert_eq!(w.advance(Some(5)), Some(100_000));
        assert_eq!(w.advance(None), Some(100_000));
        let table = &w.tables[0];
        assert!(table.closed(EDGE.spec.range(0), w.stream_time()));
        assert!(!table.closed(EDGE.spec.range(60_000), w.stream_time()));
    }

    #[test]
    fn indexing_stored_rows_restores_what_is_due_and_a_lower_bound_of_stream_time() {
        let w = windows();
        let storage = &w.tables[0].storage;
        storage.set(&row("a", 0), &val(CLOSED, 60_000)).unwrap();
        storage.set(&row("b", 60_000), &val(OPEN, 120_000)).unwrap();
        w.index_stored(None).unwrap();
        assert_eq!(w.stream_time(), Some(60_000));
        w.advance(Some(130_000));
        let due = w.take_due(usize::MAX);
        assert_eq!(
            due,
            [
                (
                    0,
                    DueWindow::Close {
                        row: row("b", 60_000)
                    }
                ),
                (0, DueWindow::Drop { row: row("a", 0) })
            ]
        );
    }

    #[test]
    fn at_most_the_limit_of_due_windows_is_taken_at_once_and_the_rest_stay_due() {
        let w = windows();
        let table = &w.tables[0];
        for key in ["a", "b", "c"] {
            table.written(&row(key, 0), Some(&val(OPEN, 60_000)));
        }
        w.advance(Some(500_000));
        let first = w.take_due(2);
        assert_eq!(
            first,
            [
                (0, DueWindow::Close { row: row("a", 0) }),
                (0, DueWindow::Close { row: row("b", 0) })
            ]
        );
        assert_eq!(w.take_due(2), [(0, DueWindow::Close { row: row("c", 0) })]);
        assert!(w.take_due(2).is_empty());
    }

    #[test]
    fn with_a_committed_stream_time_a_window_closed_after_it_is_open_again() {
        let w = windows();
        let storage = &w.tables[0].storage;
        // Closed at 70 s, before the commit at 75 s: closed for good.
        storage.set(&row("a", 0), &val(CLOSED, 60_000)).unwrap();
        // Closed at 130 s by a message after the commit: open again.
        storage
            .set(&row("b", 60_000), &val(CLOSED, 120_000))
            .unwrap();
        w.index_stored(Some(75_000)).unwrap();
        assert_eq!(w.stream_time(), Some(75_000), "not the latest window start");
        let table = &w.tables[0];
        assert!(table.closed(EDGE.spec.range(0), w.stream_time()));
        assert!(!table.closed(EDGE.spec.range(60_000), w.stream_time()));
        w.advance(Some(130_000));
        assert_eq!(
            w.take_due(usize::MAX),
            [
                (
                    0,
                    DueWindow::Close {
                        row: row("b", 60_000)
                    }
                ),
                (0, DueWindow::Drop { row: row("a", 0) })
            ]
        );
    }
}

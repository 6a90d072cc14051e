//! The windows of one partition of a running processor (or of the tester): each window
//! declaration's local storage, the partition's stream time, and which windows close or are
//! dropped next.
//!
//! A stored row is the window's value behind one byte of state: [`OPEN`], or [`CLOSED`] once
//! its `on_close` handler ran. Closing writes the row again with the closed byte, so that a
//! restarted partition does not close it a second time; dropping writes a tombstone.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::key::decode_window_key;
use super::WindowRange;
use crate::graph::WindowEdge;
use crate::storage::{Storage, StorageError};

/// The state byte of a window that still takes messages.
pub(crate) const OPEN: u8 = 0;
/// The state byte of a window whose `on_close` ran.
pub(crate) const CLOSED: u8 = 1;

/// No message handled yet.
const NO_TIME: i64 = i64::MIN;

/// The windows of one partition.
pub(crate) struct PartitionWindows {
    /// The highest timestamp the partition handled (Kafka Streams' stream time).
    stream_time: AtomicI64,
    pub(crate) tables: Vec<WindowTable>,
}

/// One window declaration's rows in one partition.
pub(crate) struct WindowTable {
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
}

/// A window whose time came: close it (call `on_close`, mark it closed) or drop it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DueWindow {
    Close { row: Vec<u8>, window: WindowRange },
    Drop { row: Vec<u8> },
}

impl PartitionWindows {
    /// The windows of `edges` in their storages, none indexed yet.
    pub(crate) fn new(tables: Vec<(&'static WindowEdge, Arc<dyn Storage>)>) -> Self {
        Self {
            stream_time: AtomicI64::new(NO_TIME),
            tables: tables
                .into_iter()
                .map(|(edge, storage)| WindowTable {
                    edge,
                    storage,
                    due: Mutex::new(Due::default()),
                    late: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// The table of the window whose changelog is `topic`.
    pub(crate) fn table(&self, topic: &str) -> Option<&WindowTable> {
        self.tables.iter().find(|t| t.edge.edge.topic == topic)
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

    /// Indexes every stored row after recovery and sets the stream time to the latest
    /// window start found: a lower bound of the stream time before the restart, so nothing
    /// closes early (a window may close once more, which `on_close`'s at-least-once allows).
    pub(crate) fn index_stored(&self) -> Result<(), StorageError> {
        for table in &self.tables {
            let mut due = table.lock();
            *due = Due::default();
            for row in table.storage.iter()? {
                let (row, value) = row?;
                let Ok((_, start)) = decode_window_key(&row) else {
                    continue;
                };
                self.stream_time.fetch_max(start, Ordering::Relaxed);
                let state = value.first().copied().unwrap_or(OPEN);
                due.index(table.edge, row, start, state);
            }
        }
        Ok(())
    }

    /// Every window of every table whose close or drop time stream time reached, removed
    /// from the index; closes first, each in time order.
    pub(crate) fn take_due(&self) -> Vec<(usize, DueWindow)> {
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
                due.closing.pop_first();
                let Ok((_, start)) = decode_window_key(&row) else {
                    continue;
                };
                let window = table.edge.spec.range(start);
                out.push((index, DueWindow::Close { row, window }));
            }
            while let Some((at, row)) = due.dropping.first().cloned() {
                if at > now {
                    break;
                }
                due.dropping.pop_first();
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
                    topic: table.edge.edge.topic,
                    stream_time,
                    windows: due.closing.len() + due.dropping.len(),
                    late: table.late.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl WindowTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `window` closed by stream time `now`.
    pub(crate) fn closed(&self, window: WindowRange, now: Option<i64>) -> bool {
        now.is_some_and(|now| self.edge.spec.closes_at(window) <= now)
    }

    /// Keeps the index in step with a row written to storage (`None`: deleted).
    pub(crate) fn written(&self, row: &[u8], value: Option<&[u8]>) {
        let Ok((_, start)) = decode_window_key(row) else {
            return;
        };
        let mut due = self.lock();
        let window = self.edge.spec.range(start);
        due.closing
            .remove(&(self.edge.spec.closes_at(window), row.to_vec()));
        due.dropping
            .remove(&(self.edge.spec.dropped_at(window), row.to_vec()));
        if let Some(value) = value {
            let state = value.first().copied().unwrap_or(OPEN);
            due.index(self.edge, row.to_vec(), start, state);
        }
    }
}

impl Due {
    fn index(&mut self, edge: &WindowEdge, row: Vec<u8>, start: i64, state: u8) {
        let window = edge.spec.range(start);
        if state == CLOSED || !edge.on_close {
            // Nothing to call at close: only the drop is due.
            self.dropping.insert((edge.spec.dropped_at(window), row));
        } else {
            self.closing.insert((edge.spec.closes_at(window), row));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::graph::{Edge, EdgeKind};
    use crate::storage::MemoryStorage;
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

    fn windows() -> PartitionWindows {
        PartitionWindows::new(vec![(&EDGE, Arc::new(MemoryStorage::new("g-w-window", 0)))])
    }

    #[test]
    fn a_window_closes_at_end_plus_grace_then_drops_at_end_plus_retention() {
        let w = windows();
        let table = &w.tables[0];
        table.written(&row("a", 0), Some(&[OPEN, b'1']));
        assert_eq!(w.advance(Some(69_999)), Some(69_999));
        assert!(w.take_due().is_empty());
        w.advance(Some(70_000));
        assert_eq!(
            w.take_due(),
            [(
                0,
                DueWindow::Close {
                    row: row("a", 0),
                    window: WindowRange {
                        start: 0,
                        end: 60_000
                    }
                }
            )]
        );
        // The close writes the row again, marked closed: now only its drop is due, at
        // end + grace + size.
        table.written(&row("a", 0), Some(&[CLOSED, b'1']));
        w.advance(Some(129_999));
        assert!(w.take_due().is_empty());
        w.advance(Some(130_000));
        assert_eq!(w.take_due(), [(0, DueWindow::Drop { row: row("a", 0) })]);
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
        storage.set(&row("a", 0), &[CLOSED, b'1']).unwrap();
        storage.set(&row("b", 60_000), &[OPEN, b'2']).unwrap();
        w.index_stored().unwrap();
        assert_eq!(w.stream_time(), Some(60_000));
        w.advance(Some(130_000));
        let due = w.take_due();
        assert_eq!(
            due,
            [
                (
                    0,
                    DueWindow::Close {
                        row: row("b", 60_000),
                        window: EDGE.spec.range(60_000)
                    }
                ),
                (0, DueWindow::Drop { row: row("a", 0) })
            ]
        );
    }
}

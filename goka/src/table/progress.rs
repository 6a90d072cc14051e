//! What a table reader reports about each partition it keeps: position, end, lag, the
//! recovery's progress and whether the partition is stalled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A table partition with lag that has not moved for this long counts as stalled.
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(10);

/// The state of a table partition, or of a view as a whole (goka's `ViewState` and
/// `PartitionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableState {
    /// Not read yet.
    Idle,
    /// Loading the changelog up to its end.
    Recovering,
    /// Caught up; applying new changelog messages as they come.
    Running,
    /// The connection to the broker is lost; serving the last state while the client
    /// reconnects.
    Reconnecting,
    /// No longer read.
    Stopped,
}

/// Figures of one table partition (goka's `TableStats` and `PartitionStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// The changelog topic.
    pub topic: &'static str,
    /// The partition.
    pub partition: i32,
    /// Its state.
    pub state: TableState,
    /// Offset of the last changelog message applied, if any.
    pub offset: Option<i64>,
    /// End of the changelog when last seen (offset of the next message to be written).
    pub high_watermark: Option<i64>,
    /// Changelog messages behind the end (0 while the end is unknown).
    pub lag: i64,
    /// Changelog messages applied since the partition was opened.
    pub messages: u64,
    /// Key and value bytes applied since the partition was opened.
    pub bytes: u64,
    /// Messages skipped because their value did not decode.
    pub decode_errors: u64,
    /// The partition has lag and has not moved for a while (10 s): its changelog cannot be
    /// read, or its reader does not get to it.
    pub stalled: bool,
    /// Its last recovery.
    pub recovery: RecoveryStats,
}

impl TableStats {
    /// Changelog offsets the recovery still has to read, where the end is known (0 once it
    /// finished).
    pub fn remaining(&self) -> Option<i64> {
        if self.recovery.finished {
            return Some(0);
        }
        self.high_watermark.map(|_| self.lag)
    }
}

/// How far the last recovery of a table partition got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryStats {
    /// The first offset it read, once it began.
    pub start: Option<i64>,
    /// The end it runs to: the high watermark when it began, then where it caught up.
    pub end: Option<i64>,
    /// Changelog messages applied by it.
    pub messages: u64,
    /// Time spent, so far or in total.
    pub elapsed: Duration,
    /// Whether it caught up.
    pub finished: bool,
}

/// The live figures of one table partition, updated by its reader once per applied batch
/// and read by stats and the monitor.
#[derive(Debug)]
pub(crate) struct TableProgress {
    topic: &'static str,
    partition: i32,
    figures: Mutex<Figures>,
}

#[derive(Debug)]
struct Figures {
    state: TableState,
    /// Last applied offset.
    offset: Option<i64>,
    /// Next offset to read: after the last applied message, or the end seen at the last
    /// end of partition (compaction can leave the end past the last message).
    position: Option<i64>,
    high_watermark: Option<i64>,
    messages: u64,
    bytes: u64,
    decode_errors: u64,
    /// When the position last moved or the partition last caught up.
    moved: Instant,
    recovery: RecoveryStats,
    recovery_began: Option<Instant>,
    messages_before_recovery: u64,
}

impl TableProgress {
    /// A partition whose local state holds up to `stored`.
    pub(crate) fn new(topic: &'static str, partition: i32, stored: Option<i64>) -> Self {
        Self {
            topic,
            partition,
            figures: Mutex::new(Figures {
                state: TableState::Idle,
                offset: stored,
                position: stored.map(|o| o + 1),
                high_watermark: None,
                messages: 0,
                bytes: 0,
                decode_errors: 0,
                moved: Instant::now(),
                recovery: RecoveryStats::default(),
                recovery_began: None,
                messages_before_recovery: 0,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Figures) -> R) -> R {
        f(&mut self.figures.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn topic(&self) -> &'static str {
        self.topic
    }

    pub(crate) fn state(&self) -> TableState {
        self.with(|f| f.state)
    }

    pub(crate) fn set_state(&self, state: TableState) {
        self.with(|f| f.state = state);
    }

    /// Recovery begins at `start`, running to `end` if known.
    pub(crate) fn begin_recovery(&self, start: Option<i64>, end: Option<i64>) {
        self.with(|f| {
            f.state = TableState::Recovering;
            f.recovery = RecoveryStats {
                start,
                end,
                ..RecoveryStats::default()
            };
            f.recovery_began = Some(Instant::now());
            f.messages_before_recovery = f.messages;
            f.moved = Instant::now();
            if let Some(end) = end {
                f.high_watermark = Some(f.high_watermark.map_or(end, |h| h.max(end)));
            }
        });
    }

    /// Messages up to `last` were applied (`messages` of them, `bytes` in keys and values),
    /// `skipped` of them not decoding.
    pub(crate) fn applied(&self, last: i64, messages: u64, bytes: u64, skipped: u64) {
        self.with(|f| {
            f.offset = Some(last);
            f.position = Some(f.position.map_or(last + 1, |p| p.max(last + 1)));
            f.high_watermark = Some(f.high_watermark.map_or(last + 1, |h| h.max(last + 1)));
            f.messages += messages;
            f.bytes += bytes;
            f.decode_errors += skipped;
            f.moved = Instant::now();
            if f.state == TableState::Reconnecting {
                f.state = TableState::Running;
            }
            if f.state == TableState::Recovering {
                f.recovery.messages = f.messages - f.messages_before_recovery;
            }
        });
    }

    /// The reader reached the partition's end; true if that ends its recovery.
    pub(crate) fn caught_up(&self) -> bool {
        self.with(|f| {
            // Everything up to the end seen before is read now.
            if let Some(high) = f.high_watermark {
                f.position = Some(f.position.map_or(high, |p| p.max(high)));
            }
            if let Some(position) = f.position {
                f.high_watermark = Some(f.high_watermark.map_or(position, |h| h.max(position)));
            }
            f.moved = Instant::now();
            let recovered = f.state == TableState::Recovering;
            if recovered {
                f.recovery.messages = f.messages - f.messages_before_recovery;
                f.recovery.end = f.position;
                f.recovery.finished = true;
                f.recovery.elapsed = f.recovery_began.map_or(Duration::ZERO, |b| b.elapsed());
            }
            if matches!(f.state, TableState::Recovering | TableState::Reconnecting) {
                f.state = TableState::Running;
            }
            recovered
        })
    }

    /// The partition's end was read as `high`: the cluster answers, so a partition shown
    /// reconnecting is running again.
    pub(crate) fn saw_high_watermark(&self, high: i64) {
        self.with(|f| {
            f.high_watermark = Some(f.high_watermark.map_or(high, |h| h.max(high)));
            if f.state == TableState::Reconnecting {
                f.state = TableState::Running;
            }
        });
    }

    /// The reader lost its connection.
    pub(crate) fn reconnecting(&self) {
        self.with(|f| {
            if f.state == TableState::Running {
                f.state = TableState::Reconnecting;
            }
        });
    }

    pub(crate) fn stats(&self) -> TableStats {
        self.with(|f| {
            let lag = match (f.high_watermark, f.position) {
                (Some(high), Some(position)) => (high - position).max(0),
                (Some(high), None) => high.max(0),
                _ => 0,
            };
            let mut recovery = f.recovery;
            if !recovery.finished {
                recovery.elapsed = f.recovery_began.map_or(Duration::ZERO, |b| b.elapsed());
            }
            let read = matches!(
                f.state,
                TableState::Recovering | TableState::Running | TableState::Reconnecting
            );
            TableStats {
                topic: self.topic,
                partition: self.partition,
                state: f.state,
                offset: f.offset,
                high_watermark: f.high_watermark,
                lag,
                messages: f.messages,
                bytes: f.bytes,
                decode_errors: f.decode_errors,
                stalled: read && lag > 0 && f.moved.elapsed() >= STALLED_AFTER,
                recovery,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_position_and_recovery_ends_where_it_caught_up() {
        let progress = TableProgress::new("t", 1, Some(9));
        progress.begin_recovery(Some(10), Some(20));
        let stats = progress.stats();
        assert_eq!(
            (stats.state, stats.lag, stats.remaining()),
            (TableState::Recovering, 10, Some(10))
        );
        progress.applied(14, 5, 50, 1);
        let stats = progress.stats();
        assert_eq!(
            (stats.offset, stats.lag, stats.recovery.messages),
            (Some(14), 5, 5)
        );
        assert_eq!(stats.decode_errors, 1);
        // The rest was compacted away: the end of partition comes at 20 all the same.
        assert!(progress.caught_up());
        let stats = progress.stats();
        assert_eq!(
            (
                stats.state,
                stats.lag,
                stats.remaining(),
                stats.recovery.end
            ),
            (TableState::Running, 0, Some(0), Some(20))
        );
        assert!(stats.recovery.finished && !stats.stalled);
        assert!(
            !progress.caught_up(),
            "only the first end of partition ends recovery"
        );
        progress.saw_high_watermark(25);
        assert_eq!(progress.stats().lag, 5);
    }

    #[test]
    fn a_partition_with_lag_that_does_not_move_is_stalled() {
        let progress = TableProgress::new("t", 0, Some(4));
        progress.begin_recovery(Some(5), Some(5));
        progress.caught_up();
        let long_ago = |progress: &TableProgress| {
            progress
                .with(|f| f.moved = Instant::now().checked_sub(STALLED_AFTER).unwrap_or(f.moved));
        };
        long_ago(&progress);
        assert!(!progress.stats().stalled, "quiet, but nothing to read");
        progress.saw_high_watermark(9);
        assert!(progress.stats().stalled, "4 behind and still");
        progress.applied(6, 2, 20, 0);
        assert!(!progress.stats().stalled, "moving again");
        long_ago(&progress);
        progress.set_state(TableState::Stopped);
        assert!(!progress.stats().stalled, "no longer read");
    }

    #[test]
    fn a_lost_connection_shows_until_the_cluster_answers() {
        let progress = TableProgress::new("t", 0, None);
        progress.begin_recovery(None, None);
        progress.reconnecting();
        assert_eq!(progress.state(), TableState::Recovering, "recovery goes on");
        progress.caught_up();
        progress.reconnecting();
        assert_eq!(progress.state(), TableState::Reconnecting);
        progress.saw_high_watermark(0);
        assert_eq!(progress.state(), TableState::Running);
    }
}

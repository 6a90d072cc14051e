//! What a running processor reports about itself (goka's `ProcessorStats` and
//! `PartitionProcessorStats`): counters, handler latency, and per partition its offsets, lag
//! and the progress of recovering its tables.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::latency::{LatencyHistogram, LatencyRecorder};
use super::PartitionState;

/// One partition of a processor instance (goka's `PartitionProcessorStats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorPartitionStats {
    /// The partition.
    pub partition: i32,
    /// Its state.
    pub state: PartitionState,
    /// The input topic the figures are of (the first input).
    pub topic: &'static str,
    /// The next offset to commit, once a message of the partition is done.
    pub offset: Option<i64>,
    /// The partition's high watermark, once read.
    pub high_watermark: Option<i64>,
    /// Messages between the two (a partition without a done message counts from 0).
    pub lag: Option<i64>,
    /// Recovery of the group table and each joined table of the partition, as far as it got.
    pub recovery: Vec<RecoveryProgress>,
}

/// How far the recovery of one table partition got (goka's `TableStats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryProgress {
    /// The table topic.
    pub topic: &'static str,
    /// Changelog messages applied so far.
    pub messages: u64,
    /// The next changelog offset to read.
    pub position: i64,
    /// The high watermark recovery runs to: as read when recovery started, then where it
    /// caught up.
    pub end: Option<i64>,
    /// Whether the partition caught up.
    pub finished: bool,
    /// Time spent recovering, so far or in total.
    pub elapsed: Duration,
}

impl RecoveryProgress {
    /// Changelog offsets still to read, where the end is known (0 once finished).
    pub fn remaining(&self) -> Option<i64> {
        if self.finished {
            return Some(0);
        }
        self.end.map(|end| (end - self.position).max(0))
    }
}

/// Counters of a processor (goka's `ProcessorStats`, summed over partitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Input and loop messages handled.
    pub messages_in: u64,
    /// Key and value bytes of the messages handled.
    pub bytes_in: u64,
    /// Messages produced (emits, loopbacks, changelog writes).
    pub messages_out: u64,
    /// Key and value bytes produced.
    pub bytes_out: u64,
    /// Messages skipped because they did not decode.
    pub decode_errors: u64,
    /// How long handlers took, from the call until they returned (async ones included).
    pub callback_latency: LatencyHistogram,
    /// How long this member has been waiting for the group to give it an assignment (since
    /// it joined or its partitions were revoked), `None` once it has one. An assignment
    /// without partitions counts: an idle member of a formed group waits for nothing. A
    /// wait much longer than the session timeout is a rebalance that does not finish.
    pub awaiting_assignment: Option<Duration>,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) messages_in: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) messages_out: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) decode_errors: AtomicU64,
    pub(super) callback_latency: LatencyRecorder,
    /// Since when the member waits for an assignment, `None` while it has one.
    awaiting_since: Mutex<Option<Instant>>,
}

impl Counters {
    pub(super) fn snapshot(&self) -> ProcessorStats {
        ProcessorStats {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            callback_latency: self.callback_latency.snapshot(),
            awaiting_assignment: self.awaiting_assignment(),
        }
    }

    /// The member joined or lost its partitions: it waits for an assignment from now.
    pub(super) fn await_assignment(&self) {
        *self
            .awaiting_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// The member got an assignment (possibly without partitions).
    pub(super) fn assignment_arrived(&self) {
        *self
            .awaiting_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How long the member has waited for its assignment so far.
    pub(super) fn awaiting_assignment(&self) -> Option<Duration> {
        self.awaiting_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|since| since.elapsed())
    }
}

/// Recovery progress of the table partitions of this instance, by partition.
#[derive(Debug, Default)]
pub(super) struct Recoveries {
    tables: Mutex<HashMap<i32, Vec<(RecoveryProgress, Instant)>>>,
}

impl Recoveries {
    /// `topic`'s partition starts recovering at `position`, up to `end` if known.
    pub(super) fn start(
        &self,
        topic: &'static str,
        partition: i32,
        position: i64,
        end: Option<i64>,
    ) {
        let progress = RecoveryProgress {
            topic,
            messages: 0,
            position,
            end,
            finished: false,
            elapsed: Duration::ZERO,
        };
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let entries = tables.entry(partition).or_default();
        entries.retain(|(p, _)| p.topic != topic);
        entries.push((progress, Instant::now()));
    }

    /// `messages` applied so far, the next offset being `position`.
    pub(super) fn advance(&self, topic: &str, partition: i32, messages: u64, position: i64) {
        self.update(topic, partition, |p| {
            p.messages = messages;
            p.position = p.position.max(position);
        });
    }

    /// The partition caught up: its end is where recovery stopped (the watermark read at the
    /// start is an estimate; the end of the partition is what the consumer reached).
    pub(super) fn finish(&self, topic: &str, partition: i32, messages: u64) {
        self.update(topic, partition, |p| {
            p.messages = messages;
            p.end = Some(p.position);
            p.finished = true;
        });
    }

    /// The partition left this instance.
    pub(super) fn forget(&self, partition: i32) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.remove(&partition);
    }

    pub(super) fn of(&self, partition: i32) -> Vec<RecoveryProgress> {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.get(&partition).map_or_else(Vec::new, |entries| {
            entries
                .iter()
                .map(|(progress, started)| {
                    let mut progress = progress.clone();
                    if !progress.finished {
                        progress.elapsed = started.elapsed();
                    }
                    progress
                })
                .collect()
        })
    }

    fn update(&self, topic: &str, partition: i32, change: impl FnOnce(&mut RecoveryProgress)) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let entry = tables
            .get_mut(&partition)
            .and_then(|entries| entries.iter_mut().find(|(p, _)| p.topic == topic));
        if let Some((progress, started)) = entry {
            change(progress);
            if progress.finished {
                progress.elapsed = started.elapsed();
            }
        }
    }
}

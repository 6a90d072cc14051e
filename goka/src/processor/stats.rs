//! What a running processor reports about itself (goka's `ProcessorStats` and
//! `PartitionProcessorStats`): counters, handler latency, and per partition its offsets, lag
//! and the figures of its tables.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::latency::{LatencyHistogram, LatencyRecorder};
use crate::table::{TableProgress, TableStats};

/// The state of a processor instance (goka's `ProcessorState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessorState {
    /// Not started.
    Idle,
    /// Checking topics and joining the group, or waiting for an assignment.
    Starting,
    /// Some assigned partition is loading its tables from their changelogs.
    Recovering,
    /// Every assigned partition handles messages (also with no partition at all).
    Running,
    /// Finishing in-flight work.
    Stopping,
    /// Done.
    Stopped,
}

/// The state of one partition of a processor instance (goka's `PartitionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionState {
    /// Loading its tables from their changelogs.
    Recovering,
    /// Handling messages.
    Running,
    /// Done.
    Stopped,
    /// Not owned by this instance: its tables are kept up to date for a fast takeover
    /// ([`ProcessorConfig::hot_standby`](super::ProcessorConfig::hot_standby)).
    Standby,
}

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
    /// The group table and each joined table of the partition: recovery, position, lag.
    pub tables: Vec<TableStats>,
    /// Each topic the partition consumes (inputs and the loop topic), as goka's
    /// `InputStats`.
    pub inputs: Vec<InputStats>,
    /// The partition's last visit ([`Processor::visit_all`](super::Processor::visit_all)),
    /// while the partition runs here.
    pub visit: Option<super::VisitProgress>,
    /// Each window the partition keeps (`#[window]`), while the partition runs here.
    pub windows: Vec<crate::window::WindowStats>,
}

/// One consumed topic of a processor partition (goka's `InputStats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputStats {
    /// The topic.
    pub topic: &'static str,
    /// The next offset to commit, once a message of it is done.
    pub offset: Option<i64>,
    /// Its high watermark, once read.
    pub high_watermark: Option<i64>,
    /// Messages between the two.
    pub lag: Option<i64>,
    /// Messages handled since the partition started here.
    pub messages: u64,
    /// Their key and value bytes.
    pub bytes: u64,
    /// Offset of the last message handled.
    pub last_offset: Option<i64>,
    /// How old the last message handled was when it was handled (its timestamp to the
    /// handling), where it had a timestamp.
    pub delay: Option<Duration>,
}

/// One topic a processor writes (goka's `OutputStats`): emits, loopbacks, group table
/// writes, dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputStats {
    /// The topic.
    pub topic: &'static str,
    /// Messages produced to it since `run` started.
    pub messages: u64,
    /// Their key and value bytes.
    pub bytes: u64,
}

/// The live figures of one consumed topic of one partition task.
#[derive(Debug)]
pub(super) struct InputFigures {
    topic: &'static str,
    messages: AtomicU64,
    bytes: AtomicU64,
    last_offset: AtomicI64,
    /// How old the last message was, in ms; `i64::MIN` when unknown.
    delay_ms: AtomicI64,
}

impl InputFigures {
    /// A message of this topic was handled.
    pub(super) fn handled(&self, offset: i64, bytes: usize, timestamp: Option<i64>) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_offset.store(offset, Ordering::Relaxed);
        let delay = timestamp.map_or(i64::MIN, |at| (crate::kafka::now_millis() - at).max(0));
        self.delay_ms.store(delay, Ordering::Relaxed);
    }

    pub(super) fn topic(&self) -> &'static str {
        self.topic
    }
}

/// The consumed topics' figures of each running partition.
#[derive(Debug, Default)]
pub(super) struct Inputs {
    partitions: Mutex<HashMap<i32, Arc<[InputFigures]>>>,
}

impl Inputs {
    /// Fresh figures of `topics` for `partition`, which starts here.
    pub(super) fn start(
        &self,
        partition: i32,
        topics: impl Iterator<Item = &'static str>,
    ) -> Arc<[InputFigures]> {
        let figures: Arc<[InputFigures]> = topics
            .map(|topic| InputFigures {
                topic,
                messages: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                last_offset: AtomicI64::new(-1),
                delay_ms: AtomicI64::new(i64::MIN),
            })
            .collect();
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, figures.clone());
        figures
    }

    pub(super) fn forget(&self, partition: i32) {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }

    /// The figures of `partition`, with the commit offsets and high watermarks given.
    pub(super) fn of(
        &self,
        partition: i32,
        offset: impl Fn(&str) -> Option<i64>,
        high_watermark: impl Fn(&'static str) -> Option<i64>,
    ) -> Vec<InputStats> {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(figures) = partitions.get(&partition) else {
            return Vec::new();
        };
        figures
            .iter()
            .map(|f| {
                let offset = offset(f.topic);
                let high_watermark = high_watermark(f.topic);
                let last = f.last_offset.load(Ordering::Relaxed);
                let delay = f.delay_ms.load(Ordering::Relaxed);
                InputStats {
                    topic: f.topic,
                    offset,
                    high_watermark,
                    lag: high_watermark.map(|high| (high - offset.unwrap_or(0)).max(0)),
                    messages: f.messages.load(Ordering::Relaxed),
                    bytes: f.bytes.load(Ordering::Relaxed),
                    last_offset: (last >= 0).then_some(last),
                    delay: (delay != i64::MIN).then(|| Duration::from_millis(delay as u64)),
                }
            })
            .collect()
    }
}

/// The live figures of the topics a processor writes.
#[derive(Debug, Default)]
pub(super) struct Outputs(Vec<(&'static str, AtomicU64, AtomicU64)>);

impl Outputs {
    pub(super) fn new(topics: impl Iterator<Item = &'static str>) -> Self {
        Self(
            topics
                .map(|t| (t, AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        )
    }

    /// A message of `bytes` went to `topic`.
    pub(super) fn produced(&self, topic: &str, bytes: usize) {
        if let Some((_, messages, total)) = self.0.iter().find(|(t, _, _)| *t == topic) {
            messages.fetch_add(1, Ordering::Relaxed);
            total.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn stats(&self) -> Vec<OutputStats> {
        let mut stats: Vec<OutputStats> = self
            .0
            .iter()
            .map(|(topic, messages, bytes)| OutputStats {
                topic,
                messages: messages.load(Ordering::Relaxed),
                bytes: bytes.load(Ordering::Relaxed),
            })
            .collect();
        stats.sort_by_key(|s| s.topic);
        stats
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
    /// Messages sent to the dead-letter topic (those that did not decode under
    /// `DecodeErrorPolicy::DeadLetter`, and those whose handler failed under
    /// `HandlerErrorPolicy::DeadLetter`).
    pub dead_letters: u64,
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
    pub(super) dead_letters: AtomicU64,
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
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
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

/// The table partitions of this instance (group table and joined tables), by partition.
#[derive(Debug, Default)]
pub(super) struct Tables {
    partitions: Mutex<HashMap<i32, Vec<Arc<TableProgress>>>>,
}

impl Tables {
    /// `progress` is a table partition of `partition` from now on (in place of an earlier
    /// one of the same topic).
    pub(super) fn add(&self, partition: i32, progress: Arc<TableProgress>) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let tables = partitions.entry(partition).or_default();
        tables.retain(|t| t.topic() != progress.topic());
        tables.push(progress);
    }

    /// The partition left this instance.
    pub(super) fn forget(&self, partition: i32) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        partitions.remove(&partition);
    }

    /// The table partitions of `partition`, for stats.
    pub(super) fn of(&self, partition: i32) -> Vec<TableStats> {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        partitions.get(&partition).map_or_else(Vec::new, |tables| {
            tables.iter().map(|t| t.stats()).collect()
        })
    }

    /// Every table partition of `topic` this instance keeps.
    pub(super) fn of_topic(&self, topic: &str) -> Vec<Arc<TableProgress>> {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        partitions
            .values()
            .flatten()
            .filter(|t| t.topic() == topic)
            .cloned()
            .collect()
    }
}

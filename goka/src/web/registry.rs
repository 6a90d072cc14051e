//! What the monitor knows of a component: type-erased figures and table queries, built from
//! the typed processors, views and emitters at registration.

use std::sync::Arc;

use serde::Serialize;

use crate::codec::Codec;
use crate::emitter::Emitter;
use crate::processor::{Handlers, LatencyHistogram, PartitionState, Processor, Stateful};
use crate::storage::Storage;
use crate::table::TableStats;
use crate::topic::{Stream, Table, Topic};
use crate::view::{View, ViewState};

/// What a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// A processor group instance.
    Processor,
    /// A view of a table.
    View,
    /// An emitter of a stream.
    Emitter,
}

/// The figures of one component, as the pages and `/api/components` show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStats {
    /// What it is.
    pub kind: ComponentKind,
    /// Group name (processors) or topic (views, emitters).
    pub name: String,
    /// Its state, e.g. `Running`.
    pub state: String,
    /// Counters by name (`messages_in`, `bytes_out`, ...).
    pub counters: Vec<(&'static str, u64)>,
    /// Per-second rates of the message and byte counters over the last ten seconds or so
    /// (empty until the monitor saw the component twice, a second apart).
    pub rates: Vec<(&'static str, f64)>,
    /// How long handlers took (processors).
    pub callback_latency: Option<LatencyHistogram>,
    /// Each partition, where the component has partitions.
    pub partitions: Vec<PartitionRow>,
    /// Each consumed topic of each partition (processors).
    pub inputs: Vec<InputRow>,
    /// Each topic written (processors).
    pub outputs: Vec<OutputRow>,
}

/// One consumed topic of one partition of a processor (goka's `InputStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputRow {
    /// The partition.
    pub partition: i32,
    /// The topic.
    pub topic: String,
    /// Next offset to commit.
    pub offset: Option<i64>,
    /// High watermark.
    pub high_watermark: Option<i64>,
    /// Messages behind it.
    pub lag: Option<i64>,
    /// Messages handled.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Offset of the last message handled.
    pub last_offset: Option<i64>,
    /// Age of the last message handled when it was handled, in milliseconds.
    pub delay_ms: Option<u64>,
}

/// One topic a processor writes (goka's `OutputStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputRow {
    /// The topic.
    pub topic: String,
    /// Messages produced to it.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One partition of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionRow {
    /// The partition.
    pub partition: i32,
    /// Its state.
    pub state: String,
    /// Next offset to read, where known.
    pub offset: Option<i64>,
    /// High watermark, where known.
    pub high_watermark: Option<i64>,
    /// Messages behind the high watermark, where known.
    pub lag: Option<i64>,
    /// Messages read, where counted.
    pub messages: Option<u64>,
    /// Changelog messages still to read before the partition's tables are recovered, while
    /// it recovers and where the end is known.
    pub recovery_remaining: Option<i64>,
    /// How far its recovery got, in percent, while it recovers and where the end is known.
    pub recovery_percent: Option<u8>,
    /// It has lag and has not moved for ten seconds (a table of it, or its input).
    pub stalled: bool,
    /// It has had lag for ten seconds and moves, but does not catch up.
    pub lagging: bool,
}

/// Why a query failed; each maps to a 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No registered table has this name.
    #[error("unknown table {table:?}; tables: {known}")]
    UnknownTable {
        /// What was asked.
        table: String,
        /// What exists.
        known: String,
    },
    /// The key is longer than [`MAX_KEY_LEN`](super::MAX_KEY_LEN).
    #[error("the key has {len} bytes; at most {max} are accepted")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The table's key codec does not accept the key's text.
    #[error("key {key:?} is not a key of table {table:?}: {message}")]
    BadKey {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// The codec's explanation.
        message: String,
    },
    /// Reading or decoding the row failed.
    #[error("reading key {key:?} of table {table:?} failed: {message}")]
    Read {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

pub(super) trait Component: Send + Sync {
    fn stats(&self) -> ComponentStats;
}

pub(super) trait Queryable: Send + Sync {
    fn table(&self) -> &'static str;
    fn query(&self, key: &str) -> Result<Option<serde_json::Value>, QueryError>;
    /// The storages of the partitions the component holds, for the table browser.
    fn storages(&self) -> Vec<Arc<dyn Storage>>;
    /// A stored row's value, decoded and rendered as JSON.
    fn value_json(&self, key: &[u8], raw: &[u8]) -> Result<serde_json::Value, QueryError>;
}

/// How far the recoveries of `tables` got, in percent; `None` while an end is unknown.
fn recovery_percent(tables: &[TableStats]) -> Option<u8> {
    let mut done = 0i64;
    let mut total = 0i64;
    for table in tables {
        if table.recovery.finished {
            continue;
        }
        let (start, end) = (table.recovery.start?, table.recovery.end?);
        let read = table.offset.map_or(0, |offset| offset + 1 - start);
        total += (end - start).max(0);
        done += read.clamp(0, (end - start).max(0));
    }
    if total == 0 {
        return Some(100);
    }
    Some((done * 100 / total) as u8)
}

/// Decodes a stored value of `table` with codec `C` and renders it as JSON.
fn stored_json<V: Serialize, C: Codec<V>>(
    table: &'static str,
    key: &[u8],
    raw: &[u8],
) -> Result<serde_json::Value, QueryError> {
    let read = |message: String| QueryError::Read {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    let value = C::decode(raw).map_err(|e| read(e.to_string()))?;
    serde_json::to_value(value).map_err(|e| read(e.to_string()))
}

/// Decodes a key typed as text: goka's key codecs (string, int64 as decimal text) take the
/// text's bytes as they are.
fn key_from_text<T: Topic>(table: &'static str, key: &str) -> Result<T::Key, QueryError> {
    T::KeyCodec::decode(key.as_bytes()).map_err(|e| QueryError::BadKey {
        table,
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn to_json<V: Serialize>(
    table: &'static str,
    key: &str,
    value: Option<V>,
) -> Result<Option<serde_json::Value>, QueryError> {
    value
        .map(|v| serde_json::to_value(v))
        .transpose()
        .map_err(|e| QueryError::Read {
            table,
            key: key.to_owned(),
            message: e.to_string(),
        })
}

pub(super) struct ProcessorComponent<P: Handlers>(pub(super) Arc<Processor<P>>);

impl<P: Handlers> Component for ProcessorComponent<P> {
    fn stats(&self) -> ComponentStats {
        let stats = self.0.stats();
        let partition_stats = self.0.partition_stats();
        let inputs = partition_stats
            .iter()
            .flat_map(|p| {
                p.inputs.iter().map(move |i| InputRow {
                    partition: p.partition,
                    topic: i.topic.to_owned(),
                    offset: i.offset,
                    high_watermark: i.high_watermark,
                    lag: i.lag,
                    messages: i.messages,
                    bytes: i.bytes,
                    last_offset: i.last_offset,
                    delay_ms: i.delay.map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        let outputs = self
            .0
            .output_stats()
            .into_iter()
            .map(|o| OutputRow {
                topic: o.topic.to_owned(),
                messages: o.messages,
                bytes: o.bytes,
            })
            .collect();
        let mut partitions: Vec<PartitionRow> = partition_stats
            .into_iter()
            .map(|p| {
                let stalled = p.tables.iter().any(|t| t.stalled);
                if p.state == PartitionState::Standby {
                    // Not owned: what there is to show is how far its tables are followed.
                    return PartitionRow {
                        partition: p.partition,
                        state: format!("{:?}", p.state),
                        offset: p.tables.first().and_then(|t| t.offset),
                        high_watermark: p.tables.first().and_then(|t| t.high_watermark),
                        lag: Some(p.tables.iter().map(|t| t.lag).sum()),
                        messages: Some(p.tables.iter().map(|t| t.messages).sum()),
                        recovery_remaining: None,
                        recovery_percent: None,
                        stalled,
                        lagging: false,
                    };
                }
                PartitionRow {
                    partition: p.partition,
                    state: format!("{:?}", p.state),
                    offset: p.offset,
                    high_watermark: p.high_watermark,
                    lag: p.lag,
                    messages: None,
                    recovery_remaining: (p.state == PartitionState::Recovering)
                        .then(|| p.tables.iter().map(|t| t.remaining()).sum::<Option<i64>>())
                        .flatten(),
                    recovery_percent: (p.state == PartitionState::Recovering)
                        .then(|| recovery_percent(&p.tables))
                        .flatten(),
                    stalled,
                    lagging: false,
                }
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        ComponentStats {
            kind: ComponentKind::Processor,
            name: P::GRAPH.group.to_owned(),
            state: format!("{:?}", self.0.state()),
            counters: vec![
                ("messages_in", stats.messages_in),
                ("bytes_in", stats.bytes_in),
                ("messages_out", stats.messages_out),
                ("bytes_out", stats.bytes_out),
                ("decode_errors", stats.decode_errors),
                ("dead_letters", stats.dead_letters),
                (
                    "awaiting_assignment_ms",
                    stats
                        .awaiting_assignment
                        .map_or(0, |waited| waited.as_millis() as u64),
                ),
            ],
            rates: Vec::new(),
            callback_latency: Some(stats.callback_latency),
            partitions,
            inputs,
            outputs,
        }
    }
}

pub(super) struct ProcessorTable<P: Stateful + Handlers>(pub(super) Arc<Processor<P>>);

impl<P: Stateful + Handlers> Queryable for ProcessorTable<P>
where
    <P as Stateful>::Value: Serialize,
{
    fn table(&self) -> &'static str {
        P::GRAPH.table.map_or("", |e| e.topic)
    }

    fn query(&self, key: &str) -> Result<Option<serde_json::Value>, QueryError> {
        let table = self.table();
        let typed = P::KeyCodec::decode(key.as_bytes()).map_err(|e| QueryError::BadKey {
            table,
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        let value = self.0.get(&typed).map_err(|e| QueryError::Read {
            table,
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        to_json(table, key, value)
    }

    fn storages(&self) -> Vec<Arc<dyn Storage>> {
        self.0.table_storages()
    }

    fn value_json(&self, key: &[u8], raw: &[u8]) -> Result<serde_json::Value, QueryError> {
        stored_json::<<P as Stateful>::Value, <P as Stateful>::ValueCodec>(self.table(), key, raw)
    }
}

pub(super) struct ViewComponent<T: Table>(pub(super) View<T>);

impl<T: Table> Component for ViewComponent<T> {
    fn stats(&self) -> ComponentStats {
        let stats = self.0.stats();
        let partitions: Vec<PartitionRow> = stats
            .partitions
            .iter()
            .map(|p| PartitionRow {
                partition: p.partition,
                state: format!("{:?}", p.state),
                offset: p.offset,
                high_watermark: p.high_watermark,
                lag: Some(p.lag),
                messages: Some(p.messages),
                recovery_remaining: (p.state == ViewState::Recovering).then_some(p.lag),
                recovery_percent: (p.state == ViewState::Recovering)
                    .then(|| recovery_percent(std::slice::from_ref(p)))
                    .flatten(),
                stalled: p.stalled,
                lagging: false,
            })
            .collect();
        let sum = |f: fn(&crate::view::PartitionStats) -> u64| stats.partitions.iter().map(f).sum();
        ComponentStats {
            kind: ComponentKind::View,
            name: T::NAME.to_owned(),
            state: format!("{:?}", stats.state),
            counters: vec![
                ("messages", sum(|p| p.messages)),
                ("bytes", sum(|p| p.bytes)),
                ("decode_errors", sum(|p| p.decode_errors)),
                ("lag", sum(|p| p.lag.max(0) as u64)),
            ],
            rates: Vec::new(),
            callback_latency: None,
            partitions,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

impl<T: Table> Queryable for ViewComponent<T>
where
    T::Value: Serialize,
{
    fn table(&self) -> &'static str {
        T::NAME
    }

    fn query(&self, key: &str) -> Result<Option<serde_json::Value>, QueryError> {
        let typed = key_from_text::<T>(T::NAME, key)?;
        let value = self.0.get(&typed).map_err(|e| QueryError::Read {
            table: T::NAME,
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        to_json(T::NAME, key, value)
    }

    fn storages(&self) -> Vec<Arc<dyn Storage>> {
        self.0.storages()
    }

    fn value_json(&self, key: &[u8], raw: &[u8]) -> Result<serde_json::Value, QueryError> {
        stored_json::<T::Value, T::ValueCodec>(T::NAME, key, raw)
    }
}

pub(super) struct EmitterComponent<T: Stream>(pub(super) Emitter<T>);

impl<T: Stream> Component for EmitterComponent<T> {
    fn stats(&self) -> ComponentStats {
        let stats = self.0.stats();
        ComponentStats {
            kind: ComponentKind::Emitter,
            name: T::NAME.to_owned(),
            state: "Running".to_owned(),
            counters: vec![
                ("messages", stats.messages),
                ("bytes", stats.bytes),
                ("errors", stats.errors),
                ("pending", stats.pending),
            ],
            rates: Vec::new(),
            callback_latency: None,
            partitions: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::table::{RecoveryStats, TableState};

    fn table(offset: Option<i64>, start: i64, end: i64, finished: bool) -> TableStats {
        TableStats {
            topic: "t",
            partition: 0,
            state: TableState::Recovering,
            offset,
            high_watermark: Some(end),
            lag: end - offset.map_or(start, |o| o + 1),
            messages: 0,
            bytes: 0,
            decode_errors: 0,
            stalled: false,
            recovery: RecoveryStats {
                start: Some(start),
                end: Some(end),
                messages: 0,
                elapsed: Duration::ZERO,
                finished,
            },
        }
    }

    #[test]
    fn recovery_percent_weighs_each_table_by_what_it_has_to_read() {
        // 100 of 400 read in one table, the other (100 to read) not begun: 100 of 500.
        let tables = [
            table(Some(199), 100, 500, false),
            table(None, 0, 100, false),
        ];
        assert_eq!(recovery_percent(&tables), Some(20));
        assert_eq!(
            recovery_percent(&[table(Some(99), 0, 100, false)]),
            Some(100)
        );
        assert_eq!(
            recovery_percent(&[table(Some(10), 0, 100, true)]),
            Some(100),
            "finished tables count as done"
        );
        let mut unknown = table(None, 0, 100, false);
        unknown.recovery.end = None;
        assert_eq!(recovery_percent(&[unknown]), None, "no end, no figure");
    }
}

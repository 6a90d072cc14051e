//! The table reader against a scripted changelog: offsets with gaps (compaction), a log start
//! after the local state (retention), a local state beyond the end (a topic made anew), a
//! reported end that lags what the partition holds (the test broker's), and value checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::*;
use crate::codec::{CodecError, DecodeErrorPolicy};
use crate::kafka::{
    Admin, Client, ConsumedBatch, GroupConsumer, HeaderUse, KafkaError, MemberOptions,
    PartitionConsumer, Producer, RebalanceListener, StartOffset, TopicSpec,
};
use crate::storage::{MemoryStorage, Storage};

const TOPIC: &str = "scripted-table";

/// One partition of a changelog: what it still holds, from where, to where.
#[derive(Clone)]
struct Changelog {
    low: i64,
    /// The end the partition really has.
    high: i64,
    /// The end reported by ListOffsets (the test broker's can lag `high`).
    reported_high: i64,
    /// Whether the client says so (`Client::reported_end_may_lag`).
    may_lag: bool,
    messages: Vec<(i64, &'static str, Option<&'static str>)>,
}

impl Changelog {
    fn new(messages: Vec<(i64, &'static str, Option<&'static str>)>, high: i64) -> Self {
        Self {
            low: messages.first().map_or(high, |m| m.0),
            high,
            reported_high: high,
            may_lag: false,
            messages,
        }
    }
}

#[derive(Clone)]
struct Scripted(Arc<Changelog>);

impl Client for Scripted {
    fn with_client_id(self: Arc<Self>, _id: &str) -> Arc<dyn Client> {
        self
    }

    fn producer(&self) -> Result<Arc<dyn Producer>, KafkaError> {
        Err(KafkaError::Config("scripted: no producer".into()))
    }

    fn admin(&self) -> Result<Arc<dyn Admin>, KafkaError> {
        Ok(Arc::new(self.clone()))
    }

    fn reported_end_may_lag(&self) -> bool {
        self.0.may_lag
    }

    fn consume(
        &self,
        topic: &str,
        partitions: &[(i32, StartOffset)],
        _headers: HeaderUse,
    ) -> Result<Box<dyn PartitionConsumer>, KafkaError> {
        let log = &self.0;
        let [(partition, start)] = partitions else {
            return Err(KafkaError::Config("scripted: one partition".into()));
        };
        // As librdkafka with `auto.offset.reset=earliest`: out of range reads from the start.
        let from = match *start {
            StartOffset::At(offset) if (log.low..=log.high).contains(&offset) => offset,
            _ => log.low,
        };
        let mut batch = ConsumedBatch::new(Arc::from(topic), 0, 0);
        for &(offset, key, value) in log.messages.iter().filter(|m| m.0 >= from) {
            batch.push_message(
                *partition,
                offset,
                None,
                key.as_bytes(),
                value.map(str::as_bytes),
                [],
            );
        }
        batch.push_end(*partition);
        Ok(Box::new(Once(Some(batch))))
    }

    fn join_group(
        &self,
        _group: &str,
        _topics: &[&str],
        _options: MemberOptions,
        _listener: Arc<dyn RebalanceListener>,
    ) -> Result<Box<dyn GroupConsumer>, KafkaError> {
        Err(KafkaError::Config("scripted: no groups".into()))
    }
}

impl Admin for Scripted {
    fn partitions(&self, _topic: &str) -> BoxFuture<'_, Result<Option<u32>, KafkaError>> {
        async { Ok(Some(1)) }.boxed()
    }

    fn create_topic(&self, _spec: &TopicSpec) -> BoxFuture<'_, Result<(), KafkaError>> {
        async { Ok(()) }.boxed()
    }

    fn topic_config(
        &self,
        _topic: &str,
    ) -> BoxFuture<'_, Result<BTreeMap<String, String>, KafkaError>> {
        async { Ok(BTreeMap::new()) }.boxed()
    }

    fn watermarks(
        &self,
        _topic: &str,
        _partition: i32,
    ) -> BoxFuture<'_, Result<(i64, i64), KafkaError>> {
        let marks = (self.0.low, self.0.reported_high);
        async move { Ok(marks) }.boxed()
    }
}

/// Hands over one batch, then waits forever, as a consumer at the end of a quiet partition.
struct Once(Option<ConsumedBatch>);

impl PartitionConsumer for Once {
    fn next_batch(&mut self) -> BoxFuture<'_, Option<Result<ConsumedBatch, KafkaError>>> {
        let next = self.0.take();
        async move {
            match next {
                Some(batch) => Some(Ok(batch)),
                None => futures::future::pending().await,
            }
        }
        .boxed()
    }
}

/// A partition whose local state holds `rows` up to `stored`.
fn local(stored: Option<i64>, rows: &[(&str, &str)]) -> TablePartition {
    let storage = MemoryStorage::new(TOPIC, 0);
    for (key, value) in rows {
        storage.set(key.as_bytes(), value.as_bytes()).unwrap();
    }
    if let Some(stored) = stored {
        storage.set_offset(stored).unwrap();
    }
    TablePartition {
        storage: Arc::new(storage),
        progress: Arc::new(TableProgress::new(TOPIC, 0, stored)),
    }
}

async fn recover(log: Changelog, table: &TablePartition, apply: Apply) -> Result<(), TableError> {
    let client = Scripted(Arc::new(log));
    let mut reader =
        TableReader::start(&client, TOPIC, vec![table.clone()], HeaderUse::Skip, apply).await?;
    reader.recover().await?;
    reader.stop()
}

fn rows(table: &TablePartition) -> Vec<(String, String)> {
    table
        .storage
        .iter()
        .unwrap()
        .map(|row| {
            let (key, value) = row.unwrap();
            (
                String::from_utf8(key).unwrap(),
                String::from_utf8(value).unwrap(),
            )
        })
        .collect()
}

fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_compacted_changelog_with_tombstones_recovers_its_rows_and_its_end() {
    // Compaction left gaps, and removed the partition's last messages but not its end.
    let log = Changelog::new(
        vec![
            (0, "a", Some("1")),
            (3, "b", Some("2")),
            (7, "a", None),
            (8, "c", Some("3")),
        ],
        11,
    );
    let table = local(None, &[]);
    recover(log, &table, Apply::default()).await.unwrap();
    assert_eq!(rows(&table), pairs(&[("b", "2"), ("c", "3")]));
    assert_eq!(table.storage.offset().unwrap(), Some(8));
    let stats = table.progress.stats();
    assert_eq!((stats.offset, stats.lag, stats.messages), (Some(8), 0, 4));
    assert_eq!(
        (
            stats.recovery.start,
            stats.recovery.end,
            stats.recovery.finished
        ),
        (Some(0), Some(11), true)
    );
}

#[tokio::test]
async fn local_state_older_than_the_log_start_reads_from_the_oldest_message_kept() {
    // Retention removed offsets 0..5; the local state holds up to 2.
    let log = Changelog::new(vec![(5, "b", Some("5")), (6, "c", Some("6"))], 7);
    let table = local(Some(2), &[("a", "old"), ("b", "old")]);
    recover(log, &table, Apply::default()).await.unwrap();
    assert_eq!(table.progress.stats().recovery.start, Some(5));
    assert_eq!(rows(&table), pairs(&[("a", "old"), ("b", "5"), ("c", "6")]));
    assert_eq!(table.storage.offset().unwrap(), Some(6));
}

#[tokio::test]
async fn local_state_beyond_the_end_stops_with_topic_partition_offset_and_end() {
    // The topic was made anew: ten messages, where the local state holds up to 40.
    let messages = (0..10).map(|o| (o, "k", Some("v"))).collect();
    let log = Changelog::new(messages, 10);
    let table = local(Some(40), &[("k", "from before")]);
    let error = recover(log, &table, Apply::default()).await.unwrap_err();
    assert!(
        matches!(
            error,
            TableError::Kafka(KafkaError::LocalStateAhead {
                partition: 0,
                stored: 40,
                high: 10,
                ..
            })
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(TOPIC) && text.contains("offset 40"), "{text}");
    assert_eq!(
        rows(&table),
        pairs(&[("k", "from before")]),
        "nothing mixed in"
    );
}

#[tokio::test]
async fn a_reported_end_behind_the_local_state_is_confirmed_by_reading_where_it_may_lag() {
    // The partition holds 0..12; the broker reports 8 as its end (the first offset of its
    // last record batch), the local state holds up to 9.
    let messages = (0..12)
        .map(|o| {
            (
                o,
                "k",
                Some(["v8", "v9", "v10", "v11"][(o.max(8) - 8) as usize]),
            )
        })
        .collect();
    let mut log = Changelog::new(messages, 12);
    log.reported_high = 8;
    log.may_lag = true;
    let table = local(Some(9), &[("k", "v9")]);
    recover(log.clone(), &table, Apply::default())
        .await
        .unwrap();
    assert_eq!(rows(&table), pairs(&[("k", "v11")]));
    assert_eq!(table.storage.offset().unwrap(), Some(11));
    // Where the client does not say the end may lag (Kafka's is exact), the same reported
    // end means the local state is ahead: reading stops at once, applying nothing.
    log.may_lag = false;
    let table = local(Some(9), &[("k", "v9")]);
    let error = recover(log, &table, Apply::default()).await.unwrap_err();
    assert!(
        matches!(
            error,
            TableError::Kafka(KafkaError::LocalStateAhead {
                stored: 9,
                high: 8,
                ..
            })
        ),
        "{error:?}"
    );
    assert_eq!(rows(&table), pairs(&[("k", "v9")]), "nothing applied");
    // The same local state with the partition really ending at 8 is ahead also where the
    // end may lag: the partition ends before the local state's offset.
    let messages = (0..8).map(|o| (o, "k", Some("v"))).collect();
    let table = local(Some(9), &[("k", "v9")]);
    let mut log = Changelog::new(messages, 8);
    log.may_lag = true;
    let error = recover(log, &table, Apply::default()).await.unwrap_err();
    assert!(
        matches!(
            error,
            TableError::Kafka(KafkaError::LocalStateAhead {
                stored: 9,
                high: 8,
                ..
            })
        ),
        "{error:?}"
    );
}

fn digits(value: &[u8]) -> Result<(), CodecError> {
    if value.iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(CodecError::custom("digits", "not a number"))
    }
}

#[tokio::test]
async fn values_that_do_not_decode_stop_the_reader_or_are_skipped_and_counted() {
    let log = Changelog::new(
        vec![
            (0, "a", Some("1")),
            (1, "b", Some("x")),
            (2, "c", Some("3")),
        ],
        3,
    );
    let checked = |decode_errors| Apply {
        validate: Some(digits),
        decode_errors,
        update: None,
    };
    let table = local(None, &[]);
    let error = recover(log.clone(), &table, checked(DecodeErrorPolicy::Fail))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TableError::Decode { partition: 0, offset: 1, key, .. } if key == "b"),
        "{error:?}"
    );
    assert_eq!(
        rows(&table),
        pairs(&[("a", "1")]),
        "what came before is written"
    );

    let table = local(None, &[]);
    recover(log, &table, checked(DecodeErrorPolicy::SkipAndCount))
        .await
        .unwrap();
    assert_eq!(rows(&table), pairs(&[("a", "1"), ("c", "3")]));
    let stats = table.progress.stats();
    assert_eq!((stats.decode_errors, stats.offset), (1, Some(2)));
}

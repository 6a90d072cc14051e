//! The tester's in-memory cluster: topics as per-partition logs, implementing the `kafka/`
//! seam ([`Client`], [`Producer`], [`Admin`], [`PartitionConsumer`]) so emitters, views and
//! the topic manager run against it unchanged.
//!
//! Table topics also keep a [`MemoryStorage`] per partition, updated on every append: the
//! tester's processors, joins, lookups and views read those, so a value is visible the
//! moment it is written, with no background task to wait for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use crate::kafka::{
    Ack, Admin, Client, ConsumedBatch, ConsumedMessage, Delivery, GroupConsumer, Headers,
    KafkaError, OutgoingRecord, PartitionConsumer, Producer, RebalanceListener, SendError,
    StartOffset, TopicSpec,
};
use crate::storage::{MemoryStorage, Storage, WriteBatch};

/// One message as the tester keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Headers,
    pub(crate) timestamp: i64,
}

struct Topic {
    name: Arc<str>,
    /// Each partition's log, as consumers get it: reading shares, never copies.
    partitions: Vec<Vec<Arc<ConsumedMessage>>>,
    config: BTreeMap<String, String>,
    /// Present for table topics: the current rows of each partition.
    tables: Option<Vec<Arc<MemoryStorage>>>,
}

/// Topic names are short and looked up several times per message: FNV-1a hashes them
/// faster than the default SipHash, and the tester needs no protection from crafted keys.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Topics = HashMap<String, Topic, std::hash::BuildHasherDefault<Fnv>>;

/// The topics of one tester.
pub(crate) struct Broker {
    topics: Mutex<Topics>,
    /// Partition count of topics created on first use, per topic or by default.
    partitions: Mutex<(u32, HashMap<String, u32>)>,
    /// Bumped on every append, so waiting consumers wake up.
    appended: watch::Sender<u64>,
}

impl Broker {
    pub(crate) fn new(default_partitions: u32) -> Self {
        Self {
            topics: Mutex::new(Topics::default()),
            partitions: Mutex::new((default_partitions, HashMap::new())),
            appended: watch::channel(0).0,
        }
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        // Appends keep the maps consistent at every step; a panic elsewhere cannot break them.
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the partition count `topic` gets when it is created.
    pub(crate) fn set_partitions(&self, topic: &str, partitions: u32) {
        let mut counts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        counts.1.insert(topic.to_owned(), partitions.max(1));
    }

    fn count_for(&self, topic: &str) -> u32 {
        let counts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        counts.1.get(topic).copied().unwrap_or(counts.0)
    }

    /// The partition count of `topic`, creating it (as a stream, or compacted if `table`)
    /// when it does not exist.
    pub(crate) fn ensure(&self, topic: &str, table: bool) -> u32 {
        let mut topics = self.topics();
        let entry = self.entry(&mut topics, topic);
        if table {
            entry
                .config
                .insert("cleanup.policy".into(), "compact".into());
        }
        entry.partitions.len() as u32
    }

    /// The topic named `topic`, created with its configured partition count if missing.
    fn entry<'t>(&self, topics: &'t mut Topics, topic: &str) -> &'t mut Topic {
        if !topics.contains_key(topic) {
            let count = self.count_for(topic);
            topics.insert(
                topic.to_owned(),
                Topic {
                    name: Arc::from(topic),
                    partitions: vec![Vec::new(); count as usize],
                    config: BTreeMap::new(),
                    tables: None,
                },
            );
        }
        topics
            .get_mut(topic)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Appends a message and returns its offset. Tables apply it to their rows unless the
    /// writer already did (`applied`: a processor's own changelog writes).
    pub(crate) fn append(
        &self,
        topic: &str,
        partition: i32,
        record: Record,
        applied: bool,
    ) -> Result<i64, KafkaError> {
        let offset = {
            let mut topics = self.topics();
            let t = self.entry(&mut topics, topic);
            let Some(log) = t.partitions.get_mut(partition as usize) else {
                return Err(KafkaError::Produce {
                    topic: topic.to_owned(),
                    partition,
                    message: format!("the topic has {} partitions", t.partitions.len()),
                });
            };
            if let (Some(tables), false) = (&t.tables, applied) {
                apply(&tables[partition as usize], &record, topic, partition)?;
            }
            let offset = log.len() as i64;
            log.push(Arc::new(ConsumedMessage {
                topic: t.name.clone(),
                partition,
                offset,
                key: record.key,
                value: record.value,
                timestamp: Some(record.timestamp),
                headers: record.headers,
            }));
            offset
        };
        // Consumers check the logs before they wait, so a wake-up is needed only for those
        // that wait already.
        if self.appended.receiver_count() > 0 {
            self.appended.send_modify(|n| *n += 1);
        }
        Ok(offset)
    }

    /// The message at `offset`, as a consumer gets it.
    pub(crate) fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Option<Arc<ConsumedMessage>> {
        let topics = self.topics();
        topics
            .get(topic)?
            .partitions
            .get(partition as usize)?
            .get(usize::try_from(offset).ok()?)
            .cloned()
    }

    /// The next offset of a partition (its high watermark).
    pub(crate) fn end(&self, topic: &str, partition: i32) -> i64 {
        self.topics()
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map_or(0, |log| log.len() as i64)
    }

    /// The rows of each partition of the table `topic`, built from its log the first time.
    pub(crate) fn table(&self, topic: &str) -> Result<Vec<Arc<MemoryStorage>>, KafkaError> {
        self.ensure(topic, true);
        let mut topics = self.topics();
        let Some(t) = topics.get_mut(topic) else {
            return Ok(Vec::new());
        };
        if let Some(tables) = &t.tables {
            return Ok(tables.clone());
        }
        let mut tables = Vec::with_capacity(t.partitions.len());
        for (partition, log) in t.partitions.iter().enumerate() {
            let storage = Arc::new(MemoryStorage::new(topic, partition as i32));
            for message in log {
                apply_message(&storage, message, topic, partition as i32)?;
            }
            tables.push(storage);
        }
        t.tables = Some(tables.clone());
        Ok(tables)
    }

    fn config(&self, topic: &str) -> Option<BTreeMap<String, String>> {
        self.topics().get(topic).map(|t| t.config.clone())
    }
}

fn apply(
    storage: &MemoryStorage,
    record: &Record,
    topic: &str,
    partition: i32,
) -> Result<(), KafkaError> {
    write_row(
        storage,
        &record.key,
        record.value.as_deref(),
        topic,
        partition,
    )
}

fn apply_message(
    storage: &MemoryStorage,
    message: &ConsumedMessage,
    topic: &str,
    partition: i32,
) -> Result<(), KafkaError> {
    write_row(
        storage,
        &message.key,
        message.value.as_deref(),
        topic,
        partition,
    )
}

fn write_row(
    storage: &MemoryStorage,
    key: &[u8],
    value: Option<&[u8]>,
    topic: &str,
    partition: i32,
) -> Result<(), KafkaError> {
    let mut batch = WriteBatch::new();
    batch.set_or_delete(key, value);
    storage
        .apply(&batch, None)
        .map_err(|e| KafkaError::Produce {
            topic: topic.to_owned(),
            partition,
            message: e.to_string(),
        })
}

/// Milliseconds since the epoch, the timestamp of appended messages.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// [`Client`] of a tester's topics.
#[derive(Clone)]
pub(crate) struct BrokerClient(pub(crate) Arc<Broker>);

impl Client for BrokerClient {
    fn producer(&self) -> Result<Arc<dyn Producer>, KafkaError> {
        Ok(Arc::new(self.clone()))
    }

    fn admin(&self) -> Result<Arc<dyn Admin>, KafkaError> {
        Ok(Arc::new(self.clone()))
    }

    fn consume(
        &self,
        topic: &str,
        partitions: &[(i32, StartOffset)],
    ) -> Result<Box<dyn PartitionConsumer>, KafkaError> {
        Ok(Box::new(BrokerConsumer {
            broker: self.0.clone(),
            topic: Arc::from(topic),
            positions: partitions
                .iter()
                .map(|&(partition, start)| {
                    let next = match start {
                        StartOffset::Beginning => 0,
                        StartOffset::At(offset) => offset,
                    };
                    (partition, next, false)
                })
                .collect(),
            appended: self.0.appended.subscribe(),
        }))
    }

    fn join_group(
        &self,
        group: &str,
        _topics: &[&str],
        _listener: Arc<dyn RebalanceListener>,
    ) -> Result<Box<dyn GroupConsumer>, KafkaError> {
        Err(KafkaError::Config(format!(
            "group {group:?}: the tester runs processors itself; register them with \
             `Tester::register` instead of running a `Processor` on the tester's client"
        )))
    }
}

impl Producer for BrokerClient {
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError> {
        let stored = Record {
            key: record.key.to_vec(),
            value: record.value.map(<[u8]>::to_vec),
            headers: record.headers.cloned().unwrap_or_default(),
            timestamp: now_millis(),
        };
        let offset = self
            .0
            .append(record.topic, record.partition, stored, false)
            .map_err(SendError::Failed)?;
        Ok(Ack::ready(Ok(Delivery {
            partition: record.partition,
            offset,
        })))
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), KafkaError>> {
        async { Ok(()) }.boxed()
    }
}

impl Admin for BrokerClient {
    fn partitions(&self, topic: &str) -> BoxFuture<'_, Result<Option<u32>, KafkaError>> {
        // Topics exist on first use, as with a broker that auto-creates them.
        let count = self.0.ensure(topic, false);
        async move { Ok(Some(count)) }.boxed()
    }

    fn create_topic(&self, spec: &TopicSpec) -> BoxFuture<'_, Result<(), KafkaError>> {
        self.0.set_partitions(&spec.name, spec.partitions);
        let table = spec
            .config
            .get("cleanup.policy")
            .is_some_and(|p| p.contains("compact"));
        self.0.ensure(&spec.name, table);
        async { Ok(()) }.boxed()
    }

    fn topic_config(
        &self,
        topic: &str,
    ) -> BoxFuture<'_, Result<BTreeMap<String, String>, KafkaError>> {
        let config = self.0.config(topic).ok_or_else(|| KafkaError::Admin {
            operation: "describe configs",
            topic: topic.to_owned(),
            message: "no such topic in the tester".into(),
        });
        async move { config }.boxed()
    }

    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> BoxFuture<'_, Result<(i64, i64), KafkaError>> {
        let end = self.0.end(topic, partition);
        async move { Ok((0, end)) }.boxed()
    }
}

/// Follows partitions of one topic: every message, an end-of-partition event when caught
/// up, then waits for appends.
struct BrokerConsumer {
    broker: Arc<Broker>,
    topic: Arc<str>,
    /// Partition, next offset, whether the end was reported since the last message.
    positions: Vec<(i32, i64, bool)>,
    appended: watch::Receiver<u64>,
}

/// Messages a tester consumer hands over at once, at most.
const CONSUMER_BATCH: usize = 256;

impl PartitionConsumer for BrokerConsumer {
    fn next_batch(&mut self) -> BoxFuture<'_, Option<Result<ConsumedBatch, KafkaError>>> {
        async move {
            loop {
                self.appended.borrow_and_update();
                let mut batch = ConsumedBatch::new(self.topic.clone(), 0, 0);
                for (partition, next, at_end) in &mut self.positions {
                    while batch.len() < CONSUMER_BATCH {
                        let Some(message) = self.broker.read(&self.topic, *partition, *next) else {
                            break;
                        };
                        batch.push_owned(&message);
                        *next += 1;
                        *at_end = false;
                    }
                    if !*at_end && batch.len() < CONSUMER_BATCH {
                        *at_end = true;
                        batch.push_end(*partition);
                    }
                }
                if !batch.is_empty() {
                    return Some(Ok(batch));
                }
                if self.appended.changed().await.is_err() {
                    return None;
                }
            }
        }
        .boxed()
    }
}

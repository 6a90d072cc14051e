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

use super::log::{Log, Logged};
use crate::kafka::{
    Ack, Admin, Client, ConsumedBatch, ConsumedMessage, Delivery, GroupConsumer, HeaderUse,
    Headers, KafkaError, MemberOptions, OutgoingRecord, PartitionConsumer, Producer,
    RebalanceListener, SendError, StartOffset, TopicSpec,
};
use crate::storage::{MemoryStorage, Storage, WriteBatch};

/// One message to append.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Headers,
    pub(crate) timestamp: i64,
}

struct Topic {
    name: Arc<str>,
    /// Each partition's messages.
    partitions: Vec<Log>,
    config: BTreeMap<String, String>,
    /// Present for table topics: the current rows of each partition.
    tables: Option<Vec<Arc<MemoryStorage>>>,
}

/// The topics, in creation order. Topic names are looked up several times per message and a
/// tester has a handful of topics: comparing names beats hashing them.
#[derive(Default)]
struct Topics(Vec<Topic>);

impl Topics {
    fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|t| *t.name == *name)
    }

    fn get(&self, name: &str) -> Option<&Topic> {
        self.position(name).map(|i| &self.0[i])
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Topic> {
        self.position(name).map(|i| &mut self.0[i])
    }
}

/// The topics of one tester.
pub(crate) struct Broker {
    topics: Mutex<Topics>,
    /// Partition count of topics created on first use, per topic or by default.
    partitions: Mutex<(u32, HashMap<String, u32>)>,
    /// Bumped on every append, so waiting consumers wake up.
    appended: watch::Sender<u64>,
    /// The time of appended messages, in milliseconds since the epoch, once the tester set
    /// it; the wall clock until then.
    clock: Mutex<Option<i64>>,
}

impl Broker {
    pub(crate) fn new(default_partitions: u32) -> Self {
        Self {
            topics: Mutex::new(Topics::default()),
            partitions: Mutex::new((default_partitions, HashMap::new())),
            appended: watch::channel(0).0,
            clock: Mutex::new(None),
        }
    }

    /// The timestamp of a message appended now.
    pub(crate) fn now(&self) -> i64 {
        self.clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(now_millis)
    }

    /// Fixes the clock at `millis`.
    pub(crate) fn set_time(&self, millis: i64) {
        *self.clock.lock().unwrap_or_else(|p| p.into_inner()) = Some(millis);
    }

    /// Removes every row of every table, leaving the logs.
    pub(crate) fn clear_tables(&self) -> Result<(), KafkaError> {
        let topics = self.topics();
        for topic in &topics.0 {
            for (partition, table) in topic.tables.iter().flatten().enumerate() {
                let failed = |e: crate::storage::StorageError| KafkaError::Produce {
                    topic: topic.name.to_string(),
                    partition: partition as i32,
                    message: e.to_string(),
                };
                let keys: Vec<Vec<u8>> = table
                    .iter()
                    .map_err(failed)?
                    .map(|row| row.map(|(key, _)| key))
                    .collect::<Result<_, _>>()
                    .map_err(failed)?;
                for key in keys {
                    table.delete(&key).map_err(failed)?;
                }
            }
        }
        Ok(())
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
        let index = topics.position(topic).unwrap_or_else(|| {
            let count = self.count_for(topic);
            topics.0.push(Topic {
                name: Arc::from(topic),
                partitions: (0..count).map(|_| Log::default()).collect(),
                config: BTreeMap::new(),
                tables: None,
            });
            topics.0.len() - 1
        });
        &mut topics.0[index]
    }

    /// Appends a message and returns its offset. Tables apply it to their rows (a
    /// processor's own changelog writes reach its table this way, as they reach local
    /// storage when queued in a running processor).
    pub(crate) fn append(
        &self,
        topic: &str,
        partition: i32,
        record: Record<'_>,
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
            if let Some(tables) = &t.tables {
                write_row(
                    &tables[partition as usize],
                    record.key,
                    record.value,
                    topic,
                    partition,
                )?;
            }
            log.push(record.key, record.value, record.headers, record.timestamp)
                .ok_or_else(|| KafkaError::Produce {
                    topic: topic.to_owned(),
                    partition,
                    message: "a key or value of 4 GiB or more is beyond the tester".into(),
                })?
        };
        // Consumers check the logs before they wait, so a wake-up is needed only for those
        // that wait already.
        if self.appended.receiver_count() > 0 {
            self.appended.send_modify(|n| *n += 1);
        }
        Ok(offset)
    }

    /// Calls `each` with the messages of a partition from offset `from` on, at most `max`
    /// of them, under one lock (`each` must not touch the broker); returns how many.
    pub(crate) fn read_many(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
        mut each: impl FnMut(&Arc<str>, Logged<'_>),
    ) -> usize {
        let topics = self.topics();
        let Some(t) = topics.get(topic) else {
            return 0;
        };
        let Some(log) = t.partitions.get(partition as usize) else {
            return 0;
        };
        let mut read = 0;
        while read < max {
            let Some(message) = log.get(from + read as i64) else {
                break;
            };
            each(&t.name, message);
            read += 1;
        }
        read
    }

    /// Copies the message at `offset` into `message`, reusing its buffers; `false` when
    /// there is none.
    pub(crate) fn read_into(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        message: &mut ConsumedMessage,
    ) -> bool {
        let read = self.read_many(topic, partition, offset, 1, |name, logged| {
            if !Arc::ptr_eq(&message.topic, name) {
                message.topic = name.clone();
            }
            message.partition = partition;
            logged.copy_into(message);
        });
        read == 1
    }

    /// The message at `offset`.
    pub(crate) fn read(&self, topic: &str, partition: i32, offset: i64) -> Option<ConsumedMessage> {
        let mut message = ConsumedMessage::empty();
        self.read_into(topic, partition, offset, &mut message)
            .then_some(message)
    }

    /// The next offset of a partition (its high watermark).
    pub(crate) fn end(&self, topic: &str, partition: i32) -> i64 {
        self.topics()
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map_or(0, Log::end)
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
            for message in log.iter() {
                write_row(
                    &storage,
                    message.key,
                    message.value,
                    topic,
                    partition as i32,
                )?;
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

pub(crate) use crate::kafka::now_millis;

/// [`Client`] of a tester's topics.
#[derive(Clone)]
pub(crate) struct BrokerClient(pub(crate) Arc<Broker>);

impl Client for BrokerClient {
    fn with_client_id(self: Arc<Self>, _id: &str) -> Arc<dyn Client> {
        self
    }

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
        headers: HeaderUse,
    ) -> Result<Box<dyn PartitionConsumer>, KafkaError> {
        Ok(Box::new(BrokerConsumer {
            broker: self.0.clone(),
            topic: Arc::from(topic),
            headers,
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
        _options: MemberOptions,
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
            key: record.key,
            value: record.value,
            headers: record.headers.cloned().unwrap_or_default(),
            timestamp: record.timestamp.unwrap_or_else(|| self.0.now()),
        };
        let offset = self
            .0
            .append(record.topic, record.partition, stored)
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
    headers: HeaderUse,
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
                let with_headers = self.headers == HeaderUse::Read;
                for (partition, next, at_end) in &mut self.positions {
                    let room = CONSUMER_BATCH.saturating_sub(batch.len());
                    let read =
                        self.broker
                            .read_many(&self.topic, *partition, *next, room, |_, m| {
                                batch.push_message(
                                    *partition,
                                    m.offset,
                                    Some(m.timestamp),
                                    m.key,
                                    m.value,
                                    m.headers.iter().filter(|_| with_headers),
                                );
                            });
                    if read > 0 {
                        *next += read as i64;
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

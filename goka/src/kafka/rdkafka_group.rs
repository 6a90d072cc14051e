//! The consumer group member on librdkafka: a `BaseConsumer` polled from one thread for the
//! group's events, with a range assignor (co-partitioned topics stay together: the client's
//! under the classic group protocol, the broker's under Kafka 4's consumer protocol) and
//! manual commits, so offsets are committed only for work that is done.
//!
//! Each assigned partition's messages go to a queue of their own (librdkafka's partition
//! queue, split off before the partition is assigned), read by the partition's task: the
//! client stops fetching a partition whose queue holds its bounds (`queued.min.messages`,
//! `queued.max.messages.kbytes`, which apply per partition for split queues) and fetches
//! again as the task takes messages out. No message passes through the polling thread, and
//! no partition is ever paused: a pause makes librdkafka drop what it prefetched, and the
//! fetch after the resume cost the partition a broker round trip each time its queue filled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::rdkafka_consumer::{add_polled, fetch_defaults, is_fatal, set_default, Polled};
use super::{
    AssignedPartition, ConsumedBatch, GroupConsumer, GroupStart, HeaderUse, KafkaError,
    MemberOptions, PartitionConsumer, RebalanceListener, TopicPartitionOffset,
};

/// How long leaving the group may take before the member is abandoned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a synchronous commit may wait for its answer. librdkafka defers a commit until
/// it finds the group's coordinator, with no bound: during an outage a member committing on
/// revoke or on stop would wait as long as the outage lasts, and `run` would never return.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the committed offsets of newly assigned partitions may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a group member's fetch response may hold, over all its partitions.
const GROUP_FETCH_MAX_BYTES: &str = "4194304";
/// How long a partition reader waits for librdkafka's wake-up before it looks anyway.
const LOOK_AGAIN: Duration = Duration::from_millis(100);
/// How long a member of a consumer-protocol group must have been accepted without an
/// assignment before it counts as assigned nothing. librdkafka calls no rebalance callback
/// for a first assignment that is empty (more members than partitions); a non-empty one
/// reaches the callback within a metadata round trip of the heartbeat that brought it.
const EMPTY_ASSIGNMENT_AFTER: Duration = Duration::from_secs(1);

pub(super) struct RdGroupConsumer {
    consumer: Option<Arc<BaseConsumer<GroupContext>>>,
    group: String,
    /// Under the consumer protocol, since when the member is in the group without having
    /// been told of any assignment.
    idle_since: Option<Instant>,
    consumer_protocol: bool,
}

pub(super) struct GroupContext {
    listener: Arc<dyn RebalanceListener>,
    group: String,
    /// The consumer itself, to split the partition queues of an assignment off it.
    consumer: OnceLock<Weak<BaseConsumer<GroupContext>>>,
    /// Partition queues split off before an assignment, handed to the listener after it.
    split: Mutex<Vec<AssignedPartition>>,
    /// A partition queue that could not be split: the member cannot go on.
    failure: Mutex<Option<KafkaError>>,
    /// Whether the listener was told of an assignment yet.
    assigned_once: AtomicBool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let partitions = list(revoked);
                tracing::info!(group = %self.group, ?partitions, "partitions revoked");
                let offsets = self.listener.revoking(&partitions);
                if offsets.is_empty() {
                    return;
                }
                // A lost assignment (the session expired, the coordinator unreachable) has
                // no generation left to commit for: the group rejects it, or it waits for a
                // coordinator that may not come back. The next owner handles these messages
                // again (at least once).
                if consumer.assignment_lost() {
                    tracing::warn!(group = %self.group, ?offsets, "assignment lost: what was done since the last commit is handled again by the next owner");
                    return;
                }
                let committed = match self.consumer.get().and_then(Weak::upgrade) {
                    Some(consumer) => commit_bounded(consumer, &offsets, &self.group),
                    // The consumer is being dropped (`close`): its member stopped every task
                    // and committed what they did just before.
                    None => Ok(()),
                };
                if let Err(error) = committed {
                    tracing::error!(group = %self.group, %error, "commit on revoke failed");
                }
            }
            // Split before the assignment starts fetching, so no message of these partitions
            // reaches the group's own queue (librdkafka keeps an application's split across
            // later assignments).
            Rebalance::Assign(assigned) => self.split(assigned),
            Rebalance::Error(_) => {}
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        let Err(error) = result else {
            return;
        };
        let offsets: Vec<TopicPartitionOffset> = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(TopicPartitionOffset {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    offset,
                    metadata: e.metadata().to_owned(),
                }),
                _ => None,
            })
            .collect();
        let topic = offsets.first().map_or("", |o| o.topic.as_str());
        let error = group_error(&self.group, topic, format!("commit failed: {error}"));
        self.listener.commit_failed(&offsets, &error);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                tracing::info!(group = %self.group, partitions = ?list(assigned), "partitions assigned");
                let split =
                    std::mem::take(&mut *self.split.lock().unwrap_or_else(|p| p.into_inner()));
                self.assigned_once.store(true, Ordering::Release);
                self.listener.assigned(split);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::error!(group = %self.group, %error, "rebalance failed")
            }
        }
    }
}

impl GroupContext {
    /// Splits the queue of every partition of `assigned` off the consumer's own queue.
    fn split(&self, assigned: &TopicPartitionList) {
        let consumer = self.consumer.get().and_then(Weak::upgrade);
        let committed = consumer
            .as_ref()
            .map(|consumer| self.committed_metadata(consumer, assigned))
            .unwrap_or_default();
        let mut split = self.split.lock().unwrap_or_else(|p| p.into_inner());
        split.clear();
        for element in assigned.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let queue = consumer
                .as_ref()
                .and_then(|consumer| consumer.split_partition_queue(topic, partition));
            let committed_metadata = committed
                .iter()
                .find(|(t, p, _)| t == topic && *p == partition)
                .map(|(_, _, metadata)| metadata.clone())
                .unwrap_or_default();
            match queue {
                Some(queue) => split.push(AssignedPartition {
                    topic: topic.to_owned(),
                    partition,
                    messages: Box::new(RdPartitionQueue::new(queue, topic.into())),
                    committed_metadata,
                }),
                None => {
                    let error = group_error(
                        &self.group,
                        topic,
                        format!("cannot give partition {partition} a queue of its own"),
                    );
                    tracing::error!(group = %self.group, %error, "assignment failed");
                    self.failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(error);
                }
            }
        }
    }
}

impl GroupContext {
    /// The metadata committed with the offsets of `assigned` (those with any). The group's
    /// coordinator answers within a round trip; if it does not, the partitions start
    /// without it, which the warning says.
    fn committed_metadata(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        assigned: &TopicPartitionList,
    ) -> Vec<(String, i32, String)> {
        match consumer.committed_offsets(assigned.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => committed
                .elements()
                .iter()
                .filter(|e| !e.metadata().is_empty())
                .map(|e| (e.topic().to_owned(), e.partition(), e.metadata().to_owned()))
                .collect(),
            Err(error) => {
                tracing::warn!(group = %self.group, partitions = ?list(assigned), %error, "the metadata of the committed offsets could not be read: the partitions start without it (a processor's stream time starts from its windows' rows)");
                Vec::new()
            }
        }
    }
}

/// Reads one assigned partition from its split queue on the task that handles it: what is
/// ready is taken without waiting, and librdkafka's callback for a queue that became
/// non-empty wakes the task when nothing is.
struct RdPartitionQueue {
    queue: PartitionQueue<GroupContext>,
    ready: Arc<tokio::sync::Notify>,
    topic: Arc<str>,
    /// Sizes of the last batch with events, reserved for the next.
    last: (usize, usize),
}

impl RdPartitionQueue {
    fn new(mut queue: PartitionQueue<GroupContext>, topic: Arc<str>) -> Self {
        let ready = Arc::new(tokio::sync::Notify::new());
        let wake = ready.clone();
        // Called by librdkafka with the queue locked: it only stores a wake-up.
        queue.set_nonempty_callback(move || wake.notify_one());
        Self {
            queue,
            ready,
            topic,
            last: (0, 0),
        }
    }

    /// What is ready now, up to a batch; an empty batch if nothing is.
    fn take_ready(&mut self) -> Result<ConsumedBatch, KafkaError> {
        let mut batch = ConsumedBatch::new(self.topic.clone(), self.last.0, self.last.1);
        loop {
            match add_polled(&mut batch, self.queue.poll(Duration::ZERO), HeaderUse::Read) {
                Polled::More => {}
                Polled::Full | Polled::Nothing => break,
                // What came before the error is dropped with the consumer: it was not done,
                // so it is not committed.
                Polled::Fatal(error) => return Err(error),
            }
        }
        if !batch.is_empty() {
            self.last = (batch.len(), batch.bytes());
        }
        Ok(batch)
    }
}

impl PartitionConsumer for RdPartitionQueue {
    fn next_batch(&mut self) -> BoxFuture<'_, Option<Result<ConsumedBatch, KafkaError>>> {
        async move {
            loop {
                let ready = self.ready.clone();
                let woken = ready.notified();
                match self.take_ready() {
                    // The callback wakes the task; looking again now and then costs nothing
                    // and keeps a partition moving should a wake-up ever be missed.
                    Ok(batch) if batch.is_empty() => {
                        let _ = tokio::time::timeout(LOOK_AGAIN, woken).await;
                    }
                    result => return Some(result),
                }
            }
        }
        .boxed()
    }
}

/// Commits `offsets` and waits for the answer on a thread of its own, at most
/// [`COMMIT_TIMEOUT`]; a commit still unanswered by then is abandoned (its thread keeps the
/// consumer until librdkafka answers) and reported as failed: uncommitted work is handled
/// again, never lost.
fn commit_bounded(
    consumer: Arc<BaseConsumer<GroupContext>>,
    offsets: &[TopicPartitionOffset],
    group: &str,
) -> Result<(), KafkaError> {
    let topic = offsets.first().map_or("", |o| o.topic.as_str());
    let error = |message: String| group_error(group, topic, message);
    let tpl = offsets_list(offsets).map_err(|e| error(e.to_string()))?;
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("goka-commit-{group}"))
        .spawn(move || {
            let _ = done.send(consumer.commit(&tpl, CommitMode::Sync));
        })
        .map_err(|e| error(format!("cannot start a thread to commit: {e}")))?;
    match answered.recv_timeout(COMMIT_TIMEOUT) {
        Ok(result) => result.map_err(|e| error(format!("commit failed: {e}"))),
        Err(_) => Err(error(format!(
            "commit not answered within {} s (no coordinator); abandoned",
            COMMIT_TIMEOUT.as_secs()
        ))),
    }
}

/// A consumer error of `group` about `topic`; the message names the group.
fn group_error(group: &str, topic: &str, e: impl std::fmt::Display) -> KafkaError {
    KafkaError::Consume {
        topic: topic.to_owned(),
        message: format!("group {group}: {e}"),
    }
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

pub(super) fn offsets_list(
    offsets: &[TopicPartitionOffset],
) -> Result<TopicPartitionList, RdError> {
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset))?;
        if !o.metadata.is_empty() {
            if let Some(mut element) = tpl.find_partition(&o.topic, o.partition) {
                element.set_metadata(&o.metadata);
            }
        }
    }
    Ok(tpl)
}

impl RdGroupConsumer {
    pub(super) fn join(
        mut config: ClientConfig,
        group: &str,
        topics: &[&str],
        options: MemberOptions,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<Self, KafkaError> {
        let bounds = options.bounds;
        let setup_error = |message: String| group_error(group, &topics.join(","), message);
        let consumer_protocol = match config.get("group.protocol") {
            None | Some("classic") => false,
            Some("consumer") => true,
            Some(other) => {
                return Err(setup_error(format!(
                    "group.protocol={other}: expected classic (the default) or consumer"
                )))
            }
        };
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        if consumer_protocol {
            // Kafka 4's consumer protocol (KIP-848) assigns on the broker. Its range assignor
            // keeps co-partitioned topics together, as the classic range assignor does; the
            // uniform one spreads each topic on its own, and a task would get partition 3 of
            // its input without partition 3 of its loop topic. The session timeout and the
            // heartbeat are the broker's (`group.consumer.session.timeout.ms`): librdkafka
            // refuses them here with an error that says so.
            match config.get("group.remote.assignor") {
                None | Some("range") => {
                    config.set("group.remote.assignor", "range");
                }
                Some(other) => {
                    return Err(setup_error(format!(
                        "group.remote.assignor={other} does not keep co-partitioned topics \
                         together: remove it (the processor's group member sets range)"
                    )))
                }
            }
        } else {
            // A member that died is noticed within 10 s (goka's default) unless the user
            // chose otherwise.
            config.set("partition.assignment.strategy", "range");
            set_default(&mut config, "session.timeout.ms", "10000");
        }
        // A partition never committed starts where the processor's configuration says (it
        // wins over the client's `auto.offset.reset`). Each partition's queue holds the
        // processor's bounds (librdkafka counts kilobytes of 1,000 bytes). A fetch
        // response lands in the partition queues whole, however full they are, and its
        // buffer lives as long as any of its messages waits: responses of librdkafka's 50 MB
        // kept a backlog's resident memory a quarter higher, on a broker that sends more than
        // `max.partition.fetch.bytes` per partition.
        let queued_messages = bounds.messages.max(1).to_string();
        let queued_kbytes = bounds.bytes.div_ceil(1000).max(1).to_string();
        config.set(
            "auto.offset.reset",
            match options.new_group_start {
                GroupStart::Newest => "latest",
                GroupStart::Oldest => "earliest",
            },
        );
        for (key, value) in [
            ("queued.min.messages", queued_messages.as_str()),
            ("queued.max.messages.kbytes", queued_kbytes.as_str()),
            ("fetch.max.bytes", GROUP_FETCH_MAX_BYTES),
        ] {
            set_default(&mut config, key, value);
        }
        fetch_defaults(&mut config);
        let context = GroupContext {
            listener,
            group: group.to_owned(),
            consumer: OnceLock::new(),
            split: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            assigned_once: AtomicBool::new(false),
        };
        let consumer: Arc<BaseConsumer<GroupContext>> = Arc::new(
            config
                .create_with_context(context)
                .map_err(|e| setup_error(e.to_string()))?,
        );
        // Set before the first poll, which is where assignments arrive.
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        consumer
            .subscribe(topics)
            .map_err(|e| setup_error(e.to_string()))?;
        Ok(Self {
            consumer: Some(consumer),
            group: group.to_owned(),
            idle_since: None,
            consumer_protocol,
        })
    }

    fn error(&self, topic: &str, e: impl std::fmt::Display) -> KafkaError {
        group_error(&self.group, topic, e)
    }
}

impl GroupConsumer for RdGroupConsumer {
    fn group_metadata(&self) -> Option<super::GroupMetadata> {
        let metadata = self.consumer.as_ref()?.group_metadata()?;
        Some(super::GroupMetadata(Box::new(Arc::new(metadata))))
    }

    fn poll(&mut self, timeout: Duration) -> Result<Option<KafkaError>, KafkaError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(None);
        };
        let context = consumer.context();
        // Read before the poll: an assignment that came with the heartbeat accepting the
        // member is served by this poll.
        let accepted = self.consumer_protocol
            && !context.assigned_once.load(Ordering::Acquire)
            && super::rdkafka_epoch::member_epoch(consumer) > 0;
        let polled = consumer.poll(timeout);
        if !accepted {
            self.idle_since = None;
        } else if !context.assigned_once.load(Ordering::Acquire) {
            let since = *self.idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= EMPTY_ASSIGNMENT_AFTER
                && !context.assigned_once.swap(true, Ordering::AcqRel)
            {
                tracing::info!(group = %self.group, "member accepted with no partitions");
                context.listener.assigned(Vec::new());
            }
        }
        if let Some(failure) = consumer
            .context()
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(failure);
        }
        match polled {
            None => Ok(None),
            // Every assigned partition has a queue of its own, split off before it was
            // fetched: a message here would be read by nobody, and skipping it would lose it.
            Some(Ok(message)) => Err(KafkaError::Consume {
                topic: rdkafka::Message::topic(&message).to_owned(),
                message: format!(
                    "group {}: message at partition {} offset {} reached the group's queue \
                     instead of its partition's",
                    self.group,
                    rdkafka::Message::partition(&message),
                    rdkafka::Message::offset(&message)
                ),
            }),
            Some(Err(e)) if is_fatal(&e) => Err(self.error("(group)", e)),
            // The group's members agree on no assignment strategy with this one: the broker
            // refuses every join as long as they stay, so waiting would wait for ever.
            Some(Err(e))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InconsistentGroupProtocol) =>
            {
                Err(self.error(
                    "(group)",
                    format!(
                        "{e}: the group's members offer no partition assignment strategy this \
                         member offers (range); goka's processors offer only their own \
                         copartition strategy unless their sarama configuration lists range \
                         too (Consumer.Group.Rebalance.GroupStrategies, with Strategy unset)"
                    ),
                ))
            }
            Some(Err(e)) => Ok(Some(self.error("(group)", e))),
        }
    }

    fn commit(&mut self, offsets: &[TopicPartitionOffset], sync: bool) -> Result<(), KafkaError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        if offsets.is_empty() {
            return Ok(());
        }
        if sync {
            return commit_bounded(consumer.clone(), offsets, &self.group);
        }
        let tpl = offsets_list(offsets).map_err(|e| self.error(&offsets[0].topic, e))?;
        consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| self.error(&offsets[0].topic, e))
    }

    fn close(mut self: Box<Self>) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        // Leaving the group was seen to hang on some brokers: give it a bounded time on a
        // thread of its own.
        let (done, finished) = std::sync::mpsc::channel();
        let group = self.group.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("goka-close-{group}"))
            .spawn(move || {
                consumer.unsubscribe();
                drop(consumer);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                if finished.recv_timeout(CLOSE_TIMEOUT).is_err() {
                    tracing::warn!(group = %group, "leaving the consumer group timed out; abandoning the member");
                }
            }
            Err(error) => {
                tracing::warn!(group = %group, %error, "cannot start a thread to leave the group")
            }
        }
    }
}

//! The consumer group member of a processor, polled on a thread of its own: it starts and
//! stops partition tasks as partitions are assigned and revoked, routes each message to its
//! partition's bounded queue (pausing the partition while the queue is full), and commits
//! the offsets the tasks report done.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::group::Group;
use super::partition::PartitionTask;
use super::{PartitionState, ProcessorError, Shared, TopicPartition};
use crate::kafka::{
    ConsumedMessage, ConsumerEvent, GroupConsumer, RebalanceListener, TopicPartitionOffset,
};

/// How long one poll of the group member may block.
const POLL: Duration = Duration::from_millis(100);
/// How long one poll may block while partitions are paused for lack of queue room.
const POLL_WHILE_PAUSED: Duration = Duration::from_millis(2);

/// Runs the member until the processor is cancelled or fails; returns when every partition
/// task finished and the done offsets are committed.
pub(super) async fn run<P: Group>(group: Arc<P>, shared: Arc<Shared>) {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = Handle::current();
    let name = format!("goka-{}", shared.group);
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let member = std::panic::AssertUnwindSafe(|| member_loop(group, thread_shared, runtime));
        let _ = done.send(std::panic::catch_unwind(member).map_err(|p| panic_text(&*p)));
    });
    match spawned {
        Ok(_) => match finished.await {
            Ok(Ok(())) => {}
            // The member is gone: without it no partition moves, so the processor stops.
            Ok(Err(panic)) => shared.fail(member_died(&shared, &format!("panicked: {panic}"))),
            Err(_) => shared.fail(member_died(&shared, "ended without a word")),
        },
        Err(e) => shared.fail(ProcessorError::Kafka {
            group: shared.group,
            topic: String::new(),
            source: crate::kafka::KafkaError::Config(format!(
                "cannot start the consumer thread: {e}"
            )),
        }),
    }
}

fn member_died(shared: &Shared, what: &str) -> ProcessorError {
    ProcessorError::Kafka {
        group: shared.group,
        topic: String::new(),
        source: crate::kafka::KafkaError::Consume {
            topic: String::new(),
            message: format!("the consumer group member thread {what}"),
        },
    }
}

/// The message of a caught panic.
pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

struct Task {
    queue: mpsc::Sender<ConsumedMessage>,
    /// Key and value bytes in `queue`; the partition task takes off what it receives.
    queued_bytes: Arc<AtomicUsize>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// Messages of one topic partition waiting for room in its queue.
#[derive(Default)]
struct Stashed {
    waiting: VecDeque<ConsumedMessage>,
    /// Key and value bytes of `waiting`.
    bytes: usize,
    /// Fetching was paused because as many messages wait as the queue holds.
    paused: bool,
}

/// Starts and stops partition tasks on rebalances; holds messages that did not fit a queue.
struct Listener<P: Group> {
    group: Arc<P>,
    shared: Arc<Shared>,
    runtime: Handle,
    tasks: Mutex<HashMap<i32, Task>>,
    /// Messages that found their partition's queue full, in order; later messages of the
    /// same partition wait behind them, never around them.
    stash: Mutex<HashMap<TopicPartition, Stashed>>,
}

impl<P: Group> Listener<P> {
    fn start(&self, partition: i32) -> Task {
        let (queue, input) = mpsc::channel(self.shared.config.partition_queue.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let stop = self.shared.cancel.child_token();
        let task = PartitionTask {
            group: self.group.clone(),
            shared: self.shared.clone(),
            partition,
            input,
            queued_bytes: queued_bytes.clone(),
            stop: stop.clone(),
            unsaved_offset: std::sync::atomic::AtomicI64::new(-1),
            unsaved: std::sync::atomic::AtomicU32::new(0),
        };
        let shared = self.shared.clone();
        // Every event of the task carries its group and partition.
        let span = tracing::info_span!("partition", group = shared.group, partition);
        let handle = self.runtime.spawn(
            async move {
                // A panic outside the handler's guard (storage, a codec of a join) must stop
                // the processor too: the partition would never move again.
                let outcome = std::panic::AssertUnwindSafe(task.run())
                    .catch_unwind()
                    .await;
                let error = match outcome {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error,
                    Err(panic) => ProcessorError::PartitionPanicked {
                        group: shared.group,
                        partition,
                        message: panic_text(&*panic),
                    },
                };
                tracing::error!(%error, "partition task failed");
                shared.fail(error);
            }
            .instrument(span),
        );
        Task {
            queue,
            queued_bytes,
            stop,
            handle,
        }
    }

    /// Stops the tasks of `partitions` and waits for them to finish their in-flight work.
    fn stop(&self, partitions: impl IntoIterator<Item = i32>) {
        let stopped: Vec<Task> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            partitions
                .into_iter()
                .filter_map(|p| tasks.remove(&p))
                .collect()
        };
        for task in &stopped {
            task.stop.cancel();
        }
        for task in stopped {
            let _ = self.runtime.block_on(task.handle);
        }
    }

    fn stop_all(&self) {
        let all: Vec<i32> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        self.stop(all);
    }
}

impl<P: Group> RebalanceListener for Listener<P> {
    fn assigned(&self, partitions: &[(String, i32)]) {
        self.shared.stats.assignment_arrived();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, partition) in partitions {
            if !tasks.contains_key(partition) {
                let task = self.start(*partition);
                tasks.insert(*partition, task);
            }
        }
        if tasks.is_empty() {
            // A member without partitions (more instances than partitions) has nothing to
            // recover: it runs, idle, instead of staying `Starting` forever.
            tracing::info!(
                group = self.shared.group,
                "no partition assigned to this member"
            );
            self.shared.state.send_if_modified(|s| {
                let starting = *s == PartitionState::Starting;
                if starting {
                    *s = PartitionState::Running;
                }
                starting
            });
        }
    }

    fn revoking(&self, partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset> {
        let numbers: std::collections::BTreeSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
        self.shared.state.send_replace(PartitionState::Stopping);
        self.stop(numbers.iter().copied());
        self.stash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, p), _| !numbers.contains(p));
        self.shared.state.send_replace(PartitionState::Starting);
        self.shared.stats.await_assignment();
        self.shared.offsets.remove(partitions)
    }

    fn commit_failed(&self, offsets: &[TopicPartitionOffset], error: &crate::kafka::KafkaError) {
        tracing::warn!(group = self.shared.group, %error, "commit failed; committing again");
        self.shared.offsets.retry(offsets);
    }
}

fn member_loop<P: Group>(group: Arc<P>, shared: Arc<Shared>, runtime: Handle) {
    let listener = Arc::new(Listener {
        group,
        shared: shared.clone(),
        runtime,
        tasks: Mutex::new(HashMap::new()),
        stash: Mutex::new(HashMap::new()),
    });
    let topics: Vec<&str> = P::GRAPH.consumed_topics().collect();
    let mut member = match shared
        .client
        .join_group(shared.group, &topics, listener.clone())
    {
        Ok(member) => member,
        Err(source) => {
            shared.fail(ProcessorError::Kafka {
                group: shared.group,
                topic: topics.join(","),
                source,
            });
            return;
        }
    };
    shared.stats.await_assignment();
    let mut unassigned = Unassigned::default();
    let mut last_commit = Instant::now();
    while !shared.cancel.is_cancelled() {
        retry_stash(&listener, &mut *member);
        // While partitions wait for room in their queues, come back soon to move them on.
        let stashed = !listener
            .stash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        match member.poll(if stashed { POLL_WHILE_PAUSED } else { POLL }) {
            None | Some(Ok(ConsumerEvent::EndOfPartition { .. })) => {}
            Some(Ok(ConsumerEvent::Message(message))) => route(&listener, &mut *member, message),
            Some(Ok(ConsumerEvent::Transient(error))) => {
                tracing::warn!(group = shared.group, %error, "consumer group member lost its connection; retrying");
            }
            Some(Err(source)) => {
                shared.fail(ProcessorError::Kafka {
                    group: shared.group,
                    topic: topics.join(","),
                    source,
                });
                break;
            }
        }
        if last_commit.elapsed() >= shared.config.commit_interval {
            commit(&shared, &mut *member, false);
            last_commit = Instant::now();
            unassigned.check(&shared);
        }
    }
    shared.state.send_replace(PartitionState::Stopping);
    listener.stop_all();
    commit(&shared, &mut *member, true);
    member.close();
}

/// How long a member may wait for an assignment before it says so, and how often it
/// repeats it.
const UNASSIGNED_WARNING: Duration = Duration::from_secs(30);

/// Warns while the member waits for the assignment of a rebalance (after joining, or after
/// its partitions were revoked) for longer than a rebalance takes. The wait is in the stats
/// too (`awaiting_assignment`), for the monitor. An idle member of a formed group (more
/// instances than partitions) got an assignment without partitions and waits for nothing.
#[derive(Default)]
struct Unassigned {
    warned: Option<Instant>,
}

impl Unassigned {
    fn check(&mut self, shared: &Shared) {
        let Some(waited) = shared.stats.awaiting_assignment() else {
            self.warned = None;
            return;
        };
        let due = self
            .warned
            .is_none_or(|warned| warned.elapsed() >= UNASSIGNED_WARNING);
        if waited >= UNASSIGNED_WARNING && due {
            self.warned = Some(Instant::now());
            tracing::warn!(
                group = shared.group,
                waited_s = waited.as_secs(),
                "the consumer group has given this member no assignment since it joined or \
                 lost its partitions: the rebalance is not finishing (a member that does not \
                 rejoin, or a coordinator that lost track of the group)"
            );
        }
    }
}

fn commit(shared: &Shared, member: &mut dyn GroupConsumer, sync: bool) {
    let offsets = shared.offsets.take_changed();
    if offsets.is_empty() {
        return;
    }
    match member.commit(&offsets, sync) {
        Ok(()) => tracing::debug!(group = shared.group, ?offsets, sync, "committed"),
        // Committed again at the next interval, even if nothing moves on by then.
        Err(error) => {
            tracing::warn!(group = shared.group, %error, "commit failed; committing again");
            shared.offsets.retry(&offsets);
        }
    }
}

fn route<P: Group>(
    listener: &Listener<P>,
    member: &mut dyn GroupConsumer,
    message: ConsumedMessage,
) {
    let key = (message.topic.clone(), message.partition);
    let mut stash = listener.stash.lock().unwrap_or_else(|p| p.into_inner());
    let message = match stash.get_mut(&key) {
        Some(_) => Some(message),
        None => match task_queue(listener, message.partition) {
            // Not ours (any more): not committed here, so its next owner reads it.
            None => return,
            Some(queue) => match queue.offer(message, &listener.shared.config) {
                None => return,
                Some(message) => Some(message),
            },
        },
    };
    let stashed = stash.entry(key.clone()).or_default();
    if let Some(message) = message {
        stashed.bytes += size(&message);
        stashed.waiting.push_back(message);
    }
    // Pause only when as much waits as the queue holds: pausing and resuming cost a fetch
    // round trip, and the stash stays bounded by the queue size plus one fetch.
    let config = &listener.shared.config;
    let full = stashed.waiting.len() >= config.partition_queue.max(1)
        || stashed.bytes >= config.partition_queue_bytes.max(1);
    if !stashed.paused && full {
        match member.pause(&key.0, key.1) {
            Ok(()) => stashed.paused = true,
            Err(error) => {
                tracing::warn!(group = listener.shared.group, %error, "cannot pause a full partition")
            }
        }
    }
}

/// Moves stashed messages into their queues as room appears; resumes a paused partition once
/// none of its messages wait any more.
fn retry_stash<P: Group>(listener: &Listener<P>, member: &mut dyn GroupConsumer) {
    let mut stash = listener.stash.lock().unwrap_or_else(|p| p.into_inner());
    if stash.is_empty() {
        return;
    }
    let mut drained = Vec::new();
    for (key, stashed) in stash.iter_mut() {
        match task_queue(listener, key.1) {
            None => stashed.waiting.clear(),
            Some(queue) => {
                while let Some(message) = stashed.waiting.pop_front() {
                    let bytes = size(&message);
                    match queue.offer(message, &listener.shared.config) {
                        None => stashed.bytes -= bytes,
                        Some(message) => {
                            stashed.waiting.push_front(message);
                            break;
                        }
                    }
                }
            }
        }
        if stashed.waiting.is_empty() {
            drained.push((key.clone(), stashed.paused));
        }
    }
    for (key, paused) in drained {
        stash.remove(&key);
        if paused {
            if let Err(error) = member.resume(&key.0, key.1) {
                tracing::warn!(group = listener.shared.group, %error, "cannot resume a partition");
            }
        }
    }
}

/// Key and value bytes of a message, what the byte bounds count.
pub(super) fn size(message: &ConsumedMessage) -> usize {
    message.key.len() + message.value.as_ref().map_or(0, Vec::len)
}

/// The sending side of a partition task's queue.
struct QueueHandle {
    queue: mpsc::Sender<ConsumedMessage>,
    bytes: Arc<AtomicUsize>,
}

impl QueueHandle {
    /// Queues `message` if the queue has room in messages and bytes; gives it back if not.
    /// A message for a task that ended is dropped: it is not committed, so it is read again.
    fn offer(
        &self,
        message: ConsumedMessage,
        config: &super::ProcessorConfig,
    ) -> Option<ConsumedMessage> {
        let bytes = size(&message);
        // One message always fits an empty queue, however large.
        let queued = self.bytes.load(Ordering::Relaxed);
        if queued > 0 && queued + bytes > config.partition_queue_bytes {
            return Some(message);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        match self.queue.try_send(message) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                None
            }
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                Some(message)
            }
        }
    }
}

fn task_queue<P: Group>(listener: &Listener<P>, partition: i32) -> Option<QueueHandle> {
    let tasks = listener.tasks.lock().unwrap_or_else(|p| p.into_inner());
    tasks.get(&partition).map(|t| QueueHandle {
        queue: t.queue.clone(),
        bytes: t.queued_bytes.clone(),
    })
}

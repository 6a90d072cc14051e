//! The consumer group member of a processor, polled on a thread of its own: it starts and
//! stops partition tasks as partitions are assigned and revoked, routes each message to its
//! partition's bounded queue (pausing the partition while the queue is full), and commits
//! the offsets the tasks report done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::group::Group;
use super::partition::PartitionTask;
use super::{PartitionState, ProcessorError, Shared};
use crate::kafka::{
    ConsumedMessage, ConsumerEvent, GroupConsumer, RebalanceListener, TopicPartitionOffset,
};

/// How long one poll of the group member may block.
const POLL: Duration = Duration::from_millis(100);

/// Runs the member until the processor is cancelled or fails; returns when every partition
/// task finished and the done offsets are committed.
pub(super) async fn run<P: Group>(group: Arc<P>, shared: Arc<Shared>) {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = Handle::current();
    let name = format!("goka-{}", shared.group);
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        member_loop(group, thread_shared, runtime);
        let _ = done.send(());
    });
    match spawned {
        Ok(_) => {
            let _ = finished.await;
        }
        Err(e) => shared.fail(ProcessorError::Kafka {
            group: shared.group,
            topic: String::new(),
            source: crate::kafka::KafkaError::Config(format!(
                "cannot start the consumer thread: {e}"
            )),
        }),
    }
}

struct Task {
    queue: mpsc::Sender<ConsumedMessage>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// Starts and stops partition tasks on rebalances; holds messages that did not fit a queue.
struct Listener<P: Group> {
    group: Arc<P>,
    shared: Arc<Shared>,
    runtime: Handle,
    tasks: Mutex<HashMap<i32, Task>>,
    /// One message per paused topic partition: the one that found its queue full.
    stash: Mutex<HashMap<(Arc<str>, i32), ConsumedMessage>>,
}

impl<P: Group> Listener<P> {
    fn start(&self, partition: i32) -> Task {
        let (queue, input) = mpsc::channel(self.shared.config.partition_queue.max(1));
        let stop = self.shared.cancel.child_token();
        let task = PartitionTask {
            group: self.group.clone(),
            shared: self.shared.clone(),
            partition,
            input,
            stop: stop.clone(),
            unsaved_offset: std::sync::atomic::AtomicI64::new(-1),
            unsaved: std::sync::atomic::AtomicU32::new(0),
        };
        let shared = self.shared.clone();
        let handle = self.runtime.spawn(async move {
            if let Err(error) = task.run().await {
                shared.fail(error);
            }
        });
        Task {
            queue,
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
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, partition) in partitions {
            if !tasks.contains_key(partition) {
                let task = self.start(*partition);
                tasks.insert(*partition, task);
            }
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
        self.shared.offsets.remove(partitions)
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
    let mut last_commit = Instant::now();
    while !shared.cancel.is_cancelled() {
        retry_stash(&listener, &mut *member);
        match member.poll(POLL) {
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
        }
    }
    shared.state.send_replace(PartitionState::Stopping);
    listener.stop_all();
    commit(&shared, &mut *member, true);
    member.close();
}

fn commit(shared: &Shared, member: &mut dyn GroupConsumer, sync: bool) {
    let offsets = shared.offsets.take_changed();
    if offsets.is_empty() {
        return;
    }
    if let Err(error) = member.commit(&offsets, sync) {
        // The offsets stay done; a later commit or the next owner's replay covers them.
        tracing::warn!(group = shared.group, %error, "commit failed");
    }
}

fn route<P: Group>(
    listener: &Listener<P>,
    member: &mut dyn GroupConsumer,
    message: ConsumedMessage,
) {
    let queue = {
        let tasks = listener.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.get(&message.partition).map(|t| t.queue.clone())
    };
    let Some(queue) = queue else {
        // Not ours (any more): not committed here, so its next owner reads it.
        return;
    };
    match queue.try_send(message) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(message)) => {
            let (topic, partition) = (message.topic.clone(), message.partition);
            if let Err(error) = member.pause(&topic, partition) {
                tracing::warn!(group = listener.shared.group, %error, "cannot pause a full partition");
            }
            listener
                .stash
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((topic, partition), message);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

fn retry_stash<P: Group>(listener: &Listener<P>, member: &mut dyn GroupConsumer) {
    let stashed: Vec<ConsumedMessage> = {
        let mut stash = listener.stash.lock().unwrap_or_else(|p| p.into_inner());
        if stash.is_empty() {
            return;
        }
        stash.drain().map(|(_, m)| m).collect()
    };
    for message in stashed {
        let queue = {
            let tasks = listener.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.get(&message.partition).map(|t| t.queue.clone())
        };
        let Some(queue) = queue else { continue };
        let (topic, partition) = (message.topic.clone(), message.partition);
        match queue.try_send(message) {
            Ok(()) => {
                if let Err(error) = member.resume(&topic, partition) {
                    tracing::warn!(group = listener.shared.group, %error, "cannot resume a partition");
                }
            }
            Err(mpsc::error::TrySendError::Full(message)) => {
                listener
                    .stash
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((topic, partition), message);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

//! The consumer group member of a processor, polled on a thread of its own: it starts and
//! stops partition tasks as partitions are assigned and revoked, hands each task the readers
//! of its partition's topics (bounded queues of the client: a task that falls behind stops
//! its partition's fetching, and nobody else's), and commits the offsets the tasks report
//! done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::config::Rebalance;
use super::error::panic_text;
use super::handlers::Handlers;
use super::partition::PartitionTask;
use super::stats::ProcessorState;
use super::{ProcessorError, Shared};
use crate::kafka::{
    AssignedPartition, GroupConsumer, MemberOptions, PartitionConsumer, PartitionQueueBounds,
    RebalanceListener, TopicPartitionOffset,
};

/// How long one poll of the group member may block.
const POLL: Duration = Duration::from_millis(100);

/// Runs the member until the processor is cancelled or fails; returns when every partition
/// task finished and the done offsets are committed.
pub(super) async fn run<P: Handlers>(group: Arc<P>, shared: Arc<Shared>) {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = Handle::current();
    let name = format!("goka-{}", shared.group);
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let member = std::panic::AssertUnwindSafe(|| member_loop(group, thread_shared, runtime));
        let _ = done.send(std::panic::catch_unwind(member).map_err(|p| panic_text(&*p)));
    });
    if shared.transaction.is_some() {
        let watched = shared.clone();
        let name = format!("goka-{}-pauses", shared.group);
        if let Err(error) = std::thread::Builder::new()
            .name(name)
            .spawn(move || watch_pauses(&watched))
        {
            tracing::warn!(group = shared.group, %error, "cannot watch for pauses of the process");
        }
    }
    match spawned {
        Ok(_) => {
            // Every step of stopping is bounded on its own (tasks by their deliveries'
            // timeout, the last commit and leaving the group by theirs); this bounds them
            // together, and whatever else a client may hang in, so `run` always returns.
            let stop_timeout = shared.config.stop_timeout;
            let overdue = async {
                shared.cancel.cancelled().await;
                tokio::time::sleep(stop_timeout).await;
            };
            tokio::select! {
                ended = finished => match ended {
                    Ok(Ok(())) => {}
                    // The member is gone: without it no partition moves, so the processor
                    // stops.
                    Ok(Err(panic)) => {
                        shared.fail(member_died::<P>(&shared, &format!("panicked: {panic}")))
                    }
                    Err(_) => shared.fail(member_died::<P>(&shared, "ended without a word")),
                },
                () = overdue => {
                    let what = format!(
                        "did not finish stopping within {:.1} s (stop_timeout) and was \
                         abandoned: what it had not committed is handled again by the next \
                         owner of its partitions",
                        stop_timeout.as_secs_f64()
                    );
                    tracing::error!(group = shared.group, "the consumer group member {what}");
                    shared.fail(member_died::<P>(&shared, &what));
                }
            }
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

fn member_died<P: Handlers>(shared: &Shared, what: &str) -> ProcessorError {
    let topics = P::GRAPH.consumed_topics().collect::<Vec<_>>().join(",");
    ProcessorError::Kafka {
        group: shared.group,
        topic: topics.clone(),
        source: crate::kafka::KafkaError::Consume {
            topic: topics,
            message: format!("the consumer group member {what}"),
        },
    }
}

/// A partition whose every consumed topic is assigned: ready to start.
struct Ready {
    /// One reader per consumed topic.
    readers: Vec<Box<dyn PartitionConsumer>>,
    /// The stream time committed with its offsets: the latest of its topics', whose
    /// commits each carry the partition's stream time when they were made.
    stream_time: Option<i64>,
}

impl Ready {
    fn of(assigned: Vec<AssignedPartition>) -> Self {
        let stream_time = assigned
            .iter()
            .filter_map(|a| super::stream_time::decode(&a.committed_metadata))
            .max();
        Self {
            readers: assigned.into_iter().map(|a| a.messages).collect(),
            stream_time,
        }
    }
}

struct Task {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// Starts and stops partition tasks on rebalances.
struct Listener<P: Handlers> {
    group: Arc<P>,
    shared: Arc<Shared>,
    runtime: Handle,
    tasks: Mutex<HashMap<i32, Task>>,
    /// Readers of partitions not every consumed topic of which is assigned yet. A task needs
    /// its partition of every consumed topic (inputs and loop); the consumer protocol
    /// assigns incrementally, so the rest may come with a later assignment.
    incomplete: Mutex<HashMap<i32, Vec<AssignedPartition>>>,
}

impl<P: Handlers> Listener<P> {
    /// Starts the task of `partition`, reading `inputs` (one reader per consumed topic).
    fn start(&self, partition: i32, inputs: Ready) -> Task {
        let Ready {
            readers: inputs,
            stream_time,
        } = inputs;
        let stop = self.shared.cancel.child_token();
        let (visit_requests, visits) = tokio::sync::mpsc::unbounded_channel();
        self.shared
            .visitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, visit_requests);
        let task = PartitionTask {
            group: self.group.clone(),
            shared: self.shared.clone(),
            partition,
            stop: stop.clone(),
            inputs: self
                .shared
                .input_figures
                .start(partition, P::GRAPH.consumed_topics()),
            committed_stream_time: stream_time,
        };
        let shared = self.shared.clone();
        // Every event of the task carries its group and partition.
        let span = tracing::info_span!("partition", group = shared.group, partition);
        let handle = self.runtime.spawn(
            async move {
                // A panic outside the handler's guard (storage, a codec of a join) must stop
                // the processor too: the partition would never move again.
                let outcome = std::panic::AssertUnwindSafe(task.run(inputs, visits))
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
        Task { stop, handle }
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

    /// With hot standby, follows the tables of every partition that has no task here.
    fn follow_unowned(&self, owned: &HashMap<i32, Task>) {
        if !self.shared.config.hot_standby {
            return;
        }
        let topics: Vec<&'static str> = P::GRAPH
            .owned_tables()
            .chain(P::GRAPH.joins)
            .map(|edge| edge.topic)
            .collect();
        let Some(count) = topics
            .first()
            .and_then(|topic| self.shared.partition_counts.get(topic))
        else {
            return;
        };
        for partition in 0..*count as i32 {
            if !owned.contains_key(&partition) {
                super::standby::start(&self.shared, &self.runtime, &topics, partition);
            }
        }
    }

    /// Calls the rebalance callback, if there is one; a panic in it stops the processor.
    fn tell(&self, rebalance: Rebalance) {
        let Some(callback) = &self.shared.config.rebalance else {
            return;
        };
        let called =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&rebalance)));
        if let Err(panic) = called {
            self.shared.fail(ProcessorError::Callback {
                group: self.shared.group,
                topic: String::new(),
                partition: -1,
                offset: -1,
                key: String::new(),
                message: format!(
                    "the rebalance callback panicked on {rebalance:?}: {}",
                    panic_text(&*panic)
                ),
            });
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

impl<P: Handlers> RebalanceListener for Listener<P> {
    fn assigned(&self, partitions: Vec<AssignedPartition>) {
        self.shared.stats.assignment_arrived();
        let complete = self.complete(partitions);
        let mut started: Vec<i32> = complete.keys().copied().collect();
        started.sort_unstable();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (partition, readers) in complete {
            // A partition's task is stopped when any of its topics is revoked: it is never
            // assigned twice without a revoke between.
            if let Some(previous) = tasks.insert(partition, self.start(partition, readers)) {
                tracing::error!(
                    group = self.shared.group,
                    partition,
                    "partition assigned again without a revoke; the earlier task is stopped"
                );
                previous.stop.cancel();
            }
        }
        self.follow_unowned(&tasks);
        self.tell(Rebalance::Assigned(started.clone()));
        if tasks.is_empty() {
            // A member without partitions (more instances than partitions) has nothing to
            // recover: it runs, idle, instead of staying `Starting` forever.
            tracing::info!(
                group = self.shared.group,
                "no partition assigned to this member"
            );
        }
        if started.is_empty() {
            // Nothing starts that would set the state: the partitions kept (an incremental
            // assignment) or none say what it is.
            self.shared.refresh_state();
        }
    }

    fn revoking(&self, partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset> {
        let numbers: std::collections::BTreeSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
        self.forget_incomplete(partitions);
        let split = self.split_revoke(partitions);
        self.shared.set_state(ProcessorState::Stopping);
        self.stop(numbers.iter().copied());
        if let Some(transaction) = &self.shared.transaction {
            // The revoked partitions' work is committed in the member's transaction before
            // they are handed over, with what the other partitions did meanwhile.
            let quiet_within = self.shared.config.drain_timeout;
            if let Err(error) = transaction.commit(
                || self.shared.offsets.take_changed(),
                &self.runtime,
                quiet_within,
            ) {
                self.shared.fail(error);
            }
            self.shared.offsets.remove(partitions);
        }
        self.tell(Rebalance::Revoked(numbers.iter().copied().collect()));
        self.follow_unowned(&self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        self.shared.set_state(ProcessorState::Starting);
        self.shared.stats.await_assignment();
        if let Some(error) = split {
            self.shared.fail(error);
        }
        // Under exactly-once the transaction committed them above.
        self.shared.offsets.remove(partitions)
    }

    fn commit_failed(&self, offsets: &[TopicPartitionOffset], error: &crate::kafka::KafkaError) {
        tracing::warn!(group = self.shared.group, %error, "commit failed; committing again");
        self.shared.offsets.retry(offsets);
    }
}

impl<P: Handlers> Listener<P> {
    /// Adds `assigned` to the partitions waiting for the rest of their topics; takes out and
    /// returns the readers of every partition that has all its topics now.
    fn complete(&self, assigned: Vec<AssignedPartition>) -> HashMap<i32, Ready> {
        let wanted = P::GRAPH.consumed_topics().count();
        let mut incomplete = self.incomplete.lock().unwrap_or_else(|p| p.into_inner());
        for partition in assigned {
            incomplete
                .entry(partition.partition)
                .or_default()
                .push(partition);
        }
        let ready: Vec<i32> = incomplete
            .iter()
            .filter(|(_, readers)| readers.len() >= wanted)
            .map(|(partition, _)| *partition)
            .collect();
        for (partition, readers) in incomplete.iter() {
            if readers.len() < wanted {
                let have: Vec<&str> = readers.iter().map(|r| r.topic.as_str()).collect();
                tracing::warn!(
                    group = self.shared.group,
                    partition,
                    ?have,
                    "partition waits for the rest of its topics before it starts"
                );
            }
        }
        ready
            .into_iter()
            .filter_map(|partition| incomplete.remove(&partition).map(|r| (partition, r)))
            .map(|(partition, readers)| (partition, Ready::of(readers)))
            .collect()
    }

    /// Drops the waiting readers of revoked topic partitions.
    fn forget_incomplete(&self, revoked: &[(String, i32)]) {
        let mut incomplete = self.incomplete.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in revoked {
            if let Some(readers) = incomplete.get_mut(partition) {
                readers.retain(|r| r.topic != *topic);
                if readers.is_empty() {
                    incomplete.remove(partition);
                }
            }
        }
    }

    /// The error for a revoke that takes some topics of a running partition and leaves the
    /// others here: its task stops, and the topics left would be read by nobody. The classic
    /// protocol revokes everything; the consumer protocol's range assignor moves a
    /// partition's topics together while every member consumes the same topics.
    fn split_revoke(&self, revoked: &[(String, i32)]) -> Option<ProcessorError> {
        let wanted = P::GRAPH.consumed_topics().count();
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_partition: HashMap<i32, Vec<&str>> = HashMap::new();
        for (topic, partition) in revoked {
            if tasks.contains_key(partition) {
                per_partition
                    .entry(*partition)
                    .or_default()
                    .push(topic.as_str());
            }
        }
        let (partition, topics) = per_partition
            .into_iter()
            .find(|(_, topics)| topics.len() < wanted)?;
        let kept: Vec<&str> = P::GRAPH
            .consumed_topics()
            .filter(|t| !topics.contains(t))
            .collect();
        Some(ProcessorError::Kafka {
            group: self.shared.group,
            topic: topics.join(","),
            source: crate::kafka::KafkaError::Consume {
                topic: topics.join(","),
                message: format!(
                    "group {}: partition {partition} of {} was revoked while the same \
                     partition of {} stays with this member; the group's assignment splits \
                     co-partitioned topics (do all members consume the same topics, with \
                     group.remote.assignor=range?). The processor stops instead of leaving \
                     them unread",
                    self.shared.group,
                    topics.join(","),
                    kept.join(",")
                ),
            },
        })
    }
}

fn member_loop<P: Handlers>(group: Arc<P>, shared: Arc<Shared>, runtime: Handle) {
    let listener = Arc::new(Listener {
        group,
        shared: shared.clone(),
        runtime,
        tasks: Mutex::new(HashMap::new()),
        incomplete: Mutex::new(HashMap::new()),
    });
    // Tables are followed while the group forms: the first assignment finds them recovered.
    listener.follow_unowned(&HashMap::new());
    let topics: Vec<&str> = P::GRAPH.consumed_topics().collect();
    let options = MemberOptions {
        bounds: PartitionQueueBounds {
            messages: shared.config.partition_queue,
            bytes: shared.config.partition_queue_bytes,
        },
        new_group_start: shared.config.new_group_start,
    };
    let runtime = listener.runtime.clone();
    let mut member =
        match shared
            .client
            .join_group(shared.group, &topics, options, listener.clone())
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
        match member.poll(POLL) {
            Ok(None) => {}
            Ok(Some(error)) => {
                tracing::warn!(group = shared.group, %error, "consumer group member lost its connection; retrying");
            }
            Err(source) => {
                shared.fail(ProcessorError::Kafka {
                    group: shared.group,
                    topic: topics.join(","),
                    source,
                });
                break;
            }
        }
        if let Some(transaction) = &shared.transaction {
            transaction.set_metadata(member.group_metadata());
        }
        if last_commit.elapsed() >= shared.config.commit_interval {
            match &shared.transaction {
                None => commit(&shared, &mut *member, false),
                Some(transaction) => {
                    let quiet_within = shared.config.drain_timeout;
                    if let Err(error) =
                        transaction.commit(|| shared.offsets.take_changed(), &runtime, quiet_within)
                    {
                        shared.fail(error);
                        break;
                    }
                }
            }
            last_commit = Instant::now();
            unassigned.check(&shared);
        }
    }
    shared.set_state(ProcessorState::Stopping);
    listener.stop_all();
    match &shared.transaction {
        None => commit(&shared, &mut *member, true),
        Some(transaction) => {
            let failed = shared
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if failed {
                // What the open transaction holds is part of the work that failed.
                transaction.abort(&runtime);
            } else if let Err(error) = transaction.commit(
                || shared.offsets.take_changed(),
                &runtime,
                shared.config.drain_timeout,
            ) {
                shared.fail(error);
                transaction.abort(&runtime);
            }
        }
    }
    member.close();
}

/// How often [`watch_pauses`] looks at the clock.
const PAUSE_TICK: Duration = Duration::from_millis(250);

/// Under exactly-once, stops the processor with a clear error once the process stood still
/// (SIGSTOP, a frozen VM, starvation) for at least the transaction timeout: the broker
/// aborted the open transaction meanwhile, and as the member resumes, its messages are
/// purged and its commit refused in whichever order the client reports them. A thread of
/// its own that oversleeps a short tick by that much saw the whole process stand still.
fn watch_pauses(shared: &Shared) {
    let Some(transaction) = &shared.transaction else {
        return;
    };
    while !shared.cancel.is_cancelled() {
        let began = Instant::now();
        std::thread::sleep(PAUSE_TICK);
        let still = began.elapsed().saturating_sub(PAUSE_TICK);
        if let Some(error) = transaction.paused(still) {
            shared.fail_superseding(error);
            return;
        }
    }
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

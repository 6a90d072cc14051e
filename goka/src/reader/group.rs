//! [`GroupReader`]: a typed consumer in a consumer group of its own, for a program that
//! reads a stream, shares its partitions with its other instances, and goes on after a
//! restart where it left off.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{decode, Message, ReaderError};
use crate::kafka::{
    AssignedPartition, BatchEvent, Client, GroupConsumer, GroupStart, KafkaError, MemberOptions,
    PartitionQueueBounds, RebalanceListener, TopicPartitionOffset,
};
use crate::topic::Topic;

/// How long one poll of the group member may block.
const POLL: Duration = Duration::from_millis(100);

/// How often the offsets of the messages done are committed while reading.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Decoded messages waiting between the partitions' tasks and the reader.
const WAITING: usize = 1_024;

/// One decoded message (or failure) of a partition, tagged with the assignment it came from.
struct Item<T: Topic> {
    partition: i32,
    epoch: u64,
    offset: i64,
    read: Result<Message<T>, ReaderError>,
}

/// Reads topic `T` as a member of a consumer group: the group's members share the
/// partitions, and the offsets of the messages done are committed, so a restarted reader
/// goes on after the last message it was done with.
///
/// A message counts as done when [`next`](Self::next) is called again (the caller finished
/// it) or at [`close`](Self::close); done offsets are committed every second, when partitions
/// move to another member, and at `close`. Delivery is at least once: a message handed out
/// but not done when its partition moves, or when the reader is dropped without `close`, is
/// read again by the next owner. Needs a broker: on the tester, read with
/// [`StreamReader`](super::StreamReader).
///
/// ```no_run
/// # async fn example(client: std::sync::Arc<dyn goka::kafka::Client>) -> Result<(), goka::reader::ReaderError> {
/// use goka::codec::StringCodec;
/// use goka::processor::GroupStart;
/// use goka::reader::GroupReader;
///
/// goka::stream!(Alerts = "alerts": String as StringCodec);
///
/// let mut alerts = GroupReader::<Alerts>::join(client, "alert-mailer", GroupStart::Oldest).await?;
/// while let Some(alert) = alerts.next().await {
///     let alert = alert?;
///     println!("mail {}: {:?}", alert.key, alert.value); // done once `next` is called again
/// #   break;
/// }
/// alerts.close().await?; // the last one done, committed, the group left
/// # Ok(()) }
/// ```
pub struct GroupReader<T: Topic> {
    shared: Arc<Shared<T>>,
    messages: mpsc::Receiver<Item<T>>,
    /// The last message handed out and not yet done: partition, assignment, offset.
    handed: Option<(i32, u64, i64)>,
    member: Option<std::thread::JoinHandle<()>>,
    _topic: PhantomData<fn() -> T>,
}

impl<T: Topic> std::fmt::Debug for GroupReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupReader")
            .field("topic", &T::NAME)
            .field("group", &self.shared.group)
            .field("handed", &self.handed)
            .finish_non_exhaustive()
    }
}

/// What the reader, the member's thread and the rebalance listener share.
struct Shared<T: Topic> {
    group: String,
    stop: AtomicBool,
    state: Mutex<State>,
    sender: mpsc::Sender<Item<T>>,
    runtime: Handle,
}

#[derive(Default)]
struct State {
    /// The assignment each partition of this member is in; items of an older one are stale.
    epochs: HashMap<i32, u64>,
    last_epoch: u64,
    /// The tasks that read each assigned partition.
    tasks: HashMap<i32, tokio::task::JoinHandle<()>>,
    /// Per partition, the offset after the last message done, not committed yet.
    done: HashMap<i32, i64>,
    /// Why the member stopped, if it failed.
    failure: Option<String>,
}

impl<T: Topic> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn offsets(&self, done: impl IntoIterator<Item = (i32, i64)>) -> Vec<TopicPartitionOffset> {
        done.into_iter()
            .map(|(partition, offset)| TopicPartitionOffset {
                topic: T::NAME.to_owned(),
                partition,
                offset,
                metadata: String::new(),
            })
            .collect()
    }

    fn fail(&self, why: String) {
        tracing::error!(topic = T::NAME, group = self.group, %why, "group reader stopped");
        self.lock().failure.get_or_insert(why);
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl<T: Topic> RebalanceListener for Shared<T> {
    fn assigned(&self, partitions: Vec<AssignedPartition>) {
        let mut state = self.lock();
        for assigned in partitions {
            let partition = assigned.partition;
            state.last_epoch += 1;
            let epoch = state.last_epoch;
            state.epochs.insert(partition, epoch);
            let task = self
                .runtime
                .spawn(forward::<T>(assigned, epoch, self.sender.clone()));
            if let Some(old) = state.tasks.insert(partition, task) {
                old.abort();
            }
        }
    }

    fn revoking(&self, partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset> {
        let mut state = self.lock();
        let mut done = Vec::new();
        for (_, partition) in partitions {
            state.epochs.remove(partition);
            if let Some(task) = state.tasks.remove(partition) {
                task.abort();
            }
            if let Some(offset) = state.done.remove(partition) {
                done.push((*partition, offset));
            }
        }
        self.offsets(done)
    }

    fn commit_failed(&self, offsets: &[TopicPartitionOffset], error: &KafkaError) {
        tracing::warn!(topic = T::NAME, group = self.group, %error, "commit failed; committing again");
        let mut state = self.lock();
        for offset in offsets {
            if state.epochs.contains_key(&offset.partition) {
                let done = state.done.entry(offset.partition).or_insert(offset.offset);
                *done = (*done).max(offset.offset);
            }
        }
    }
}

/// Reads one assigned partition, decodes its messages and hands them to the reader, until
/// the partition is revoked (the task is aborted) or its reader ends.
async fn forward<T: Topic>(
    mut assigned: AssignedPartition,
    epoch: u64,
    sender: mpsc::Sender<Item<T>>,
) {
    let partition = assigned.partition;
    while let Some(batch) = assigned.messages.next_batch().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(source) => {
                let read = Err(ReaderError::Kafka {
                    topic: T::NAME,
                    source,
                });
                let _ = sender
                    .send(Item {
                        partition,
                        epoch,
                        offset: -1,
                        read,
                    })
                    .await;
                return;
            }
        };
        for event in batch.events() {
            match event {
                BatchEvent::Message(message) => {
                    let item = Item {
                        partition,
                        epoch,
                        offset: message.offset(),
                        read: decode::<T>(&message),
                    };
                    if sender.send(item).await.is_err() {
                        return;
                    }
                }
                BatchEvent::EndOfPartition { .. } => {}
                BatchEvent::Transient(error) => {
                    tracing::warn!(topic = T::NAME, partition, %error, "group reader lost its connection; retrying");
                }
            }
        }
    }
}

impl<T: Topic> GroupReader<T> {
    /// Joins the consumer group `group` as a new member reading `T`; partitions the group
    /// never committed start at `start`. Fails with [`ReaderError::NoTopic`] if the topic
    /// does not exist. Call from a Tokio runtime: each assigned partition is read by a task.
    pub async fn join(
        client: Arc<dyn Client>,
        group: &str,
        start: GroupStart,
    ) -> Result<Self, ReaderError> {
        let kafka = |source| ReaderError::Kafka {
            topic: T::NAME,
            source,
        };
        let admin = client.admin().map_err(kafka)?;
        admin
            .partitions(T::NAME)
            .await
            .map_err(kafka)?
            .ok_or(ReaderError::NoTopic { topic: T::NAME })?;
        let (sender, messages) = mpsc::channel(WAITING);
        let shared = Arc::new(Shared {
            group: group.to_owned(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            sender,
            runtime: Handle::current(),
        });
        let options = MemberOptions {
            bounds: PartitionQueueBounds {
                messages: WAITING,
                bytes: 16 << 20,
            },
            new_group_start: start,
        };
        let member = client
            .join_group(group, &[T::NAME], options, shared.clone())
            .map_err(|source| group_error::<T>(group, source.to_string()))?;
        let thread_shared = shared.clone();
        let member = std::thread::Builder::new()
            .name(format!("goka-reader-{group}"))
            .spawn(move || member_loop(member, &thread_shared))
            .map_err(|e| group_error::<T>(group, format!("cannot start its thread: {e}")))?;
        Ok(Self {
            shared,
            messages,
            handed: None,
            member: Some(member),
            _topic: PhantomData,
        })
    }

    /// The next message of any partition assigned to this member, waiting for one; the
    /// message handed out before counts as done. A message that does not decode is a
    /// [`ReaderError::Decode`] naming it (done with the next call, like any other); a failed
    /// member is a [`ReaderError::Group`]; `None` once the reader was closed.
    pub async fn next(&mut self) -> Option<Result<Message<T>, ReaderError>> {
        self.mark_done();
        loop {
            let item = tokio::select! {
                item = self.messages.recv() => item?,
                () = tokio::time::sleep(POLL) => {
                    match self.failure() {
                        Some(error) => return Some(Err(error)),
                        None => continue,
                    }
                }
            };
            let current = self.shared.lock().epochs.get(&item.partition) == Some(&item.epoch);
            if !current {
                continue; // read before its partition moved: the next owner reads it
            }
            if item.offset >= 0 {
                self.handed = Some((item.partition, item.epoch, item.offset));
            }
            return Some(item.read);
        }
    }

    /// The partitions of `T` assigned to this member now, in order (none until the group
    /// formed, and none while a rebalance moves them).
    pub fn assignment(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.shared.lock().epochs.keys().copied().collect();
        partitions.sort_unstable();
        partitions
    }

    /// Marks the last message handed out done, commits what is done, and leaves the group.
    pub async fn close(mut self) -> Result<(), ReaderError> {
        self.mark_done();
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(member) = self.member.take() {
            let _ = tokio::task::spawn_blocking(move || member.join()).await;
        }
        match self.failure() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn mark_done(&mut self) {
        let Some((partition, epoch, offset)) = self.handed.take() else {
            return;
        };
        let mut state = self.shared.lock();
        if state.epochs.get(&partition) == Some(&epoch) {
            let done = state.done.entry(partition).or_insert(offset + 1);
            *done = (*done).max(offset + 1);
        }
    }

    fn failure(&self) -> Option<ReaderError> {
        let why = self.shared.lock().failure.clone()?;
        Some(group_error::<T>(&self.shared.group, why))
    }
}

impl<T: Topic> Drop for GroupReader<T> {
    fn drop(&mut self) {
        // Without `close`: the member commits what was done and leaves, in the background.
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn group_error<T: Topic>(group: &str, why: String) -> ReaderError {
    ReaderError::Group {
        topic: T::NAME,
        group: group.to_owned(),
        why,
    }
}

/// The member's thread: polls the group (rebalances come through the listener), commits
/// what is done every second, and on stop commits the rest and leaves.
fn member_loop<T: Topic>(mut member: Box<dyn GroupConsumer>, shared: &Arc<Shared<T>>) {
    let mut last_commit = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        match member.poll(POLL) {
            Ok(None) => {}
            Ok(Some(error)) => {
                tracing::warn!(topic = T::NAME, group = shared.group, %error, "group reader lost its connection; retrying");
            }
            Err(error) => {
                shared.fail(error.to_string());
                break;
            }
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            commit(shared, &mut *member, false);
            last_commit = Instant::now();
        }
    }
    let tasks: Vec<_> = shared.lock().tasks.drain().map(|(_, task)| task).collect();
    for task in tasks {
        task.abort();
    }
    commit(shared, &mut *member, true);
    member.close();
}

fn commit<T: Topic>(shared: &Shared<T>, member: &mut dyn GroupConsumer, sync: bool) {
    let done: Vec<(i32, i64)> = shared.lock().done.drain().collect();
    if done.is_empty() {
        return;
    }
    let offsets = shared.offsets(done);
    if let Err(error) = member.commit(&offsets, sync) {
        if sync {
            shared.fail(format!("the last commit failed: {error}"));
        } else {
            shared.commit_failed(&offsets, &error);
        }
    }
}

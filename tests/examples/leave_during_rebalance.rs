//! Replays, with bare rdkafka consumers and no goka code, the scale-down that can leave a
//! member without partitions on the test broker: three members share a four-partition
//! topic; the third leaves; the other two rejoin for the rebalance that starts, and while
//! the coordinator holds their joins, the first member leaves too, after a delay that grows
//! with each round. Kafka drops the leaver and gives the second member all four partitions
//! within a few seconds. The example reports how long the second member waits and, when it
//! waits in vain, whether joining again as a new member gets the partitions.
//!
//! The test broker gets stuck only when the member that left was the leader of the
//! generation the pending join forms: it keeps naming the departed leader in its join
//! responses. Which member that is depends on the order the joins arrived in, so most
//! rounds finish; `tests/tests/reliability.rs` has the same scenario with goka processors.
//!
//!   cargo run -p goka-tests --example leave_during_rebalance [-- ROUNDS]

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use goka_tests::TestBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

const TOPIC: &str = "leave-during-rebalance";
const PARTITIONS: i32 = 4;
/// How long A may wait for its assignment before the round counts as stuck.
const PATIENCE: Duration = Duration::from_secs(60);

/// What one member owns, and whether a revoke is under way.
#[derive(Default)]
struct Owned {
    partitions: Vec<i32>,
    revoked_at: Option<Instant>,
}

struct Member {
    owned: Arc<Mutex<Owned>>,
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(list) => {
                owned.partitions = list.elements().iter().map(|e| e.partition()).collect();
                owned.revoked_at = None;
            }
            Rebalance::Revoke(_) => {
                owned.partitions.clear();
                owned.revoked_at = Some(Instant::now());
            }
            Rebalance::Error(e) => eprintln!("rebalance error: {e}"),
        }
    }
}

/// A member polling on a thread of its own until `leave` is called.
struct Running {
    owned: Arc<Mutex<Owned>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl Running {
    fn join(broker: &TestBroker) -> Self {
        let owned = Arc::new(Mutex::new(Owned::default()));
        let consumer: BaseConsumer<Member> = goka_tests::rdkafka_config(broker)
            .set("group.id", "leave-during-rebalance")
            .set("session.timeout.ms", "6000")
            .set("partition.assignment.strategy", "range")
            .create_with_context(Member {
                owned: owned.clone(),
            })
            .expect("consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = consumer.poll(Duration::from_millis(50));
                }
                // Dropping the consumer closes it: it leaves the group.
                // As goka's member does: unsubscribe, then close.
                consumer.unsubscribe();
                drop(consumer);
            }
        });
        Self {
            owned,
            stop,
            thread,
        }
    }

    fn partitions(&self) -> Vec<i32> {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .partitions
            .clone()
    }

    fn revoked(&self) -> bool {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revoked_at
            .is_some()
    }

    fn leave(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Waits until `members` own all partitions between them; false after `within`.
fn settled(members: &[&Running], within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let owned: usize = members.iter().map(|m| m.partitions().len()).sum();
        if owned == PARTITIONS as usize {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

fn round(number: u32, delay: Duration) -> (Option<Duration>, Option<Duration>) {
    let broker = TestBroker::start();
    let admin: AdminClient<DefaultClientContext> =
        goka_tests::rdkafka_config(&broker).create().expect("admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic");
    let first = Running::join(&broker);
    settled(&[&first], PATIENCE).expect("the first member gets an assignment");
    let second = Running::join(&broker);
    settled(&[&first, &second], PATIENCE).expect("two members settle");
    let third = Running::join(&broker);
    settled(&[&first, &second, &third], PATIENCE).expect("three members settle");
    thread::sleep(Duration::from_secs(1));

    third.leave();
    // The third member's leave starts a rebalance; the others rejoin, each at its next
    // heartbeat. While the coordinator holds both joins, the first member leaves.
    let wait = Instant::now();
    while !(first.revoked() && second.revoked()) && wait.elapsed() < PATIENCE {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(delay);
    first.leave();
    let alone = settled(&[&second], PATIENCE);
    println!(
        "round {number}: the first member left {delay:?} after both rejoined; the second got \
         all {PARTITIONS} partitions: {}",
        alone.map_or(format!("no, nothing within {PATIENCE:?}"), |t| format!(
            "in {t:?}"
        ))
    );
    let mut rejoined = None;
    if alone.is_none() {
        // What a member can do about it: join again as a new member, and leave as the old.
        let fresh = Running::join(&broker);
        second.leave();
        rejoined = settled(&[&fresh], PATIENCE);
        println!(
            "round {number}: joining again as a new member got all partitions: {}",
            rejoined.map_or(format!("no, nothing within {PATIENCE:?}"), |t| format!(
                "in {t:?}"
            ))
        );
        fresh.leave();
    } else {
        second.leave();
    }
    (alone, rejoined)
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut stuck = 0;
    for number in 1..=rounds {
        let delay = Duration::from_millis(u64::from(number - 1) * 500 % 3_000);
        if round(number, delay).0.is_none() {
            stuck += 1;
        }
    }
    println!("{stuck} of {rounds} rounds left the remaining member without partitions");
}

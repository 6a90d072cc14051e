//! Replays, with bare rdkafka consumers and no goka code, the scale-down that can leave a
//! member without partitions on the test broker: three members share a four-partition
//! topic; the third leaves; the other two rejoin for the rebalance that starts, and one of
//! them leaves too, at one of three moments. Kafka drops the leaver and gives the one that
//! stays all four partitions within a few seconds.
//!
//! - `FirstToRejoin`: the member that revoked its partitions (and so sent its JoinGroup)
//!   first leaves before the other noticed the rebalance: the coordinator holds a join of a
//!   member that is gone when the other's arrives.
//! - `Leader`, `Follower`: once the coordinator answered both joins, the leader or the
//!   follower of the new generation leaves. Each member reads librdkafka's consumer-group
//!   debug log (`debug=cgrp`), whose JoinGroup response line names the generation and says
//!   whether this member leads it.
//!
//! The example reports how long the member that stays waits for the partitions, and, when it
//! waits in vain, whether joining again as a new member gets them.
//!
//! `tests/tests/kills_rebalances_and_outages_lose_nothing.rs` has the same scenario with goka processors.
//!
//!   cargo run -p goka-tests --example leave_during_rebalance [-- ROUNDS]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use goka_tests::TestBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

const TOPIC: &str = "leave-during-rebalance";
const PARTITIONS: i32 = 4;
/// How long the member that stays may wait for its assignment before the round counts as
/// stuck (ten times the session timeout).
const PATIENCE: Duration = Duration::from_secs(60);

/// What one member owns, and what the coordinator last told it.
#[derive(Default)]
struct Owned {
    partitions: Vec<i32>,
    /// Between a revoke and the next assignment.
    revoked: bool,
    /// The generation of the last JoinGroup response, and whether this member leads it.
    joined: Option<(i32, bool)>,
}

struct Member {
    owned: Arc<Mutex<Owned>>,
}

impl ClientContext for Member {
    fn log(&self, level: RDKafkaLogLevel, _fac: &str, line: &str) {
        if let Some(joined) = join_response(line) {
            self.owned.lock().unwrap_or_else(|p| p.into_inner()).joined = Some(joined);
        } else if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            eprintln!("librdkafka: {line}");
        }
    }
}

/// Parses librdkafka's "JoinGroup response: GenerationId N, Protocol P, LeaderId L (me),
/// ..." line (`(me)` only when this member leads) into the generation and leadership.
fn join_response(line: &str) -> Option<(i32, bool)> {
    let rest = line.split("JoinGroup response: GenerationId ").nth(1)?;
    let generation = rest.split(',').next()?.trim().parse().ok()?;
    let leader = rest.split("LeaderId ").nth(1)?.split(',').next()?;
    Some((generation, leader.ends_with("(me)")))
}

impl ConsumerContext for Member {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(list) => {
                owned.partitions = list.elements().iter().map(|e| e.partition()).collect();
                owned.revoked = false;
            }
            Rebalance::Revoke(_) => {
                owned.partitions.clear();
                owned.revoked = true;
            }
            Rebalance::Error(e) => eprintln!("rebalance error: {e}"),
        }
    }
}

/// A member polling on a thread of its own until `leave` is called.
struct Running {
    owned: Arc<Mutex<Owned>>,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl Running {
    fn join(broker: &TestBroker) -> Self {
        let owned = Arc::new(Mutex::new(Owned::default()));
        let consumer: BaseConsumer<Member> = goka_tests::rdkafka_config(broker)
            .set("group.id", "leave-during-rebalance")
            .set("session.timeout.ms", "6000")
            .set("partition.assignment.strategy", "range")
            .set("debug", "cgrp")
            .set_log_level(RDKafkaLogLevel::Debug)
            .create_with_context(Member {
                owned: owned.clone(),
            })
            .expect("consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = consumer.poll(Duration::from_millis(50));
                }
                // As goka's member does: unsubscribe, then close (dropping it leaves the
                // group).
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
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).revoked
    }

    fn joined(&self) -> Option<(i32, bool)> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).joined
    }

    fn leave(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Waits until `members` own all partitions between them; `None` after `within`.
fn settled(members: &[&Running], within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let owned: usize = members.iter().map(|m| m.partitions().len()).sum();
        if owned == PARTITIONS as usize {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Who leaves once both remaining members have the new generation's join response.
#[derive(Clone, Copy, Debug)]
enum Leaver {
    FirstToRejoin,
    Leader,
    Follower,
}

/// What one round saw: whether the member that stayed got every partition (and when), and
/// if not, whether a fresh member did.
struct Outcome {
    stayed: Option<Duration>,
    rejoined: Option<Duration>,
    /// False when the coordinator did not answer both joins with one generation and one
    /// leader, so the round could not pick its leaver.
    picked: bool,
}

fn round(number: u32, leaver: Leaver) -> Outcome {
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
    let a = Running::join(&broker);
    settled(&[&a], PATIENCE).expect("the first member gets an assignment");
    let b = Running::join(&broker);
    settled(&[&a, &b], PATIENCE).expect("two members settle");
    let c = Running::join(&broker);
    settled(&[&a, &b, &c], PATIENCE).expect("three members settle");
    let generation = [&a, &b, &c]
        .iter()
        .filter_map(|m| m.joined().map(|(g, _)| g))
        .max()
        .expect("a join response was logged");
    thread::sleep(Duration::from_secs(1));

    c.leave();
    // The third member's leave starts a rebalance; the other two rejoin, each at its next
    // heartbeat.
    let wait = Instant::now();
    if let Leaver::FirstToRejoin = leaver {
        let (stays, leaves, picked) = loop {
            match (a.revoked(), b.revoked()) {
                (true, false) => break (b, a, true),
                (false, true) => break (a, b, true),
                (true, true) => break (b, a, false),
                _ if wait.elapsed() >= PATIENCE => break (b, a, false),
                _ => thread::sleep(Duration::from_micros(200)),
            }
        };
        leaves.leave();
        return finish(&broker, number, leaver, stays, picked);
    }
    // Once the coordinator has answered both, the pick leaves.
    let answered = loop {
        match (a.joined(), b.joined()) {
            (Some((ga, la)), Some((gb, lb))) if ga > generation && ga == gb => {
                break Some((la, lb));
            }
            _ if wait.elapsed() >= PATIENCE => break None,
            _ => thread::sleep(Duration::from_millis(1)),
        }
    };
    let (stays, leaves, picked) = match (answered, leaver) {
        (Some((true, false)), Leaver::Leader) | (Some((false, true)), Leaver::Follower) => {
            (b, a, true)
        }
        (Some((false, true)), Leaver::Leader) | (Some((true, false)), Leaver::Follower) => {
            (a, b, true)
        }
        _ => (b, a, false),
    };
    leaves.leave();
    finish(&broker, number, leaver, stays, picked)
}

/// Waits for the member that stayed to get every partition, and if it does not, tries a
/// fresh member.
fn finish(
    broker: &TestBroker,
    number: u32,
    leaver: Leaver,
    stays: Running,
    picked: bool,
) -> Outcome {
    let stayed = settled(&[&stays], PATIENCE);
    println!(
        "round {number}: {leaver:?} left{}; the member that stayed got all {PARTITIONS} \
         partitions: {}",
        if picked {
            ""
        } else {
            " (not picked: the moment did not come as planned)"
        },
        stayed.map_or(format!("no, nothing within {PATIENCE:?}"), |t| format!(
            "in {t:?}"
        ))
    );
    let mut rejoined = None;
    if stayed.is_none() {
        // What a member can do about it: join again as a new member, and leave as the old.
        let fresh = Running::join(broker);
        stays.leave();
        rejoined = settled(&[&fresh], PATIENCE);
        println!(
            "round {number}: joining again as a new member got all partitions: {}",
            rejoined.map_or(format!("no, nothing within {PATIENCE:?}"), |t| format!(
                "in {t:?}"
            ))
        );
        fresh.leave();
    } else {
        stays.leave();
    }
    Outcome {
        stayed,
        rejoined,
        picked,
    }
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    for leaver in [Leaver::FirstToRejoin, Leaver::Leader, Leaver::Follower] {
        let (mut stuck, mut healed, mut unpicked) = (0, 0, 0);
        for number in 1..=rounds {
            let outcome = round(number, leaver);
            unpicked += u32::from(!outcome.picked);
            if outcome.stayed.is_none() {
                stuck += 1;
                healed += u32::from(outcome.rejoined.is_some());
            }
        }
        println!(
            "{leaver:?} left: {stuck} of {rounds} rounds left the member that stayed without \
             partitions ({healed} healed by joining again; {unpicked} rounds could not pick)"
        );
    }
}

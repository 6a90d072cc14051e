//! Exactly-once on Kafka 4.4 (`Guarantee::ExactlyOnce`): every click counted in the group
//! table and echoed to an output topic once, as `read_committed` readers see them; a handler
//! that fails mid-transaction leaves nothing of that transaction visible, and the restart
//! handles those clicks once more, exactly once.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::{GroupTable, Guarantee, Processor, ProcessorConfig};
use goka::topic::Topic;
use goka_tests::{client, read_until_at, Running, TestBroker};

goka::stream!(pub Clicks = "eos-clicks": String as StringCodec);
goka::stream!(pub Echoes = "eos-echoes": String as StringCodec);

const PARTITIONS: u32 = 4;

fn user(i: usize) -> String {
    format!("user-{}", i % 20)
}

/// Counts clicks per user and echoes each click; fails on "boom" unless told to let it by.
#[goka::processor(group = "eos-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Echoes)]
struct Counter {
    fail_on_boom: bool,
}

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        if page == "boom" && self.fail_on_boom {
            return Err("boom".into());
        }
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        let user = ctx.key().clone();
        ctx.emit::<Echoes>(&user, &page)
    }
}

fn config(commit_interval: Duration) -> ProcessorConfig {
    ProcessorConfig {
        guarantee: Guarantee::ExactlyOnce,
        commit_interval,
        ..goka_tests::from_oldest()
    }
}

/// A counter under exactly-once committing every `commit_interval`, running on a task of its
/// own.
fn start_counter(
    client: &goka_tests::TestClient,
    fail_on_boom: bool,
    commit_interval: Duration,
) -> (
    Arc<Processor<Counter>>,
    Running<goka::processor::ProcessorError>,
) {
    let processor = Arc::new(Processor::new(
        Counter { fail_on_boom },
        client.clone(),
        config(commit_interval),
    ));
    let running = Running::spawn({
        let p = processor.clone();
        move |cancel| async move { p.run(cancel).await }
    });
    (processor, running)
}

fn expected(pages: &[(String, String)]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (user, _) in pages {
        *counts.entry(user.clone()).or_default() += 1;
    }
    counts
}

/// The echoes `read_committed` readers see: (user, page) pairs, with how often each came.
/// Reads for 10 s or until more than `expected` came, so that duplicates show.
fn echoes(broker: &TestBroker, expected: usize) -> BTreeMap<(String, String), usize> {
    let read = read_until_at(
        &broker.bootstrap(),
        Echoes::NAME,
        PARTITIONS as i32,
        Duration::from_secs(10),
        |m| m.len() > expected,
    );
    let mut seen = BTreeMap::new();
    for m in &read {
        let key = String::from_utf8(m.key.clone()).unwrap();
        let page = String::from_utf8(m.value.clone().unwrap()).unwrap();
        *seen.entry((key, page)).or_default() += 1;
    }
    seen
}

/// Every click of `sent` echoed once, as read_committed readers see the output: none missing,
/// none twice, nothing else.
fn assert_echoed_once(broker: &TestBroker, sent: &[(String, String)]) {
    let seen = echoes(broker, sent.len());
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "echoed twice: {twice:?}");
    let all: BTreeSet<&(String, String)> = sent.iter().collect();
    assert_eq!(
        seen.keys().collect::<BTreeSet<_>>(),
        all,
        "each click echoed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_click_is_counted_and_echoed_once_and_a_failed_transaction_leaves_nothing() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Echoes::NAME], PARTITIONS).await;
    let clicks = Emitter::<Clicks>::new(&*client).await.unwrap();
    let mut sent: Vec<(String, String)> = Vec::new();
    for i in 0..1000 {
        let (user, page) = (user(i), format!("/page/{i}"));
        clicks.emit_sync(&user, &page).await.unwrap();
        sent.push((user, page));
    }

    // Committed every 200 ms: the first thousand.
    let (counter, running) = start_counter(&client, true, Duration::from_millis(200));
    tokio::time::timeout(Duration::from_secs(60), counter.recovered())
        .await
        .expect("the processor did not recover");
    goka_tests::wait_for_rows::<GroupTable<Counter>>(
        &client,
        &expected(&sent),
        Duration::from_secs(60),
    )
    .await;
    running.stop().await;

    // Fifty more in one transaction (the commit interval is longer than the test), the last
    // of them "boom": the handler fails, the transaction is aborted, run says why.
    let mut aborted = Vec::new();
    for i in 1000..1049 {
        let (user, page) = (user(i), format!("/page/{i}"));
        clicks.emit_sync(&user, &page).await.unwrap();
        aborted.push((user, page));
    }
    clicks
        .emit_sync(&user(0), &"boom".to_owned())
        .await
        .unwrap();
    let failing = Processor::new(
        Counter { fail_on_boom: true },
        client.clone(),
        config(Duration::from_secs(600)),
    );
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        failing.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the failing processor did not stop")
    .expect_err("boom did not fail");
    assert!(error.to_string().contains("boom"), "{error}");
    let seen = echoes(&broker, sent.len());
    let visible: BTreeSet<&(String, String)> = seen.keys().collect();
    let leaked: Vec<&(String, String)> = aborted.iter().filter(|e| visible.contains(e)).collect();
    assert!(
        leaked.is_empty(),
        "echoes of the aborted transaction: {leaked:?}"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "echoed twice: {twice:?}");
    assert_eq!(seen.len(), sent.len(), "every committed click echoed");
    // The table's changelog, read committed, still counts the first thousand.
    goka_tests::wait_for_rows::<GroupTable<Counter>>(
        &client,
        &expected(&sent),
        Duration::from_secs(30),
    )
    .await;

    // A restart lets "boom" by: the fifty are handled again, exactly once.
    let (counter, running) = start_counter(&client, false, Duration::from_millis(200));
    tokio::time::timeout(Duration::from_secs(60), counter.recovered())
        .await
        .expect("the processor did not recover");
    sent.extend(aborted);
    sent.push((user(0), "boom".to_owned()));
    goka_tests::wait_for_rows::<GroupTable<Counter>>(
        &client,
        &expected(&sent),
        Duration::from_secs(60),
    )
    .await;
    running.stop().await;
    assert_echoed_once(&broker, &sent);
}

const CHILD_BROKERS: &str = "GOKA_EOS_CHILD_BROKERS";
const CHILD_STORAGE: &str = "GOKA_EOS_CHILD_STORAGE";

/// Run by `the_kill_loop_under_exactly_once_counts_and_echoes_each_click_once` in a child
/// process: counts and echoes under exactly-once until killed, printing `READY` once every
/// assigned partition recovered. Its tables stay on disk across kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the_kill_loop_under_exactly_once_counts_and_echoes_each_click_once"]
async fn eos_child_counts_until_killed() {
    let (Ok(brokers), Ok(storage)) = (std::env::var(CHILD_BROKERS), std::env::var(CHILD_STORAGE))
    else {
        panic!("run by the exactly-once kill loop only");
    };
    let kafka = goka::kafka::KafkaConfig::new(brokers).set("session.timeout.ms", "6000");
    let client = Arc::new(goka::kafka::rdkafka_client::RdKafkaClient::new(kafka));
    let processor = Arc::new(Processor::new(
        Counter {
            fail_on_boom: false,
        },
        client,
        ProcessorConfig {
            storage: Arc::new(goka::storage::RocksDbBuilder::new(storage).without_wal()),
            ..config(Duration::from_millis(100))
        },
    ));
    let running = tokio::spawn({
        let processor = processor.clone();
        async move {
            processor
                .run(tokio_util::sync::CancellationToken::new())
                .await
        }
    });
    processor.recovered().await;
    println!("READY");
    if let Err(error) = running.await.unwrap() {
        panic!("{error}");
    }
}

/// Starts [`eos_child_counts_until_killed`] on `storage`, its stderr going to `log`; the
/// receiver hears once it printed `READY`.
fn spawn_child(
    broker: &TestBroker,
    storage: &std::path::Path,
    log: &std::path::Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<()>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "eos_child_counts_until_killed",
            "--nocapture",
        ])
        .env(CHILD_BROKERS, broker.bootstrap())
        .env(CHILD_STORAGE, storage)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if line.is_ok_and(|l| l.contains("READY")) {
                let _ = ready_tx.send(());
            }
        }
    });
    (child, ready_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_loop_under_exactly_once_counts_and_echoes_each_click_once() {
    let full = std::env::var("GOKA_RELIABILITY").is_ok_and(|v| v == "full");
    let (total, kills) = if full { (200_000, 20) } else { (20_000, 6) };
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Echoes::NAME], PARTITIONS).await;
    let storage = tempfile::tempdir().unwrap();
    // The last child's stderr: a child that stops by itself says why there.
    let logs = tempfile::tempdir().unwrap();
    let child_log = logs.path().join("child.log");
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    let mut between = |low: u64, high: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        low + (seed >> 33) % (high - low)
    };
    let spawn_child = || spawn_child(&broker, storage.path(), &child_log);

    // The clicks go out in chunks while the children are killed.
    let emitting = tokio::spawn({
        let client = client.clone();
        async move {
            let clicks = Emitter::<Clicks>::new(&*client).await.unwrap();
            let mut sent = Vec::with_capacity(total);
            for chunk in 0..100 {
                let mut pending = Vec::new();
                for i in chunk * total / 100..(chunk + 1) * total / 100 {
                    let (user, page) = (user(i), format!("/page/{i}"));
                    pending.push(clicks.emit(&user, &page).await.unwrap());
                    sent.push((user, page));
                }
                for delivery in pending {
                    delivery.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        }
    });
    let (mut child, mut ready) = spawn_child();
    for _ in 0..kills {
        tokio::task::block_in_place(|| ready.recv_timeout(Duration::from_secs(60)))
            .expect("the child recovered and runs");
        tokio::time::sleep(Duration::from_millis(between(200, 2_500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        (child, ready) = spawn_child();
    }
    let sent = emitting.await.unwrap();
    let counts = expected(&sent);
    let counted = goka_tests::wait_for_rows::<GroupTable<Counter>>(
        &client,
        &counts,
        Duration::from_secs(180),
    );
    let died = async {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        () = counted => {}
        status = died => panic!(
            "the last child stopped by itself ({status}): {}",
            std::fs::read_to_string(&child_log).unwrap_or_default()
        ),
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // What read_committed readers see: each click's echo once, none lost, none twice.
    let seen = echoes(&broker, sent.len());
    let twice = seen.values().filter(|n| **n > 1).count();
    let all: BTreeSet<&(String, String)> = sent.iter().collect();
    let missing = all.iter().filter(|e| !seen.contains_key(**e)).count();
    println!(
        "exactly-once kill loop: {} clicks, {kills} SIGKILLs, echoes {}, missing {missing}, \
         twice {twice}",
        sent.len(),
        seen.values().sum::<usize>()
    );
    assert_eq!(missing, 0, "echoes missing");
    assert_eq!(twice, 0, "echoes twice");
    assert_eq!(seen.len(), sent.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_under_exactly_once_echo_each_click_once() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Echoes::NAME], PARTITIONS).await;
    let clicks = Emitter::<Clicks>::new(&*client).await.unwrap();
    let mut sent: Vec<(String, String)> = Vec::new();
    let emit = async |range: std::ops::Range<usize>, sent: &mut Vec<(String, String)>| {
        for i in range {
            let (user, page) = (user(i), format!("/page/{i}"));
            clicks.emit_sync(&user, &page).await.unwrap();
            sent.push((user, page));
        }
    };
    let start = || start_counter(&client, false, Duration::from_millis(100));

    // One instance, then a second joins (the first's partitions are revoked, their work
    // committed in its transaction), then the first leaves, while clicks keep coming.
    let (first, first_running) = start();
    emit(0..300, &mut sent).await;
    let (second, second_running) = start();
    emit(300..600, &mut sent).await;
    goka_tests::eventually(
        Duration::from_secs(60),
        || first.partitions().len() + second.partitions().len() == PARTITIONS as usize,
        || {
            format!(
                "first owns {:?}, second {:?}",
                first.partitions(),
                second.partitions()
            )
        },
    )
    .await;
    emit(600..900, &mut sent).await;
    first_running.stop().await;
    emit(900..1200, &mut sent).await;
    goka_tests::wait_for_rows::<GroupTable<Counter>>(
        &client,
        &expected(&sent),
        Duration::from_secs(90),
    )
    .await;
    second_running.stop().await;

    assert_echoed_once(&broker, &sent);
}

/// A member paused (SIGSTOP) mid-transaction, past its session timeout and its
/// transaction's timeout: the group moves its partitions to another instance, the broker
/// aborts the open transaction, and once resumed (SIGCONT) the member cannot commit: its run
/// stops and says it was fenced. Every click is echoed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_past_its_session_is_fenced_and_nothing_is_echoed_twice() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME, Echoes::NAME], PARTITIONS).await;
    let storage = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let child_log = logs.path().join("paused.log");
    let (mut paused, ready) = spawn_child(&broker, storage.path(), &child_log);
    tokio::task::block_in_place(|| ready.recv_timeout(Duration::from_secs(60)))
        .expect("the child recovered and runs");
    // Clicks keep coming, so that the child has work in its open transaction when it
    // stops.
    let emitting = tokio::spawn({
        let client = client.clone();
        async move {
            let clicks = Emitter::<Clicks>::new(&*client).await.unwrap();
            let mut sent = Vec::new();
            for i in 0..1500 {
                let (user, page) = (user(i), format!("/page/{i}"));
                clicks.emit_sync(&user, &page).await.unwrap();
                sent.push((user, page));
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid = paused.id();
    goka_broker::process::signal(pid, "STOP").unwrap();

    // Another instance takes the group over once the child's session (6 s) ran out, and
    // goes on once the broker aborted the child's transaction (10 s).
    let (taker, running) = start_counter(&client, false, Duration::from_millis(100));
    goka_tests::eventually(
        Duration::from_secs(60),
        || taker.partitions().len() == PARTITIONS as usize,
        || format!("the taker owns {:?}", taker.partitions()),
    )
    .await;
    // Past the transaction timeout, the child resumes.
    tokio::time::sleep(Duration::from_secs(12)).await;
    goka_broker::process::signal(pid, "CONT").unwrap();
    let status = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Some(status) = paused.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    });
    let said = std::fs::read_to_string(&child_log).unwrap_or_default();
    let Some(status) = status else {
        paused.kill().unwrap();
        panic!("the resumed member still runs a minute later: {said}");
    };
    assert!(
        !status.success(),
        "the resumed member's run ended well: {said}"
    );
    let why = said
        .lines()
        .find(|l| l.contains("(fenced:"))
        .unwrap_or_else(|| {
            panic!("the resumed member ({status}) does not say it was fenced: {said}")
        })
        .trim()
        .to_owned();
    let sent = emitting.await.unwrap();
    goka_tests::wait_for_rows::<GroupTable<Counter>>(
        &client,
        &expected(&sent),
        Duration::from_secs(90),
    )
    .await;
    running.stop().await;
    assert_echoed_once(&broker, &sent);
    println!("a paused member resumed and stopped: {why}");
}

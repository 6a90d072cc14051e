//! Helpers the benchmarks share: sizes, the runtime, the JSON report line, filling an input
//! topic with bare rdkafka, and sampling the process's resident memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goka::partitioner::{GokaPartitioner, Partitioner};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::TestBroker;

/// The size a benchmark runs at: `--<flag> N` if given, `full` under `cargo bench` (which
/// passes `--bench`), and the small `smoke` size under `cargo test --all-targets`.
pub fn bench_size(flag: &str, full: usize, smoke: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    let named = format!("--{flag}");
    args.iter()
        .position(|a| *a == named)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if args.iter().any(|a| a == "--bench") {
            full
        } else {
            smoke
        })
}

/// Runs a benchmark's async body on the two-worker runtime the benches share.
pub fn bench_runtime<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("benchmark runtime")
        .block_on(body)
}

/// Prints a bench's figures as one `BENCH-JSON {...}` line, which `scripts/bench.sh`
/// collects into its JSON report.
pub fn bench_json(bench: &str, figures: &[(&str, f64)]) {
    let fields: Vec<String> = figures
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value:.3}"))
        .collect();
    println!("BENCH-JSON {{\"bench\":\"{bench}\",{}}}", fields.join(","));
}

/// Writes `messages` records of 100-byte values to `topic` with a bare producer, keys
/// `key-0 .. key-{keys-1}` in turn, each in the partition goka's partitioner gives it.
pub fn fill_stream(
    broker: &TestBroker,
    topic: &str,
    partitions: u32,
    messages: usize,
    keys: usize,
) {
    let producer: BaseProducer = crate::rdkafka_config(broker)
        .create()
        .expect("fill producer");
    let value = vec![b'v'; 100];
    for i in 0..messages {
        let key = format!("key-{}", i % keys);
        send_to_goka_partition(&producer, topic, partitions, key.as_bytes(), &value);
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("flush of the filled topic");
}

/// Sends one record with a bare producer to the partition goka's partitioner gives its key,
/// waiting while the producer's queue is full, and serves delivery reports.
#[inline]
pub fn send_to_goka_partition(
    producer: &BaseProducer,
    topic: &str,
    partitions: u32,
    key: &[u8],
    value: &[u8],
) {
    let partition = GokaPartitioner.partition(key, partitions);
    send_waiting(
        producer,
        BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value),
    );
}

/// Sends `record` with a bare producer, waiting while the producer's queue is full, and serves
/// delivery reports.
#[inline]
pub fn send_waiting<K, P>(producer: &BaseProducer, mut record: BaseRecord<'_, K, P>)
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    while let Err((_, back)) = producer.send(record) {
        record = back;
        producer.poll(Duration::from_millis(1));
    }
    producer.poll(Duration::ZERO);
}

/// The resident set size of this process in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/self/status")
}

/// CPU time (user and system, all threads) process `pid` used so far, from
/// `/proc/<pid>/stat`; `None` for this process. Benches print it beside wall time: on a
/// shared machine a side's CPU per message varies far less than its rate.
pub fn cpu_time(pid: Option<u32>) -> Duration {
    let path = pid.map_or("/proc/self/stat".to_owned(), |pid| {
        format!("/proc/{pid}/stat")
    });
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .unwrap_or_else(|| panic!("{path}: too few fields"))
        .iter()
        .map(|t| {
            t.parse::<u64>()
                .unwrap_or_else(|e| panic!("{path}: {t}: {e}"))
        })
        .sum();
    // Linux reports them in clock ticks of 1/100 s (USER_HZ) on every common architecture.
    Duration::from_millis(ticks * 10)
}

/// Samples [`rss_bytes`] every 50 ms on a thread of its own until stopped.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<u64>>>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let (stop, samples) = (stop.clone(), samples.clone());
            move || {
                while !stop.load(Ordering::Acquire) {
                    let rss = rss_bytes();
                    samples.lock().expect("samples").push(rss);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Self {
            stop,
            samples,
            thread,
        }
    }

    /// The highest sample so far.
    pub fn peak(&self) -> u64 {
        let samples = self.samples.lock().expect("samples");
        samples.iter().copied().max().unwrap_or_else(rss_bytes)
    }

    /// Stops sampling; returns every sample in order.
    pub fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the RSS sampler panicked");
        let samples = self.samples.lock().expect("samples");
        samples.clone()
    }
}

/// The `q`-quantile (0.0..=1.0) of `sorted` (ascending, not empty), nearest rank.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Bytes as MiB, for the printed tables.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Says whether a figure reached its target, for the printed tables: a missed target is
/// reported, never hidden.
pub fn verdict(figure: f64, target: f64) -> &'static str {
    if figure >= target {
        "meets the target"
    } else {
        "MISSES the target"
    }
}

/// The partition counts a bench covers: 1, 2, 4 and 8 under `cargo bench`, `--partitions N`
/// for one, 2 under `cargo test --all-targets`.
pub fn bench_shapes() -> Vec<u32> {
    match crate::bench_size("partitions", 0, 2) {
        0 => vec![1, 2, 4, 8],
        n => vec![n as u32],
    }
}

/// One side's run of a bench: time in all and time to its first message.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// From the start to the last message.
    pub total: Duration,
    /// From the start to the first message (joining the group, recovering).
    pub first: Duration,
}

impl Run {
    /// Messages per second after the first message.
    pub fn after_first(&self, messages: usize) -> f64 {
        messages as f64 / (self.total - self.first).as_secs_f64()
    }

    /// Messages per second in all.
    pub fn overall(&self, messages: usize) -> f64 {
        messages as f64 / self.total.as_secs_f64()
    }

    /// Prints the run as a row of a bench's table: time to the first message, then
    /// messages/s after it and overall.
    pub fn report(&self, name: &str, messages: usize) {
        println!(
            "{name:<44} {:>10.2} {:>12.0} {:>12.0}",
            self.first.as_secs_f64(),
            self.after_first(messages),
            self.overall(messages)
        );
    }
}

/// A peer's run: its timings, and the peak resident memory of its process where it reports
/// one.
#[derive(Debug, Clone, Copy)]
pub struct PeerRun {
    /// Time to the first message and in all.
    pub run: Run,
    /// The peak resident set of the peer's process, in bytes (0 if it does not say).
    pub peak_rss: u64,
}

/// Runs `scripts/bench/quix_count.py` (`mode` "count" or "window") over `messages`
/// messages of `topic`, when `GOKA_QUIX_PYTHON` names a Python with `quixstreams`
/// installed (`scripts/bench.sh` sets one up); `None` otherwise.
pub fn quix_run(
    broker: &TestBroker,
    topic: &str,
    messages: usize,
    session_timeout_ms: &str,
    mode: &str,
) -> Option<Run> {
    let python = std::env::var("GOKA_QUIX_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench/quix_count.py"
    );
    let state = tempfile::tempdir().expect("quix state dir");
    let mut command = std::process::Command::new(&python);
    command
        .arg(script)
        .arg(broker.bootstrap())
        .arg(topic)
        .arg(messages.to_string())
        .arg(state.path())
        .arg(session_timeout_ms)
        .arg(mode);
    Some(peer_run(command, &format!("the Quix Streams {mode}"), messages).run)
}

/// The guarantee a Kafka Streams peer runs under (`processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// `at_least_once`, Kafka Streams' default.
    AtLeastOnce,
    /// `exactly_once_v2` (KIP-447).
    ExactlyOnceV2,
}

impl Guarantee {
    /// The value of `processing.guarantee`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AtLeastOnce => "at_least_once",
            Self::ExactlyOnceV2 => "exactly_once_v2",
        }
    }
}

/// Runs the Kafka Streams peer (`tests/peers/kafka-streams`, `mode` "count", "window" or
/// "join" with `table`) over `messages` messages of `topic` under `guarantee`, when
/// `GOKA_STREAMS_CLASSPATH` holds its classpath (`scripts/bench.sh` builds it); `None`
/// otherwise. The JVM runs with its default settings, as a user's would.
pub fn streams_run(
    broker: &TestBroker,
    topic: &str,
    messages: usize,
    session_timeout_ms: &str,
    mode: &str,
    guarantee: Guarantee,
    table: Option<&str>,
) -> Option<PeerRun> {
    let classpath = std::env::var("GOKA_STREAMS_CLASSPATH")
        .ok()
        .filter(|p| !p.is_empty())?;
    let state = tempfile::tempdir().expect("kafka streams state dir");
    let mut command = std::process::Command::new("java");
    command
        .arg("-cp")
        .arg(classpath)
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("gokars.bench.StreamsBench")
        .arg(broker.bootstrap())
        .arg(topic)
        .arg(messages.to_string())
        .arg(state.path())
        .arg(session_timeout_ms)
        .arg(mode)
        .arg(guarantee.name())
        .args(table);
    let what = format!("the Kafka Streams {mode} ({})", guarantee.name());
    Some(peer_run(command, &what, messages))
}

/// Runs a peer that prints one JSON line of figures last (messages, seconds, after_first,
/// and optionally peak_rss_bytes) and checks it handled `messages`.
fn peer_run(mut command: std::process::Command, what: &str, messages: usize) -> PeerRun {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let figures: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed {line:?}: {e}"));
    assert_eq!(
        figures["messages"].as_u64(),
        Some(messages as u64),
        "{what}: {line}"
    );
    let seconds = |name: &str| {
        figures[name]
            .as_f64()
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| panic!("{what}: no {name} in {line}"))
    };
    let total = seconds("seconds");
    PeerRun {
        run: Run {
            total,
            first: total - seconds("after_first"),
        },
        peak_rss: figures["peak_rss_bytes"].as_u64().unwrap_or(0),
    }
}

/// Runs `processor` until it produced `messages` messages (and stops it): time in all, and
/// to the first message handled.
pub async fn run_until_produced<P: goka::processor::Handlers>(
    processor: Arc<goka::processor::Processor<P>>,
    messages: usize,
) -> Run {
    let produced = |p: &goka::processor::Processor<P>| p.stats().messages_out >= messages as u64;
    run_until(processor, produced).await.0
}

/// Runs `processor` over a backlog of `messages` on `partitions` partitions until every one
/// of them is done (each partition's input caught up: what it produced was acknowledged),
/// for processors whose count of produced messages is not known beforehand (timers that
/// fire, rows written or not). Returns the run and what it wrote to each topic.
pub async fn run_until_done<P: goka::processor::Handlers>(
    processor: Arc<goka::processor::Processor<P>>,
    messages: usize,
    partitions: u32,
) -> (Run, Vec<goka::processor::OutputStats>) {
    let done = |p: &goka::processor::Processor<P>| {
        if p.stats().messages_in < messages as u64 {
            return false;
        }
        let parts = p.partition_stats();
        parts.len() == partitions as usize
            && parts
                .iter()
                .all(|p| p.inputs.iter().all(|i| i.lag == Some(0)))
    };
    run_until(processor, done).await
}

/// Runs `processor` until `done` holds, then stops it; returns the time in all and to the
/// first message handled, and what it wrote to each topic (figures a stopped run no longer
/// has).
async fn run_until<P: goka::processor::Handlers>(
    processor: Arc<goka::processor::Processor<P>>,
    done: impl Fn(&goka::processor::Processor<P>) -> bool,
) -> (Run, Vec<goka::processor::OutputStats>) {
    let start = std::time::Instant::now();
    let running = crate::Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    let mut first = None;
    while !done(&processor) {
        assert!(!running.is_finished(), "the processor stopped early");
        if first.is_none() && processor.stats().messages_in > 0 {
            first = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = start.elapsed();
    let written = processor.output_stats();
    running.stop().await;
    let run = Run {
        total,
        first: first.unwrap_or_default(),
    };
    (run, written)
}

//! Shared plumbing of the examples: where the Kafka cluster is.
//!
//! Every example takes `--brokers HOST:PORT[,...]` or `KAFKA_BROKERS`; with neither, it starts
//! a local broker the way users start one, with `goka_broker::LocalBroker` (a single Apache
//! Kafka 4.4 node from Maven jars, or Tansu with `GOKA_TEST_BROKER=tansu`) on free ports and
//! stops it at the end, so an example runs on a machine with only Java, Maven and Rust
//! installed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::{Client, KafkaConfig};
use goka::processor::{GroupStart, Handlers, Processor, ProcessorConfig, ProcessorError};
use goka_broker::LocalBroker;
use goka_tests::BrokerKind;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The cluster an example talks to: a real one given by the user, or a bundled test broker
/// that lives as long as this value.
#[derive(Debug)]
pub struct Cluster {
    brokers: String,
    local: Option<(LocalBroker, BrokerKind)>,
}

impl Cluster {
    /// Reads `--brokers` / `KAFKA_BROKERS`, or starts a local test broker.
    pub fn from_args() -> Result<Self, String> {
        Self::from_args_and(&[]).map(|(cluster, _)| cluster)
    }

    /// Like [`from_args`](Self::from_args), also accepting the example's own `flags`;
    /// returns those that were given.
    pub fn from_args_and(flags: &[&str]) -> Result<(Self, Vec<String>), String> {
        let mut given = Vec::new();
        let mut args = std::env::args().skip(1);
        let mut brokers = std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.is_empty());
        while let Some(arg) = args.next() {
            if arg == "--brokers" {
                brokers = Some(
                    args.next()
                        .ok_or("--brokers needs a value, e.g. --brokers localhost:9092")?,
                );
            } else if let Some(value) = arg.strip_prefix("--brokers=") {
                brokers = Some(value.to_owned());
            } else if flags.contains(&arg.as_str()) {
                given.push(arg);
            } else {
                let mut usage = String::from("[--brokers HOST:PORT[,...]]");
                for flag in flags {
                    usage.push_str(&format!(" [{flag}]"));
                }
                return Err(format!("unknown argument {arg:?}; usage: {usage}"));
            }
        }
        match brokers {
            Some(brokers) => {
                println!("using the Kafka cluster at {brokers}");
                let cluster = Self {
                    brokers,
                    local: None,
                };
                Ok((cluster, given))
            }
            None => {
                let began = Instant::now();
                let kind = BrokerKind::from_env().map_err(|e| e.to_string())?;
                let broker = LocalBroker::builder()
                    .kind(match kind {
                        BrokerKind::Kafka => goka_broker::Kind::Kafka,
                        BrokerKind::Tansu => goka_broker::Kind::Tansu,
                    })
                    .start()
                    .map_err(|e| e.to_string())?;
                broker.pids().into_iter().for_each(goka_tests::track_pid);
                println!(
                    "started a local broker ({}) at {} in {:.1} s",
                    broker.kind(),
                    broker.bootstrap(),
                    began.elapsed().as_secs_f64()
                );
                let cluster = Self {
                    brokers: broker.bootstrap().to_owned(),
                    local: Some((broker, kind)),
                };
                Ok((cluster, given))
            }
        }
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// A client of the cluster named `id`.
    pub fn client(&self, id: &str) -> Arc<dyn Client> {
        let config = KafkaConfig::new(self.brokers()).client_id(id);
        // A local stand-in broker gets what it needs; a cluster of the user's is Kafka.
        let config = match &self.local {
            Some((_, kind)) => goka_tests::for_broker(config, *kind),
            None => config,
        };
        Arc::new(RdKafkaClient::new(config))
    }
}

/// A processor running in the background until [`Running::stop`].
#[derive(Debug)]
pub struct Running<P: Handlers> {
    /// The processor, for state and table reads.
    pub processor: Arc<Processor<P>>,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), ProcessorError>>,
}

impl<P: Handlers> Running<P> {
    /// Starts `group` on `client` with the default configuration.
    pub fn start(group: P, client: Arc<dyn Client>) -> Self {
        // The examples emit before they start their processors: a new group must start at
        // the oldest message (by default it starts at the newest, as goka's).
        let config = ProcessorConfig {
            new_group_start: GroupStart::Oldest,
            ..Default::default()
        };
        let processor = Arc::new(Processor::new(group, client, config));
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (processor, cancel) = (processor.clone(), cancel.clone());
            async move { processor.run(cancel).await }
        });
        Self {
            processor,
            cancel,
            task,
        }
    }

    /// Stops the processor and returns how its run ended.
    pub async fn stop(self) -> Result<(), String> {
        self.cancel.cancel();
        match self.task.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the processor task failed: {e}")),
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves on Ctrl-C, or never if the signal cannot be watched.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

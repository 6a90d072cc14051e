//! Shared plumbing of the examples: where the Kafka cluster is.
//!
//! Every example takes `--brokers HOST:PORT[,...]` or `KAFKA_BROKERS`; with neither, it starts
//! the project's bundled test broker (Tansu, memory storage) on a free port and stops it at
//! the end, so an example runs on a machine with nothing installed.

use goka_tests::TestBroker;

/// The cluster an example talks to: a real one given by the user, or a bundled test broker
/// that lives as long as this value.
#[derive(Debug)]
pub struct Cluster {
    brokers: String,
    _local: Option<TestBroker>,
}

impl Cluster {
    /// Reads `--brokers` / `KAFKA_BROKERS`, or starts a local test broker.
    pub fn from_args() -> Result<Self, String> {
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
            } else {
                return Err(format!(
                    "unknown argument {arg:?}; usage: [--brokers HOST:PORT[,...]]"
                ));
            }
        }
        match brokers {
            Some(brokers) => {
                println!("using the Kafka cluster at {brokers}");
                Ok(Self {
                    brokers,
                    _local: None,
                })
            }
            None => {
                let broker = TestBroker::try_start().map_err(|e| e.to_string())?;
                println!(
                    "started the bundled test broker (Tansu) at {}",
                    broker.bootstrap()
                );
                Ok(Self {
                    brokers: broker.bootstrap(),
                    _local: Some(broker),
                })
            }
        }
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }
}

//! The brokers the tests, examples and benchmarks run on.
//!
//! Apache Kafka 4.4 by default: each [`TestBroker`] is a single KRaft node of its own (a
//! `java` process, see `goka_broker::kafka`) on free loopback ports, with a data directory
//! that goes with it; [`KafkaCluster`] starts three for the tests that move leaders.
//! `GOKA_TEST_BROKER=tansu` runs the same tests on Tansu, the stand-in broker the project used
//! before (memory storage, or SQLite for [`PersistentBroker`]).

mod kafka;
mod tansu;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::proxy::FaultProxy;

pub use kafka::{KafkaCluster, KafkaNode};

/// Why a test broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be fetched, spawned, or did not serve (with its log's last lines).
    #[error("test broker: {0}")]
    Broker(#[from] goka_broker::Error),
    /// `GOKA_TEST_BROKER` names no broker this harness knows.
    #[error("GOKA_TEST_BROKER={0:?}: expected `kafka` (the default) or `tansu`")]
    Unknown(String),
    /// A program the harness runs failed (the SQLite build of the stand-in broker).
    #[error("cannot find the test broker: {0}")]
    Binary(String),
    /// Something else failed (a free port, the proxy).
    #[error("test broker: {0}")]
    Io(#[from] std::io::Error),
}

impl BrokerError {
    /// Whether a port chosen free was taken by another process before the broker bound it:
    /// the caller chooses again.
    pub fn port_taken(&self) -> bool {
        matches!(self, Self::Broker(e) if e.port_taken())
    }
}

/// Which broker the harness starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Apache Kafka 4.4 from Maven jars (`goka_broker::kafka`).
    Kafka,
    /// Tansu 0.6, the stand-in broker (`goka_broker::tansu`).
    Tansu,
}

impl BrokerKind {
    /// The broker `GOKA_TEST_BROKER` selects: `kafka` (or unset) or `tansu`.
    pub fn from_env() -> Result<Self, BrokerError> {
        match std::env::var("GOKA_TEST_BROKER") {
            Err(_) => Ok(Self::Kafka),
            Ok(name) => match name.trim() {
                "" | "kafka" => Ok(Self::Kafka),
                "tansu" => Ok(Self::Tansu),
                _ => Err(BrokerError::Unknown(name)),
            },
        }
    }

    /// The broker of this run; panics if `GOKA_TEST_BROKER` is not understood.
    pub fn current() -> Self {
        Self::from_env().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kafka => "Apache Kafka 4.4",
            Self::Tansu => "Tansu 0.6",
        })
    }
}

#[derive(Debug)]
enum Process {
    Kafka(KafkaCluster),
    Tansu(tansu::TansuProcess),
}

/// A fresh broker of the run's [`BrokerKind`] on free ports, stopped when dropped.
#[derive(Debug)]
pub struct TestBroker {
    process: Process,
    advertised: SocketAddr,
    proxy: Option<FaultProxy>,
}

impl TestBroker {
    /// Starts a broker on a free port of 127.0.0.1. Panics with the reason if it cannot:
    /// tests that need a broker must fail loudly, never skip.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a broker behind a [`FaultProxy`]: the broker advertises the proxy's address, so
    /// every client connection goes through the proxy. Panics with the reason if it cannot.
    pub fn start_behind_proxy() -> Self {
        Self::try_start_behind_proxy().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a broker, returning why it could not.
    pub fn try_start() -> Result<Self, BrokerError> {
        Self::start_with(false)
    }

    /// Starts a broker behind a fault proxy, returning why it could not.
    pub fn try_start_behind_proxy() -> Result<Self, BrokerError> {
        Self::start_with(true)
    }

    fn start_with(behind_proxy: bool) -> Result<Self, BrokerError> {
        let kind = BrokerKind::from_env()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(kind, behind_proxy) {
                // A port chosen free was taken before the broker bound it: choose again.
                Err(ref e) if attempt < 3 && e.port_taken() => {}
                result => return result,
            }
        }
    }

    fn start_once(kind: BrokerKind, behind_proxy: bool) -> Result<Self, BrokerError> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let proxy = if behind_proxy {
            Some(FaultProxy::start(listen)?)
        } else {
            None
        };
        let advertised = proxy.as_ref().map_or(listen, FaultProxy::addr);
        let process = match kind {
            BrokerKind::Kafka => Process::Kafka(KafkaCluster::start_single(listen, advertised)?),
            BrokerKind::Tansu => {
                Process::Tansu(tansu::TansuProcess::start_memory(listen, advertised)?)
            }
        };
        Ok(Self {
            process,
            advertised,
            proxy,
        })
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        match self.process {
            Process::Kafka(_) => BrokerKind::Kafka,
            Process::Tansu(_) => BrokerKind::Tansu,
        }
    }

    /// The bootstrap address for clients (`bootstrap.servers`): the proxy's if there is one.
    pub fn bootstrap(&self) -> String {
        self.advertised.to_string()
    }

    /// The fault proxy in front of the broker, if started with one.
    pub fn proxy(&self) -> Option<&FaultProxy> {
        self.proxy.as_ref()
    }

    /// The broker's process id (benches read its CPU time).
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Kafka(cluster) => cluster.nodes()[0].pid().unwrap_or_default(),
            Process::Tansu(tansu) => tansu.pid(),
        }
    }

    /// What the broker logged so far (for failure messages).
    pub fn output(&self) -> String {
        match &self.process {
            Process::Kafka(cluster) => cluster.nodes()[0].output(),
            Process::Tansu(tansu) => tansu.output(),
        }
    }
}

/// A broker that keeps its data across a kill: stopped (SIGKILL, nothing flushed) and
/// started again on the same port with its topics, offsets and committed positions. On Kafka
/// a node with its own data directory; on Tansu a build with SQLite storage
/// (`GOKA_TANSU_SQLITE_BIN` or `scripts/tansu-sqlite.sh`).
#[derive(Debug)]
pub struct PersistentBroker {
    inner: Persistent,
}

#[derive(Debug)]
enum Persistent {
    Kafka(KafkaCluster),
    Tansu(tansu::PersistentTansu),
}

impl PersistentBroker {
    /// Starts a broker with no data on a free port. Panics with the reason if it cannot.
    pub fn start() -> Self {
        let inner = match BrokerKind::current() {
            BrokerKind::Kafka => Persistent::Kafka(KafkaCluster::start(1)),
            BrokerKind::Tansu => Persistent::Tansu(tansu::PersistentTansu::start()),
        };
        Self { inner }
    }

    /// The bootstrap address for clients.
    pub fn bootstrap(&self) -> String {
        match &self.inner {
            Persistent::Kafka(cluster) => cluster.bootstrap(),
            Persistent::Tansu(tansu) => tansu.bootstrap(),
        }
    }

    /// Kills the broker process (SIGKILL: nothing is flushed on the way out).
    pub fn stop(&mut self) {
        match &mut self.inner {
            Persistent::Kafka(cluster) => cluster.node(1).kill(),
            Persistent::Tansu(tansu) => tansu.stop(),
        }
    }

    /// Starts the broker again on the same port and data. Panics if it does not come up.
    pub fn start_again(&mut self) {
        match &mut self.inner {
            Persistent::Kafka(cluster) => cluster.restart(1),
            Persistent::Tansu(tansu) => tansu.start_again(),
        }
    }
}

/// Where the project's scripts collect the PIDs of the brokers their run starts
/// (`GOKA_BROKER_PIDS`, a directory): their exit trap stops those and no other run's.
fn pid_file(pid: u32) -> Option<PathBuf> {
    std::env::var_os("GOKA_BROKER_PIDS").map(|dir| PathBuf::from(dir).join(pid.to_string()))
}

/// Tells the project's scripts about a broker process started elsewhere (a
/// `goka_broker::LocalBroker` of an example), so that their exit trap stops it if the
/// program that started it is killed. Best effort: outside the scripts there is nothing to
/// tell.
pub fn track_pid(pid: u32) {
    if let Some(file) = pid_file(pid) {
        let _ = std::fs::write(file, b"");
    }
}

/// A port that was free a moment ago and was handed to nobody else in this binary. Another
/// process may still take it before the broker binds it; the broker then fails to bind and
/// the harness chooses again.
pub use crate::ports::free_port;

use goka_broker::process::{last_lines, read_log};

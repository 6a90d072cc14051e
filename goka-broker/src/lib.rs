//! A local Kafka broker for the integration tests and programs of goka users, started from a
//! test or the shell, in the spirit of Kafka's embedded cluster.
//!
//! ```no_run
//! # fn main() -> Result<(), goka_broker::Error> {
//! let broker = goka_broker::LocalBroker::start()?;
//! let bootstrap = broker.bootstrap(); // "127.0.0.1:PORT": give it to goka's KafkaConfig
//! # let _ = bootstrap;
//! // ... the test ...
//! drop(broker); // stopped, its data removed (also when the test panics)
//! # Ok(()) }
//! ```
//!
//! The broker is **Apache Kafka 4.4** (a combined broker and controller in KRaft mode, one
//! `java` process per node): its jars come from Maven Central the first time, with `mvn`,
//! into `~/.cache/goka-rs` (`GOKA_CACHE_DIR`), and start in a few seconds after that. Where
//! Java is absent it is **Tansu**, a stand-in broker that starts in milliseconds but lacks
//! much of Kafka (`GOKA_BROKER=tansu` chooses it, `GOKA_BROKER=kafka` insists on Kafka).
//!
//! Every broker listens on free loopback ports and keeps its data in a folder of its own; a
//! node that exits while starting, or does not serve within 90 s, is an [`Error`] with the
//! last lines of its log. Topics are not created on first use (as on most production
//! clusters): a test creates what it needs, e.g. with goka's `TopicManager`.
//!
//! From the shell, the `goka-broker` program of this crate does the same (`cargo install
//! goka-broker`, or `cargo run -p goka-broker` in the goka repository):
//!
//! ```text
//! goka-broker                      # one node; prints the bootstrap address; Ctrl-C stops it
//! goka-broker --nodes 3            # three nodes, replication factor 3
//! goka-broker start [--dir D]      # in the background; prints the address and the folder
//! goka-broker stop D               # stops what `start` started in D
//! ```

mod error;
pub mod kafka;
pub mod process;
pub mod tansu;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub use error::Error;

/// How long a node may take to serve: a JVM starting on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Which broker to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Apache Kafka 4.4 from Maven jars (needs `java` 17+, and `mvn` the first time).
    Kafka,
    /// Tansu 0.6, the stand-in broker (needs `python3` with pip the first time).
    Tansu,
}

impl Kind {
    /// The broker `GOKA_BROKER` names (`kafka` or `tansu`), or, when it is unset or `auto`,
    /// Kafka where `java` is installed and Tansu elsewhere.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var("GOKA_BROKER").as_deref().map(str::trim) {
            Ok("kafka") => Ok(Self::Kafka),
            Ok("tansu") => Ok(Self::Tansu),
            Err(_) | Ok("" | "auto") => Ok(if process::on_path("java") {
                Self::Kafka
            } else {
                Self::Tansu
            }),
            Ok(other) => Err(Error::Config(format!(
                "GOKA_BROKER={other:?}: expected kafka, tansu or auto"
            ))),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kafka => "Apache Kafka 4.4",
            Self::Tansu => "Tansu 0.6 (the stand-in broker)",
        })
    }
}

/// How to start a [`LocalBroker`]: `LocalBroker::builder().nodes(3).start()`.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    kind: Option<Kind>,
    nodes: Option<usize>,
    heap: Option<String>,
    settings: Vec<String>,
    dir: Option<PathBuf>,
    background: bool,
}

impl Builder {
    /// Runs `kind` instead of what `GOKA_BROKER` (or the machine) chooses.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The number of Kafka nodes: 1 (the default) or 3 (replication factor 3,
    /// `min.insync.replicas` 2). A KRaft quorum needs a majority, so 2 would survive no loss.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// The heap of each Kafka node (default `GOKA_KAFKA_HEAP`, or 512m).
    pub fn heap(mut self, heap: &str) -> Self {
        self.heap = Some(heap.to_owned());
        self
    }

    /// A broker setting (`key=value`) added to each Kafka node's configuration.
    pub fn setting(mut self, setting: &str) -> Self {
        self.settings.push(setting.to_owned());
        self
    }

    /// Keeps the broker's data in `dir` (created if missing) instead of a temporary folder
    /// that is removed when the broker stops. `dir` is left in place.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Starts the nodes in a process group of their own, so that they outlive this program
    /// when it [detaches](LocalBroker::detach) from them (the shell's `goka-broker start`).
    pub fn background(mut self) -> Self {
        self.background = true;
        self
    }

    /// Starts the broker and waits until every node serves. A port chosen free but taken by
    /// another process before the node bound it is retried with new ports (three attempts).
    pub fn start(self) -> Result<LocalBroker, Error> {
        let kind = match self.kind {
            Some(kind) => kind,
            None => Kind::from_env()?,
        };
        let nodes = self.nodes.unwrap_or(1);
        match (kind, nodes) {
            (Kind::Kafka, 1 | 3) | (Kind::Tansu, 1) => {}
            (Kind::Kafka, _) => {
                return Err(Error::Config(format!(
                    "{nodes} Kafka nodes: 1 or 3 (a KRaft quorum needs a majority; 2 nodes survive no loss)"
                )))
            }
            (Kind::Tansu, _) => {
                return Err(Error::Config(format!(
                    "{nodes} nodes of the stand-in broker: it runs one only"
                )))
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.start_once(kind, nodes) {
                Err(ref e) if attempt < 3 && e.port_taken() => {}
                result => return result,
            }
        }
    }

    fn start_once(&self, kind: Kind, count: usize) -> Result<LocalBroker, Error> {
        let began = Instant::now();
        let dir = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Folder::Kept(dir.clone())
            }
            None => Folder::Temporary(tempfile::Builder::new().prefix("goka-broker.").tempdir()?),
        };
        let ports = process::free_ports(2 * count)?;
        let (clients, controllers) = ports.split_at(count);
        let cluster_id = kafka::new_cluster_id();
        let voters = kafka::voters(controllers);
        let mut broker = LocalBroker {
            kind,
            nodes: Vec::new(),
            bootstrap: String::new(),
            dir,
            started_in: Duration::ZERO,
        };
        // All at once: a node of several waits for a quorum of controllers before it serves.
        for (i, (&port, &controller)) in clients.iter().zip(controllers).enumerate() {
            let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let listen = SocketAddr::from(([127, 0, 0, 1], port));
            let folder = broker.dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&folder)?;
            let (mut command, name, log) = match kind {
                Kind::Kafka => {
                    let mut node = kafka::Node::new(
                        id,
                        listen,
                        controller,
                        &voters,
                        &cluster_id,
                        broker.dir.path(),
                    );
                    if let Some(heap) = &self.heap {
                        node.heap.clone_from(heap);
                    }
                    node.settings.clone_from(&self.settings);
                    (node.command()?, format!("Kafka node {id}"), node.log())
                }
                Kind::Tansu => {
                    let bin = tansu::binary()?;
                    let mut command = tansu::command(&bin, listen, listen, "memory://tansu/");
                    command.current_dir(&folder);
                    (command, "Tansu".to_owned(), folder.join("tansu.log"))
                }
            };
            let (out, err) = process::log_output(&log)?;
            command.stdout(out).stderr(err);
            if self.background {
                use std::os::unix::process::CommandExt;
                command.process_group(0);
            }
            let child = process::spawn(&mut command)?;
            std::fs::write(folder.join("pid"), child.id().to_string())?;
            broker.nodes.push(Running {
                child,
                name,
                listen,
                log,
            });
        }
        for node in &mut broker.nodes {
            process::wait_serving(
                &mut node.child,
                node.listen,
                START_TIMEOUT,
                &node.name,
                &node.log,
            )?;
        }
        broker.bootstrap = clients
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        broker.started_in = began.elapsed();
        Ok(broker)
    }
}

#[derive(Debug)]
enum Folder {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl Folder {
    fn path(&self) -> &Path {
        match self {
            Self::Temporary(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }
}

#[derive(Debug)]
struct Running {
    child: Child,
    name: String,
    listen: SocketAddr,
    log: PathBuf,
}

/// A broker on free loopback ports, for as long as this value lives: dropping it kills its
/// nodes and removes its data (unless [`Builder::dir`] chose the folder).
#[derive(Debug)]
pub struct LocalBroker {
    kind: Kind,
    nodes: Vec<Running>,
    bootstrap: String,
    dir: Folder,
    started_in: Duration,
}

impl LocalBroker {
    /// Starts one node of the broker `GOKA_BROKER` chooses (Kafka where Java is installed)
    /// and waits until it serves.
    pub fn start() -> Result<Self, Error> {
        Builder::default().start()
    }

    /// Options: the kind, three nodes, the heap, broker settings, a data folder.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The bootstrap address for clients (`bootstrap.servers`): every node, comma-separated.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Which broker runs.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The folder of the broker's data, configuration and logs (`node-N/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long the start took, from choosing ports until every node served.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The process ids of the nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    /// Whether any node has exited (it should not while the broker lives).
    pub fn has_exited(&mut self) -> bool {
        self.nodes
            .iter_mut()
            .any(|n| !matches!(n.child.try_wait(), Ok(None)))
    }

    /// The last `lines` lines each node logged (for failure messages).
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = process::read_log(&n.log);
                format!("--- {}:\n{}", n.name, process::last_lines(&text, lines))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the nodes now (SIGKILL: the data goes with them) and removes a temporary folder.
    pub fn stop(self) {
        drop(self);
    }

    /// Leaves the nodes running after this value is gone and returns the folder that
    /// [`stop_in`] stops them by. Start with [`Builder::background`] so that they also
    /// outlive this program.
    pub fn detach(mut self) -> PathBuf {
        self.nodes.clear();
        let dir = std::mem::replace(&mut self.dir, Folder::Kept(PathBuf::new()));
        match dir {
            Folder::Temporary(temp) => {
                let path = temp.keep();
                // Best effort: without it `stop_in` leaves the folder in place.
                let _ = std::fs::write(path.join(TEMPORARY), b"");
                path
            }
            Folder::Kept(path) => path,
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// The mark of a detached broker's folder that was temporary: [`stop_in`] removes it.
const TEMPORARY: &str = "temporary";

/// Stops the nodes a detached broker left running in `dir` (SIGTERM, a controlled
/// shutdown; SIGKILL after `grace`), and removes `dir` if it was a temporary folder. A
/// process id is signalled only while it is still a broker, in case the OS reused it.
/// Returns how many were stopped.
pub fn stop_in(dir: &Path, grace: Duration) -> Result<usize, Error> {
    let mut stopped = 0;
    for entry in std::fs::read_dir(dir)? {
        let pid_file = entry?.path().join("pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            continue;
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            continue;
        };
        if is_broker(pid) {
            let _ = process::signal(pid, "TERM");
            let deadline = Instant::now() + grace;
            while is_broker(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if is_broker(pid) {
                let _ = process::signal(pid, "KILL");
            }
            stopped += 1;
        }
        std::fs::remove_file(&pid_file)?;
    }
    if dir.join(TEMPORARY).is_file() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(stopped)
}

/// Whether `pid` is a live Kafka node or Tansu broker (a zombie has an empty command line).
fn is_broker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
        let line = String::from_utf8_lossy(&line).replace('\0', " ");
        line.contains("kafka.Kafka") || line.contains("tansu broker")
    })
}

/// The README's example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

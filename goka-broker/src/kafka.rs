//! Apache Kafka nodes from Maven jars: the jars fetched once per machine, and one combined
//! broker+controller (KRaft) node per `java` process, each with its own data directory.
//!
//! [`crate::LocalBroker`] is the short way; [`Node`] is for harnesses that kill, pause and
//! restart nodes themselves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::process::{cache_dir, last_lines, log_output, on_path, run};
use crate::Error;

/// The Kafka release this crate starts.
pub const VERSION: &str = "4.4.0";

/// The Maven project whose runtime dependencies are the broker's classpath.
const POM: &str = include_str!("../kafka/pom.xml");

/// The broker's logging: warnings, errors and the line that says a node started.
const LOG4J2: &str = include_str!("../kafka/log4j2.properties");

/// The heap of a node unless `GOKA_KAFKA_HEAP` or [`Node::heap`] says otherwise.
pub const DEFAULT_HEAP: &str = "512m";

/// The folder of Kafka's jars, fetched with Maven into the cache the first time (into a
/// temporary folder first, so an interrupted fetch never leaves half a classpath). Fetched
/// once per process; a failed fetch is reported with what Maven said.
pub fn jars() -> Result<PathBuf, Error> {
    static JARS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    JARS.get_or_init(|| fetch_jars().map_err(|e| e.to_string()))
        .clone()
        .map_err(|output| Error::Fetch {
            what: format!("Apache Kafka {VERSION}'s jars"),
            output,
        })
}

fn home() -> PathBuf {
    cache_dir().join(format!("kafka-{VERSION}"))
}

fn fetch_jars() -> Result<PathBuf, Error> {
    let libs = home().join("libs");
    if libs.join(format!("kafka_2.13-{VERSION}.jar")).is_file() {
        return Ok(libs);
    }
    for (program, needed_for) in [
        ("java", "to run Kafka (Java 17 or newer)"),
        ("mvn", "to fetch Kafka's jars (Maven)"),
    ] {
        if !on_path(program) {
            return Err(Error::Missing {
                program,
                needed_for,
            });
        }
    }
    std::fs::create_dir_all(home())?;
    let work = tempfile::Builder::new()
        .prefix("kafka-libs.")
        .tempdir_in(home())?;
    let pom = work.path().join("pom.xml");
    std::fs::write(&pom, POM)?;
    eprintln!(
        "goka-broker: fetching Apache Kafka {VERSION}'s jars with Maven into {}",
        libs.display()
    );
    let (status, said) = run(Command::new("mvn")
        .args(["-B", "-q", "-Dstyle.color=never", "-f"])
        .arg(&pom)
        .arg(format!(
            "-Dmaven.repo.local={}",
            cache_dir().join("maven").display()
        ))
        .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
        .arg(format!(
            "-DoutputDirectory={}",
            work.path().join("libs").display()
        )))?;
    let copied = work.path().join("libs");
    if !status.success() || !copied.join(format!("kafka_2.13-{VERSION}.jar")).is_file() {
        return Err(Error::Fetch {
            what: format!("Apache Kafka {VERSION}'s jars with Maven ({status})"),
            output: last_lines(&said, 25),
        });
    }
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&copied, &libs)?;
    Ok(libs)
}

/// The log4j 2 configuration file of the nodes, written into the cache.
fn log_config() -> Result<PathBuf, Error> {
    let path = home().join("log4j2.properties");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(LOG4J2) {
        std::fs::create_dir_all(home())?;
        std::fs::write(&path, LOG4J2)?;
    }
    Ok(path)
}

/// One combined broker+controller node: where it listens, its cluster, its folder.
#[derive(Debug, Clone)]
pub struct Node {
    /// `node.id`, the broker id in metadata (1-based).
    pub id: u32,
    /// The client listener (PLAINTEXT) on loopback.
    pub listen: SocketAddr,
    /// The controller listener's port on loopback.
    pub controller_port: u16,
    /// The address clients are given for this node (a fault proxy in front of it, say).
    pub advertised: SocketAddr,
    /// The controller quorum, `id@host:port,...`; its size sets the replication factors.
    pub voters: String,
    /// The cluster id every node of the cluster is formatted with ([`new_cluster_id`]).
    pub cluster_id: String,
    /// The node's folder: its configuration, data and log.
    pub dir: PathBuf,
    /// The JVM heap (`-Xmx`, `-Xms`).
    pub heap: String,
    /// Broker settings added after the defaults (`key=value`).
    pub settings: Vec<String>,
}

impl Node {
    /// Node `id` of a cluster, its folder `node-<id>` under `parent`, advertising what it
    /// listens on, with the default heap.
    pub fn new(
        id: u32,
        listen: SocketAddr,
        controller_port: u16,
        voters: &str,
        cluster_id: &str,
        parent: &Path,
    ) -> Self {
        Self {
            id,
            listen,
            controller_port,
            advertised: listen,
            voters: voters.to_owned(),
            cluster_id: cluster_id.to_owned(),
            dir: parent.join(format!("node-{id}")),
            heap: std::env::var("GOKA_KAFKA_HEAP").unwrap_or_else(|_| DEFAULT_HEAP.to_owned()),
            settings: Vec::new(),
        }
    }

    /// The file the node's output goes to.
    pub fn log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    /// Writes the configuration, formats the storage if it is new, and starts the `java`
    /// process without waiting for it to serve (see [`crate::process::wait_serving`]). Its
    /// output goes to [`Node::log`]. Fetches the jars first if they are not cached.
    pub fn spawn(&self) -> Result<Child, Error> {
        let mut command = self.command()?;
        let (out, err) = log_output(&self.log())?;
        command.stdout(out).stderr(err);
        crate::process::spawn(&mut command)
    }

    /// What [`Node::spawn`] runs, for a caller that sets the output or the process group
    /// itself: the configuration is written and the storage formatted already.
    pub fn command(&self) -> Result<Command, Error> {
        let libs = jars()?;
        std::fs::create_dir_all(&self.dir)?;
        let config = self.dir.join("server.properties");
        std::fs::write(&config, self.properties())?;
        if !self.dir.join("data").join("meta.properties").is_file() {
            self.format(&libs, &config)?;
        }
        let mut command = java(&self.heap, &libs)?;
        command.arg("kafka.Kafka").arg(&config).stdin(Stdio::null());
        Ok(command)
    }

    fn format(&self, libs: &Path, config: &Path) -> Result<(), Error> {
        let (status, said) = run(java("256m", libs)?
            .arg("kafka.tools.StorageTool")
            .args(["format", "-t", &self.cluster_id, "-c"])
            .arg(config))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::NotServing {
            node: format!("Kafka node {}", self.id),
            addr: self.listen,
            why: format!("could not format {}", self.dir.join("data").display()),
            // The formatter's reason is the first line of its stack trace.
            log: said.lines().take(12).collect::<Vec<_>>().join("\n"),
        })
    }

    /// The node's `server.properties`.
    pub fn properties(&self) -> String {
        let nodes = self.voters.split(',').filter(|v| !v.is_empty()).count();
        // One node cannot hold three replicas of the internal topics.
        let (replicas, min_isr) = if nodes >= 3 { (3, 2) } else { (1, 1) };
        let (id, listen, cport, advertised) =
            (self.id, self.listen, self.controller_port, self.advertised);
        let voters = &self.voters;
        let dir = self.dir.display();
        let mut text = format!(
            "\
# Node {id} of a {nodes}-node local cluster, written by goka-broker.
process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{listen},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://{advertised},CONTROLLER://127.0.0.1:{cport}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={dir}/data
default.replication.factor={replicas}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
# Test speed: a group's first member does not wait 3 s for others, fewer internal
# partitions to create, and a log cleaner that does not take 128 MiB of a small heap.
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
log.cleaner.dedupe.buffer.size=4194304
# Kafka 4's consumer group protocol (KIP-848) takes the session timeout and heartbeat from
# the broker: 6 s and 1 s, where the defaults (45 s, 5 s) make every rebalance of a test slow.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=1000
# Like most production clusters, no topic is created on first use: a missing step shows
# here as it would there, instead of a topic with one partition.
auto.create.topics.enable=false
# A restarted node gets its leaderships back within seconds, not 5 minutes.
leader.imbalance.check.interval.seconds=5
"
        );
        for setting in &self.settings {
            text.push_str(setting);
            text.push('\n');
        }
        text
    }
}

/// A `java` command with a bounded heap, Kafka's own G1 settings and the jars as classpath.
fn java(heap: &str, libs: &Path) -> Result<Command, Error> {
    let mut command = Command::new("java");
    command
        .arg(format!("-Xmx{heap}"))
        .arg(format!("-Xms{heap}"))
        .args([
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            log_config()?.display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()));
    Ok(command)
}

/// The controller quorum of nodes 1, 2, ... whose controllers listen on `ports`.
pub fn voters(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// A new Kafka cluster id: 16 bytes in URL-safe base64 without padding. Unique enough for
/// clusters that live in a temporary folder; Kafka checks only the form.
pub fn new_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = Vec::with_capacity(16);
    for half in 0..2u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(half);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.write_u32(std::process::id());
        bytes.extend_from_slice(&hasher.finish().to_be_bytes());
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut bits = 0u32;
    let mut width = 0;
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        width += 8;
        while width >= 6 {
            width -= 6;
            out.push(char::from(ALPHABET[((bits >> width) & 63) as usize]));
        }
    }
    if width > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - width)) & 63) as usize]));
    }
    // Kafka refuses ids that start with '-' (they read as command-line flags).
    if out.starts_with('-') {
        out.replace_range(0..1, "A");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_16_bytes_in_url_safe_base64() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(!id.starts_with('-'));
        assert_ne!(id, new_cluster_id());
    }

    #[test]
    fn replication_follows_the_size_of_the_quorum() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 9092));
        let one = Node::new(1, listen, 9093, &voters(&[9093]), "x", Path::new("/d"));
        assert!(one.properties().contains("default.replication.factor=1\n"));
        assert!(one
            .properties()
            .contains("controller.quorum.voters=1@127.0.0.1:9093\n"));
        let mut three = Node::new(
            2,
            listen,
            9095,
            &voters(&[9093, 9095, 9097]),
            "x",
            Path::new("/d"),
        );
        three.settings.push("log.retention.ms=1000".into());
        let text = three.properties();
        assert!(text.contains("default.replication.factor=3\n"));
        assert!(text.contains("min.insync.replicas=2\n"));
        assert!(text.contains("node.id=2\n"));
        assert!(text.ends_with("log.retention.ms=1000\n"));
        assert_eq!(three.dir, Path::new("/d/node-2"));
    }
}

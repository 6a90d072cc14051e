//! Apache Kafka nodes for the tests: each one a `java` process that `scripts/kafka.sh node`
//! formats and then becomes, with a data directory of its own, so it can be killed, paused
//! and started again with its logs, offsets and committed positions.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, last_lines, pid_file, read_log, BrokerError};

/// How long a node may take to serve: a JVM starting on a loaded 2-core machine, and after a
/// SIGKILL the recovery of its logs.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a controlled shutdown (SIGTERM) may take before the node is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// One Kafka node (combined broker and controller) of a test cluster.
#[derive(Debug)]
pub struct KafkaNode {
    id: u32,
    listen: SocketAddr,
    controller_port: u16,
    advertised: SocketAddr,
    voters: String,
    cluster_id: String,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl KafkaNode {
    /// A node of the cluster `cluster_id` whose controllers are `voters`
    /// (`id@host:port,...`), not yet started.
    fn new(
        id: u32,
        listen: SocketAddr,
        controller_port: u16,
        advertised: SocketAddr,
        voters: &str,
        cluster_id: &str,
        dir: &Path,
    ) -> Self {
        let dir = dir.join(format!("node-{id}"));
        Self {
            id,
            listen,
            controller_port,
            advertised,
            voters: voters.to_owned(),
            cluster_id: cluster_id.to_owned(),
            log: dir.join("kafka.log"),
            dir,
            child: None,
        }
    }

    /// The node's id in the cluster (`node.id`, the broker id in metadata).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The address clients are given for this node.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// The node's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the node's process is alive (a paused one counts).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What the node logged so far.
    pub fn output(&self) -> String {
        read_log(&self.log)
    }

    /// Starts the process (formatting the storage the first time) without waiting.
    fn spawn(&mut self) -> Result<(), BrokerError> {
        fetch_jars()?;
        std::fs::create_dir_all(&self.dir)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = out.try_clone()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        let child = Command::new("bash")
            .arg(&script)
            .arg("node")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--node-id")
            .arg(self.id.to_string())
            .arg("--port")
            .arg(self.listen.port().to_string())
            .arg("--controller-port")
            .arg(self.controller_port.to_string())
            .arg("--voters")
            .arg(&self.voters)
            .arg("--cluster-id")
            .arg(&self.cluster_id)
            .arg("--advertise")
            .arg(self.advertised.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                path: script.clone(),
                source,
            })?;
        if let Some(file) = pid_file(child.id()) {
            // Best effort: without it only a killed test process leaves a node behind.
            let _ = std::fs::write(file, b"");
        }
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the node serves: it opens its client listener only once it is unfenced.
    fn wait_ready(&mut self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited || Instant::now() >= deadline {
                let why = if exited {
                    "exited while starting".to_owned()
                } else {
                    format!("did not serve within {START_TIMEOUT:?}")
                };
                let output = last_lines(&self.output(), 30);
                self.kill();
                return Err(BrokerError::NotReady {
                    broker: format!("Kafka node {}", self.id),
                    addr: self.listen,
                    why,
                    output,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the node and waits until it serves.
    pub fn start(&mut self) -> Result<(), BrokerError> {
        self.spawn()?;
        self.wait_ready()
    }

    /// SIGKILL: the node stops at once, nothing flushed, no leadership handed over.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(file) = pid_file(child.id()) {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// SIGTERM: a controlled shutdown (leaderships move to other nodes first); killed if it
    /// takes longer than a minute.
    pub fn shut_down(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let _ = signal(child.id(), "TERM");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// SIGSTOP: the node stays connected but answers nothing until [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            let _ = signal(child.id(), "STOP");
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            let _ = signal(child.id(), "CONT");
        }
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

fn signal(pid: u32, name: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
}

/// Kafka nodes on free loopback ports sharing one temporary folder, stopped on drop.
#[derive(Debug)]
pub struct KafkaCluster {
    nodes: Vec<KafkaNode>,
    _dir: tempfile::TempDir,
}

impl KafkaCluster {
    /// Starts `count` nodes (1 or 3), each advertising its own address, and waits until all
    /// serve. Panics with the reason (and the nodes' last log lines) if they do not.
    pub fn start(count: u32) -> Self {
        Self::try_start(count, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `count` nodes; node `i` advertises `advertised[i]` if given (a fault proxy in
    /// front of it). Ports taken between choosing and binding are retried with new ones.
    pub fn try_start(count: u32, advertised: &[SocketAddr]) -> Result<Self, BrokerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(count, advertised) {
                Err(BrokerError::NotReady { ref output, .. })
                    if attempt < 3 && output.contains("Address already in use") => {}
                result => return result,
            }
        }
    }

    /// Starts a single node whose clients reach it through `advertised`, listening on
    /// `listen` (for a fault proxy in front of it).
    pub(crate) fn start_single(
        listen: SocketAddr,
        advertised: SocketAddr,
    ) -> Result<Self, BrokerError> {
        let dir = tempfile::Builder::new().prefix("goka-kafka.").tempdir()?;
        let controller_port = free_port()?;
        let voters = format!("1@127.0.0.1:{controller_port}");
        let mut node = KafkaNode::new(
            1,
            listen,
            controller_port,
            advertised,
            &voters,
            &new_cluster_id(),
            dir.path(),
        );
        node.start()?;
        Ok(Self {
            nodes: vec![node],
            _dir: dir,
        })
    }

    fn start_once(count: u32, advertised: &[SocketAddr]) -> Result<Self, BrokerError> {
        let dir = tempfile::Builder::new().prefix("goka-kafka.").tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..count {
            ports.push((free_port()?, free_port()?));
        }
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = new_cluster_id();
        let mut nodes = Vec::new();
        for (i, (port, controller)) in ports.iter().enumerate() {
            let listen = SocketAddr::from(([127, 0, 0, 1], *port));
            let shown = advertised.get(i).copied().unwrap_or(listen);
            let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            nodes.push(KafkaNode::new(
                id,
                listen,
                *controller,
                shown,
                &voters,
                &cluster_id,
                dir.path(),
            ));
        }
        // All at once: a node of several waits for a quorum of controllers before it serves.
        for node in &mut nodes {
            node.spawn()?;
        }
        for node in &mut nodes {
            node.wait_ready()?;
        }
        Ok(Self { nodes, _dir: dir })
    }

    /// Every node's advertised address, comma-separated (`bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.advertised().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node with `id` (1-based, as in metadata). Panics if there is none.
    pub fn node(&mut self, id: u32) -> &mut KafkaNode {
        let count = self.nodes.len();
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .unwrap_or_else(|| panic!("the cluster has nodes 1 to {count}, not {id}"))
    }

    /// The nodes, in id order.
    pub fn nodes(&self) -> &[KafkaNode] {
        &self.nodes
    }

    /// Starts node `id` again on its ports and data, waiting until it serves. Panics with
    /// its last log lines if it does not.
    pub fn restart(&mut self, id: u32) {
        let node = self.node(id);
        node.kill();
        node.start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The last log lines of every node (for failure messages).
    pub fn output(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {}:\n{}", n.id(), last_lines(&n.output(), 20)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Fetches Kafka's jars once per process (`scripts/kafka.sh libs`, a no-op once they are in
/// the cache), so parallel tests do not each run Maven, and a failed fetch is reported once
/// with what Maven said.
fn fetch_jars() -> Result<(), BrokerError> {
    static JARS: OnceLock<Result<(), String>> = OnceLock::new();
    JARS.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("libs")
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} libs failed ({}):\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ))
        }
    })
    .clone()
    .map_err(BrokerError::Binary)
}

/// A Kafka cluster id: 16 bytes in URL-safe base64 without padding. Unique enough for
/// clusters that live in a temporary folder; Kafka checks only the form.
fn new_cluster_id() -> String {
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
    #[test]
    fn a_cluster_id_is_16_bytes_in_url_safe_base64() {
        let id = super::new_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(!id.starts_with('-'));
        assert_ne!(id, super::new_cluster_id());
    }
}

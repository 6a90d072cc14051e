//! Apache Kafka nodes for the tests: each one a `java` process that `goka_broker::kafka::Node`
//! configures and formats, with a data directory of its own, so it can be killed, paused and
//! started again with its logs, offsets and committed positions.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use goka_broker::kafka::{new_cluster_id, voters, Node};
use goka_broker::process::{signal, wait_serving};

use super::{free_port, last_lines, pid_file, read_log, BrokerError};

/// How long a node may take to serve: a JVM starting on a loaded 2-core machine, and after a
/// SIGKILL the recovery of its logs.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a controlled shutdown (SIGTERM) may take before the node is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// One Kafka node (combined broker and controller) of a test cluster.
#[derive(Debug)]
pub struct KafkaNode {
    node: Node,
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
        let mut node = Node::new(id, listen, controller_port, voters, cluster_id, dir);
        node.advertised = advertised;
        Self { node, child: None }
    }

    /// The node's id in the cluster (`node.id`, the broker id in metadata).
    pub fn id(&self) -> u32 {
        self.node.id
    }

    /// The address clients are given for this node.
    pub fn advertised(&self) -> SocketAddr {
        self.node.advertised
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
        read_log(&self.node.log())
    }

    /// Starts the process (formatting the storage the first time) without waiting.
    fn spawn(&mut self) -> Result<(), BrokerError> {
        let child = self.node.spawn()?;
        if let Some(file) = pid_file(child.id()) {
            // Best effort: without it only a killed test process leaves a node behind.
            let _ = std::fs::write(file, b"");
        }
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the node serves: it opens its client listener only once it is unfenced.
    fn wait_ready(&mut self) -> Result<(), BrokerError> {
        let name = format!("Kafka node {}", self.node.id);
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let result = wait_serving(
            child,
            self.node.listen,
            START_TIMEOUT,
            &name,
            &self.node.log(),
        );
        if result.is_err() {
            self.kill();
        }
        Ok(result?)
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
                Err(ref e) if attempt < 3 && e.port_taken() => {}
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
        let voters = voters(&[controller_port]);
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
        let controllers: Vec<u16> = ports.iter().map(|(_, controller)| *controller).collect();
        let voters = voters(&controllers);
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

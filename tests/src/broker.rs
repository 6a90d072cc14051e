//! Starts a fresh Tansu broker on a free port and stops it on drop.
//!
//! The binary is found through `GOKA_TANSU_BIN`, or fetched once by `scripts/tansu.sh` into
//! the cache directory. Tansu starts in milliseconds, so every test can have its own broker
//! and tests stay isolated when they run in parallel.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::proxy::FaultProxy;

/// How long a broker may take to accept connections before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the test broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The Tansu binary could not be found or fetched.
    #[error("cannot find the Tansu test broker: {0}")]
    Binary(String),
    /// The process could not be spawned.
    #[error("cannot start the Tansu test broker {}: {source}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The broker did not accept connections in time.
    #[error(
        "the Tansu test broker on {addr} did not start within {timeout:?}; its output:\n{output}"
    )]
    NotReady {
        /// Where it should listen.
        addr: SocketAddr,
        /// How long we waited.
        timeout: Duration,
        /// What it printed.
        output: String,
    },
    /// Something else failed (a free port, the proxy).
    #[error("test broker: {0}")]
    Io(#[from] std::io::Error),
}

/// A Tansu broker process with memory storage, killed when dropped.
#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    advertised: SocketAddr,
    proxy: Option<FaultProxy>,
    log: PathBuf,
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
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self::spawn(addr, addr, None)
    }

    /// Starts a broker behind a fault proxy, returning why it could not.
    pub fn try_start_behind_proxy() -> Result<Self, BrokerError> {
        let broker_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let proxy = FaultProxy::start(broker_addr)?;
        let advertised = proxy.addr();
        Self::spawn(broker_addr, advertised, Some(proxy))
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
        self.child.id()
    }

    /// What the broker printed so far (for failure messages).
    pub fn output(&self) -> String {
        read_log(&self.log)
    }

    fn spawn(
        listen: SocketAddr,
        advertised: SocketAddr,
        proxy: Option<FaultProxy>,
    ) -> Result<Self, BrokerError> {
        let bin = tansu_binary()?;
        let log = std::env::temp_dir().join(format!("goka-tansu-{}.log", listen.port()));
        let child = launch(&bin, listen, advertised, "memory://tansu/", None, &log)?;
        let mut broker = Self {
            child,
            advertised,
            proxy,
            log,
        };
        wait_ready(&mut broker.child, listen, &broker.log)?;
        Ok(broker)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Where the project's scripts collect the PIDs of the brokers their run starts
/// (`GOKA_BROKER_PIDS`, a directory): their exit trap stops those and no other run's.
fn pid_file(pid: u32) -> Option<PathBuf> {
    std::env::var_os("GOKA_BROKER_PIDS").map(|dir| PathBuf::from(dir).join(pid.to_string()))
}

/// Stops a broker process and forgets its PID file.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    if let Some(file) = pid_file(child.id()) {
        let _ = std::fs::remove_file(file);
    }
}

/// Starts a Tansu process listening on `listen` with `storage`, in `dir` if given (SQLite
/// paths are relative to the working directory), its output going to `log`.
fn launch(
    bin: &Path,
    listen: SocketAddr,
    advertised: SocketAddr,
    storage: &str,
    dir: Option<&Path>,
    log: &Path,
) -> Result<Child, BrokerError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(bin);
    command
        .arg("broker")
        .arg("--listener-url")
        .arg(format!("tcp://{listen}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://{advertised}"))
        .arg("--storage-engine")
        .arg(storage)
        .env(
            "RUST_LOG",
            std::env::var("GOKA_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let child = command.spawn().map_err(|source| BrokerError::Spawn {
        path: bin.to_owned(),
        source,
    })?;
    if let Some(file) = pid_file(child.id()) {
        // Best effort: without it only a killed test process leaves a broker behind.
        let _ = std::fs::write(file, b"");
    }
    Ok(child)
}

/// Waits until `child` accepts connections on `listen`.
fn wait_ready(child: &mut Child, listen: SocketAddr, log: &Path) -> Result<(), BrokerError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() >= deadline {
            return Err(BrokerError::NotReady {
                addr: listen,
                timeout: START_TIMEOUT,
                output: read_log(log),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Tansu broker that keeps its data in SQLite (a build with the `libsql` feature, from
/// `GOKA_TANSU_SQLITE_BIN` or `scripts/tansu-sqlite.sh`), so it can be stopped and started
/// again on the same port with its topics, watermarks and committed offsets.
#[derive(Debug)]
pub struct PersistentBroker {
    child: Option<Child>,
    bin: PathBuf,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl PersistentBroker {
    /// Starts a broker with an empty database on a free port. Panics with the reason if it
    /// cannot.
    pub fn start() -> Self {
        let bin = sqlite_binary().unwrap_or_else(|e| panic!("{e}"));
        let port = free_port().unwrap_or_else(|e| panic!("no free port: {e}"));
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let log = dir.path().join("tansu.log");
        let mut broker = Self {
            child: None,
            bin,
            listen,
            dir,
            log,
        };
        broker.start_again();
        broker
    }

    /// The bootstrap address for clients.
    pub fn bootstrap(&self) -> String {
        self.listen.to_string()
    }

    /// Kills the broker process (SIGKILL: nothing is flushed on the way out).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts the broker again on the same port and database. Panics if it does not come up.
    pub fn start_again(&mut self) {
        self.stop();
        let storage = "sqlite://tansu.db";
        let mut child = launch(
            &self.bin,
            self.listen,
            self.listen,
            storage,
            Some(self.dir.path()),
            &self.log,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        wait_ready(&mut child, self.listen, &self.log).unwrap_or_else(|e| panic!("{e}"));
        self.child = Some(child);
    }
}

impl Drop for PersistentBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The SQLite Tansu binary: `GOKA_TANSU_SQLITE_BIN`, or the one `scripts/tansu-sqlite.sh`
/// builds (once per machine, several minutes).
pub fn sqlite_binary() -> Result<PathBuf, BrokerError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_binary("GOKA_TANSU_SQLITE_BIN", "tansu-sqlite.sh"))
        .clone()
        .map_err(BrokerError::Binary)
}

/// A port that was free a moment ago. The OS hands out ephemeral ports round-robin, so a
/// port just released is unlikely to be handed to someone else before the broker binds it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The Tansu binary: `GOKA_TANSU_BIN`, or the one `scripts/tansu.sh` fetches (once per cache).
pub fn tansu_binary() -> Result<PathBuf, BrokerError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_binary("GOKA_TANSU_BIN", "tansu.sh"))
        .clone()
        .map_err(BrokerError::Binary)
}

/// The binary named by the environment variable `var`, or the one `scripts/<script>` prints.
fn find_binary(var: &str, script: &str) -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var(var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{var}={} is not a file", path.display()))
        };
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} printed {:?}, which is not a file",
            script.display(),
            path
        ))
    }
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

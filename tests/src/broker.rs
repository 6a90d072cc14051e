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
    listen: SocketAddr,
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
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(&bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{listen}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .env(
                "RUST_LOG",
                std::env::var("GOKA_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                path: bin.clone(),
                source,
            })?;
        let mut broker = Self {
            child,
            listen,
            advertised,
            proxy,
            log,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                return Err(BrokerError::NotReady {
                    addr: self.listen,
                    timeout: START_TIMEOUT,
                    output: self.output(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A port that was free a moment ago. The OS hands out ephemeral ports round-robin, so a
/// port just released is unlikely to be handed to someone else before the broker binds it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The Tansu binary: `GOKA_TANSU_BIN`, or the one `scripts/tansu.sh` fetches (once per cache).
pub fn tansu_binary() -> Result<PathBuf, BrokerError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_tansu)
        .clone()
        .map_err(BrokerError::Binary)
}

fn find_tansu() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("GOKA_TANSU_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("GOKA_TANSU_BIN={} is not a file", path.display()))
        };
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tansu.sh");
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

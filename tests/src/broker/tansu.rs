//! Tansu, the stand-in broker (`GOKA_TEST_BROKER=tansu`): a Kafka-compatible broker written
//! in Rust that starts in milliseconds. The binary is found through `GOKA_TANSU_BIN`, or
//! fetched once by `goka_broker::tansu`; the SQLite build of [`PersistentTansu`] through
//! `GOKA_TANSU_SQLITE_BIN` or `scripts/tansu-sqlite.sh`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{free_port, pid_file, read_log, BrokerError};

/// How long Tansu may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A Tansu process with memory storage, killed when dropped.
#[derive(Debug)]
pub(super) struct TansuProcess {
    child: Child,
    log: PathBuf,
}

impl TansuProcess {
    pub(super) fn start_memory(
        listen: SocketAddr,
        advertised: SocketAddr,
    ) -> Result<Self, BrokerError> {
        let bin = tansu_binary()?;
        let log = std::env::temp_dir().join(format!("goka-tansu-{}.log", listen.port()));
        let mut child = launch(&bin, listen, advertised, "memory://tansu/", None, &log)?;
        wait_ready(&mut child, listen, &log)?;
        Ok(Self { child, log })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn output(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for TansuProcess {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_file(&self.log);
    }
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
    let mut command = goka_broker::tansu::command(bin, listen, advertised, storage);
    let (out, err) = goka_broker::process::log_output(log)?;
    command.stdout(out).stderr(err);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let child = goka_broker::process::spawn(&mut command)?;
    if let Some(file) = pid_file(child.id()) {
        // Best effort: without it only a killed test process leaves a broker behind.
        let _ = std::fs::write(file, b"");
    }
    Ok(child)
}

/// Waits until `child` accepts connections on `listen`.
fn wait_ready(child: &mut Child, listen: SocketAddr, log: &Path) -> Result<(), BrokerError> {
    let result = goka_broker::process::wait_serving(child, listen, START_TIMEOUT, "Tansu", log);
    if result.is_err() {
        kill(child);
    }
    Ok(result?)
}

/// A Tansu broker that keeps its data in SQLite, so it can be stopped and started again on
/// the same port with its topics, watermarks and committed offsets.
#[derive(Debug)]
pub(super) struct PersistentTansu {
    child: Option<Child>,
    bin: PathBuf,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl PersistentTansu {
    pub(super) fn start() -> Self {
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

    pub(super) fn bootstrap(&self) -> String {
        self.listen.to_string()
    }

    pub(super) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    pub(super) fn start_again(&mut self) {
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

impl Drop for PersistentTansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The SQLite Tansu binary: `GOKA_TANSU_SQLITE_BIN`, or the one `scripts/tansu-sqlite.sh`
/// builds (once per machine, several minutes).
fn sqlite_binary() -> Result<PathBuf, BrokerError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_binary("GOKA_TANSU_SQLITE_BIN", "tansu-sqlite.sh"))
        .clone()
        .map_err(BrokerError::Binary)
}

/// The Tansu binary: `GOKA_TANSU_BIN`, or the one `goka_broker` fetches (once per cache).
fn tansu_binary() -> Result<PathBuf, BrokerError> {
    Ok(goka_broker::tansu::binary()?)
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

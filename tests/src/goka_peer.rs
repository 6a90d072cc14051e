//! goka itself in the interop tests: the Go program in `tests/goka` (goka v1.1.15 and its
//! sarama, built with Go from its `go.mod` and `go.sum`), run as a child process.
//!
//! A run either ends by itself (`-messages N`, [`GokaPeer::run`]) or runs until the test
//! closes its standard input ([`GokaPeer::spawn`], then [`RunningPeer::stop`]); either way
//! the program prints one JSON line per assignment it receives and a report on its last line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The goka program, built once per test binary next to the cargo profile's folder (cargo
/// runs test binaries one at a time): Go fetches goka and sarama through its module proxy
/// the first time; the modules and the build cache stay in `~/.cache/goka-rs`.
pub fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("goka");
        // The test binary is `<target>/<profile>/deps/<name>`.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lies in <target>/<profile>/deps");
        let out = profile.join("goka-peer");
        let cache = std::env::var_os("GOKA_CACHE_DIR").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                    .join(".cache/goka-rs")
            },
            PathBuf::from,
        );
        let output = Command::new("go")
            .args(["build", "-mod=readonly", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&source)
            .env("GOMODCACHE", cache.join("go-mod"))
            .env("GOCACHE", cache.join("go-build"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run `go` (Go 1.25 or newer is needed): {e}"));
        assert!(
            output.status.success(),
            "go build of {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

/// One run of the goka program: its mode and flags, and a folder of its own for goka's local
/// tables (removed when the value is dropped).
#[derive(Debug)]
pub struct GokaPeer {
    args: Vec<String>,
    state: tempfile::TempDir,
}

impl GokaPeer {
    /// `mode` (count, join, loop, emit, view) against the broker at `bootstrap`.
    pub fn new(mode: &str, bootstrap: &str) -> Self {
        Self {
            args: vec![mode.to_owned(), "-brokers".to_owned(), bootstrap.to_owned()],
            state: tempfile::tempdir().expect("a folder for goka's tables"),
        }
    }

    /// Adds `-flag value`.
    #[must_use]
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.args.push(format!("-{flag}"));
        self.args.push(value.to_string());
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(program());
        command
            .args(&self.args)
            .arg("-state")
            .arg(self.state.path());
        command
    }

    /// Runs the program to its end (give it `-messages`) and returns its report; panics with
    /// its output if it failed.
    pub fn run(self) -> Value {
        let output = self.command().output().expect("run goka-peer");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "goka-peer {:?} failed: {stdout}\n{}",
            self.args,
            String::from_utf8_lossy(&output.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("goka-peer's report {last:?}: {e}"))
    }

    /// [`run`](Self::run) on a blocking thread, for async tests.
    pub async fn run_to_end(self) -> Value {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .expect("goka-peer's run panicked")
    }

    /// Starts the program; it runs until [`RunningPeer::stop`] closes its standard input.
    pub fn spawn(self) -> RunningPeer {
        let mut child = self
            .command()
            .arg("-messages")
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start goka-peer");
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let errors = lines_of(child.stderr.take().expect("stderr"));
        RunningPeer {
            child,
            stdin,
            lines,
            errors,
            _peer: self,
        }
    }
}

/// The lines of a child's output, read on a thread of their own.
fn lines_of(output: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A goka program running until stopped; killed if dropped unstopped.
#[derive(Debug)]
pub struct RunningPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    errors: Receiver<String>,
    _peer: GokaPeer,
}

impl RunningPeer {
    /// Waits up to `within` for an assignment `wanted` accepts, passing over earlier ones,
    /// and returns its partitions. Panics with goka's log if none comes.
    pub fn wait_assigned(&mut self, within: Duration, wanted: impl Fn(&[i32]) -> bool) -> Vec<i32> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("goka-peer printed {line:?}: {e}"));
                    if event["event"] == "assigned" {
                        let got: Vec<i32> = serde_json::from_value(event["partitions"].clone())
                            .expect("partitions");
                        if wanted(&got) {
                            return got;
                        }
                        seen.push(got);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "goka got no awaited assignment within {within:?} (assignments seen: \
                     {seen:?}); its log:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// What goka logged so far.
    pub fn log(&self) -> String {
        self.errors.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Closes the program's standard input, which stops it as a goka service stops (it
    /// commits what it handled), and returns its report.
    pub fn stop(mut self) -> Value {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let status = self.child.wait().expect("wait for goka-peer");
        let lines: Vec<String> = self.lines.iter().collect();
        assert!(
            status.success(),
            "goka-peer failed ({status}): {}\n{}",
            lines.join("\n"),
            self.errors.iter().collect::<Vec<_>>().join("\n")
        );
        let last = lines.last().map_or("", String::as_str);
        serde_json::from_str(last).unwrap_or_else(|e| panic!("goka-peer's report {last:?}: {e}"))
    }
}

impl RunningPeer {
    /// [`stop`](Self::stop) on a blocking thread, for async tests.
    pub async fn stop_to_end(self) -> Value {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .expect("stopping goka-peer panicked")
    }
}

impl Drop for RunningPeer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

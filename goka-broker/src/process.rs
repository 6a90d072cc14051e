//! What every broker process needs: free ports, waiting until it serves, signals, its log.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Where fetched brokers are kept between runs: `GOKA_CACHE_DIR`, or `~/.cache/goka-rs`
/// (shared with the goka repository's scripts, so a machine fetches each broker once).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GOKA_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("goka-rs")
}

/// `count` distinct free loopback ports. Every socket stays bound until all are chosen, so the
/// OS cannot hand one port out twice (Kafka refuses a client and a controller listener on one
/// port). Another process may still take one before the broker binds it; starting then fails
/// with "Address already in use" in the log, and [`crate::LocalBroker`] chooses again.
pub fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Waits until `addr` accepts connections (a Kafka node opens its client listener only once
/// it is unfenced and serving), `child` exits, or `timeout` passes. On failure the child is
/// killed and the error carries the last lines of `log`.
pub fn wait_serving(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
    node: &str,
    log: &Path,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::NotServing {
                node: node.to_owned(),
                addr,
                why: if exited {
                    "exited while starting".to_owned()
                } else {
                    format!("did not serve within {timeout:?}")
                },
                log: last_lines(&read_log(log), 30),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends the signal `name` (`TERM`, `KILL`, `STOP`, `CONT`) to `pid` with `kill(1)`.
pub fn signal(pid: u32, name: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
}

/// Whether `program` can be run from `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Starts `command`; a failure names the program.
pub fn spawn(command: &mut Command) -> Result<Child, Error> {
    command.spawn().map_err(|source| Error::Spawn {
        program: command.get_program().into(),
        source,
    })
}

/// Runs `command` to its end with no input; returns its exit status and everything it
/// printed (stdout, then stderr).
pub fn run(command: &mut Command) -> Result<(std::process::ExitStatus, String), Error> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: command.get_program().into(),
            source,
        })?;
    let said = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    Ok((output.status, said.into_owned()))
}

/// What a log file holds so far (empty if it cannot be read).
pub fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `count` lines of `text`.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// A log file for a broker process, appended to, with stdout and stderr both going there.
pub fn log_output(path: &Path) -> std::io::Result<(Stdio, Stdio)> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let err = out.try_clone()?;
    Ok((out.into(), err.into()))
}

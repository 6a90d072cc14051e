//! The web monitor against a running processor, view and emitter on the test broker: the
//! JSON API, `/metrics`, the pages, and clear 4xx answers to malformed queries.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use goka::codec::{Int64Codec, Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::{Processor, ProcessorState};
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka::web::Monitor;
use goka_tests::{chromium, client, http_get, http_get_with, TestBroker};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Visits {
    pub count: u64,
    pub last: String,
}

goka::stream!(pub Pages = "web-pages": String as StringCodec);
goka::table!(pub Scores = "web-scores": i64 as Int64Codec, key: i64 as Int64Codec);

#[goka::processor(group = "web-counter")]
#[input(topic = Pages, handler = Self::on_page)]
#[persist(value = Visits, codec = Json)]
#[derive(Debug)]
pub struct Counter;

impl Counter {
    fn on_page(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.map_or(0, |v| v.count) + 1;
        ctx.set_value(&Visits { count, last: page })
    }
}

const PARTITIONS: u32 = 2;

/// A processor that counted three page views, a view and an emitter, all registered with a
/// monitor served on a free port.
struct Monitored {
    address: std::net::SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _broker: TestBroker,
}

impl Monitored {
    async fn start() -> Self {
        let broker = TestBroker::start();
        let client = client(&broker);
        let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
        manager
            .ensure_table("web-scores", PARTITIONS)
            .await
            .unwrap();
        let emitter = Emitter::<Pages>::ensuring(&*client, &manager, PARTITIONS)
            .await
            .unwrap();
        for (user, page) in [("alice", "/a"), ("bob", "/b"), ("alice", "/c")] {
            emitter.emit_sync(&user.into(), &page.into()).await.unwrap();
        }
        let processor = Arc::new(Processor::new(
            Counter,
            client.clone(),
            goka_tests::from_oldest(),
        ));
        let cancel = CancellationToken::new();
        let run = tokio::spawn({
            let (processor, cancel) = (processor.clone(), cancel.clone());
            async move { processor.run(cancel).await }
        });
        let scores = View::<Scores>::builder(client.clone())
            .build()
            .await
            .unwrap();
        let view_run = tokio::spawn({
            let (scores, cancel) = (scores.clone(), cancel.clone());
            async move { scores.run(cancel).await }
        });

        let monitor = Monitor::new();
        monitor.processor(&processor);
        monitor.view(&scores);
        monitor.emitter(&emitter);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn({
            let (monitor, cancel) = (monitor.clone(), cancel.clone());
            async move { monitor.serve(listener, cancel).await }
        });

        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while processor.get(&"alice".into()).unwrap().map(|v| v.count) != Some(2)
            || processor.state() != ProcessorState::Running
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the processor did not count"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tasks = vec![
            tokio::spawn(async move { server.await.unwrap().unwrap() }),
            tokio::spawn(async move { view_run.await.unwrap().unwrap() }),
            tokio::spawn(async move { run.await.unwrap().unwrap() }),
        ];
        Self {
            address,
            cancel,
            tasks,
            _broker: broker,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_components_serves_queries_and_metrics() {
    let monitored = Monitored::start().await;
    let address = monitored.address;
    // The JSON API: each component with its state, partitions and counters.
    let (status, body) = http_get(address, "/api/components").await;
    assert_eq!(status, 200, "{body}");
    let components: serde_json::Value = serde_json::from_str(&body).unwrap();
    let counter = &components[0];
    assert_eq!(counter["kind"], "processor");
    assert_eq!(counter["name"], "web-counter");
    assert_eq!(counter["state"], "Running");
    assert_eq!(
        counter["partitions"].as_array().unwrap().len(),
        PARTITIONS as usize
    );
    assert_eq!(
        counter["counters"][0],
        serde_json::json!(["messages_in", 3])
    );
    // Key and value bytes of alice /a, bob /b, alice /c.
    assert_eq!(counter["counters"][1], serde_json::json!(["bytes_in", 19]));
    assert_eq!(
        counter["callback_latency"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .sum::<u64>(),
        3,
        "{body}"
    );
    // Each partition shows the next input offset to commit (once the acknowledgements of
    // its messages arrived), the high watermark and the lag: three messages in all.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(address, "/api/components").await;
        let components: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sum = |field: &str| -> i64 {
            components[0]["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[field].as_i64().unwrap_or(-100))
                .sum()
        };
        // Offsets of done messages, high watermarks (read every 2 s) and no lag left.
        if sum("offset") == 3 && sum("high_watermark") == 3 && sum("lag") == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "offsets: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each consumed topic of each partition, and each written topic.
    let (_, body) = http_get(address, "/api/components").await;
    let components: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inputs = components[0]["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), PARTITIONS as usize, "{body}");
    let handled: u64 = inputs.iter().map(|i| i["messages"].as_u64().unwrap()).sum();
    assert_eq!(handled, 3, "{body}");
    assert!(inputs.iter().all(|i| i["topic"] == "web-pages"), "{body}");
    assert_eq!(
        components[0]["outputs"],
        serde_json::json!([{ "topic": "web-counter-table", "messages": 3, "bytes": components[0]["outputs"][0]["bytes"] }]),
        "{body}"
    );
    let (_, metrics) = http_get(address, "/metrics").await;
    assert!(
        metrics.contains("goka_input_lag{kind=\"processor\",name=\"web-counter\",topic=\"web-pages\",partition=\"0\"}")
            && metrics.contains("goka_output_messages{kind=\"processor\",name=\"web-counter\",topic=\"web-counter-table\"} 3"),
        "{metrics}"
    );
    // Rates appear once the monitor has looked a second apart: of flows, not of levels.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, body) = http_get(address, "/api/components").await;
    let components: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rated = |component: &serde_json::Value| -> Vec<String> {
        component["rates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        rated(&components[0]),
        ["messages_in", "bytes_in", "messages_out", "bytes_out"],
        "{body}"
    );
    let view_rated = rated(&components[1]);
    assert_eq!(
        view_rated,
        ["messages", "bytes"],
        "no rate of the lag: {body}"
    );
    assert_eq!(components[1]["kind"], "view");
    assert_eq!(components[1]["name"], "web-scores");
    assert_eq!(components[2]["kind"], "emitter");
    assert_eq!(
        components[2]["counters"][0],
        serde_json::json!(["messages", 3])
    );

    // Queries: a found row, a missing one, and malformed input with clear 4xx answers.
    let (status, body) = http_get(address, "/api/query?table=web-counter-table&key=alice").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["found"], true);
    assert_eq!(
        answer["value"],
        serde_json::json!({"count": 2, "last": "/c"})
    );
    let (status, body) = http_get(address, "/api/query?table=web-counter-table&key=carol").await;
    assert_eq!(
        (status, body.contains(r#""found":false"#)),
        (200, true),
        "{body}"
    );
    let (status, body) = http_get(address, "/api/query?table=nope&key=a").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("unknown table") && body.contains("web-counter-table"),
        "{body}"
    );
    let (status, body) = http_get(address, "/api/query?table=web-scores&key=not-a-number").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not a key of table"), "{body}");
    let long = "k".repeat(5000);
    let (status, body) = http_get(
        address,
        &format!("/api/query?table=web-counter-table&key={long}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 4096"), "{body}");
    let (status, body) = http_get(address, "/api/query?table=web-counter-table").await;
    assert_eq!(status, 400, "{body}");

    // Prometheus metrics.
    let (status, metrics) = http_get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"goka_component_counter{kind="processor",name="web-counter",counter="messages_in"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"goka_component_state{kind="view",name="web-scores",state="Running"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"goka_callback_latency_seconds_count{kind="processor",name="web-counter"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"goka_callback_latency_seconds_bucket{le="+Inf",kind="processor",name="web-counter"} 3"#
        ),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");

    // The pages.
    let (status, html) = http_get(address, "/").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("web-counter") && html.contains("2/2 running"),
        "{html}"
    );
    assert!(
        html.contains("http-equiv=\"refresh\""),
        "the overview refreshes itself"
    );
    let (status, html) = http_get(address, "/components/web-counter").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<td>1</td><td class=\"Running\">Running</td>"),
        "{html}"
    );
    let (status, _) = http_get(address, "/components/nope").await;
    assert_eq!(status, 404);
    let (status, html) = http_get(address, "/query?table=web-counter-table&key=alice").await;
    assert_eq!(status, 200);
    assert!(html.contains("&quot;last&quot;: &quot;/c&quot;"), "{html}");
    let (status, html) = http_get(address, "/query?table=web-counter-table&key=%3Cscript%3E").await;
    assert_eq!(status, 200);
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;"),
        "keys are escaped"
    );

    monitored.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_render_in_a_browser() {
    let monitored = Monitored::start().await;
    let base = format!("http://{}", monitored.address);
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let pages = [
        ("monitor", format!("{base}/")),
        ("processor", format!("{base}/components/web-counter")),
        (
            "query",
            format!("{base}/query?table=web-counter-table&key=alice"),
        ),
    ];
    let mut rendered = Vec::new();
    for (name, url) in &pages {
        let dom = tokio::task::block_in_place(|| chromium(url, None));
        let png = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&png);
        tokio::task::block_in_place(|| chromium(url, Some(&png)));
        let bytes = std::fs::read(&png).unwrap();
        assert!(
            bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
            "{name}: no screenshot at {}",
            png.display()
        );
        rendered.push(dom);
    }
    let [monitor, processor, query] = rendered.try_into().unwrap();
    assert!(
        monitor.contains(">web-counter</a>") && monitor.contains("2/2 running"),
        "the monitor lists the processor and its running partitions:\n{monitor}"
    );
    assert!(
        processor.contains("<td>0</td><td class=\"Running\">Running</td>")
            && processor.contains("<td>1</td><td class=\"Running\">Running</td>"),
        "the detail page shows each partition:\n{processor}"
    );
    assert!(
        query.contains("\"count\": 2") && query.contains("\"last\": \"/c\""),
        "the query page shows the queried value:\n{query}"
    );
    monitored.stop().await;
}

#[tokio::test]
async fn a_monitor_with_a_token_answers_only_requests_that_carry_it() {
    let monitor = goka::web::Monitor::new().with_bearer_token("s3cret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn({
        let cancel = cancel.clone();
        async move { monitor.serve(listener, cancel).await }
    });
    for path in ["/", "/api/components", "/metrics", "/query?table=t&key=k"] {
        let (status, body) = http_get(address, path).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        let (status, _) = http_get_with(address, path, &[("Authorization", "Bearer wrong!")]).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, body) = http_get_with(
        address,
        "/api/components",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!((status, body.trim()), (200, "[]"));
    cancel.cancel();
    serving.await.unwrap().unwrap();
}

//! Click counting with the counts served over HTTP (goka's second example): an emitter
//! writes a click every 100 ms, a processor counts them per user, and `GET /{user}` answers
//! from a view of the processor's table. Runs until Ctrl-C.
//!
//! `cargo run -p goka-examples --example click_counter_http [-- --brokers HOST:PORT]`;
//! with `--self-test` it queries its own endpoint once every user was counted, and stops.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::GroupTable;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka_examples::{ctrl_c, wait_for, Cluster, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

goka::stream!(pub Clicks = "http-clicks": String as StringCodec);

#[goka::processor(group = "http-click-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[derive(Debug)]
pub struct ClickCounter;

impl ClickCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

type Counts = View<GroupTable<ClickCounter>>;

/// `GET /{user}`: the user's click count as JSON, 404 for a user without clicks.
async fn count(
    State(view): State<Counts>,
    Path(user): Path<String>,
) -> (StatusCode, JsonBody<serde_json::Value>) {
    match view.get(&user) {
        Ok(Some(clicks)) => (
            StatusCode::OK,
            JsonBody(serde_json::json!({ "user": user, "clicks": clicks })),
        ),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            JsonBody(serde_json::json!({ "user": user, "error": "no clicks yet" })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            JsonBody(serde_json::json!({ "user": user, "error": e.to_string() })),
        ),
    }
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("click_counter_http failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let (cluster, flags) = Cluster::from_args_and(&["--self-test"])?;
    let self_test = flags.iter().any(|f| f == "--self-test");
    let client = cluster.client("click-counter-http");
    let topics =
        TopicManager::new(&*client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    let emitter = Emitter::<Clicks>::ensuring(&*client, &topics, 4)
        .await
        .map_err(|e| e.to_string())?;
    let counter = Running::start(ClickCounter, client.clone());
    let view: Counts = wait_for("the group table", Duration::from_secs(60), || async {
        View::<GroupTable<ClickCounter>>::builder(client.clone())
            .build()
            .await
            .ok()
    })
    .await?;
    let stop = CancellationToken::new();
    let view_task = tokio::spawn({
        let (view, stop) = (view.clone(), stop.clone());
        async move { view.run(stop).await }
    });
    let clicking = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0usize;
            while !stop.is_cancelled() {
                let user = USERS[i % USERS.len()].to_string();
                if let Err(e) = emitter.emit_sync(&user, &format!("/page/{i}")).await {
                    eprintln!("emit failed: {e}");
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            emitter.finish().await
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .route("/{user}", get(count))
        .with_state(view.clone());
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    println!("serving click counts at http://{address}/{{user}}, e.g. http://{address}/alice");

    if self_test {
        wait_for("a click of every user", Duration::from_secs(60), || async {
            USERS
                .iter()
                .all(|u| matches!(view.get(&u.to_string()), Ok(Some(_))))
                .then_some(())
        })
        .await?;
        for user in USERS.iter().chain(&["nobody"]) {
            let answer = http_get(address, &format!("/{user}")).await?;
            println!("GET /{user} -> {answer}");
        }
    } else {
        println!("press Ctrl-C to stop");
        ctrl_c().await;
    }
    stop.cancel();
    clicking
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    server
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    view_task
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    counter.stop().await?;
    println!("click_counter_http stopped");
    Ok(())
}

/// A minimal HTTP/1.1 GET: status line and body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok(format!("{status} {body}"))
}

//! The web monitor under load (goka's monitoring example). An emitter writes a signup per
//! user and then a steady stream of clicks; one processor keeps each user's profile, a
//! second counts clicks per user, joined with the profile's country; a view serves the
//! counts. All of them are registered with a monitor served on loopback: its pages chart
//! messages per second and lag, list the partitions, and browse both tables.
//!
//! `cargo run -p goka-examples --example monitoring [-- --brokers HOST:PORT]` prints the
//! monitor's address and runs for five minutes, or until Ctrl-C. With `--self-test` it
//! fetches its own pages after some seconds of load, checks what they show, and stops.

use std::time::Duration;

use goka::codec::Json;
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::GroupTable;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka::web::Monitor;
use goka_examples::{ctrl_c, wait_for, Cluster, Running};
use tokio_util::sync::CancellationToken;

/// A new user and where they live.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub country: String,
}

/// A click on a page.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Click {
    pub page: String,
}

/// What the counter keeps per user.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UserClicks {
    pub clicks: u64,
    pub country: Option<String>,
}

goka::stream!(pub Signups = "monitoring-signups": Profile as Json);
goka::stream!(pub Clicks = "monitoring-clicks": Click as Json);

/// Keeps each user's latest profile in `monitoring-profiles-table`.
#[goka::processor(group = "monitoring-profiles")]
#[input(topic = Signups, handler = Self::on_signup)]
#[persist(value = Profile, codec = Json)]
#[derive(Debug)]
pub struct Profiles;

impl Profiles {
    fn on_signup(
        &self,
        ctx: &mut Context<'_, Self>,
        profile: Profile,
    ) -> Result<(), CallbackError> {
        ctx.set_value(&profile)
    }
}

/// Counts clicks per user, with the country of the user's profile (a join).
#[goka::processor(group = "monitoring-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[join(table = GroupTable<Profiles>)]
#[persist(value = UserClicks, codec = Json)]
#[derive(Debug)]
pub struct ClickCounter;

impl ClickCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: Click) -> Result<(), CallbackError> {
        let clicks = ctx.value()?.map_or(0, |row| row.clicks) + 1;
        let country = ctx.join::<GroupTable<Profiles>>()?.map(|p| p.country);
        ctx.set_value(&UserClicks { clicks, country })
    }
}

const PARTITIONS: u32 = 4;
const USERS: usize = 200;
const COUNTRIES: [&str; 4] = ["de", "fr", "jp", "br"];
/// Clicks per second while the example runs.
const CLICKS_PER_SECOND: u64 = 400;

fn user(i: usize) -> String {
    format!("user-{i:03}")
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("monitoring failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let (cluster, flags) = Cluster::from_args_and(&["--self-test"])?;
    let self_test = flags.iter().any(|f| f == "--self-test");
    let client = cluster.client("monitoring");
    let topics =
        TopicManager::new(&*client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    let signups = Emitter::<Signups>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(|e| e.to_string())?;
    let clicks = Emitter::<Clicks>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..USERS {
        let country = COUNTRIES[i % COUNTRIES.len()].to_owned();
        // Not awaited one by one: `finish` below reports any that failed.
        let _pending = signups
            .emit(&user(i), &Profile { country })
            .await
            .map_err(|e| e.to_string())?;
    }
    signups
        .flush(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;

    let profiles = Running::start(Profiles, client.clone());
    let counter = Running::start(ClickCounter, client.clone());
    let counts = match wait_for("the counter's table", Duration::from_secs(60), || async {
        View::<GroupTable<ClickCounter>>::builder(client.clone())
            .build()
            .await
            .ok()
    })
    .await
    {
        Ok(counts) => counts,
        Err(e) => {
            let state = counter.processor.state();
            return Err(format!(
                "{e} (counter {state:?}: {:?})",
                counter.stop().await
            ));
        }
    };

    let monitor = Monitor::new();
    monitor.processor(&profiles.processor);
    monitor.processor(&counter.processor);
    monitor.view(&counts);
    monitor.emitter(&signups);
    monitor.emitter(&clicks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("monitor at http://{address}/");

    let cancel = CancellationToken::new();
    let server = tokio::spawn({
        let (monitor, cancel) = (monitor.clone(), cancel.clone());
        async move { monitor.serve(listener, cancel).await }
    });
    let view_task = tokio::spawn({
        let (counts, cancel) = (counts.clone(), cancel.clone());
        async move { counts.run(cancel).await }
    });
    let load = tokio::spawn(emit_clicks(clicks.clone(), cancel.clone()));

    if self_test {
        check_pages(address, &counts).await?;
    } else {
        tokio::select! {
            _ = ctrl_c() => println!("stopping on Ctrl-C"),
            _ = tokio::time::sleep(Duration::from_secs(300)) => println!("stopping after five minutes"),
        }
    }

    cancel.cancel();
    let emitted = load.await.map_err(|e| e.to_string())??;
    clicks.finish().await.map_err(|e| e.to_string())?;
    view_task
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    server
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    counter.stop().await?;
    profiles.stop().await?;
    println!("monitoring stopped after {emitted} clicks");
    Ok(())
}

/// Emits clicks of every user at a steady rate until `cancel` fires; returns how many.
async fn emit_clicks(clicks: Emitter<Clicks>, cancel: CancellationToken) -> Result<u64, String> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let per_tick = CLICKS_PER_SECOND / 20;
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(sent),
            _ = tick.tick() => {}
        }
        for _ in 0..per_tick {
            let page = Click {
                page: format!("/article/{}", sent % 50),
            };
            // `finish` at the end reports any delivery that failed.
            let _pending = clicks
                .emit(&user(sent as usize % USERS), &page)
                .await
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
}

/// The self-test: once every user was counted and the monitor has some history, fetch the
/// pages and the API and check that they show what runs.
async fn check_pages(
    address: std::net::SocketAddr,
    counts: &View<GroupTable<ClickCounter>>,
) -> Result<(), String> {
    let _ = counts.recovered().await;
    wait_for(
        "every user to be counted",
        Duration::from_secs(60),
        || async {
            (0..USERS)
                .all(|i| matches!(counts.get(&user(i)), Ok(Some(row)) if row.country.is_some()))
                .then_some(())
        },
    )
    .await?;
    // Ten samples under load: the monitor takes one a second, later on a busy machine.
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_for(
        "ten samples of history",
        Duration::from_secs(30),
        || async {
            let (_, body) =
                goka_tests::http_get(address, "/api/components/monitoring-counter/history").await;
            let history: serde_json::Value = serde_json::from_str(&body).ok()?;
            (history[0]["history"]["samples"].as_u64()? >= 10).then_some(())
        },
    )
    .await?;

    let get = |path: &'static str| async move {
        let (status, body) = goka_tests::http_get(address, path).await;
        println!("GET {path} -> {status} ({} bytes)", body.len());
        if status != 200 {
            return Err(format!("GET {path} answered {status}: {body}"));
        }
        Ok(body)
    };
    let overview = get("/").await?;
    for name in [
        "monitoring-profiles",
        "monitoring-counter",
        "monitoring-counter-table",
        "monitoring-clicks",
    ] {
        if !overview.contains(&format!(">{name}</a>")) {
            return Err(format!("the overview does not list {name}"));
        }
    }
    let detail = get("/components/monitoring-counter").await?;
    let points = data_points(&detail, "messages_in");
    if points < 5 {
        return Err(format!(
            "the messages chart has {points} points, expected one a second"
        ));
    }
    println!("the messages chart of monitoring-counter has {points} points");
    let history = get("/api/components/monitoring-counter/history").await?;
    let history: serde_json::Value = serde_json::from_str(&history).map_err(|e| e.to_string())?;
    let samples = history[0]["history"]["samples"].as_u64().unwrap_or(0);
    let rates = &history[0]["history"]["rates"][0][1];
    let busiest = rates.as_array().map_or(0.0, |r| {
        r.iter().filter_map(|v| v.as_f64()).fold(0.0, f64::max)
    });
    println!("history: {samples} samples, up to {busiest:.0} messages/s in");
    if samples < 10 || busiest <= 0.0 {
        return Err(format!("the history does not show the load: {history}"));
    }
    let rows = get("/api/rows?table=monitoring-counter-table&prefix=user-1&limit=50").await?;
    let rows: serde_json::Value = serde_json::from_str(&rows).map_err(|e| e.to_string())?;
    let listed = rows["rows"].as_array().map_or(0, Vec::len);
    let next = rows["next"].as_str().unwrap_or_default().to_owned();
    println!("rows of monitoring-counter-table with prefix user-1: {listed} on the first page");
    if listed != 50 || next.is_empty() {
        return Err(format!(
            "the first page should hold 50 rows and a next page: {rows}"
        ));
    }
    let page = goka_tests::http_get(
        address,
        &format!("/api/rows?table=monitoring-counter-table&prefix=user-1&limit=50&after={next}"),
    )
    .await;
    let page: serde_json::Value = serde_json::from_str(&page.1).map_err(|e| e.to_string())?;
    let second = page["rows"].as_array().map_or(0, Vec::len);
    println!("and {second} on the second");
    if second != 50 || !page["next"].is_null() {
        return Err(format!("user-100 to user-199 make two pages of 50: {page}"));
    }
    println!("self-test passed");
    Ok(())
}

/// The `data-points` of the chart line `series` on a page.
fn data_points(page: &str, series: &str) -> usize {
    page.split(&format!("data-series=\"{series}\" data-points=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

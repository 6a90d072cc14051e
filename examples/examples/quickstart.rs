//! The main demo: an emitter writes typed clicks, a processor group counts them per user in
//! its group table, and a view of that table serves the counts.
//!
//! Run it with `bash scripts/demo.sh` (starts a bundled broker) or
//! `bash scripts/demo.sh --brokers HOST:PORT` (uses your cluster).

use std::time::Duration;

use goka::codec::Json;
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::GroupTable;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka_examples::{wait_for, Cluster, Running};

/// A user clicked on a page.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Click {
    pub page: String,
}

/// What the counter keeps per user.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserClicks {
    pub clicks: u64,
    pub last_page: String,
}

goka::stream!(
    /// Clicks, keyed by user id.
    pub Clicks = "quickstart-clicks": Click as Json
);

/// Counts each user's clicks in the group table `quickstart-counter-table`.
#[goka::processor(group = "quickstart-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = UserClicks, codec = Json)]
#[derive(Debug)]
pub struct ClickCounter;

impl ClickCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: Click) -> Result<(), CallbackError> {
        let clicks = ctx.value()?.map_or(0, |row| row.clicks) + 1;
        ctx.set_value(&UserClicks {
            clicks,
            last_page: click.page,
        })
    }
}

const PARTITIONS: u32 = 4;
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const CLICKS: usize = 20;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("quickstart failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_args()?;
    let client = cluster.client("quickstart");
    let topics =
        TopicManager::new(&*client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    let emitter = Emitter::<Clicks>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..CLICKS {
        let user = USERS[i % USERS.len()].to_string();
        let click = Click {
            page: format!("/article/{i}"),
        };
        let delivery = emitter
            .emit_sync(&user, &click)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "emitted  {user:>5} -> {:<12} partition {} offset {}",
            click.page, delivery.partition, delivery.offset
        );
    }
    emitter.finish().await.map_err(|e| e.to_string())?;

    println!("starting processor group {:?}", "quickstart-counter");
    let counter = Running::start(ClickCounter, client.clone());
    // The table topic exists once the processor created it.
    let view = wait_for("the group table", Duration::from_secs(60), || async {
        View::<GroupTable<ClickCounter>>::builder(client.clone())
            .build()
            .await
            .ok()
    })
    .await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let view_task = tokio::spawn({
        let (view, cancel) = (view.clone(), cancel.clone());
        async move { view.run(cancel).await }
    });
    let per_user = (CLICKS / USERS.len()) as u64;
    wait_for(
        "every click to be counted",
        Duration::from_secs(60),
        || async {
            let all = USERS.iter().all(|user| {
            matches!(view.get(&user.to_string()), Ok(Some(row)) if row.clicks == per_user)
        });
            all.then_some(())
        },
    )
    .await?;
    for user in USERS {
        if let Ok(Some(row)) = view.get(&user.to_string()) {
            println!(
                "view     {user:>5}: {} clicks, last on {}",
                row.clicks, row.last_page
            );
        }
    }
    cancel.cancel();
    view_task
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    counter.stop().await?;
    println!("quickstart complete: {CLICKS} clicks emitted, counted by the processor, read from the view");
    Ok(())
}

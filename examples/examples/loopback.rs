//! Loopback (goka's `Loop` edge): clicks arrive keyed by user, but the counter keeps one row
//! per page. The input handler sends each click to the page's key through the group's loop
//! topic; the loop handler, running in the page's partition, counts it.
//!
//! `cargo run -p goka-examples --example loopback [-- --brokers HOST:PORT]`; stops by itself.

use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_examples::{wait_for, Cluster, Running};

goka::stream!(
    /// The page a user visited, keyed by user.
    pub Visits = "loopback-visits": String as StringCodec
);

#[goka::processor(group = "page-counter")]
#[input(topic = Visits, handler = Self::on_visit)]
#[loopback(value = String, codec = StringCodec, handler = Self::on_page_visit)]
#[persist(value = i64, codec = Int64Codec)]
#[derive(Debug)]
pub struct PageCounter;

impl PageCounter {
    /// Runs in the user's partition: forwards the visit to the page's key.
    fn on_visit(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        ctx.loopback(&page, &user)
    }

    /// Runs in the page's partition, keyed by page: counts the visit.
    fn on_page_visit(
        &self,
        ctx: &mut Context<'_, Self>,
        user: String,
    ) -> Result<(), CallbackError> {
        let visits = ctx.value()?.unwrap_or(0) + 1;
        println!("page {:<8} visit {visits} (by {user})", ctx.key());
        ctx.set_value(&visits)
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("loopback failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_args()?;
    let client = cluster.client("loopback");
    let topics =
        TopicManager::new(&*client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    let visits = Emitter::<Visits>::ensuring(&*client, &topics, 3)
        .await
        .map_err(|e| e.to_string())?;
    let counter = Running::start(PageCounter, client.clone());
    let plan = [
        ("alice", "/home"),
        ("bob", "/home"),
        ("carol", "/shop"),
        ("alice", "/shop"),
        ("bob", "/home"),
    ];
    for (user, page) in plan {
        visits
            .emit_sync(&user.to_string(), &page.to_string())
            .await
            .map_err(|e| e.to_string())?;
    }
    visits.finish().await.map_err(|e| e.to_string())?;
    let processor = counter.processor.clone();
    let counts = wait_for(
        "every visit to be counted",
        Duration::from_secs(60),
        || async {
            let home = processor.get(&"/home".to_string()).ok().flatten();
            let shop = processor.get(&"/shop".to_string()).ok().flatten();
            (home == Some(3) && shop == Some(2)).then_some((home, shop))
        },
    )
    .await?;
    println!(
        "visits per page: /home {:?}, /shop {:?}",
        counts.0, counts.1
    );
    counter.stop().await?;
    println!("loopback complete");
    Ok(())
}

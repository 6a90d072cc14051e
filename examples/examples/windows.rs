//! Windows and `on_close` (goka-rs's own; goka has per-key state only): clicks counted per
//! user in tumbling windows of two seconds over event time, each window's final count
//! emitted once when it closes (its end plus half a second of grace), and the windowed
//! table read through a view while it runs.
//!
//! `cargo run -p goka-examples --example windows [-- --brokers HOST:PORT]`; stops by itself
//! after about ten seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka::window::{ClosedWindow, WindowSpec, WindowTable};
use goka_examples::{wait_for, Cluster, Running};

goka::stream!(
    /// The page a user clicked, keyed by user.
    pub Clicks = "windows-clicks": String as StringCodec
);
goka::stream!(
    /// One line per user and closed window.
    pub Rates = "windows-rates": String as StringCodec
);
goka::window!(
    /// Clicks per user in two-second windows; late clicks count for half a second more.
    pub TwoSeconds = "two-seconds": u64 as Json,
    WindowSpec::tumbling(Duration::from_secs(2)).grace(Duration::from_millis(500))
);

/// The final counts the example saw closing, per user.
type Totals = Arc<Mutex<HashMap<String, u64>>>;

#[goka::processor(group = "click-rate")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = TwoSeconds, on_close = Self::on_close)]
#[output(topic = Rates)]
#[derive(Debug)]
pub struct ClickRate {
    totals: Totals,
}

impl ClickRate {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        ctx.window::<TwoSeconds>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }

    /// Once per user and window, with its final count.
    fn on_close(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        let line = format!(
            "{user} clicked {} times in the window starting at {} ms",
            closed.value, closed.window.start
        );
        println!("closed   {line}");
        if let Ok(mut totals) = self.totals.lock() {
            *totals.entry(user.clone()).or_default() += closed.value;
        }
        ctx.emit::<Rates>(&user, &line)
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("windows failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_args()?;
    let client = cluster.client("windows");
    let topics =
        TopicManager::new(&*client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    // One partition: stream time, which closes windows, moves per partition.
    let clicks = Emitter::<Clicks>::ensuring(&*client, &topics, 1)
        .await
        .map_err(|e| e.to_string())?;
    let totals = Totals::default();
    let rate = Running::start(
        ClickRate {
            totals: totals.clone(),
        },
        client.clone(),
    );
    // The processor creates the window's changelog as it starts.
    rate.processor.recovered().await;
    let view = View::<WindowTable<ClickRate, TwoSeconds>>::builder(client.clone())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let following = tokio::spawn({
        let view = view.clone();
        let cancel = tokio_util::sync::CancellationToken::new();
        async move { view.run(cancel).await }
    });

    // Bursts of clicks, a little more than a window apart: each burst lands in one or two
    // windows, and every click in exactly one.
    let bursts: [&[&str]; 4] = [
        &["alice", "alice", "bob"],
        &["alice", "bob", "bob", "bob"],
        &["alice"],
        &["bob", "alice"],
    ];
    let mut sent: HashMap<String, u64> = HashMap::new();
    for burst in bursts {
        for user in burst {
            clicks
                .emit_sync(&user.to_string(), &"/home".to_string())
                .await
                .map_err(|e| e.to_string())?;
            *sent.entry(user.to_string()).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(2_200)).await;
    }
    // A last click, three windows later, moves stream time past every earlier window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    clicks
        .emit_sync(&"carol".to_string(), &"/home".to_string())
        .await
        .map_err(|e| e.to_string())?;
    clicks.finish().await.map_err(|e| e.to_string())?;

    let expected = sent.clone();
    let closed = wait_for(
        "every burst's window to close",
        Duration::from_secs(60),
        || async {
            let totals = totals.lock().map(|t| t.clone()).unwrap_or_default();
            (totals == expected).then_some(totals)
        },
    )
    .await?;
    let kept = view.iter().filter_map(Result::ok).count();
    println!("view     windows kept: {kept} (carol's, still open)");
    let mut users: Vec<_> = closed.into_iter().collect();
    users.sort();
    for (user, count) in users {
        println!("total    {user}: {count} clicks, each counted in one closed window");
    }
    rate.stop().await?;
    following.abort();
    println!("windows complete");
    Ok(())
}

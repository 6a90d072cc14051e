//! A messaging system of five processor groups wired through topics (goka's third example):
//!
//! - **blocker** keeps who is blocked, from `block-events`;
//! - **translator** keeps word translations, from `translations`;
//! - **filter** reads `messages-sent` (keyed by sender), drops messages of blocked senders
//!   (a join of the blocker's table), translates words (a lookup of the translator's table)
//!   and emits to `messages-received`, keyed by recipient;
//! - **collector** keeps each recipient's last messages;
//! - **detector** counts what each sender sends and emits a block event past a limit.
//!
//! `cargo run -p goka-examples --example messaging [-- --brokers HOST:PORT]`; stops by itself.

use std::time::Duration;

use goka::codec::Json;
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::processor::GroupTable;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use goka_examples::{wait_for, Cluster, Running};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub from: String,
    pub to: String,
    pub content: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Block {
    pub unblock: bool,
}

goka::stream!(pub Sent = "messages-sent": Message as Json);
goka::stream!(pub Received = "messages-received": Message as Json);
goka::stream!(pub BlockEvents = "block-events": Block as Json);
goka::stream!(pub Translations = "translations": String as goka::codec::StringCodec);

#[goka::processor(group = "blocker")]
#[input(topic = BlockEvents, handler = Self::on_event)]
#[persist(value = bool, codec = Json)]
#[derive(Debug)]
pub struct Blocker;

impl Blocker {
    fn on_event(&self, ctx: &mut Context<'_, Self>, event: Block) -> Result<(), CallbackError> {
        ctx.set_value(&!event.unblock)
    }
}

#[goka::processor(group = "translator")]
#[input(topic = Translations, handler = Self::on_translation)]
#[persist(value = String, codec = goka::codec::StringCodec)]
#[derive(Debug)]
pub struct Translator;

impl Translator {
    fn on_translation(
        &self,
        ctx: &mut Context<'_, Self>,
        word: String,
    ) -> Result<(), CallbackError> {
        ctx.set_value(&word)
    }
}

#[goka::processor(group = "filter")]
#[input(topic = Sent, handler = Self::on_sent)]
#[join(table = GroupTable<Blocker>)]
#[lookup(table = GroupTable<Translator>)]
#[output(topic = Received)]
#[derive(Debug)]
pub struct Filter;

impl Filter {
    fn on_sent(&self, ctx: &mut Context<'_, Self>, message: Message) -> Result<(), CallbackError> {
        if ctx.join::<GroupTable<Blocker>>()?.unwrap_or(false) {
            return Ok(());
        }
        let mut words = Vec::new();
        for word in message.content.split(' ') {
            let translated = ctx.lookup::<GroupTable<Translator>>(&word.to_owned())?;
            words.push(translated.unwrap_or_else(|| word.to_owned()));
        }
        let recipient = message.to.clone();
        ctx.emit::<Received>(
            &recipient,
            &Message {
                content: words.join(" "),
                ..message
            },
        )
    }
}

const INBOX: usize = 5;

#[goka::processor(group = "collector")]
#[input(topic = Received, handler = Self::on_received)]
#[persist(value = Vec<Message>, codec = Json)]
#[derive(Debug)]
pub struct Collector;

impl Collector {
    fn on_received(
        &self,
        ctx: &mut Context<'_, Self>,
        message: Message,
    ) -> Result<(), CallbackError> {
        let mut inbox = ctx.value()?.unwrap_or_default();
        inbox.push(message);
        if inbox.len() > INBOX {
            inbox.remove(0);
        }
        ctx.set_value(&inbox)
    }
}

#[goka::processor(group = "detector")]
#[input(topic = Sent, handler = Self::on_sent)]
#[persist(value = u64, codec = Json)]
#[output(topic = BlockEvents)]
#[derive(Debug)]
pub struct Detector {
    limit: u64,
}

impl Detector {
    fn on_sent(&self, ctx: &mut Context<'_, Self>, _message: Message) -> Result<(), CallbackError> {
        let sent = ctx.value()?.unwrap_or(0) + 1;
        ctx.set_value(&sent)?;
        if sent == self.limit {
            let sender = ctx.key().clone();
            println!("detector: {sender} sent {sent} messages, blocking");
            ctx.emit::<BlockEvents>(&sender, &Block { unblock: false })?;
        }
        Ok(())
    }
}

const PARTITIONS: u32 = 4;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("messaging failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_args()?;
    let client = cluster.client("messaging");
    let topics =
        TopicManager::new(&*client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    let err = |e: goka::emitter::EmitError| e.to_string();
    let sent = Emitter::<Sent>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(err)?;
    let blocks = Emitter::<BlockEvents>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(err)?;
    let translations = Emitter::<Translations>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(err)?;
    Emitter::<Received>::ensuring(&*client, &topics, PARTITIONS)
        .await
        .map_err(err)?;

    // The blocker and translator first: the filter joins and looks up their tables.
    let blocker = Running::start(Blocker, client.clone());
    let translator = Running::start(Translator, client.clone());
    for (word, translation) in [("hello", "hallo"), ("world", "welt")] {
        translations
            .emit_sync(&word.into(), &translation.into())
            .await
            .map_err(err)?;
    }
    // Wait until the translations are in the translator's changelog (a view of it sees them),
    // so the filter's lookup view finds them when it starts.
    let words = wait_for(
        "the translator's table",
        Duration::from_secs(60),
        || async {
            View::<GroupTable<Translator>>::builder(client.clone())
                .build()
                .await
                .ok()
        },
    )
    .await?;
    let stop_words = tokio_util::sync::CancellationToken::new();
    let words_running = tokio::spawn({
        let (words, stop) = (words.clone(), stop_words.clone());
        async move { words.run(stop).await }
    });
    wait_for("the translations", Duration::from_secs(60), || async {
        matches!(words.get(&"world".into()), Ok(Some(_))).then_some(())
    })
    .await?;
    stop_words.cancel();
    words_running
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let filter = Running::start(Filter, client.clone());
    let collector = Running::start(Collector, client.clone());
    let detector = Running::start(Detector { limit: 3 }, client.clone());

    let send = |from: &str, to: &str, content: &str| Message {
        from: from.into(),
        to: to.into(),
        content: content.into(),
    };
    for message in [
        send("alice", "bob", "hello world"),
        send("bob", "alice", "hello alice"),
        send("carol", "bob", "good morning"),
    ] {
        println!(
            "sent     {} -> {}: {}",
            message.from, message.to, message.content
        );
        sent.emit_sync(&message.from.clone(), &message)
            .await
            .map_err(err)?;
    }
    let inboxes = collector.processor.clone();
    wait_for("bob's two messages", Duration::from_secs(60), || async {
        matches!(inboxes.get(&"bob".into()), Ok(Some(inbox)) if inbox.len() == 2).then_some(())
    })
    .await?;

    // A spammer: the detector blocks them after three messages, the filter drops the rest.
    for i in 1..=3 {
        let message = send("spammer", "bob", &format!("buy now {i}"));
        println!(
            "sent     {} -> {}: {}",
            message.from, message.to, message.content
        );
        sent.emit_sync(&message.from.clone(), &message)
            .await
            .map_err(err)?;
    }
    let blocked = blocker.processor.clone();
    wait_for(
        "the spammer to be blocked",
        Duration::from_secs(60),
        || async { matches!(blocked.get(&"spammer".into()), Ok(Some(true))).then_some(()) },
    )
    .await?;
    println!("blocker: spammer is blocked");
    // The filter sees the block through its copy of the blocker's table, which follows the
    // table's changelog; give it a moment to catch up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The detector and the filter run side by side: some of the three may already have been
    // dropped. Wait until the filter handled all six messages so far.
    let filtered = filter.processor.clone();
    wait_for(
        "the filter to handle the spam",
        Duration::from_secs(60),
        || async { (filtered.stats().messages_in == 6).then_some(()) },
    )
    .await?;
    let late = send("spammer", "bob", "buy now 4");
    println!("sent     {} -> {}: {}", late.from, late.to, late.content);
    sent.emit_sync(&late.from.clone(), &late)
        .await
        .map_err(err)?;
    let after = send("alice", "bob", "hello again");
    println!("sent     {} -> {}: {}", after.from, after.to, after.content);
    sent.emit_sync(&after.from.clone(), &after)
        .await
        .map_err(err)?;
    // The filter handled all eight messages, and the collector got alice's last one.
    wait_for(
        "the filter to handle every message",
        Duration::from_secs(60),
        || async { (filtered.stats().messages_in == 8).then_some(()) },
    )
    .await?;
    wait_for("alice's last message", Duration::from_secs(60), || async {
        matches!(inboxes.get(&"bob".into()), Ok(Some(inbox)) if inbox.iter().any(|m| m.content == "hallo again")).then_some(())
    })
    .await?;
    blocks.finish().await.map_err(err)?;

    let late_delivered = inboxes
        .get(&"bob".into())
        .map_err(|e| e.to_string())?
        .unwrap_or_default()
        .iter()
        .any(|m| m.content == "buy now 4");
    // The filter reads its own copy of the blocker's table, which follows the changelog: a
    // message right after the block can still pass while that copy catches up.
    println!(
        "late spam: {}",
        if late_delivered {
            "delivered (the filter's copy of the blocker table had not caught up yet)"
        } else {
            "dropped by the filter"
        }
    );
    for user in ["alice", "bob"] {
        let inbox = inboxes
            .get(&user.into())
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        println!("inbox of {user}:");
        for m in inbox {
            println!("  from {:<8} {}", m.from, m.content);
        }
    }
    for running in [
        filter.stop().await,
        collector.stop().await,
        detector.stop().await,
    ] {
        running?;
    }
    blocker.stop().await?;
    translator.stop().await?;
    println!("messaging complete");
    Ok(())
}

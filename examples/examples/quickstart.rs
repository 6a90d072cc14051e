//! The main demo: declares a typed topic, emits a few typed messages into it with an
//! `Emitter` (partitioned as goka would), and consumes them back.
//!
//! Run it with `bash scripts/demo.sh` (starts a bundled broker) or
//! `bash scripts/demo.sh --brokers HOST:PORT` (uses your cluster).

use std::time::{Duration, Instant};

use goka::codec::Json;
use goka::emitter::Emitter;
use goka::kafka::{rdkafka_client::RdKafkaClient, KafkaConfig};
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_examples::Cluster;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// A user clicked on a page.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Click {
    page: String,
}

goka::stream!(
    /// Clicks, keyed by user id.
    Clicks = "quickstart-clicks": Click as Json
);

const PARTITIONS: i32 = 4;
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("quickstart failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let cluster = Cluster::from_args()?;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.brokers());

    let client = RdKafkaClient::new(KafkaConfig::new(cluster.brokers()).client_id("quickstart"));
    let topics =
        TopicManager::new(&client, TopicManagerConfig::default()).map_err(|e| e.to_string())?;
    let emitter = Emitter::<Clicks>::ensuring(&client, &topics, PARTITIONS as u32)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "topic {} is ready with {} partitions",
        Clicks::NAME,
        emitter.partitions()
    );

    for (i, user) in USERS.iter().cycle().take(8).enumerate() {
        let click = Click {
            page: format!("/article/{i}"),
        };
        let delivery = emitter
            .emit_sync(&user.to_string(), &click)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "emitted {user:>5} -> {:<12} partition {} offset {}",
            click.page, delivery.partition, delivery.offset
        );
    }
    emitter.finish().await.map_err(|e| e.to_string())?;

    // Read the topic back with a plain consumer: the keys sit in goka's partitions.
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.brokers());
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "quickstart")
        .create()
        .map_err(|e| e.to_string())?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(Clicks::NAME, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < 8 {
        if Instant::now() > deadline {
            return Err(format!("only {seen} of 8 messages came back within 30 s"));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.map_err(|e| format!("consume: {e}"))?;
        let user = Clicks::decode_key(msg.key().unwrap_or_default()).map_err(|e| e.to_string())?;
        let click = Clicks::decode_value(msg.payload().unwrap_or_default())
            .map_err(|e| format!("partition {} offset {}: {e}", msg.partition(), msg.offset()))?;
        let expected = GokaPartitioner.partition(user.as_bytes(), PARTITIONS as u32);
        if msg.partition() != expected {
            return Err(format!(
                "{user} is in partition {}, goka expects {expected}",
                msg.partition()
            ));
        }
        println!(
            "consumed {user:>5} <- {:<12} partition {} offset {}",
            click.page,
            msg.partition(),
            msg.offset()
        );
        seen += 1;
    }
    println!("round trip complete: 8 typed messages emitted and consumed");
    Ok(())
}

//! The main demo: declares a typed topic, emits a few typed messages into it, partitioned as
//! goka would, and consumes them back.
//!
//! Run it with `bash scripts/demo.sh` (starts a bundled broker) or
//! `bash scripts/demo.sh --brokers HOST:PORT` (uses your cluster).

use std::time::{Duration, Instant};

use goka::codec::Json;
use goka::partitioner::GokaPartitioner;
use goka::topic::{partition_of, Topic};
use goka_examples::Cluster;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
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

    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let created = admin
        .create_topics(
            &[NewTopic::new(
                Clicks::NAME,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .map_err(|e| format!("create topic {}: {e}", Clicks::NAME))?;
    for result in created {
        match result {
            Ok(topic) => println!("created topic {topic} with {PARTITIONS} partitions"),
            Err((topic, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                println!("topic {topic} exists already")
            }
            Err((topic, code)) => return Err(format!("create topic {topic}: {code}")),
        }
    }

    let producer: FutureProducer = config.create().map_err(|e| e.to_string())?;
    for (i, user) in USERS.iter().cycle().take(8).enumerate() {
        let click = Click {
            page: format!("/article/{i}"),
        };
        let key = user.to_string();
        let partition = partition_of::<Clicks>(&key, PARTITIONS as u32, &GokaPartitioner)
            .map_err(|e| e.to_string())?;
        let value = Clicks::encode_value(&click).map_err(|e| e.to_string())?;
        let delivery = producer
            .send(
                FutureRecord::to(Clicks::NAME)
                    .partition(partition)
                    .key(user.as_bytes())
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| format!("emit {user}: {e}"))?;
        println!(
            "emitted {user:>5} -> {:<12} partition {} offset {}",
            click.page, delivery.partition, delivery.offset
        );
    }

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

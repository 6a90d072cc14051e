//! A processor with every edge kind: it joins a co-partitioned table, looks up a table that
//! is not co-partitioned, emits to an output stream and loops back to another key of its own
//! group, whose loop handler keeps a count in the group table. Each edge is checked end to end.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::kafka::Client;
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::processor::Processor;
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::{client, produce_raw, read_all, Running, TestBroker};

goka::stream!(Orders = "orders": String as StringCodec);
goka::stream!(Shipments = "shipments": String as StringCodec);
goka::table!(Customers = "customers": String as StringCodec);
goka::table!(Rates = "rates": String as StringCodec);

const PARTITIONS: u32 = 3;
const TOTAL_KEY: &str = "all-orders";

/// Ships orders to the joined customer's city and counts orders through its loop.
#[goka::processor(group = "router")]
#[input(topic = Orders, handler = Self::on_order)]
#[join(table = Customers)]
#[lookup(table = Rates)]
#[output(topic = Shipments)]
#[loopback(value = String, codec = StringCodec, handler = Self::on_loop)]
#[persist(value = i64, codec = Int64Codec)]
struct Router;

impl Router {
    /// An async handler: it may await, and its partition's messages stay in order.
    async fn on_order(
        &self,
        ctx: &mut Context<'_, Self>,
        order: String,
    ) -> Result<(), CallbackError> {
        tokio::task::yield_now().await;
        let city = ctx.join::<Customers>()?.unwrap_or_else(|| "nowhere".into());
        // A lookup reads any key of a table that is not co-partitioned.
        let rate = ctx.lookup::<Rates>(&city)?.unwrap_or_else(|| "?".into());
        let customer = ctx.key().clone();
        ctx.emit::<Shipments>(&customer, &format!("{order} -> {city} ({rate})"))?;
        ctx.loopback(&TOTAL_KEY.to_string(), &order)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, _order: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_emits_and_loopbacks_work_end_to_end() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    manager
        .ensure_table(Customers::NAME, PARTITIONS)
        .await
        .unwrap();
    manager
        .ensure_stream(Shipments::NAME, PARTITIONS)
        .await
        .unwrap();
    for (customer, city) in [("alice", "Paris"), ("bob", "Oslo")] {
        let p = GokaPartitioner.partition(customer.as_bytes(), PARTITIONS);
        produce_raw(&broker, Customers::NAME, p, &[(customer, Some(city))]).await;
    }
    // One partition: lookup tables need not be co-partitioned with the inputs.
    manager.ensure_table(Rates::NAME, 1).await.unwrap();
    produce_raw(
        &broker,
        Rates::NAME,
        0,
        &[("Paris", Some("5")), ("Oslo", Some("9"))],
    )
    .await;
    let orders = Emitter::<Orders>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap();
    let sent = [
        ("alice", "book"),
        ("bob", "lamp"),
        ("carol", "tea"),
        ("alice", "pen"),
    ];
    for (customer, order) in sent {
        orders
            .emit_sync(&customer.to_string(), &order.to_string())
            .await
            .unwrap();
    }

    let processor = Arc::new(Processor::new(
        Router,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });

    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.get(&TOTAL_KEY.to_string()).unwrap() == Some(sent.len() as i64),
        || {
            format!(
                "the loop did not count every order: {:?}",
                processor.get(&TOTAL_KEY.to_string())
            )
        },
    )
    .await;

    let shipments = read_all(&broker, Shipments::NAME, PARTITIONS as i32, sent.len());
    let mut got: Vec<(String, String)> = shipments
        .iter()
        .map(|m| {
            assert_eq!(
                m.partition,
                GokaPartitioner.partition(&m.key, PARTITIONS),
                "emits use goka's partitioner"
            );
            (
                String::from_utf8(m.key.clone()).unwrap(),
                String::from_utf8(m.value.clone().unwrap()).unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".into(), "book -> Paris (5)".into()),
            ("alice".into(), "pen -> Paris (5)".into()),
            ("bob".into(), "lamp -> Oslo (9)".into()),
            ("carol".into(), "tea -> nowhere (?)".into()),
        ]
    );
    let stats = processor.stats();
    assert_eq!(
        stats.messages_in, 8,
        "four orders and four loop messages: {stats:?}"
    );
    // Per consumed topic and per written topic, as goka's InputStats and OutputStats.
    let mut consumed: Vec<(&str, u64)> = Vec::new();
    for partition in processor.partition_stats() {
        for input in &partition.inputs {
            assert!(input.lag.unwrap_or(0) >= 0, "{input:?}");
            if input.messages > 0 {
                assert!(
                    input.last_offset.is_some() && input.delay.is_some(),
                    "{input:?}"
                );
            }
            match consumed.iter_mut().find(|(t, _)| *t == input.topic) {
                Some((_, n)) => *n += input.messages,
                None => consumed.push((input.topic, input.messages)),
            }
        }
    }
    consumed.sort();
    assert_eq!(consumed, [("orders", 4), ("router-loop", 4)]);
    let produced: Vec<(&str, u64)> = processor
        .output_stats()
        .iter()
        .map(|o| (o.topic, o.messages))
        .collect();
    assert_eq!(
        produced,
        [("router-loop", 4), ("router-table", 4), ("shipments", 4)],
        "written topics"
    );
    assert_eq!(processor.lookup_stats().len(), 1, "the rates lookup");
    assert_eq!(processor.lookup_stats()[0].topic, "rates");
    // The loop topic was created as goka creates it: a stream with a retention of an hour.
    let admin = client.admin().unwrap();
    let config = admin.topic_config("router-loop").await.unwrap();
    assert_eq!(
        config.get("cleanup.policy").map(String::as_str),
        Some("delete")
    );
    assert_eq!(
        config.get("retention.ms").map(String::as_str),
        Some("3600000")
    );
    running.stop().await;
}

/// A lookup table whose view stops (here its local state is ahead of the changelog, as after
/// the topic was made anew) stops the processor, naming the table, instead of leaving
/// lookups to serve rows that no longer move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_table_whose_view_stops_stops_the_processor() {
    use goka::storage::{MemoryStorage, Storage, StorageError};
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    manager
        .ensure_table(Customers::NAME, PARTITIONS)
        .await
        .unwrap();
    manager.ensure_table(Rates::NAME, 1).await.unwrap();
    produce_raw(&broker, Rates::NAME, 0, &[("Paris", Some("5"))]).await;
    Emitter::<Orders>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap();
    let storage = |topic: &str, partition: i32| -> Result<Box<dyn Storage>, StorageError> {
        let storage = MemoryStorage::new(topic, partition);
        if topic == Rates::NAME {
            // Offsets the changelog, with one message, never had.
            storage.set_offset(1_000)?;
        }
        Ok(Box::new(storage))
    };
    let processor = Processor::new(
        Router,
        client.clone(),
        goka::processor::ProcessorConfig {
            storage: Arc::new(storage),
            ..goka_tests::from_oldest()
        },
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        processor.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("run stops by itself when a lookup table's view stops");
    let error = outcome.unwrap_err().to_string();
    assert!(
        error.contains("lookup") && error.contains("rates") && error.contains("beyond"),
        "{error}"
    );
}

/// What a processor produces carries the timestamp of the message that caused it: the
/// output, the loopback and the group table's changelog keep the input's event time
/// (`OutputTime::Input`, the default), so a loop handler's stream time is the input's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_loopbacks_and_changelogs_carry_the_inputs_timestamp() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    manager
        .ensure_table(Customers::NAME, PARTITIONS)
        .await
        .unwrap();
    manager
        .ensure_stream(Shipments::NAME, PARTITIONS)
        .await
        .unwrap();
    manager.ensure_table(Rates::NAME, 1).await.unwrap();
    manager
        .ensure_stream(Orders::NAME, PARTITIONS)
        .await
        .unwrap();
    let partition = GokaPartitioner.partition(b"alice", PARTITIONS);
    // Event time 1970-01-01T00:00:05Z: far from any wall clock.
    goka_tests::produce_at(
        &broker,
        Orders::NAME,
        partition,
        &[("alice", "book", 5_000)],
    )
    .await;
    let processor = Arc::new(Processor::new(
        Router,
        client.clone(),
        goka_tests::from_oldest(),
    ));
    let running = Running::spawn({
        let processor = processor.clone();
        move |cancel| async move { processor.run(cancel).await }
    });
    goka_tests::eventually(
        Duration::from_secs(60),
        || processor.get(&TOTAL_KEY.to_string()).unwrap() == Some(1),
        || "the loop did not count the order".to_owned(),
    )
    .await;
    let shipments = read_all(&broker, Shipments::NAME, PARTITIONS as i32, 1);
    assert_eq!(shipments[0].timestamp, Some(5_000), "the output");
    let loops = read_all(&broker, "router-loop", PARTITIONS as i32, 1);
    assert_eq!(loops[0].timestamp, Some(5_000), "the loopback");
    let changelog = read_all(&broker, "router-table", PARTITIONS as i32, 1);
    assert_eq!(
        changelog[0].timestamp,
        Some(5_000),
        "the loop handler's table write"
    );
    running.stop().await;
}

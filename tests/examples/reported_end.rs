//! Shows, with bare rdkafka clients and no goka code, how far the end a broker reports for a
//! partition (ListOffsets, the high watermark) can lag what it acknowledged and what a
//! consumer reads. Ten rounds of 500 messages over four partitions are produced in batches;
//! after each round the example compares, per partition, the last acknowledged offset + 1
//! with the reported high watermark, and at the end reads every partition to its end.
//!
//! On Kafka the two agree. The test broker (Tansu 0.6) reports the first offset of the
//! partition's last record batch, which is why goka's table readers confirm a local state
//! that looks ahead of the reported end by reading (`goka/src/table/start.rs`).
//!
//!   cargo run -p goka-tests --example reported_end

use std::collections::HashMap;
use std::time::Duration;

use goka_tests::TestBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "reported-end";
const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let broker = TestBroker::start();
    let config = goka_tests::rdkafka_config(&broker);
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
    admin
        .create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    let producer: FutureProducer = config
        .clone()
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let reader: BaseConsumer = config.create().expect("metadata client");
    // The last acknowledged offset of each partition.
    let mut acked: HashMap<i32, i64> = HashMap::new();
    let mut lagging = 0;
    for round in 0..10 {
        let mut deliveries = Vec::new();
        for i in 0..500 {
            let key = format!("key-{}", (round * 500 + i) % 97);
            let record = FutureRecord::to(TOPIC).key(&key).payload("value");
            deliveries.push(producer.send_result(record).expect("queued"));
        }
        for delivery in deliveries {
            let delivery = delivery.await.expect("delivered").expect("acknowledged");
            let last = acked.entry(delivery.partition).or_insert(-1);
            *last = (*last).max(delivery.offset);
        }
        for partition in 0..PARTITIONS {
            let (_, high) = reader
                .fetch_watermarks(TOPIC, partition, TIMEOUT)
                .expect("watermarks");
            let end = acked.get(&partition).map_or(0, |last| last + 1);
            if high != end {
                lagging += 1;
                println!(
                    "round {round}, partition {partition}: acknowledged up to offset {}, \
                     reported high watermark {high} ({} behind)",
                    end - 1,
                    end - high
                );
            }
        }
    }
    // What a consumer reads.
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "reported-end")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read: HashMap<i32, i64> = HashMap::new();
    let mut ends = 0;
    while ends < PARTITIONS {
        match consumer.poll(TIMEOUT) {
            Some(Ok(message)) => {
                let last = read.entry(message.partition()).or_insert(-1);
                *last = (*last).max(message.offset());
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ends += 1,
            Some(Err(error)) => println!("consumer: {error}"),
            None => break,
        }
    }
    for partition in 0..PARTITIONS {
        let (_, high) = reader
            .fetch_watermarks(TOPIC, partition, TIMEOUT)
            .expect("watermarks");
        println!(
            "partition {partition}: last acknowledged {:?}, last read {:?}, reported high \
             watermark {high}",
            acked.get(&partition),
            read.get(&partition)
        );
    }
    println!(
        "{lagging} of {} checks found the reported end behind what was acknowledged",
        10 * PARTITIONS
    );
}

//! Typed messages produced with goka's partitioner to a real broker come back from the
//! partitions the partitioner chose, with their values intact.

use std::collections::HashMap;
use std::time::Duration;

use goka::codec::Json;
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::topic::{partition_of, Topic};
use goka_tests::TestBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Click {
    user: String,
    page: String,
    seq: u32,
}

goka::stream!(Clicks = "clicks": Click as Json);

const PARTITIONS: i32 = 10;

fn config(broker: &TestBroker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_messages_land_in_goka_partitions_and_read_back() {
    let broker = TestBroker::start();
    let admin: AdminClient<DefaultClientContext> = config(&broker).create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                Clicks::NAME,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics request");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("create topic {topic}: {code}"));
    }

    let producer: FutureProducer = config(&broker)
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut sent = HashMap::new();
    for seq in 0..200u32 {
        let user = format!("user-{}", seq % 37);
        let click = Click {
            user: user.clone(),
            page: format!("/page/{seq}"),
            seq,
        };
        let partition =
            partition_of::<Clicks>(&user, PARTITIONS as u32, &GokaPartitioner).expect("encode key");
        let key = Clicks::encode_key(&user).expect("encode key");
        let value = Clicks::encode_value(&click).expect("encode value");
        let delivery = producer
            .send(
                FutureRecord::to(Clicks::NAME)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce seq {seq}: {e}"));
        assert_eq!(
            delivery.partition, partition,
            "the broker stored the message where we sent it"
        );
        sent.insert(seq, (partition, click));
    }

    // Read everything back on a blocking thread: BaseConsumer polls synchronously.
    let consumer_config = config(&broker);
    let received = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = consumer_config
            .clone()
            .set("group.id", "round-trip-check")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            assignment
                .add_partition_offset(Clicks::NAME, p, Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");
        let mut received = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while received.len() < 200 && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    let key =
                        Clicks::decode_key(msg.key().unwrap_or_default()).expect("decode key");
                    let value = Clicks::decode_value(msg.payload().unwrap_or_default())
                        .expect("decode value");
                    received.push((msg.partition(), key, value));
                }
                Some(Err(e)) => panic!("consume: {e}"),
                None => {}
            }
        }
        received
    })
    .await
    .expect("consumer thread");

    assert_eq!(received.len(), 200, "every produced message is read back");
    for (partition, key, click) in received {
        let (want_partition, want_click) = &sent[&click.seq];
        assert_eq!(&click, want_click);
        assert_eq!(key, click.user);
        assert_eq!(partition, *want_partition, "seq {} key {key}", click.seq);
        assert_eq!(
            partition,
            GokaPartitioner.partition(key.as_bytes(), PARTITIONS as u32)
        );
    }
}

#[test]
fn fault_proxy_in_front_of_the_broker_carries_kafka_traffic() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().expect("started behind a proxy");
    let consumer: BaseConsumer = config(&broker).create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata through the proxy");
    let advertised: Vec<String> = metadata
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect();
    assert_eq!(
        advertised,
        vec![broker.bootstrap()],
        "clients are sent back to the proxy"
    );
    assert!(
        proxy.accepted() >= 1,
        "the client connected through the proxy"
    );
}

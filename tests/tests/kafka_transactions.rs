//! Kafka transactions through goka's client layer, on Kafka 4.4: what a committed
//! transaction sent becomes visible to `read_committed` readers together with the group
//! offsets it carried; an aborted one stays invisible and commits no offsets; a producer
//! fenced by a newer one of the same transactional id cannot commit, and says so.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goka::kafka::{
    AssignedPartition, Client, GroupConsumer, GroupStart, KafkaError, MemberOptions,
    OutgoingRecord, PartitionQueueBounds, RebalanceListener, TopicPartitionOffset,
    TransactionalProducer,
};
use goka_tests::{client, committed_offset, read_until, TestBroker};

/// Keeps nothing: the test only needs the member's identity.
#[derive(Default)]
struct Assigned(Mutex<usize>);

impl RebalanceListener for Assigned {
    fn assigned(&self, partitions: Vec<AssignedPartition>) {
        *self.0.lock().unwrap() += partitions.len();
    }

    fn revoking(&self, _partitions: &[(String, i32)]) -> Vec<TopicPartitionOffset> {
        Vec::new()
    }
}

/// A member of `group` on `topic`, polled until it holds its partitions.
fn member(client: &goka_tests::TestClient, group: &str, topic: &str) -> Box<dyn GroupConsumer> {
    let listener = Arc::new(Assigned::default());
    let options = MemberOptions {
        bounds: PartitionQueueBounds {
            messages: 1_000,
            bytes: 1 << 20,
        },
        new_group_start: GroupStart::Oldest,
    };
    let mut consumer = client
        .join_group(group, &[topic], options, listener.clone())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while *listener.0.lock().unwrap() == 0 {
        assert!(Instant::now() < deadline, "no assignment for {group}");
        consumer.poll(Duration::from_millis(100)).unwrap();
    }
    consumer
}

async fn send(producer: &dyn TransactionalProducer, topic: &str, values: std::ops::Range<u32>) {
    for i in values {
        let value = i.to_string();
        let record = OutgoingRecord {
            topic,
            partition: 0,
            key: b"k",
            value: Some(value.as_bytes()),
            headers: None,
            timestamp: None,
        };
        let _ack = goka::kafka::send(producer, &record).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_its_messages_and_offsets_together_or_not_at_all() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &["tx-in", "tx-out"], 1).await;
    let consumer = member(&client, "tx-group", "tx-in");
    let group = consumer
        .group_metadata()
        .expect("a joined member has metadata");
    let producer = client.transactional_producer("tx-test").await.unwrap();

    // Committed: ten messages and the group's offset 5 of tx-in.
    producer.begin().unwrap();
    send(&*producer, "tx-out", 0..10).await;
    let offsets = [TopicPartitionOffset {
        topic: "tx-in".into(),
        partition: 0,
        offset: 5,
        metadata: "stream-time 7".into(),
    }];
    producer.send_offsets(&offsets, &group).await.unwrap();
    producer.commit().await.unwrap();
    assert_eq!(
        committed_offset(&broker, "tx-group", "tx-in", 0),
        Some(5),
        "the offsets came with the commit"
    );

    // Aborted: ten more messages and offset 9 never show.
    producer.begin().unwrap();
    send(&*producer, "tx-out", 10..20).await;
    let offsets = [TopicPartitionOffset {
        offset: 9,
        ..offsets[0].clone()
    }];
    producer.send_offsets(&offsets, &group).await.unwrap();
    producer.abort().await.unwrap();
    assert_eq!(committed_offset(&broker, "tx-group", "tx-in", 0), Some(5));

    // A third, committed: only the first and the third are read (librdkafka reads committed
    // by default).
    producer.begin().unwrap();
    send(&*producer, "tx-out", 20..25).await;
    producer.commit().await.unwrap();
    let read = read_until(&broker, "tx-out", 1, |m| m.len() >= 15);
    // Nothing more comes: the aborted messages stay hidden.
    let values: Vec<String> = read
        .iter()
        .map(|m| String::from_utf8(m.value.clone().unwrap()).unwrap())
        .collect();
    let expected: Vec<String> = (0..10).chain(20..25).map(|i: u32| i.to_string()).collect();
    assert_eq!(values, expected);
    consumer.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fenced_by_a_newer_one_cannot_commit_and_says_so() {
    let broker = TestBroker::start();
    let client = client(&broker);
    goka_tests::ensure_streams(&broker, &["fence-out"], 1).await;
    let old = client.transactional_producer("fence-test").await.unwrap();
    old.begin().unwrap();
    send(&*old, "fence-out", 0..3).await;

    // A newer producer of the same id takes over (a restarted instance): the old one's open
    // transaction is aborted by the coordinator, and the old producer is fenced.
    let new = client.transactional_producer("fence-test").await.unwrap();
    let error = old.commit().await.expect_err("a fenced producer committed");
    match &error {
        KafkaError::Transaction { fenced, .. } => assert!(fenced, "{error}"),
        other => panic!("not a transaction error: {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("fence-test") && text.contains("fenced"),
        "{text}"
    );

    new.begin().unwrap();
    send(&*new, "fence-out", 10..12).await;
    new.commit().await.unwrap();
    let read = read_until(&broker, "fence-out", 1, |m| m.len() >= 2);
    let values: Vec<String> = read
        .iter()
        .map(|m| String::from_utf8(m.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        values,
        ["10", "11"],
        "the fenced producer's messages stay hidden"
    );
}

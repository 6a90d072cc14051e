//! `goka_broker::LocalBroker`, the broker users start from their own tests and programs:
//! it serves a goka program as the README shows, goes with its value (process and data), runs
//! in the background until stopped by its folder, runs the stand-in broker where asked, and
//! says why when a node cannot start.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use goka::codec::StringCodec;
use goka::emitter::Emitter;
use goka::kafka::rdkafka_client::RdKafkaClient;
use goka::kafka::KafkaConfig;
use goka::reader::{ReadFrom, StreamReader};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_broker::{Kind, LocalBroker};

goka::stream!(pub Greetings = "local-greetings": String as StringCodec);

fn serves(bootstrap: &str) -> bool {
    bootstrap.split(',').all(|addr| {
        let addr: SocketAddr = addr.parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })
}

/// Waits up to 10 s for the OS to close a killed node's listener.
fn stops_serving(bootstrap: &str) -> bool {
    for _ in 0..100 {
        if bootstrap
            .split(',')
            .all(|addr| TcpStream::connect(addr.parse::<SocketAddr>().unwrap()).is_err())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_kafka_broker_serves_a_goka_program_and_goes_with_its_value() {
    let broker = LocalBroker::builder().kind(Kind::Kafka).start().unwrap();
    assert_eq!(broker.kind(), Kind::Kafka);
    let bootstrap = broker.bootstrap().to_owned();
    let dir = broker.dir().to_owned();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    let client = Arc::new(RdKafkaClient::new(KafkaConfig::new(&bootstrap)));
    let topics = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    assert_eq!(topics.ensure_stream(Greetings::NAME, 2).await.unwrap(), 2);
    let emitter = Emitter::<Greetings>::new(&*client).await.unwrap();
    for i in 0..10 {
        emitter
            .emit_sync(&format!("key-{i}"), &format!("hello {i}"))
            .await
            .unwrap();
    }
    let mut reader = StreamReader::<Greetings>::open(&*client, ReadFrom::Oldest)
        .await
        .unwrap();
    let mut read: Vec<String> = reader
        .read_to_end()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.value.unwrap())
        .collect();
    read.sort();
    let mut sent: Vec<String> = (0..10).map(|i| format!("hello {i}")).collect();
    sent.sort();
    assert_eq!(read, sent);
    drop((reader, emitter, topics, client));

    broker.stop();
    assert!(stops_serving(&bootstrap), "{bootstrap} still serves");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_background_broker_runs_until_stopped_by_its_folder() {
    let broker = LocalBroker::builder()
        .kind(Kind::Kafka)
        .background()
        .start()
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let pids = broker.pids();
    let dir = broker.detach();
    assert!(
        serves(&bootstrap),
        "a detached broker stopped with its value"
    );
    assert_eq!(
        goka_broker::stop_in(&dir, Duration::from_secs(30)).unwrap(),
        pids.len()
    );
    assert!(stops_serving(&bootstrap), "{bootstrap} still serves");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(
        goka_broker::stop_in(Path::new("/nonexistent"), Duration::ZERO).ok(),
        None
    );
}

#[test]
fn the_stand_in_broker_starts_when_asked_for() {
    let broker = LocalBroker::builder().kind(Kind::Tansu).start().unwrap();
    assert_eq!(broker.kind(), Kind::Tansu);
    let bootstrap = broker.bootstrap().to_owned();
    assert!(serves(&bootstrap));
    drop(broker);
    assert!(stops_serving(&bootstrap), "{bootstrap} still serves");
}

#[test]
fn a_node_that_cannot_start_says_why_with_its_log() {
    // A node id Kafka refuses: the storage formatter stops, and the error shows what it said.
    let error = LocalBroker::builder()
        .kind(Kind::Kafka)
        .setting("node.id=-7")
        .start()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("Kafka node 1"), "{error}");
    assert!(error.contains("could not format"), "{error}");
    assert!(error.contains("node.id"), "{error}");

    let two = LocalBroker::builder().kind(Kind::Kafka).nodes(2).start();
    let error = two.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("1 or 3"), "{error}");
}

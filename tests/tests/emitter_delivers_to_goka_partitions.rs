//! The emitter puts every key where goka's partitioner says, carries headers and tombstones,
//! reports failures as errors (also of messages nobody awaits), and loses nothing it reported
//! delivered when connections are cut in the middle of a burst.

use std::collections::HashSet;
use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::emitter::{EmitError, Emitter};
use goka::kafka::Headers;
use goka::partitioner::{GokaPartitioner, Partitioner};
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka_tests::{client, read_all, read_until, TestBroker};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Event {
    n: u32,
}

goka::stream!(Events = "events": Event as Json);
goka::stream!(Missing = "missing-topic": String as StringCodec);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_in_goka_partitions_with_headers_and_tombstones() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Events>::ensuring(&*client, &manager, 12)
        .await
        .unwrap();

    let mut pending = Vec::new();
    for n in 0..300u32 {
        let key = format!("user-{}", n % 50);
        pending.push((key.clone(), emitter.emit(&key, &Event { n }).await.unwrap()));
    }
    for (key, delivery) in pending {
        let delivery = delivery.await.unwrap();
        assert_eq!(
            delivery.partition,
            GokaPartitioner.partition(key.as_bytes(), 12),
            "{key}"
        );
    }
    let mut headers = Headers::new();
    headers
        .insert("trace-id", "abc")
        .insert("source", vec![0u8, 1, 2]);
    let with_headers = emitter
        .emit_with_headers(&"h".to_string(), &Event { n: 1000 }, &headers)
        .await
        .unwrap()
        .await
        .unwrap();
    emitter
        .emit_tombstone(&"user-1".to_string())
        .await
        .unwrap()
        .await
        .unwrap();
    emitter.finish().await.unwrap();

    let stats = emitter.stats();
    assert_eq!(
        (stats.messages, stats.errors, stats.pending),
        (302, 0, 0),
        "{stats:?}"
    );

    let messages = read_all(&broker, "events", 12, 302);
    assert_eq!(messages.len(), 302);
    let mut seen = HashSet::new();
    for m in &messages {
        let key = String::from_utf8(m.key.clone()).unwrap();
        assert_eq!(m.partition, GokaPartitioner.partition(&m.key, 12), "{key}");
        match &m.value {
            Some(v) => {
                let event: Event = serde_json::from_slice(v).unwrap();
                seen.insert(event.n);
            }
            None => assert_eq!(key, "user-1", "only the tombstone has no value"),
        }
        if key == "h" {
            assert_eq!(m.partition, with_headers.partition);
            assert_eq!(m.offset, with_headers.offset);
            assert_eq!(
                m.headers,
                vec![
                    ("trace-id".to_string(), b"abc".to_vec()),
                    ("source".to_string(), vec![0, 1, 2])
                ]
            );
        }
    }
    assert_eq!(seen.len(), 301, "every value arrived once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_nobody_awaits_are_counted_once_finished() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Events>::ensuring(&*client, &manager, 4)
        .await
        .unwrap();
    let mut bytes = 0;
    for n in 0..500u32 {
        let key = format!("k{}", n % 30);
        bytes += key.len() + serde_json::to_vec(&Event { n }).unwrap().len();
        // goka's way: emit without awaiting, then finish.
        drop(emitter.emit(&key, &Event { n }).await.unwrap());
    }
    emitter.finish().await.unwrap();
    let stats = emitter.stats();
    assert_eq!(
        (stats.messages, stats.bytes, stats.errors, stats.pending),
        (500, bytes as u64, 0, 0),
        "{stats:?}"
    );
    assert_eq!(read_all(&broker, "events", 4, 500).len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_an_error_naming_it() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let err = Emitter::<Missing>::new(&*client).await.unwrap_err();
    assert!(matches!(err, EmitError::Setup { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("missing-topic") && text.contains("does not exist"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_makes_deliveries_fail_loudly() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Events>::ensuring(&*client, &manager, 2)
        .await
        .unwrap();
    emitter
        .emit_sync(&"before".to_string(), &Event { n: 0 })
        .await
        .unwrap();
    drop(broker);

    // Nobody awaits this one: its failure is counted all the same.
    drop(
        emitter
            .emit(&"unawaited".to_string(), &Event { n: 2 })
            .await
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let err = emitter
        .emit_sync(&"after".to_string(), &Event { n: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, EmitError::Delivery { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("events") && text.contains("after"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "failed within the message timeout"
    );
    // The unawaited failure was seen by nobody: `finish` says so, with its key.
    let err = emitter.finish().await.unwrap_err();
    assert!(
        matches!(err, EmitError::Undelivered { failed: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unawaited"), "{err}");
    let stats = emitter.stats();
    assert_eq!((stats.errors, stats.pending), (2, 0), "{stats:?}");
    // Reported once: the next finish has nothing new to say.
    emitter.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_lose_nothing_reported_delivered() {
    let broker = TestBroker::start_behind_proxy();
    let proxy = broker.proxy().unwrap();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    let emitter = Emitter::<Events>::ensuring(&*client, &manager, 4)
        .await
        .unwrap();

    let total = 5_000u32;
    let mut pending = Vec::new();
    for n in 0..total {
        if n % 1_000 == 500 {
            proxy.cut();
        }
        pending.push((
            n,
            emitter
                .emit(&format!("k{}", n % 97), &Event { n })
                .await
                .unwrap(),
        ));
    }
    let mut delivered = HashSet::new();
    let mut failed = 0;
    for (n, delivery) in pending {
        match delivery.await {
            Ok(_) => {
                delivered.insert(n);
            }
            Err(_) => failed += 1,
        }
    }
    assert!(
        proxy.accepted() >= 2,
        "the producer reconnected after the cuts"
    );
    assert!(
        delivered.len() > total as usize / 2,
        "most messages get through: {failed} failed"
    );

    // Retries after a cut may store a message twice, so read until every delivered value is
    // there (or time runs out), not just as many messages as were delivered.
    let decode = |m: &goka_tests::RawMessage| {
        m.value
            .as_ref()
            .map(|v| serde_json::from_slice::<Event>(v).unwrap().n)
    };
    let messages = read_until(&broker, "events", 4, |read| {
        read.len() >= delivered.len() && {
            let stored: HashSet<u32> = read.iter().filter_map(decode).collect();
            delivered.is_subset(&stored)
        }
    });
    let stored: HashSet<u32> = messages.iter().filter_map(decode).collect();
    let lost: Vec<_> = delivered.difference(&stored).take(10).collect();
    assert!(
        lost.is_empty(),
        "reported delivered but not stored: {lost:?}"
    );
    println!(
        "{} delivered, {failed} failed, {} stored ({} duplicates)",
        delivered.len(),
        stored.len(),
        messages.len() - stored.len()
    );
}

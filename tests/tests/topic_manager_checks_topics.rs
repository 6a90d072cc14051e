//! The topic manager creates compacted tables, reports partition mismatches and
//! co-partitioning problems with every count, and creates nothing when it may not.

use goka::kafka::Client;
use goka::topic_manager::{TopicManager, TopicManagerConfig, TopicManagerError};
use goka_tests::{client, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_created_compacted_and_counts_are_checked() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();

    assert_eq!(manager.ensure_table("counts-table", 6).await.unwrap(), 6);
    let config = client
        .admin()
        .unwrap()
        .topic_config("counts-table")
        .await
        .unwrap();
    assert_eq!(
        config.get("cleanup.policy").map(String::as_str),
        Some("compact"),
        "{config:?}"
    );
    assert_eq!(
        manager.ensure_table("counts-table", 6).await.unwrap(),
        6,
        "idempotent"
    );

    let err = manager.ensure_table("counts-table", 4).await.unwrap_err();
    assert!(
        matches!(
            err,
            TopicManagerError::PartitionMismatch {
                expected: 4,
                actual: 6,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("counts-table") && text.contains('6') && text.contains('4'),
        "{text}"
    );

    assert_eq!(manager.ensure_stream("clicks", 6).await.unwrap(), 6);
    assert_eq!(manager.ensure_stream("other", 3).await.unwrap(), 3);
    assert_eq!(
        manager
            .check_copartitioned(&["clicks", "counts-table"])
            .await
            .unwrap(),
        6
    );
    let err = manager
        .check_copartitioned(&["clicks", "other", "nowhere"])
        .await
        .unwrap_err();
    let text = err.to_string();
    for part in [
        "\"clicks\" has 6",
        "\"other\" has 3",
        "\"nowhere\" is missing",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_topic_is_not_accepted_as_a_table() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    manager.ensure_stream("events", 2).await.unwrap();
    let err = manager.ensure_table("events", 2).await.unwrap_err();
    assert!(
        matches!(err, TopicManagerError::NotCompacted { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("events"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_not_created_without_permission() {
    let broker = TestBroker::start();
    let client = client(&broker);
    let config = TopicManagerConfig {
        auto_create: false,
        ..Default::default()
    };
    let manager = TopicManager::new(&*client, config).unwrap();
    let err = manager.ensure_stream("not-there", 2).await.unwrap_err();
    assert!(matches!(err, TopicManagerError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("not-there"), "{err}");
    assert_eq!(
        manager.partitions_if_exists("not-there").await.unwrap(),
        None,
        "nothing was created"
    );
}

goka::stream!(pub Orders = "orders-never-created": String as goka::codec::StringCodec);

/// Keeps the last order per customer.
#[goka::processor(group = "orders-keeper-without-input")]
#[input(topic = Orders, handler = Self::on_order)]
#[persist(value = String, codec = goka::codec::StringCodec)]
#[derive(Debug)]
pub struct Keeper;

impl Keeper {
    fn on_order(
        &self,
        ctx: &mut goka::context::Context<'_, Self>,
        order: String,
    ) -> Result<(), goka::context::CallbackError> {
        ctx.set_value(&order)
    }
}

/// The test brokers, like most production clusters, create no topic on first use: a missing
/// input or emitter topic is an error that names it and the call that creates it, and
/// nothing creates it behind the user's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_named_with_the_call_that_creates_it() {
    use goka::topic::Topic;
    let broker = TestBroker::start();
    let client = client(&broker);
    let emitter = goka::emitter::Emitter::<Orders>::new(&*client).await;
    let error = emitter.err().map(|e| e.to_string()).unwrap_or_default();
    for part in [Orders::NAME, "does not exist", "Emitter::ensuring"] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }

    let processor = goka::processor::Processor::new(Keeper, client.clone(), Default::default());
    let stopped = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        processor.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("a processor without its input stops instead of waiting");
    let error = stopped.err().map(|e| e.to_string()).unwrap_or_default();
    for part in [
        "orders-keeper-without-input",
        Orders::NAME,
        "does not exist",
        "TopicManager::ensure_stream",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    let manager = TopicManager::new(&*client, TopicManagerConfig::default()).unwrap();
    assert_eq!(
        manager.partitions_if_exists(Orders::NAME).await.unwrap(),
        None,
        "nothing created the input"
    );
}

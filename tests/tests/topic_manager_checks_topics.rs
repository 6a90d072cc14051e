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

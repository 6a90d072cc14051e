//! Creating and checking topics (goka's `TopicManager`).
//!
//! Processors and emitters ask the topic manager for the partition count of the topics they
//! use, and have it create the topics they own (a group's table and loop topics) when the
//! user allows it. Tables are created compacted; a table topic that is not compacted, a
//! missing topic that may not be created, and topics that should be co-partitioned but are
//! not, are errors that name every topic involved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kafka::{Admin, Client, KafkaError, TopicSpec};

mod error;

pub use self::error::TopicManagerError;
use self::error::MISSING_STREAM;

/// How the topic manager creates topics (goka's `TopicManagerConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicManagerConfig {
    /// Create missing topics (default `true`). When `false`, a missing topic is an error.
    pub auto_create: bool,
    /// Replication factor of created topics; `None` lets the broker choose
    /// (`default.replication.factor`).
    pub replication: Option<u16>,
    /// Replication factor of created table topics, in place of `replication` (goka's
    /// `Table.Replication`).
    pub table_replication: Option<u16>,
    /// Replication factor of created stream and loop topics, in place of `replication`
    /// (goka's `Stream.Replication`).
    pub stream_replication: Option<u16>,
    /// Extra configs of created stream topics (for example `retention.ms`);
    /// `cleanup.policy=delete` unless it says otherwise.
    pub stream_config: BTreeMap<String, String>,
    /// Extra configs of created table topics; `cleanup.policy=compact` is always set.
    pub table_config: BTreeMap<String, String>,
    /// Retention of created loop topics (`<group>-loop`), unless `stream_config` sets
    /// `retention.ms`: goka's stream retention, 1 hour by default. A loop message is read
    /// moments after it is written; one left unread longer belongs to a group that was down
    /// for that long.
    pub loop_retention: Duration,
    /// What an existing stream topic with another partition count than asked for does
    /// (goka's `MismatchBehavior`, whose default ignores it). Tables and loop topics must
    /// always match, since they are co-partitioned with the inputs. Default:
    /// [`Mismatch::Fail`].
    pub mismatch: Mismatch,
    /// How long to wait for a created topic to appear in the metadata.
    pub create_timeout: Duration,
}

/// What a stream topic with another partition count than asked for does
/// ([`TopicManagerConfig::mismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mismatch {
    /// An error naming the topic and both counts.
    #[default]
    Fail,
    /// A warning in the log; the topic is used with the partitions it has.
    Warn,
    /// The topic is used with the partitions it has.
    Ignore,
}

impl Default for TopicManagerConfig {
    fn default() -> Self {
        Self {
            auto_create: true,
            replication: None,
            table_replication: None,
            stream_replication: None,
            stream_config: BTreeMap::new(),
            table_config: BTreeMap::new(),
            loop_retention: Duration::from_secs(3600),
            mismatch: Mismatch::Fail,
            create_timeout: Duration::from_secs(30),
        }
    }
}

/// How long [`TopicManager::check_copartitioned`] looks again for a topic it does not find.
pub const MISSING_GRACE: Duration = Duration::from_secs(3);

/// Creates and checks topics.
#[derive(Clone)]
pub struct TopicManager {
    admin: Arc<dyn Admin>,
    config: TopicManagerConfig,
}

impl std::fmt::Debug for TopicManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TopicManager {
    /// A topic manager on `client`'s cluster.
    pub fn new(client: &dyn Client, config: TopicManagerConfig) -> Result<Self, TopicManagerError> {
        Ok(Self {
            admin: client.admin()?,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TopicManagerConfig {
        &self.config
    }

    /// Partition count of an existing topic; a missing topic is an error.
    pub async fn partitions(&self, topic: &str) -> Result<u32, TopicManagerError> {
        self.admin
            .partitions(topic)
            .await?
            .ok_or_else(|| TopicManagerError::Missing {
                topic: topic.to_owned(),
                create: MISSING_STREAM,
            })
    }

    /// Partition count of a topic, or `None` if it does not exist.
    pub async fn partitions_if_exists(
        &self,
        topic: &str,
    ) -> Result<Option<u32>, TopicManagerError> {
        Ok(self.admin.partitions(topic).await?)
    }

    /// Makes sure a stream topic exists with `partitions` partitions (creating it if allowed)
    /// and returns the count.
    pub async fn ensure_stream(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<u32, TopicManagerError> {
        let count = self
            .ensure(
                topic,
                partitions,
                self.stream_config(),
                self.stream_replication(),
                false,
            )
            .await?;
        Ok(count)
    }

    /// Makes sure a group's loop topic exists with `partitions` partitions (creating it as
    /// a stream with the loop retention if allowed) and returns the count, which must match.
    pub async fn ensure_loop(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<u32, TopicManagerError> {
        let mut config = self.stream_config();
        config
            .entry("retention.ms".into())
            .or_insert_with(|| self.config.loop_retention.as_millis().to_string());
        self.ensure(topic, partitions, config, self.stream_replication(), true)
            .await
    }

    fn stream_config(&self) -> BTreeMap<String, String> {
        let mut config = self.config.stream_config.clone();
        config
            .entry("cleanup.policy".into())
            .or_insert_with(|| "delete".into());
        config
    }

    fn stream_replication(&self) -> Option<u16> {
        self.config.stream_replication.or(self.config.replication)
    }

    /// Makes sure a compacted table topic exists with `partitions` partitions (creating it if
    /// allowed), checks that it is compacted, and returns the count.
    pub async fn ensure_table(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<u32, TopicManagerError> {
        let mut config = self.config.table_config.clone();
        config.insert("cleanup.policy".into(), "compact".into());
        let replication = self.config.table_replication.or(self.config.replication);
        let count = self
            .ensure(topic, partitions, config, replication, true)
            .await?;
        let policy = self.cleanup_policy(topic).await?;
        if !policy.split(',').any(|p| p.trim() == "compact") {
            return Err(TopicManagerError::NotCompacted {
                topic: topic.to_owned(),
                policy,
            });
        }
        Ok(count)
    }

    /// The `cleanup.policy` of `topic`, empty if the cluster gives none. Kafka gives every
    /// existing topic one (its own or the broker default), but a broker that has not yet
    /// learnt of a topic just created answers with no configs at all (seen on a three-node
    /// cluster, which would have made a new group table "not compacted"): asked again for up
    /// to [`MISSING_GRACE`].
    async fn cleanup_policy(&self, topic: &str) -> Result<String, TopicManagerError> {
        let deadline = Instant::now() + MISSING_GRACE.min(self.config.create_timeout);
        loop {
            let policy = self
                .admin
                .topic_config(topic)
                .await?
                .remove("cleanup.policy");
            match policy {
                Some(policy) => return Ok(policy),
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => return Ok(String::new()),
            }
        }
    }

    /// Checks that all `topics` exist with the same partition count and returns it. The error
    /// lists every topic with its count. A missing topic is looked for again for up to
    /// [`MISSING_GRACE`] first: a topic another client just created is not in every
    /// broker's metadata at once (Tansu even answers "unknown" for a moment after
    /// it answered with the topic).
    pub async fn check_copartitioned(&self, topics: &[&str]) -> Result<u32, TopicManagerError> {
        let deadline = Instant::now() + MISSING_GRACE.min(self.config.create_timeout);
        loop {
            let mut counts = Vec::with_capacity(topics.len());
            for topic in topics {
                counts.push(((*topic).to_owned(), self.admin.partitions(topic).await?));
            }
            let first = counts.first().and_then(|(_, n)| *n);
            match first {
                Some(n) if counts.iter().all(|(_, c)| *c == Some(n)) => return Ok(n),
                _ if counts.iter().any(|(_, c)| c.is_none()) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    // Only missing, the others agreeing: say who creates it.
                    let mut present = counts.iter().filter_map(|(_, c)| *c);
                    let agree = present.next().is_none_or(|n| present.all(|c| c == n));
                    let missing = counts.iter().find(|(_, c)| c.is_none());
                    if let (true, Some((topic, _))) = (agree, missing) {
                        return Err(TopicManagerError::Missing {
                            topic: topic.clone(),
                            create: MISSING_STREAM,
                        });
                    }
                    return Err(TopicManagerError::NotCopartitioned { topics: counts });
                }
            }
        }
    }

    /// Creates `topic` if it is missing and allowed; an existing topic's partition count must
    /// match when `strict`, or else follows the mismatch setting.
    async fn ensure(
        &self,
        topic: &str,
        partitions: u32,
        config: BTreeMap<String, String>,
        replication: Option<u16>,
        strict: bool,
    ) -> Result<u32, TopicManagerError> {
        if let Some(actual) = self.admin.partitions(topic).await? {
            let mismatch = if strict {
                Mismatch::Fail
            } else {
                self.config.mismatch
            };
            return check_count(topic, partitions, actual, mismatch);
        }
        if !self.config.auto_create {
            return Err(TopicManagerError::Missing {
                topic: topic.to_owned(),
                create: "TopicManagerConfig::auto_create is off; create it before starting, \
                         or turn auto_create on",
            });
        }
        let spec = TopicSpec {
            name: topic.to_owned(),
            partitions,
            replication,
            config,
        };
        match self.admin.create_topic(&spec).await {
            // Someone else created it meanwhile: check what they created.
            Ok(()) | Err(KafkaError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let actual = self.wait_visible(topic).await?;
        check_count(topic, partitions, actual, Mismatch::Fail)
    }

    async fn wait_visible(&self, topic: &str) -> Result<u32, TopicManagerError> {
        let deadline = Instant::now() + self.config.create_timeout;
        loop {
            if let Some(n) = self.admin.partitions(topic).await? {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                return Err(TopicManagerError::NotVisible {
                    topic: topic.to_owned(),
                    timeout: self.config.create_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn check_count(
    topic: &str,
    expected: u32,
    actual: u32,
    mismatch: Mismatch,
) -> Result<u32, TopicManagerError> {
    match mismatch {
        _ if actual == expected => Ok(actual),
        Mismatch::Fail => Err(TopicManagerError::PartitionMismatch {
            topic: topic.to_owned(),
            expected,
            actual,
        }),
        Mismatch::Warn => {
            tracing::warn!(
                topic,
                expected,
                actual,
                "topic has another partition count than asked for; using it as it is"
            );
            Ok(actual)
        }
        Mismatch::Ignore => Ok(actual),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use futures::FutureExt;

    use super::*;

    /// An admin that keeps what it was asked to create.
    #[derive(Default)]
    struct Recording {
        topics: Mutex<HashMap<String, TopicSpec>>,
        /// How many more config requests are answered with no configs, as a broker that
        /// has not yet learnt of a new topic answers.
        configs_unknown: std::sync::atomic::AtomicU32,
    }

    impl Admin for Recording {
        fn partitions(&self, topic: &str) -> BoxFuture<'_, Result<Option<u32>, KafkaError>> {
            let found = self
                .topics
                .lock()
                .ok()
                .and_then(|t| t.get(topic).map(|s| s.partitions));
            async move { Ok(found) }.boxed()
        }
        fn create_topic(&self, spec: &TopicSpec) -> BoxFuture<'_, Result<(), KafkaError>> {
            if let Ok(mut topics) = self.topics.lock() {
                topics.insert(spec.name.clone(), spec.clone());
            }
            async { Ok(()) }.boxed()
        }
        fn topic_config(
            &self,
            topic: &str,
        ) -> BoxFuture<'_, Result<BTreeMap<String, String>, KafkaError>> {
            use std::sync::atomic::Ordering;
            let unknown = self
                .configs_unknown
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let config = self
                .topics
                .lock()
                .ok()
                .and_then(|t| t.get(topic).map(|s| s.config.clone()))
                .filter(|_| !unknown);
            async move { Ok(config.unwrap_or_default()) }.boxed()
        }
        fn watermarks(
            &self,
            _topic: &str,
            _partition: i32,
        ) -> BoxFuture<'_, Result<(i64, i64), KafkaError>> {
            async { Ok((0, 0)) }.boxed()
        }
    }

    fn manager(config: TopicManagerConfig) -> (TopicManager, Arc<Recording>) {
        let admin = Arc::new(Recording::default());
        let manager = TopicManager {
            admin: admin.clone(),
            config,
        };
        (manager, admin)
    }

    fn created(admin: &Recording, topic: &str) -> TopicSpec {
        admin
            .topics
            .lock()
            .ok()
            .and_then(|t| t.get(topic).cloned())
            .unwrap_or_else(|| panic!("{topic} was not created"))
    }

    #[tokio::test]
    async fn streams_tables_and_loop_topics_are_created_as_goka_creates_them() {
        let (manager, admin) = manager(TopicManagerConfig {
            replication: Some(3),
            table_replication: Some(2),
            ..Default::default()
        });
        manager
            .ensure_stream("events", 4)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        manager
            .ensure_table("g-table", 4)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        manager
            .ensure_loop("g-loop", 4)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let events = created(&admin, "events");
        assert_eq!(
            events.config.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
        assert_eq!(
            events.config.get("retention.ms"),
            None,
            "the broker's retention"
        );
        assert_eq!(events.replication, Some(3));
        let table = created(&admin, "g-table");
        assert_eq!(
            table.config.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert_eq!(
            table.replication,
            Some(2),
            "tables have a replication of their own"
        );
        let looped = created(&admin, "g-loop");
        assert_eq!(
            looped.config.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
        assert_eq!(
            looped.config.get("retention.ms").map(String::as_str),
            Some("3600000"),
            "goka's stream retention, an hour"
        );
        assert_eq!((looped.partitions, looped.replication), (4, Some(3)));
    }

    #[tokio::test]
    async fn a_new_table_whose_configs_are_not_known_yet_is_asked_again() {
        let (manager, admin) = manager(TopicManagerConfig::default());
        admin
            .configs_unknown
            .store(3, std::sync::atomic::Ordering::SeqCst);
        let count = manager
            .ensure_table("g-table", 4)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count, 4);
        assert_eq!(
            admin
                .configs_unknown
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "asked until the configs came"
        );
    }

    #[tokio::test]
    async fn a_stream_with_another_partition_count_fails_warns_or_is_taken_as_it_is() {
        for (mismatch, expected) in [
            (Mismatch::Fail, None),
            (Mismatch::Warn, Some(3)),
            (Mismatch::Ignore, Some(3)),
        ] {
            let (manager, _admin) = manager(TopicManagerConfig {
                mismatch,
                ..Default::default()
            });
            manager
                .ensure_stream("events", 3)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let outcome = manager.ensure_stream("events", 8).await;
            match expected {
                None => {
                    let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(error.contains("has 3 partitions, but 8"), "{error}");
                }
                Some(count) => {
                    assert_eq!(outcome.ok(), Some(count), "{mismatch:?}");
                }
            }
            // Tables and loop topics are co-partitioned with the inputs: always checked.
            manager
                .ensure_loop("g-loop", 3)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                manager.ensure_loop("g-loop", 8).await.is_err(),
                "{mismatch:?}"
            );
        }
    }
}

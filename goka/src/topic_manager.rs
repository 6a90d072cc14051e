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

/// How the topic manager creates topics (goka's `TopicManagerConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicManagerConfig {
    /// Create missing topics (default `true`). When `false`, a missing topic is an error.
    pub auto_create: bool,
    /// Replication factor of created topics; `None` lets the broker choose
    /// (`default.replication.factor`).
    pub replication: Option<u16>,
    /// Extra configs of created stream topics (for example `retention.ms`).
    pub stream_config: BTreeMap<String, String>,
    /// Extra configs of created table topics; `cleanup.policy=compact` is always set.
    pub table_config: BTreeMap<String, String>,
    /// How long to wait for a created topic to appear in the metadata.
    pub create_timeout: Duration,
}

impl Default for TopicManagerConfig {
    fn default() -> Self {
        Self {
            auto_create: true,
            replication: None,
            stream_config: BTreeMap::new(),
            table_config: BTreeMap::new(),
            create_timeout: Duration::from_secs(30),
        }
    }
}

/// How long [`TopicManager::check_copartitioned`] looks again for a topic it does not find.
pub const MISSING_GRACE: Duration = Duration::from_secs(3);

/// Errors of the topic manager, naming the topics involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicManagerError {
    /// The topic does not exist and may not be created.
    #[error(
        "topic {topic:?} does not exist; create it, or allow the topic manager to (auto_create)"
    )]
    Missing {
        /// The topic.
        topic: String,
    },
    /// The topic exists with another partition count than required.
    #[error("topic {topic:?} has {actual} partitions, but {expected} are required")]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Partitions required.
        expected: u32,
        /// Partitions it has.
        actual: u32,
    },
    /// Topics that must be co-partitioned are not.
    #[error("topics are not co-partitioned (same partition count needed): {}", describe_counts(.topics))]
    NotCopartitioned {
        /// Each topic and its partition count (`None`: missing).
        topics: Vec<(String, Option<u32>)>,
    },
    /// A table topic is not compacted.
    #[error(
        "table topic {topic:?} has cleanup.policy={policy:?}; tables need cleanup.policy=compact"
    )]
    NotCompacted {
        /// The topic.
        topic: String,
        /// Its cleanup policy.
        policy: String,
    },
    /// The topic was created but did not show up in the metadata in time.
    #[error("topic {topic:?} was created but did not appear in the metadata within {timeout:?}")]
    NotVisible {
        /// The topic.
        topic: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The client failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

fn describe_counts(topics: &[(String, Option<u32>)]) -> String {
    topics
        .iter()
        .map(|(topic, count)| match count {
            Some(n) => format!("{topic:?} has {n}"),
            None => format!("{topic:?} is missing"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

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
        self.ensure(topic, partitions, self.config.stream_config.clone())
            .await
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
        let count = self.ensure(topic, partitions, config).await?;
        let policy = self
            .admin
            .topic_config(topic)
            .await?
            .get("cleanup.policy")
            .cloned()
            .unwrap_or_default();
        if !policy.split(',').any(|p| p.trim() == "compact") {
            return Err(TopicManagerError::NotCompacted {
                topic: topic.to_owned(),
                policy,
            });
        }
        Ok(count)
    }

    /// Checks that all `topics` exist with the same partition count and returns it. The error
    /// lists every topic with its count. A missing topic is looked for again for up to
    /// [`MISSING_GRACE`] first: a topic another client just created is not in every
    /// broker's metadata at once (the test broker even answers "unknown" for a moment after
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
                _ => return Err(TopicManagerError::NotCopartitioned { topics: counts }),
            }
        }
    }

    async fn ensure(
        &self,
        topic: &str,
        partitions: u32,
        config: BTreeMap<String, String>,
    ) -> Result<u32, TopicManagerError> {
        if let Some(actual) = self.admin.partitions(topic).await? {
            return check_count(topic, partitions, actual);
        }
        if !self.config.auto_create {
            return Err(TopicManagerError::Missing {
                topic: topic.to_owned(),
            });
        }
        let spec = TopicSpec {
            name: topic.to_owned(),
            partitions,
            replication: self.config.replication,
            config,
        };
        match self.admin.create_topic(&spec).await {
            // Someone else created it meanwhile: check what they created.
            Ok(()) | Err(KafkaError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let actual = self.wait_visible(topic).await?;
        check_count(topic, partitions, actual)
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

fn check_count(topic: &str, expected: u32, actual: u32) -> Result<u32, TopicManagerError> {
    if actual == expected {
        Ok(actual)
    } else {
        Err(TopicManagerError::PartitionMismatch {
            topic: topic.to_owned(),
            expected,
            actual,
        })
    }
}

//! The consumer group member on librdkafka: a `BaseConsumer` polled from one thread, with the
//! range assignor (co-partitioned topics stay together) and manual commits, so offsets are
//! committed only for work that is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::rdkafka_client::{detach, is_fatal};
use super::{ConsumerEvent, GroupConsumer, KafkaError, RebalanceListener, TopicPartitionOffset};

/// How long leaving the group may take before the member is abandoned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct RdGroupConsumer {
    consumer: Option<BaseConsumer<GroupContext>>,
    group: String,
    topics: HashMap<String, Arc<str>>,
    /// Messages polled since the topic names were last allocated anew.
    polled: usize,
}

/// Messages that share one allocation of their topic's name (see `fresh_topic`).
const TOPIC_SHARED_BY: usize = 1_024;

pub(super) struct GroupContext {
    listener: Arc<dyn RebalanceListener>,
    group: String,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let partitions = list(revoked);
            tracing::info!(group = %self.group, ?partitions, "partitions revoked");
            let offsets = self.listener.revoking(&partitions);
            if offsets.is_empty() {
                return;
            }
            match offsets_list(&offsets) {
                Ok(tpl) => {
                    if let Err(error) = consumer.commit(&tpl, CommitMode::Sync) {
                        tracing::error!(group = %self.group, %error, "commit on revoke failed");
                    }
                }
                Err(error) => {
                    tracing::error!(group = %self.group, %error, "commit on revoke failed")
                }
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        let Err(error) = result else {
            return;
        };
        let offsets: Vec<TopicPartitionOffset> = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(TopicPartitionOffset {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    offset,
                }),
                _ => None,
            })
            .collect();
        let error = KafkaError::Consume {
            topic: offsets.first().map(|o| o.topic.clone()).unwrap_or_default(),
            message: format!("group {}: commit failed: {error}", self.group),
        };
        self.listener.commit_failed(&offsets, &error);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let partitions = list(assigned);
                tracing::info!(group = %self.group, ?partitions, "partitions assigned");
                // librdkafka keeps an application's pause across unassign and assign: a
                // partition paused for a full queue before it was revoked would come back
                // paused and never be fetched again. Whatever waited was dropped on revoke.
                if let Err(error) = consumer.resume(assigned) {
                    tracing::error!(group = %self.group, %error, "cannot resume assigned partitions");
                }
                self.listener.assigned(&partitions);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::error!(group = %self.group, %error, "rebalance failed")
            }
        }
    }
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn offsets_list(offsets: &[TopicPartitionOffset]) -> Result<TopicPartitionList, RdError> {
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset))?;
    }
    Ok(tpl)
}

impl RdGroupConsumer {
    pub(super) fn join(
        mut config: ClientConfig,
        group: &str,
        topics: &[&str],
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<Self, KafkaError> {
        let setup_error = |message: String| KafkaError::Consume {
            topic: topics.join(","),
            message: format!("group {group}: {message}"),
        };
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("partition.assignment.strategy", "range");
        // A new group starts at the oldest message, and a member that died is noticed within
        // 10 s (goka's default), unless the user chose otherwise.
        for (key, value) in [
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
        ] {
            super::rdkafka_client::set_default(&mut config, key, value);
        }
        super::rdkafka_client::fetch_defaults(&mut config);
        let context = GroupContext {
            listener,
            group: group.to_owned(),
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|e| setup_error(e.to_string()))?;
        consumer
            .subscribe(topics)
            .map_err(|e| setup_error(e.to_string()))?;
        Ok(Self {
            consumer: Some(consumer),
            group: group.to_owned(),
            topics: topics
                .iter()
                .map(|t| ((*t).to_owned(), Arc::from(*t)))
                .collect(),
            polled: 0,
        })
    }

    fn error(&self, topic: &str, e: impl std::fmt::Display) -> KafkaError {
        KafkaError::Consume {
            topic: topic.to_owned(),
            message: format!("group {}: {e}", self.group),
        }
    }

    fn partition_list(topic: &str, partition: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        tpl
    }
}

impl GroupConsumer for RdGroupConsumer {
    fn poll(&mut self, timeout: Duration) -> Option<Result<ConsumerEvent, KafkaError>> {
        let consumer = self.consumer.as_ref()?;
        let event = match consumer.poll(timeout)? {
            Ok(message) => {
                self.polled += 1;
                if self.polled >= TOPIC_SHARED_BY {
                    self.polled = 0;
                    for name in self.topics.values_mut() {
                        *name = super::rdkafka_client::fresh_topic(name);
                    }
                }
                let topic = self
                    .topics
                    .get(rdkafka::Message::topic(&message))
                    .cloned()
                    .unwrap_or_else(|| Arc::from(rdkafka::Message::topic(&message)));
                Ok(ConsumerEvent::Message(detach(&topic, &message)))
            }
            Err(e) if is_fatal(&e) => Err(self.error("(group)", e)),
            Err(e) => Ok(ConsumerEvent::Transient(self.error("(group)", e))),
        };
        Some(event)
    }

    fn pause(&mut self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        consumer
            .pause(&Self::partition_list(topic, partition))
            .map_err(|e| self.error(topic, e))
    }

    fn resume(&mut self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        consumer
            .resume(&Self::partition_list(topic, partition))
            .map_err(|e| self.error(topic, e))
    }

    fn commit(&mut self, offsets: &[TopicPartitionOffset], sync: bool) -> Result<(), KafkaError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = offsets_list(offsets).map_err(|e| self.error(&offsets[0].topic, e))?;
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        consumer
            .commit(&tpl, mode)
            .map_err(|e| self.error(&offsets[0].topic, e))
    }

    fn close(mut self: Box<Self>) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        // Leaving the group was seen to hang on some brokers: give it a bounded time on a
        // thread of its own.
        let (done, finished) = std::sync::mpsc::channel();
        let group = self.group.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("goka-close-{group}"))
            .spawn(move || {
                consumer.unsubscribe();
                drop(consumer);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => {
                if finished.recv_timeout(CLOSE_TIMEOUT).is_err() {
                    tracing::warn!(group = %group, "leaving the consumer group timed out; abandoning the member");
                }
            }
            Err(error) => {
                tracing::warn!(group = %group, %error, "cannot start a thread to leave the group")
            }
        }
    }
}

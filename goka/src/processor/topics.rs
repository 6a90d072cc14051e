//! What a processor checks and creates before it joins its group: the graph's rules, the
//! co-partitioning of its inputs and joined tables, and the topics it owns or writes.

use std::collections::HashMap;

use super::config::ProcessorConfig;
use super::error::ProcessorError;
use super::policies;
use crate::group::Group;
use crate::kafka::Client;
use crate::topic_manager::TopicManager;

/// The error of a start that [`retry`](crate::kafka::retry) stopped.
pub(super) fn gave_up(
    group: &'static str,
    stopped: crate::kafka::Stopped<ProcessorError>,
) -> ProcessorError {
    match stopped {
        crate::kafka::Stopped::Failed(error) => error,
        crate::kafka::Stopped::GaveUp {
            error,
            attempts,
            failing_for,
        } => ProcessorError::Unreachable {
            group,
            attempts,
            failing_for,
            source: Box::new(error),
        },
    }
}

/// Validates the graph of `P`, checks that its inputs and joined tables are co-partitioned,
/// and creates the table, loop, dead-letter and missing output topics. Returns the
/// partition count of every topic the group writes to.
pub(crate) async fn prepare_topics<P: Group>(
    client: &dyn Client,
    config: &ProcessorConfig,
) -> Result<HashMap<&'static str, u32>, ProcessorError> {
    let topics = &config.topics;
    let group = P::GRAPH.group;
    P::GRAPH
        .validate()
        .map_err(|source| ProcessorError::Graph { group, source })?;
    let topics_error = |source| ProcessorError::Topics { group, source };
    let manager = TopicManager::new(client, topics.clone()).map_err(topics_error)?;
    let copartitioned: Vec<&str> = P::GRAPH
        .inputs
        .iter()
        .chain(P::GRAPH.joins)
        .map(|e| e.topic)
        .collect();
    let partitions = manager
        .check_copartitioned(&copartitioned)
        .await
        .map_err(topics_error)?;
    let mut partition_counts = HashMap::new();
    for edge in P::GRAPH.owned_tables() {
        let topic = edge.topic;
        manager
            .ensure_table(topic, partitions)
            .await
            .map_err(topics_error)?;
        partition_counts.insert(topic, partitions);
    }
    if let Some(edge) = P::GRAPH.loopback {
        manager
            .ensure_loop(edge.topic, partitions)
            .await
            .map_err(topics_error)?;
        partition_counts.insert(edge.topic, partitions);
    }
    for edge in P::GRAPH.outputs {
        let count = match manager
            .partitions_if_exists(edge.topic)
            .await
            .map_err(topics_error)?
        {
            Some(count) => count,
            None => manager
                .ensure_stream(edge.topic, partitions)
                .await
                .map_err(topics_error)?,
        };
        partition_counts.insert(edge.topic, count);
    }
    if let Some(topic) = policies::dead_letter_topic::<P>(config) {
        if topic.is_empty() {
            return Err(ProcessorError::Topics {
                group,
                source: crate::topic_manager::TopicManagerError::Missing {
                    topic: String::new(),
                    create: "the dead-letter topic has an empty name: set \
                             ProcessorConfig::dead_letter_topic",
                },
            });
        }
        let count = match manager
            .partitions_if_exists(topic)
            .await
            .map_err(topics_error)?
        {
            Some(count) => count,
            None => manager
                .ensure_stream(topic, partitions)
                .await
                .map_err(topics_error)?,
        };
        partition_counts.insert(topic, count);
    }
    Ok(partition_counts)
}

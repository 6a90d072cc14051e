//! A processor group registered with a tester: its partitions' resources over the tester's
//! tables, and the production handling of one message ([`handle`]).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, BrokerClient};
use crate::context::{Outgoing, PartitionResources};
use crate::graph::GroupGraph;
use crate::kafka::ConsumedMessage;
use crate::partitioner::Partitioner;
use crate::processor::handle::handle;
use crate::processor::policies::Policies;
use crate::processor::state::{open_resources, Common};
use crate::processor::{prepare_topics, Handlers, ProcessorConfig, ProcessorError};
use crate::storage::{Storage, StorageError};
use crate::view::ViewBuilder;

/// What the tester needs from a registered group, whatever its type.
pub(crate) trait Driven: Send + Sync {
    fn graph(&self) -> &'static GroupGraph;

    /// Handles one message of an input or the loop topic, after setting its timestamp to its
    /// event time where the group reads one; what it produced replaces the contents of
    /// `outgoing`.
    fn handle<'a>(
        &'a self,
        message: &'a mut ConsumedMessage,
        outgoing: &'a mut Outgoing,
    ) -> BoxFuture<'a, Result<(), ProcessorError>>;

    /// Every key of the group table, with its partition, in partition and key order.
    fn table_keys(&self) -> Result<Vec<(i32, Vec<u8>)>, ProcessorError>;

    /// Visits the key of `message` (a visit's stand-in) with `visitor`; what it produced
    /// replaces the contents of `outgoing`.
    fn visit<'a>(
        &'a self,
        message: &'a ConsumedMessage,
        visitor: &'static str,
        value: &'a (dyn std::any::Any + Send + Sync),
        outgoing: &'a mut Outgoing,
    ) -> BoxFuture<'a, Result<(), ProcessorError>>;

    /// Fires the wall-clock timers of `partition` due at `now` and, with an idle advance
    /// configured, moves its stream time on; what they produced replaces the contents of
    /// `outgoing`.
    fn tick<'a>(
        &'a self,
        partition: i32,
        now: i64,
        outgoing: &'a mut Outgoing,
    ) -> BoxFuture<'a, Result<usize, ProcessorError>>;

    /// How many partitions the processor has.
    fn partitions(&self) -> usize;
}

pub(crate) struct Tested<P: Handlers> {
    group: P,
    /// Indexed by partition.
    partitions: Vec<PartitionResources>,
    /// What the tester honours of it: nil handling, decode errors, middleware, default
    /// headers (storage, topics and the rest are the tester's own).
    config: ProcessorConfig,
}

impl<P: Handlers> Tested<P> {
    /// Prepares topics as a running processor does (graph validation, co-partitioning, table
    /// and loop topics) and opens every partition over the tester's tables.
    pub(crate) async fn new(
        group: P,
        broker: &Arc<Broker>,
        partitioner: Arc<dyn Partitioner>,
        cancel: CancellationToken,
        config: ProcessorConfig,
    ) -> Result<Self, ProcessorError> {
        let name = P::GRAPH.group;
        let client = BrokerClient(broker.clone());
        for edge in P::GRAPH.joins.iter().chain(P::GRAPH.lookups) {
            broker.ensure(edge.topic, true);
        }
        // Topics exist on first use in the tester; the group table must be a compacted one
        // with the inputs' partition count, as `prepare_topics` creates it.
        if let Some(input) = P::GRAPH.inputs.first() {
            for table in P::GRAPH.owned_tables() {
                broker.set_partitions(table.topic, broker.ensure(input.topic, false));
                broker.ensure(table.topic, true);
            }
        }
        let partition_counts = prepare_topics::<P>(&client, &config).await?;
        let tables = |topic: &str| {
            broker.table(topic).map_err(|source| ProcessorError::Kafka {
                group: name,
                topic: topic.to_owned(),
                source,
            })
        };
        let mut lookups = HashMap::new();
        for edge in P::GRAPH.lookups {
            let view = ViewBuilder::<()>::new(Arc::new(client.clone()))
                .storage(table_storages(broker.clone()))
                .shared_partitioner(partitioner.clone())
                .open(edge.topic, |_| Ok(()))
                .await
                .map_err(|source| ProcessorError::Lookup {
                    group: name,
                    source,
                })?;
            lookups.insert(edge.topic, Arc::new(view));
        }
        let count = P::GRAPH
            .inputs
            .first()
            .map_or(1, |edge| broker.ensure(edge.topic, false));
        let common = Common {
            lookups,
            partition_counts,
            partitioner,
            late_letters: crate::processor::policies::late_letter_topic::<P>(&config),
        };
        let partitions = (0..count as usize)
            .map(|p| {
                let open =
                    |topic: &'static str| tables(topic).map(|t| t[p].clone() as Arc<dyn Storage>);
                open_resources::<P, _>(open, &common, cancel.clone())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            group,
            partitions,
            config,
        })
    }
}

impl<P: Handlers> Driven for Tested<P> {
    fn graph(&self) -> &'static GroupGraph {
        &P::GRAPH
    }

    fn handle<'a>(
        &'a self,
        message: &'a mut ConsumedMessage,
        outgoing: &'a mut Outgoing,
    ) -> BoxFuture<'a, Result<(), ProcessorError>> {
        async move {
            // What the handler writes then carries the event time, as in production.
            crate::processor::handle::apply_event_time(&self.group, message)?;
            let Some(resources) = self.partitions.get(message.partition as usize) else {
                return Err(ProcessorError::Callback {
                    group: P::GRAPH.group,
                    topic: message.topic.to_string(),
                    partition: message.partition,
                    offset: message.offset,
                    key: String::from_utf8_lossy(&message.key).into_owned(),
                    message: "the partition does not exist: is the topic co-partitioned?".into(),
                });
            };
            // Ignored and skipped messages leave `outgoing` empty.
            let policies = Policies::of::<P>(&self.config);
            handle(&self.group, resources, message, policies, outgoing).await?;
            Ok(())
        }
        .boxed()
    }

    fn table_keys(&self) -> Result<Vec<(i32, Vec<u8>)>, ProcessorError> {
        let mut keys = Vec::new();
        for (partition, resources) in self.partitions.iter().enumerate() {
            let Some(table) = &resources.table else {
                continue;
            };
            let storage_error = |source| ProcessorError::Storage {
                group: P::GRAPH.group,
                source,
            };
            for row in table.iter().map_err(storage_error)? {
                let (key, _) = row.map_err(storage_error)?;
                keys.push((partition as i32, key));
            }
        }
        Ok(keys)
    }

    fn tick<'a>(
        &'a self,
        partition: i32,
        now: i64,
        outgoing: &'a mut Outgoing,
    ) -> BoxFuture<'a, Result<usize, ProcessorError>> {
        async move {
            let Some(resources) = self.partitions.get(partition as usize) else {
                return Ok(0);
            };
            let policies = Policies::of::<P>(&self.config);
            // The tester's partitions are idle whenever the test fires timers: the stream
            // time moves to the clock minus the idle time, never back.
            let idle_time = self
                .config
                .idle_advance
                .map(|idle| crate::processor::handle::idle_time(idle, now));
            let fired = crate::processor::handle::handle_tick(
                &self.group,
                resources,
                partition,
                now,
                idle_time,
                policies,
                outgoing,
            )
            .await?;
            // Timers removed or dead-lettered count as fired: what they caused is handled.
            Ok(fired.fired + fired.undecodable + fired.dead_lettered)
        }
        .boxed()
    }

    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn visit<'a>(
        &'a self,
        message: &'a ConsumedMessage,
        visitor: &'static str,
        value: &'a (dyn std::any::Any + Send + Sync),
        outgoing: &'a mut Outgoing,
    ) -> BoxFuture<'a, Result<(), ProcessorError>> {
        async move {
            let Some(resources) = self.partitions.get(message.partition as usize) else {
                return Ok(());
            };
            let policies = Policies::of::<P>(&self.config);
            crate::processor::handle::handle_visit(
                &self.group,
                resources,
                message,
                visitor,
                value,
                policies,
                outgoing,
            )
            .await
        }
        .boxed()
    }
}

/// A storage builder that hands out the tester's live table partitions, so views built on
/// the tester see every write at once, without running.
pub(crate) fn table_storages(broker: Arc<Broker>) -> impl crate::storage::StorageBuilder {
    move |topic: &str, partition: i32| -> Result<Box<dyn Storage>, StorageError> {
        let tables = broker.table(topic).map_err(|e| StorageError::Backend {
            topic: topic.to_owned(),
            partition,
            operation: "open",
            message: e.to_string(),
        })?;
        match tables.get(partition as usize) {
            Some(table) => Ok(Box::new(Live(table.clone()))),
            None => Err(StorageError::Backend {
                topic: topic.to_owned(),
                partition,
                operation: "open",
                message: "no such partition in the tester".into(),
            }),
        }
    }
}

/// A tester table partition shared with a view: closing the view leaves it open.
struct Live(Arc<crate::storage::MemoryStorage>);

impl Storage for Live {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get(key)
    }
    fn get_with(&self, key: &[u8], read: &mut dyn FnMut(&[u8])) -> Result<bool, StorageError> {
        self.0.get_with(key, read)
    }
    fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.0.set(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.0.delete(key)
    }
    fn apply(
        &self,
        batch: &crate::storage::WriteBatch,
        offset: Option<i64>,
    ) -> Result<(), StorageError> {
        self.0.apply(batch, offset)
    }
    fn offset(&self) -> Result<Option<i64>, StorageError> {
        self.0.offset()
    }
    fn range(
        &self,
        range: crate::storage::KeyRange,
    ) -> Result<Box<dyn crate::storage::StorageIter + '_>, StorageError> {
        self.0.range(range)
    }
    fn close(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

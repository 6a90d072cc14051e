//! What the unit tests of handling, closing, firing and the collector share: groups declared
//! as users declare them, one partition's stores in memory, input messages, and a producer
//! whose acknowledgements the test gives one by one. No broker is involved.

// Test helpers unwrap: a failure is a loud test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use super::state::{open_resources, Common};
use super::ProcessorConfig;
use crate::codec::{Int64Codec, Json, StringCodec};
use crate::context::{CallbackError, Context, Outgoing, OutgoingKind, PartitionResources};
use crate::group::Group;
use crate::kafka::{
    Ack, AckSender, ConsumedMessage, Delivery, Headers, KafkaError, OutgoingRecord, Producer,
    SendError,
};
use crate::storage::{MemoryBuilder, MemoryStorage, Storage};
use crate::timer::TimerTime;
use crate::topic::Topic;
use crate::window::{ClosedWindow, WindowSpec};

crate::stream!(pub(crate) Clicks = "unit-clicks": String as StringCodec);
crate::stream!(pub(crate) Alerts = "unit-alerts": String as StringCodec);

/// Counts clicks per user and says each count. A click on "fail" makes the handler fail
/// after it wrote, one on "panic" makes it panic.
#[goka::processor(group = "unit-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub(crate) struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0) + 1;
        ctx.set_value(&count)?;
        let user = ctx.key().clone();
        ctx.emit::<Alerts>(&user, &format!("{count} clicks"))?;
        match page.as_str() {
            "fail" => Err("refusing the page \"fail\"".into()),
            "panic" => panic!("the page \"panic\""),
            _ => Ok(()),
        }
    }
}

crate::window!(
    /// Clicks per user and minute, no grace.
    pub(crate) PerMinute = "unit-per-minute": u64 as Json,
    WindowSpec::tumbling(Duration::from_secs(60))
);

/// Counts clicks per minute and says each minute's count once it closed; the close of the
/// user "bad" fails.
#[goka::processor(group = "unit-minutes")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute, on_close = Self::minute_closed)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub(crate) struct Minutes;

impl Minutes {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }

    fn minute_closed(
        &self,
        ctx: &mut Context<'_, Self>,
        closed: ClosedWindow<u64>,
    ) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        if user == "bad" {
            return Err("cannot say the minute of \"bad\"".into());
        }
        let text = format!("{} from {}", closed.value, closed.window.start);
        ctx.emit::<Alerts>(&user, &text)
    }
}

crate::timer!(
    /// A user went a minute of event time without a click; the payload is their last page.
    pub(crate) Quiet: String as StringCodec
);
crate::timer!(
    /// A reminder five seconds of wall-clock time after a click on "remind".
    pub(crate) Remind: String as StringCodec
);

/// The event time after which a user is quiet.
pub(crate) const QUIET_AFTER: i64 = 60_000;

/// Says when a user goes quiet for a minute of event time (each click moves the timer), and
/// reminds on the wall clock; the timer of the user "bad" fails.
#[goka::processor(group = "unit-quiet")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[timer(timer = Quiet, handler = Self::on_quiet)]
#[timer(timer = Remind, handler = Self::on_remind)]
#[output(topic = Alerts)]
#[derive(Debug, Default)]
pub(crate) struct Watch;

impl Watch {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let at = ctx.timestamp().unwrap_or_default();
        if page == "remind" {
            return ctx.schedule::<Remind>(TimerTime::Wall(at + 5_000), &page);
        }
        if let Some(previous) = ctx.value()? {
            ctx.cancel::<Quiet>(TimerTime::Stream(previous + QUIET_AFTER))?;
        }
        ctx.set_value(&at)?;
        ctx.schedule::<Quiet>(TimerTime::Stream(at + QUIET_AFTER), &page)
    }

    fn on_quiet(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        if user == "bad" {
            return Err("cannot say that \"bad\" is quiet".into());
        }
        ctx.emit::<Alerts>(&user, &format!("quiet after {page}"))
    }

    fn on_remind(&self, ctx: &mut Context<'_, Self>, _page: String) -> Result<(), CallbackError> {
        let user = ctx.key().clone();
        ctx.emit::<Alerts>(&user, &"reminder".to_owned())
    }
}

/// A click of `user` on `page` (`None`: a tombstone) at `at` ms of event time, message
/// `offset` of partition 0.
pub(crate) fn click(offset: i64, user: &str, page: Option<&str>, at: i64) -> ConsumedMessage {
    ConsumedMessage {
        topic: Arc::from(Clicks::NAME),
        partition: 0,
        offset,
        key: user.as_bytes().to_vec(),
        value: page.map(|p| p.as_bytes().to_vec()),
        timestamp: Some(at),
        headers: Headers::new(),
    }
}

/// Every topic of group `P` with one partition.
fn one_partition_each<P: Group>() -> HashMap<&'static str, u32> {
    let graph = &P::GRAPH;
    let edges = graph.inputs.iter().chain(graph.outputs).chain(graph.joins);
    let mut counts: HashMap<&'static str, u32> = edges.map(|edge| (edge.topic, 1)).collect();
    for edge in graph.table.iter().chain(&graph.timers) {
        counts.insert(edge.topic, 1);
    }
    for edge in graph.windows {
        counts.insert(edge.topic(), 1);
    }
    counts
}

/// Partition 0 of group `P` as handlers see it, every store empty and in memory.
pub(crate) fn resources<P: Group>() -> PartitionResources {
    let common = Common {
        lookups: HashMap::new(),
        partition_counts: one_partition_each::<P>(),
        partitioner: Arc::new(crate::partitioner::GokaPartitioner),
        late_letters: None,
    };
    let open = |topic: &'static str| {
        Ok::<_, std::convert::Infallible>(Arc::new(MemoryStorage::new(topic, 0)) as Arc<dyn Storage>)
    };
    open_resources::<P, _>(open, &common, CancellationToken::new()).unwrap()
}

/// What a run of group `P` shares, producing through `producer`, its stores in memory.
pub(crate) fn shared<P: Group>(producer: Arc<Gate>, config: ProcessorConfig) -> Arc<Shared> {
    let client =
        crate::tester::broker::BrokerClient(Arc::new(crate::tester::broker::Broker::new(1)));
    Arc::new(Shared::new::<P>(
        Arc::new(client),
        ProcessorConfig {
            storage: Arc::new(MemoryBuilder),
            ..config
        },
        producer,
        one_partition_each::<P>(),
        HashMap::new(),
        tokio::sync::watch::channel(super::ProcessorState::Running).0,
        CancellationToken::new(),
    ))
}

/// A record the [`Gate`] queued, with the sending half of its acknowledgement.
pub(crate) struct Queued {
    pub(crate) topic: String,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Option<Vec<u8>>,
    ack: Option<AckSender>,
}

/// A producer that queues every record and acknowledges it only when told, or refuses to
/// queue while [`Gate::refuse`] is set.
#[derive(Default)]
pub(crate) struct Gate {
    queued: Mutex<Vec<Queued>>,
    refusing: std::sync::atomic::AtomicBool,
}

impl Gate {
    /// Refuses (or again takes) every record from now on, as a client whose queue failed.
    pub(crate) fn refuse(&self, refuse: bool) {
        self.refusing
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
    }

    /// Topic, key and value of every record queued so far, in order.
    pub(crate) fn queued(&self) -> Vec<(String, String, Option<String>)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.queued
            .lock()
            .unwrap()
            .iter()
            .map(|q| (q.topic.clone(), text(&q.key), q.value.as_deref().map(text)))
            .collect()
    }

    /// Acknowledges record `index` (in queueing order) as stored at offset `index`.
    pub(crate) fn acknowledge(&self, index: usize) {
        let ack = self.queued.lock().unwrap()[index].ack.take().unwrap();
        ack.send(Ok(Delivery {
            partition: 0,
            offset: index as i64,
        }));
    }

    /// Acknowledges every record queued so far that was not answered yet.
    pub(crate) fn acknowledge_all(&self) {
        let count = self.queued.lock().unwrap().len();
        for index in 0..count {
            if self.queued.lock().unwrap()[index].ack.is_some() {
                self.acknowledge(index);
            }
        }
    }

    /// Fails the delivery of record `index`, as a broker that never stored it.
    pub(crate) fn fail(&self, index: usize) {
        let queued = self.queued.lock().unwrap()[index].ack.take().unwrap();
        queued.send(Err(KafkaError::Produce {
            topic: "unit".to_owned(),
            partition: 0,
            message: "the broker did not store it".to_owned(),
        }));
    }
}

impl Producer for Gate {
    fn try_send(&self, record: &OutgoingRecord<'_>) -> Result<Ack, SendError> {
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SendError::Failed(KafkaError::Produce {
                topic: record.topic.to_owned(),
                partition: record.partition,
                message: "the client's queue failed".to_owned(),
            }));
        }
        let (sender, ack) = Ack::channel();
        self.queued.lock().unwrap().push(Queued {
            topic: record.topic.to_owned(),
            key: record.key.to_vec(),
            value: record.value.map(<[u8]>::to_vec),
            ack: Some(sender),
        });
        Ok(ack)
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), KafkaError>> {
        async { Ok(()) }.boxed()
    }
}

/// A message `outgoing` holds, in text: kind, topic, key, value (lossy UTF-8) and whether it
/// follows the others.
pub(crate) type Written = (OutgoingKind, &'static str, String, Option<String>, bool);

/// What `outgoing` holds, in order.
pub(crate) fn written(outgoing: &Outgoing) -> Vec<Written> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    outgoing
        .iter()
        .map(|o| (o.kind, o.topic, text(o.key), o.value.map(text), o.follows))
        .collect()
}

/// Writes what `outgoing` holds for the partition's own stores to them, as the collector
/// does once their changelog writes are queued.
pub(crate) fn store(resources: &PartitionResources, outgoing: &Outgoing) {
    for out in outgoing.iter() {
        let storage = match out.kind {
            OutgoingKind::Table => resources.table.as_ref(),
            OutgoingKind::Window => resources.windows.table(out.topic).map(|t| &t.storage),
            OutgoingKind::Timer => resources.timers.as_ref().map(|t| &t.storage),
            _ => None,
        };
        if let Some(storage) = storage {
            match out.value {
                Some(value) => storage.set(out.key, value),
                None => storage.delete(out.key),
            }
            .unwrap();
        }
    }
}

/// The emits `outgoing` holds, as (key, value) text.
pub(crate) fn emitted(outgoing: &Outgoing) -> Vec<(String, String)> {
    written(outgoing)
        .into_iter()
        .filter(|w| w.0 == OutgoingKind::Emit)
        .map(|(_, _, key, value, _)| (key, value.unwrap_or_default()))
        .collect()
}

/// Handles a click of `user` on `page` at `at` ms with `group`, as message `offset` of
/// partition 0, and stores what it wrote, as the collector would; returns what fired and
/// the output.
pub(crate) async fn click_and_store<P: super::Handlers>(
    group: &P,
    resources: &PartitionResources,
    (offset, user, page, at): (i64, &str, &str, i64),
) -> (super::firing::Fired, Outgoing) {
    let config = ProcessorConfig::default();
    let mut outgoing = Outgoing::default();
    let (_, fired) = super::handle::handle(
        group,
        resources,
        &click(offset, user, Some(page), at),
        super::policies::Policies::of::<P>(&config),
        &mut outgoing,
    )
    .await
    .unwrap();
    store(resources, &outgoing);
    (fired, outgoing)
}

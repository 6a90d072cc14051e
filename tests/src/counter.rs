//! A counting processor written by hand (the `Group` and `Handlers` the macro would
//! generate), with its input and helpers: the processor tests of several files count with it
//! and compare the counts with what they emitted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::emitter::Emitter;
use goka::graph::{EdgeKind, GroupGraph};
use goka::processor::{Group, GroupTable, Handlers, Processor, ProcessorError, Stateful};
use goka::topic::Topic;
use goka::topic_manager::{TopicManager, TopicManagerConfig};
use goka::view::View;
use tokio_util::sync::CancellationToken;

use crate::{client, string_edge as edge, TestBroker, TestClient};

goka::stream!(
    /// The counter's input: one click per message, keyed by user.
    pub Clicks = "clicks": String as StringCodec
);

/// Partitions of the counter's input and table.
pub const PARTITIONS: u32 = 4;

/// Counts clicks per user in its group table `counter-table`; fails on the click "boom".
#[derive(Debug)]
pub struct Counter;

impl Group for Counter {
    const GRAPH: GroupGraph = GroupGraph {
        inputs: &[edge(EdgeKind::Input, "clicks", "string")],
        table: Some(edge(EdgeKind::Persist, "counter-table", "int64")),
        ..GroupGraph::new("counter")
    };
    type Key = String;
    type KeyCodec = StringCodec;
}

impl Handlers for Counter {
    fn dispatch<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        Box::pin(async move {
            match ctx.topic() {
                "clicks" => {
                    let click = Clicks::decode_value(value.unwrap_or_default())
                        .map_err(CallbackError::decode)?;
                    self.on_click(ctx, click)
                }
                other => Err(CallbackError::no_handler(other)),
            }
        })
    }
}

impl Stateful for Counter {
    type Value = i64;
    type ValueCodec = Int64Codec;
}

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        if click == "boom" {
            return Err("the click went boom".into());
        }
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

/// A client of `broker` and an emitter of [`Clicks`], whose topic it creates with
/// [`PARTITIONS`] partitions. Panics if it cannot.
pub async fn setup(broker: &TestBroker) -> (TestClient, Emitter<Clicks>) {
    let client = client(broker);
    let manager = TopicManager::new(&*client, TopicManagerConfig::default())
        .unwrap_or_else(|e| panic!("topic manager: {e}"));
    let emitter = Emitter::<Clicks>::ensuring(&*client, &manager, PARTITIONS)
        .await
        .unwrap_or_else(|e| panic!("emitter of clicks: {e}"));
    (client, emitter)
}

/// Emits one click for each number of `range`, to `keys` users in turn, and waits until
/// every one was acknowledged; returns the clicks per user.
pub async fn emit(
    emitter: &Emitter<Clicks>,
    range: std::ops::Range<u32>,
    keys: u32,
) -> HashMap<String, i64> {
    let mut expected = HashMap::new();
    let mut pending = Vec::new();
    for i in range {
        let key = format!("user-{}", i % keys);
        *expected.entry(key.clone()).or_insert(0) += 1;
        let delivery = emitter.emit(&key, &format!("click-{i}")).await;
        pending.push(delivery.unwrap_or_else(|e| panic!("emit {i}: {e}")));
    }
    for p in pending {
        p.await.unwrap_or_else(|e| panic!("delivery: {e}"));
    }
    expected
}

/// The task running `processor`, and the token that stops it.
pub fn start(
    processor: &Arc<Processor<Counter>>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ProcessorError>>,
) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (processor, cancel) = (processor.clone(), cancel.clone());
        async move { processor.run(cancel).await }
    });
    (cancel, task)
}

/// A view of the counter's table, running until the returned handle stops it. Panics if it
/// cannot be built.
pub async fn view_of_counts(
    client: &TestClient,
) -> (
    View<GroupTable<Counter>>,
    crate::Running<goka::view::ViewError>,
) {
    let view = View::<GroupTable<Counter>>::builder(client.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("view of counter-table: {e}"));
    let running = crate::Running::spawn({
        let view = view.clone();
        move |cancel| async move { view.run(cancel).await }
    });
    (view, running)
}

/// Waits until the view of the counter's table holds `expected`; panics after a minute
/// naming a key that differs.
pub async fn wait_for_counts(view: &View<GroupTable<Counter>>, expected: &HashMap<String, i64>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows: HashMap<String, i64> = view
            .iter()
            .map(|row| row.unwrap_or_else(|e| panic!("view row: {e}")))
            .collect();
        if &rows == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counts did not converge: {} of {} keys, e.g. {:?}",
            rows.len(),
            expected.len(),
            expected.iter().find(|(k, v)| rows.get(*k) != Some(v))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! The graph `#[goka::processor]` generates is the one the attributes say: group, every
//! edge with its topic and codec names, the table and loop topics named after the group,
//! the options, and goka's validation rules.

use goka::codec::DecodeErrorPolicy;
use goka::codec::{Int64Codec, Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::graph::{Edge, EdgeKind, GroupGraph};
use goka::processor::{Group, GroupTable, NilHandling};
use goka::topic::Topic;

#[derive(serde::Serialize, serde::Deserialize)]
struct Click {
    page: String,
}

goka::stream!(Clicks = "clicks": Click as Json);
goka::stream!(MobileClicks = "mobile-clicks": Click as Json);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);
goka::table!(Limits = "limits": i64 as Int64Codec);

#[goka::processor(
    group = "click-counter",
    nil_handling = "restore",
    decode_errors = "skip"
)]
#[input(topics = [Clicks, MobileClicks], handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[join(table = Profiles)]
#[lookup(table = Limits)]
#[output(topic = Alerts)]
#[loopback(value = String, codec = StringCodec, handler = Self::on_loop)]
struct ClickCounter;

impl ClickCounter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: Click) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0) + 1;
        ctx.set_value(&count)
    }

    async fn on_loop(&self, _ctx: &mut Context<'_, Self>, _note: String) {}
}

const fn edge(kind: EdgeKind, topic: &'static str, key: &'static str, value: &'static str) -> Edge {
    Edge {
        kind,
        topic,
        key_codec: key,
        value_codec: value,
    }
}

#[test]
fn the_generated_graph_has_every_declared_edge() {
    const EXPECTED: GroupGraph = GroupGraph {
        inputs: &[
            edge(EdgeKind::Input, "clicks", "string", "json"),
            edge(EdgeKind::Input, "mobile-clicks", "string", "json"),
        ],
        joins: &[edge(EdgeKind::Join, "profiles", "string", "string")],
        lookups: &[edge(EdgeKind::Lookup, "limits", "string", "int64")],
        outputs: &[edge(EdgeKind::Output, "alerts", "string", "string")],
        loopback: Some(edge(
            EdgeKind::Loop,
            "click-counter-loop",
            "string",
            "string",
        )),
        table: Some(edge(
            EdgeKind::Persist,
            "click-counter-table",
            "string",
            "int64",
        )),
        ..GroupGraph::new("click-counter")
    };
    assert_eq!(ClickCounter::GRAPH, EXPECTED);
    assert_eq!(ClickCounter::GRAPH.validate(), Ok(()));
    assert_eq!(ClickCounter::GRAPH.table_topic(), "click-counter-table");
    assert_eq!(ClickCounter::GRAPH.loop_topic(), "click-counter-loop");
    assert_eq!(
        ClickCounter::GRAPH.to_string(),
        "group click-counter: Input(clicks) Input(mobile-clicks) Join(profiles) \
         Lookup(limits) Output(alerts) Loop(click-counter-loop) Persist(click-counter-table)"
    );
}

#[test]
fn options_and_the_group_table_follow_the_attributes() {
    assert_eq!(ClickCounter::NIL_HANDLING, NilHandling::Restore);
    assert_eq!(ClickCounter::DECODE_ERRORS, DecodeErrorPolicy::SkipAndCount);
    assert_eq!(GroupTable::<ClickCounter>::NAME, "click-counter-table");
    let encoded = GroupTable::<ClickCounter>::encode_value(&41).unwrap();
    assert_eq!(
        encoded, b"41",
        "the table's codec is the persist codec (goka's Int64)"
    );
}

goka::stream!(pub Orders = "suffix-orders": String as goka::codec::StringCodec);

/// A group whose table and loop topics carry the suffixes of a Go service that set them
/// with goka's `SetTableSuffix` and `SetLoopSuffix`.
#[goka::processor(group = "suffixed", table_suffix = "-state", loop_suffix = "-again")]
#[input(topic = Orders, handler = Self::on_order)]
#[persist(value = String, codec = goka::codec::StringCodec)]
#[loopback(value = String, codec = goka::codec::StringCodec, handler = Self::on_order)]
#[derive(Debug)]
pub struct Suffixed;

impl Suffixed {
    fn on_order(
        &self,
        ctx: &mut goka::context::Context<'_, Self>,
        order: String,
    ) -> Result<(), goka::context::CallbackError> {
        ctx.set_value(&order)
    }
}

#[test]
fn table_and_loop_suffixes_name_the_groups_own_topics() {
    assert_eq!(
        Suffixed::GRAPH.table.map(|t| t.topic),
        Some("suffixed-state")
    );
    assert_eq!(
        Suffixed::GRAPH.loopback.map(|t| t.topic),
        Some("suffixed-again")
    );
    assert_eq!(Suffixed::GRAPH.table_topic(), "suffixed-state");
    assert_eq!(Suffixed::GRAPH.loop_topic(), "suffixed-again");
    assert_eq!(Suffixed::GRAPH.validate(), Ok(()));
    assert_eq!(
        <goka::processor::GroupTable<Suffixed> as goka::topic::Topic>::NAME,
        "suffixed-state"
    );
}

//! What a goka user porting a service looks for, on the in-memory tester: the context's
//! group, tombstone emits and headers on every write, default headers and middleware of the
//! processor's configuration, `NilDecode`, the tester's clock, `ClearValues`, and the queue
//! tracker's raw reads, seeks and offsets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::future::BoxFuture;
use goka::codec::{Codec, CodecError, Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::kafka::Headers;
use goka::processor::{GroupTable, MessageInfo, Middleware, Next, ProcessorConfig};
use goka::tester::Tester;

goka::stream!(pub Orders = "orders": String as StringCodec);
goka::stream!(pub Shipped = "shipped": String as StringCodec);

fn s(text: &str) -> String {
    text.to_owned()
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Keeps the last order per customer; "cancel" deletes it and emits a tombstone; every
/// write carries the handler's headers; a loopback confirms.
#[goka::processor(group = "orders-keeper")]
#[input(topic = Orders, handler = Self::on_order)]
#[persist(value = String, codec = StringCodec)]
#[output(topic = Shipped)]
#[loopback(value = String, codec = StringCodec, handler = Self::on_loop)]
#[derive(Debug, Default)]
pub struct Keeper;

impl Keeper {
    fn on_order(&self, ctx: &mut Context<'_, Self>, order: String) -> Result<(), CallbackError> {
        let customer = ctx.key().clone();
        let mine = Some(headers(&[("source", ctx.group()), ("trace", "t-1")]));
        if order == "cancel" {
            ctx.delete_with_headers(mine.clone())?;
            return ctx.emit_tombstone_with_headers::<Shipped>(&customer, mine);
        }
        ctx.set_value_with_headers(&order, mine.clone())?;
        ctx.emit::<Shipped>(&customer, &order)?;
        ctx.loopback_with_headers(&format!("{customer}-confirm"), &order, mine)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, order: String) -> Result<(), CallbackError> {
        let trace = header(ctx.headers(), "trace").unwrap_or_default();
        let key = ctx.key().clone();
        ctx.emit::<Shipped>(&key, &format!("confirmed {order} ({trace})"))
    }
}

#[tokio::test]
async fn writes_carry_the_handlers_headers_and_a_tombstone_can_be_emitted() {
    let mut tester = Tester::new();
    tester.register(Keeper).await.unwrap();
    let mut shipped = tester.track::<Shipped>();
    let mut changelog = tester.track::<GroupTable<Keeper>>();
    tester
        .consume::<Orders>(&s("ann"), &s("tea"))
        .await
        .unwrap();

    let row = changelog.next().unwrap().expect("the table write");
    assert_eq!(row.value.as_deref(), Some("tea"));
    assert_eq!(
        header(&row.headers, "source").as_deref(),
        Some("orders-keeper")
    );
    let emitted = shipped.drain().unwrap();
    assert_eq!(emitted.len(), 2, "{emitted:?}");
    assert_eq!(emitted[0].value.as_deref(), Some("tea"));
    assert!(
        emitted[0].headers.is_empty(),
        "an emit without headers has none"
    );
    assert_eq!(
        emitted[1].value.as_deref(),
        Some("confirmed tea (t-1)"),
        "the loop handler saw the loopback's headers"
    );

    tester
        .consume::<Orders>(&s("ann"), &s("cancel"))
        .await
        .unwrap();
    let tombstone = changelog.next().unwrap().expect("the delete");
    assert_eq!(tombstone.value, None);
    assert_eq!(header(&tombstone.headers, "trace").as_deref(), Some("t-1"));
    let cancelled = shipped.next().unwrap().expect("the emitted tombstone");
    assert_eq!((cancelled.key.as_str(), cancelled.value), ("ann", None));
    assert_eq!(header(&cancelled.headers, "trace").as_deref(), Some("t-1"));
    assert_eq!(
        tester.table::<GroupTable<Keeper>>().get(&s("ann")).unwrap(),
        None
    );
}

#[tokio::test]
async fn default_headers_go_under_every_write_and_a_handlers_own_win() {
    let mut tester = Tester::new();
    let config = ProcessorConfig {
        default_headers: headers(&[("service", "keeper"), ("trace", "default")]),
        ..Default::default()
    };
    tester.register_with(Keeper, config).await.unwrap();
    let mut shipped = tester.track::<Shipped>();
    let mut changelog = tester.track::<GroupTable<Keeper>>();
    tester
        .consume::<Orders>(&s("bo"), &s("cake"))
        .await
        .unwrap();

    let row = changelog.next().unwrap().expect("the table write");
    assert_eq!(header(&row.headers, "service").as_deref(), Some("keeper"));
    assert_eq!(
        header(&row.headers, "trace").as_deref(),
        Some("t-1"),
        "the handler's header replaces the default of the same name"
    );
    assert_eq!(row.headers.len(), 3, "service, source and trace, once each");
    let emitted = shipped.drain().unwrap();
    assert_eq!(
        header(&emitted[0].headers, "service").as_deref(),
        Some("keeper")
    );
    assert_eq!(
        header(&emitted[0].headers, "trace").as_deref(),
        Some("default")
    );
}

/// Counts calls, skips orders of "spam", and adds context to errors.
#[derive(Debug, Default)]
struct Guard {
    calls: AtomicUsize,
}

impl Middleware for Guard {
    fn around<'a>(
        &'a self,
        message: MessageInfo<'a>,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if message.key == b"spam" {
                return Ok(());
            }
            next.run().await.map_err(|e| {
                CallbackError::from(format!(
                    "{} at offset {}: {e}",
                    message.group, message.offset
                ))
            })
        })
    }
}

/// Fails on "boom".
#[goka::processor(group = "fragile")]
#[input(topic = Orders, handler = Self::on_order)]
#[persist(value = String, codec = StringCodec)]
#[derive(Debug)]
pub struct Fragile;

impl Fragile {
    fn on_order(&self, ctx: &mut Context<'_, Self>, order: String) -> Result<(), CallbackError> {
        if order == "boom" {
            return Err("cannot keep boom".into());
        }
        ctx.set_value(&order)
    }
}

#[tokio::test]
async fn middleware_runs_around_every_handler_call_and_may_skip_it() {
    let guard = Arc::new(Guard::default());
    let mut tester = Tester::new();
    let config = ProcessorConfig {
        middleware: Some(guard.clone()),
        ..Default::default()
    };
    tester.register_with(Fragile, config).await.unwrap();
    tester
        .consume::<Orders>(&s("ann"), &s("tea"))
        .await
        .unwrap();
    tester
        .consume::<Orders>(&s("spam"), &s("buy now"))
        .await
        .unwrap();
    let table = tester.table::<GroupTable<Fragile>>();
    assert_eq!(table.get(&s("ann")).unwrap().as_deref(), Some("tea"));
    assert_eq!(
        table.get(&s("spam")).unwrap(),
        None,
        "skipped by the middleware"
    );
    let error = tester
        .consume::<Orders>(&s("ann"), &s("boom"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("fragile at offset 2: ") && error.contains("cannot keep boom"),
        "the middleware's context is in the error: {error}"
    );
    assert_eq!(guard.calls.load(Ordering::Relaxed), 3);
}

/// Decodes empty bytes (a tombstone under `NilDecode`) as 0.
#[derive(Debug)]
pub struct ZeroWhenEmpty;

impl Codec<i64> for ZeroWhenEmpty {
    const NAME: &'static str = "zero-when-empty";
    fn encode(value: &i64, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        Int64Codec::encode(value, buf)
    }
    fn decode(bytes: &[u8]) -> Result<i64, CodecError> {
        if bytes.is_empty() {
            return Ok(0);
        }
        Int64Codec::decode(bytes)
    }
}

goka::stream!(pub Deposits = "deposits": i64 as ZeroWhenEmpty);
goka::stream!(pub Amounts = "amounts": i64 as Int64Codec);

/// Sums deposits; a tombstone reaches the handler as what the codec makes of it.
#[goka::processor(group = "summer", nil_handling = "decode")]
#[input(topic = Deposits, handler = Self::on_deposit)]
#[input(topic = Amounts, handler = Self::on_deposit)]
#[persist(value = i64, codec = Int64Codec)]
#[derive(Debug)]
pub struct Summer;

impl Summer {
    fn on_deposit(&self, ctx: &mut Context<'_, Self>, amount: i64) -> Result<(), CallbackError> {
        let seen = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(seen * 100 + amount))
    }
}

#[tokio::test]
async fn nil_decode_hands_tombstones_to_the_codec() {
    let mut tester = Tester::new();
    tester.register(Summer).await.unwrap();
    tester.consume::<Deposits>(&s("ann"), &7).await.unwrap();
    tester
        .consume_tombstone::<Deposits>(&s("ann"))
        .await
        .unwrap();
    assert_eq!(
        tester.table::<GroupTable<Summer>>().get(&s("ann")).unwrap(),
        Some(700),
        "the tombstone was decoded as 0 and handled"
    );
    let error = tester
        .consume_tombstone::<Amounts>(&s("ann"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("amounts") && error.contains("decode"),
        "a codec that refuses empty bytes makes it a decode error: {error}"
    );
}

#[tokio::test]
async fn the_testers_clock_stamps_messages_and_moves_only_when_told() {
    let mut tester = Tester::new();
    tester.register(Keeper).await.unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    tester.set_time(start);
    let mut shipped = tester.track::<Shipped>();
    tester
        .consume::<Orders>(&s("ann"), &s("tea"))
        .await
        .unwrap();
    tester.advance_time(Duration::from_secs(90));
    tester
        .consume::<Orders>(&s("bo"), &s("cake"))
        .await
        .unwrap();
    let stamps: Vec<i64> = shipped
        .drain()
        .unwrap()
        .iter()
        .map(|m| m.timestamp)
        .collect();
    let t0 = 1_700_000_000_000;
    assert_eq!(
        stamps,
        [t0, t0, t0 + 90_000, t0 + 90_000],
        "emits and loopback results carry their input's time"
    );
    assert_eq!(tester.time(), start + Duration::from_secs(90));
}

#[tokio::test]
async fn clear_values_empties_every_table_between_cases() {
    let mut tester = Tester::new();
    tester.register(Keeper).await.unwrap();
    tester
        .consume::<Orders>(&s("ann"), &s("tea"))
        .await
        .unwrap();
    let table = tester.table::<GroupTable<Keeper>>();
    assert_eq!(table.rows().unwrap().len(), 1);
    tester.clear_values().unwrap();
    assert!(table.rows().unwrap().is_empty());
    tester
        .consume::<Orders>(&s("bo"), &s("cake"))
        .await
        .unwrap();
    assert_eq!(
        table.rows().unwrap(),
        [(s("bo"), s("cake"))],
        "only what came after the clearing"
    );
}

#[tokio::test]
async fn the_queue_tracker_reads_raw_seeks_and_knows_its_offsets() {
    let mut tester = Tester::new();
    tester.register(Keeper).await.unwrap();
    let mut shipped = tester.track::<Shipped>();
    assert_eq!((shipped.next_offset(0), shipped.high_watermark(0)), (0, 0));
    tester
        .consume::<Orders>(&s("ann"), &s("tea"))
        .await
        .unwrap();
    assert_eq!(shipped.high_watermark(0), 2);
    let raw = shipped.next_raw().expect("a raw message");
    assert_eq!(
        (raw.key.as_slice(), raw.value.as_deref()),
        (&b"ann"[..], Some(&b"tea"[..]))
    );
    assert_eq!(shipped.next_offset(0), 1);
    shipped.seek(0, 0);
    assert_eq!(
        shipped.next().unwrap().unwrap().value.as_deref(),
        Some("tea"),
        "read again"
    );
    shipped.seek(0, 99);
    assert_eq!(shipped.next_offset(0), 2, "a seek past the end stops at it");
    assert!(shipped.next().unwrap().is_none());
}

#[tokio::test]
async fn a_views_iterator_seeks_and_the_view_names_its_topic() {
    let mut tester = Tester::new();
    tester.register(Keeper).await.unwrap();
    for (customer, order) in [("ann", "tea"), ("bo", "cake"), ("cy", "pie"), ("di", "jam")] {
        tester
            .consume::<Orders>(&s(customer), &s(order))
            .await
            .unwrap();
    }
    let view = tester.view::<GroupTable<Keeper>>().await.unwrap();
    assert_eq!(view.topic(), "orders-keeper-table");
    let mut rows = view.iter();
    let first = rows.next().unwrap().unwrap();
    assert_eq!(first.0, "ann");
    rows.seek(&s("c")).unwrap();
    let rest: Vec<String> = rows.map(|row| row.unwrap().0).collect();
    assert_eq!(rest, ["cy", "di"], "from the first key at least \"c\"");
}

#[tokio::test]
async fn a_finished_emitter_refuses_to_emit() {
    let mut tester = Tester::new();
    tester.register(Keeper).await.unwrap();
    let emitter = tester.emitter::<Orders>().await.unwrap();
    emitter.emit_sync(&s("ann"), &s("tea")).await.unwrap();
    let clone = emitter.clone();
    emitter.finish().await.unwrap();
    let error = clone.emit(&s("bo"), &s("cake")).await.unwrap_err();
    assert!(
        matches!(
            error,
            goka::emitter::EmitError::Finished { topic: "orders" }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("finish"), "{error}");
    emitter.finish().await.unwrap();
}

goka::stream!(pub Payments = "payments": i64 as Int64Codec);

goka::visitor!(
    /// Drops balances below the given floor.
    pub DropBelow: i64
);

/// Keeps balances; a visit drops those below a floor and says so.
#[goka::processor(group = "balances")]
#[input(topic = Payments, handler = Self::on_payment)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topic = Shipped)]
#[visit(visitor = DropBelow, handler = Self::on_drop_below)]
#[derive(Debug)]
pub struct Balances;

impl Balances {
    fn on_payment(&self, ctx: &mut Context<'_, Self>, amount: i64) -> Result<(), CallbackError> {
        let balance = ctx.value()?.unwrap_or(0) + amount;
        ctx.set_value(&balance)
    }

    async fn on_drop_below(
        &self,
        ctx: &mut Context<'_, Self>,
        floor: i64,
    ) -> Result<(), CallbackError> {
        let balance = ctx.value()?.unwrap_or(0);
        if balance < floor {
            let key = ctx.key().clone();
            ctx.delete()?;
            ctx.emit::<Shipped>(
                &key,
                &format!("dropped {balance} (visit via {})", ctx.topic()),
            )?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn visit_all_runs_the_visitor_over_every_key_as_a_message_would() {
    let mut tester = Tester::with_partitions(3);
    tester.register(Balances).await.unwrap();
    for (customer, amount) in [("ann", 50), ("bo", 5), ("cy", 12), ("di", 1)] {
        tester
            .consume::<Payments>(&s(customer), &amount)
            .await
            .unwrap();
    }
    let mut shipped = tester.track::<Shipped>();
    let visited = tester.visit_all::<Balances, DropBelow>(10).await.unwrap();
    assert_eq!(visited, 4, "every key of every partition");
    let table = tester.table::<GroupTable<Balances>>();
    let mut left = table.rows().unwrap();
    left.sort();
    assert_eq!(left, [(s("ann"), 50), (s("cy"), 12)]);
    let mut notes: Vec<String> = shipped
        .drain()
        .unwrap()
        .into_iter()
        .filter_map(|m| m.value)
        .collect();
    notes.sort();
    assert_eq!(
        notes,
        [
            "dropped 1 (visit via DropBelow)",
            "dropped 5 (visit via DropBelow)"
        ]
    );
}

//! A processor with every edge kind, async and sync handlers, and a shared handler for two
//! topics (goka's `Inputs`).

use goka::codec::{Int64Codec, Json, StringCodec};
use goka::context::{CallbackError, Context};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub item: String,
}

goka::stream!(Orders = "orders": Order as Json);
goka::stream!(Returns = "returns": Order as Json);
goka::stream!(Shipments = "shipments": String as StringCodec);
goka::table!(Customers = "customers": String as StringCodec);
goka::table!(Rates = "rates": i64 as Int64Codec);

#[goka::processor(group = "router", decode_errors = "skip")]
#[input(topics = [Orders, Returns], handler = Self::on_order)]
#[persist(value = i64, codec = Int64Codec)]
#[join(table = Customers)]
#[lookup(table = Rates)]
#[output(topic = Shipments)]
#[loopback(value = String, codec = StringCodec, handler = on_loop)]
struct Router {
    prefix: String,
}

impl Router {
    async fn on_order(&self, ctx: &mut Context<'_, Self>, order: Order) -> Result<(), CallbackError> {
        let city = ctx.join::<Customers>()?.unwrap_or_default();
        let rate = ctx.lookup::<Rates>(&city)?.unwrap_or(0);
        let customer = ctx.key().clone();
        ctx.emit::<Shipments>(&customer, &format!("{}{} {city} {rate}", self.prefix, order.item))?;
        ctx.loopback(&"total".to_string(), &order.item)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, _item: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

fn main() {
    use goka::processor::Group;
    assert_eq!(Router::GRAPH.group, "router");
    let _ = Router { prefix: String::new() };
}

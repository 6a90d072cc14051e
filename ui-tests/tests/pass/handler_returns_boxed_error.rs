// A handler may return Result<(), Box<dyn Error>>, the most common Rust error type, sync or
// async.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), Box<dyn std::error::Error>> {
        let count = ctx.value()?.unwrap_or(0);
        let extra: i64 = click.parse()?;
        ctx.set_value(&(count + extra))?;
        Ok(())
    }
}



#[goka::processor(group = "async-counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct AsyncCounter;

impl AsyncCounter {
    async fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), Box<dyn std::error::Error>> {
        let extra: i64 = click.parse()?;
        ctx.set_value(&extra)?;
        Ok(())
    }
}
fn main() {}

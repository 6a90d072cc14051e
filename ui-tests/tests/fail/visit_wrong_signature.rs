// A visit handler taking the visitor's value by reference.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::visitor!(Reset: i64);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[visit(visitor = Reset, handler = Self::on_reset)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = click;
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }

    fn on_reset(&self, ctx: &mut Context<'_, Self>, to: &i64) -> Result<(), CallbackError> {
        ctx.set_value(to)
    }
}

fn main() {}

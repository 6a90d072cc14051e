// A loopback handler taking its value by reference.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[loopback(value = i64, codec = Int64Codec, handler = Self::on_loop)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        ctx.loopback(&click, &1)
    }

    fn on_loop(&self, ctx: &mut Context<'_, Self>, n: &i64) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0) + n;
        ctx.set_value(&count)
    }
}

fn main() {}

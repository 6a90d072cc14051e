// A handler taking the value itself under nil_handling = "process", which hands it Options.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);

#[goka::processor(group = "counter", nil_handling = "process")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0) + click.len() as i64;
        ctx.set_value(&count)
    }
}

fn main() {}

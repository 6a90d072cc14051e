// Visiting with a visitor the processor does not declare.
#![allow(unused_imports, dead_code)]

use std::sync::Arc;

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};
use goka::processor::Processor;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::visitor!(Reset: i64);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = click;
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))
    }
}

async fn reset(processor: Arc<Processor<Counter>>) {
    let _ = processor.visit_all::<Reset>(0).await;
}

fn main() {}

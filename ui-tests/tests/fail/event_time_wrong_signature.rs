// An input's event_time method must take the topic's value and return Option<i64>; here it
// takes the wrong value type, and the error points at its path.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click, event_time = Self::clicked_at)]
struct Counter;

impl Counter {
    fn clicked_at(&self, click: &i64) -> Option<i64> {
        Some(*click)
    }

    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = (ctx, click);
        Ok(())
    }
}

fn main() {}

// Using a window the processor does not declare.
#![allow(unused_imports, dead_code)]

use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::window::WindowSpec;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::window!(PerMinute = "per-minute": u64 as Json, WindowSpec::tumbling(Duration::from_secs(60)));

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: String) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?.update(|_, n| n.unwrap_or(0) + 1)?;
        Ok(())
    }
}

fn main() {}

// An on_close handler that takes the window's value instead of a ClosedWindow.
#![allow(unused_imports, dead_code)]

use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::window::WindowSpec;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::window!(PerMinute = "per-minute": u64 as Json, WindowSpec::tumbling(Duration::from_secs(60)));

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute, on_close = Self::closed)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: String) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?.update(|_, n| n.unwrap_or(0) + 1)?;
        Ok(())
    }

    fn closed(&self, _ctx: &mut Context<'_, Self>, _count: u64) -> Result<(), CallbackError> {
        Ok(())
    }
}

fn main() {}

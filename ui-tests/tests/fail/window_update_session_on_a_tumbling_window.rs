// 1. Updating a tumbling window with `update_session`, which is for session windows.
#![allow(unused_imports, dead_code)]

use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::window::WindowSpec;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::window!(PerMinute = "per-minute": u64 as Json, WindowSpec::tumbling(Duration::from_secs(60)));

#[goka::processor(group = "minutes")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: String) -> Result<(), CallbackError> {
        ctx.window::<PerMinute>()?
            .update_session(|a, b| a + b, |_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }
}

fn main() {}

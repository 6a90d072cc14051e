// 1. Updating a session window with `update`, which is for tumbling and hopping windows.
#![allow(unused_imports, dead_code)]

use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::window::WindowSpec;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::window!(Bursts = "bursts": u64 as Json, WindowSpec::session(Duration::from_secs(30)));

#[goka::processor(group = "bursts")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = Bursts)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: String) -> Result<(), CallbackError> {
        ctx.window::<Bursts>()?
            .update(|_, count| count.unwrap_or(0) + 1)?;
        Ok(())
    }
}

fn main() {}

// Writing a value of another type than the window's.
#![allow(unused_imports, dead_code)]

use std::time::Duration;

use goka::codec::{Json, StringCodec};
use goka::context::{CallbackError, Context};
use goka::window::WindowSpec;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::window!(PerMinute = "per-minute": u64 as Json, WindowSpec::tumbling(Duration::from_secs(60)));

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[window(window = PerMinute)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let mut minutes = ctx.window::<PerMinute>()?;
        for window in minutes.windows() {
            minutes.set(window, &click)?;
        }
        Ok(())
    }
}

fn main() {}

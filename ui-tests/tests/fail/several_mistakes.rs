// All mistakes of one struct are reported together, and nothing else.
// mistakes: 4
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "bad name", colour = "red")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
#[persist(value = i64, codec = Int64Codec)]
#[output(topc = Alerts)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let n = ctx.value()?.unwrap_or(0);
        let _ = click;
        ctx.set_value(&(n + 1))
    }
}

fn main() {}

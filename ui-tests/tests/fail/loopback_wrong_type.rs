// 6. Loopback with a value that is not the loop's value type.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[loopback(value = i64, codec = Int64Codec, handler = Self::on_loop)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = click;
        ctx.loopback(&String::new(), &"one".to_string())
    }

    fn on_loop(&self, _ctx: &mut Context<'_, Self>, _n: i64) {}
}

fn main() {}

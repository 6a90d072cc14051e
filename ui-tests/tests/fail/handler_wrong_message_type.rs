// 7. A handler whose message type is not its input topic's value type.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
struct Counter;

impl Counter {
    fn on_click(&self, _ctx: &mut Context<'_, Self>, _count: i64) -> Result<(), CallbackError> {
        Ok(())
    }
}

fn main() {}

// 2. Emitting to the group's own table: it is written through `set_value` only.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = i64, codec = Int64Codec)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = click;
        ctx.emit::<goka::processor::GroupTable<Self>>(&String::new(), &1)
    }
}

fn main() {}

// 9. Inputs keyed differently from each other cannot be co-partitioned.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);
goka::stream!(Numbers = "numbers": String as StringCodec, key: i64 as Int64Codec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[input(topic = Numbers, handler = Self::on_click)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = (ctx, click);
        Ok(())
    }
}

fn main() {}

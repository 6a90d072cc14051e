// 9. A joined table keyed differently from the inputs cannot be co-partitioned.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);
goka::table!(Scores = "scores": i64 as Int64Codec, key: i64 as Int64Codec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[join(table = Scores)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = (ctx, click);
        Ok(())
    }
}

fn main() {}

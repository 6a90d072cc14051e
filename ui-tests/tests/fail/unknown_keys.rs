// 10. Unknown keys in the processor attribute and in a helper attribute.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter", partitions = 8)]
#[input(topic = Clicks, handler = Self::on_click, codec = StringCodec)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let _ = (ctx, click);
        Ok(())
    }
}

fn main() {}

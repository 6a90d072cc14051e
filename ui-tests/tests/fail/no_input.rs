// 8. A processor without any input.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[persist(value = i64, codec = Int64Codec)]
struct Counter;

impl Counter {
    #[allow(dead_code)]
    fn read(&self, ctx: &mut Context<'_, Self>) -> Result<(), CallbackError> {
        let _ = ctx.value()?;
        Ok(())
    }
}

fn main() {}

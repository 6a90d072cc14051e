// ctx.join on a table declared with #[lookup].
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[lookup(table = Profiles)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, _click: String) -> Result<(), CallbackError> {
        let _profile = ctx.join::<Profiles>()?;
        Ok(())
    }
}

fn main() {}

// No #[input] at all, with a handler that uses the context.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[persist(value = i64, codec = Int64Codec)]
#[join(table = Profiles)]
#[output(topic = Alerts)]
struct Counter;

impl Counter {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), CallbackError> {
        let count = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(count + 1))?;
        if let Some(profile) = ctx.join::<Profiles>()? {
            let key = ctx.key().clone();
            ctx.emit::<Alerts>(&key, &format!("{profile}: {click}"))?;
        }
        Ok(())
    }
}

fn main() {}


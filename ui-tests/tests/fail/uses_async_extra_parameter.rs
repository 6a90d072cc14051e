// An async handler with a parameter after the value.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
#[output(topic = Alerts)]
struct Counter;

impl Counter {
    async fn on_click(
        &self,
        ctx: &mut Context<'_, Self>,
        click: String,
        threshold: usize,
    ) -> Result<(), CallbackError> {
        if click.len() > threshold {
            ctx.emit::<Alerts>(&click, &click)?;
        }
        Ok(())
    }
}

fn main() {}

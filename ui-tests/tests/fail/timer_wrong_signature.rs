// A timer handler that takes its payload by reference.
#![allow(unused_imports, dead_code)]

use goka::codec::StringCodec;
use goka::context::{CallbackError, Context};
use goka::timer::TimerTime;

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::timer!(Quiet: String as StringCodec);

#[goka::processor(group = "watch")]
#[input(topic = Clicks, handler = Self::on_click)]
#[timer(timer = Quiet, handler = Self::on_quiet)]
struct Watch;

impl Watch {
    fn on_click(&self, ctx: &mut Context<'_, Self>, page: String) -> Result<(), CallbackError> {
        ctx.schedule::<Quiet>(TimerTime::Stream(60_000), &page)
    }

    fn on_quiet(&self, _ctx: &mut Context<'_, Self>, _page: &String) -> Result<(), CallbackError> {
        Ok(())
    }
}

fn main() {}

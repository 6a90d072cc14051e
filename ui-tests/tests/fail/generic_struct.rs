// 10. Generic parameters: a processor's graph is one constant of one type.
#![allow(unused_imports, dead_code)]

use goka::codec::{Int64Codec, StringCodec};
use goka::context::{CallbackError, Context};

goka::stream!(Clicks = "clicks": String as StringCodec);
goka::stream!(Alerts = "alerts": String as StringCodec);
goka::table!(Profiles = "profiles": String as StringCodec);

#[goka::processor(group = "counter")]
#[input(topic = Clicks, handler = Self::on_click)]
struct Counter<T> {
    config: T,
}

fn main() {}

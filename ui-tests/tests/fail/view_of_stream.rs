// Views serve tables; a view of an event stream does not compile.
use goka::codec::StringCodec;
use goka::view::View;

goka::stream!(Clicks = "clicks": String as StringCodec);

fn main() {
    let _view: Option<View<Clicks>> = None;
}

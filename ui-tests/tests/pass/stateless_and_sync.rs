//! A stateless processor (no persist edge) with a sync handler that returns nothing, and
//! one whose handler takes tombstones as `None` (`nil_handling = "process"`).

use goka::codec::StringCodec;
use goka::context::Context;

goka::stream!(pub Clicks = "clicks": String as StringCodec);
goka::stream!(pub Pages = "pages": String as StringCodec);

#[goka::processor(group = "forwarder")]
#[input(topic = Clicks, handler = forward)]
#[output(topic = Pages)]
pub struct Forwarder;

impl Forwarder {
    fn forward(&self, ctx: &mut Context<'_, Self>, page: String) {
        let user = ctx.key().clone();
        // A handler that returns nothing cannot fail; errors here are dropped on purpose.
        let _ = ctx.emit::<Pages>(&user, &page);
    }
}

#[goka::processor(group = "deletions", nil_handling = "process", decode_errors = "fail")]
#[input(topic = Clicks, handler = Self::on_click)]
pub struct Deletions;

impl Deletions {
    async fn on_click(&self, _ctx: &mut Context<'_, Self>, click: Option<String>) -> Result<(), std::io::Error> {
        match click {
            Some(_) => Ok(()),
            None => Err(std::io::Error::other("a tombstone")),
        }
    }
}

#[goka::processor(group = "restorer", nil_handling = "restore", decode_errors = "skip")]
#[input(topic = Clicks, handler = Self::on_click)]
#[persist(value = String, codec = StringCodec)]
pub struct Restorer;

impl Restorer {
    fn on_click(&self, ctx: &mut Context<'_, Self>, click: String) -> Result<(), goka::context::CallbackError> {
        ctx.set_value(&click)
    }
}

fn main() {
    use goka::processor::{Group, NilHandling};
    use goka::view::DecodeErrorPolicy;
    assert_eq!(Forwarder::GRAPH.table, None);
    assert_eq!(Deletions::NIL_HANDLING, NilHandling::Process);
    assert_eq!(Restorer::NIL_HANDLING, NilHandling::Restore);
    assert_eq!(Restorer::DECODE_ERRORS, DecodeErrorPolicy::SkipAndCount);
    assert_eq!(Forwarder::NIL_HANDLING, NilHandling::Ignore);
}

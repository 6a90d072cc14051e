//! Topics declared in one module, a processor in another, and the runtime crate under
//! another name (`crate = "..."`).

extern crate goka as streams;

mod topics {
    use streams::codec::{Int64Codec, StringCodec};

    streams::stream!(pub Clicks = "clicks": String as StringCodec);
    streams::table!(pub Limits = "limits": i64 as Int64Codec);
}

mod processors {
    use streams::codec::Int64Codec;
    use streams::context::{CallbackError, Context};

    #[streams::processor(group = "limiter", crate = "::streams")]
    #[input(topic = crate::topics::Clicks, handler = Self::on_click)]
    #[join(table = super::topics::Limits)]
    #[persist(value = i64, codec = Int64Codec)]
    pub struct Limiter;

    impl Limiter {
        fn on_click(&self, ctx: &mut Context<'_, Self>, _click: String) -> Result<(), CallbackError> {
            let limit = ctx.join::<super::topics::Limits>()?.unwrap_or(i64::MAX);
            let seen = ctx.value()?.unwrap_or(0);
            if seen < limit {
                ctx.set_value(&(seen + 1))?;
            }
            Ok(())
        }
    }
}

fn main() {
    use streams::processor::Group;
    let graph = <processors::Limiter as Group>::GRAPH;
    assert_eq!(graph.inputs[0].topic, "clicks");
    assert_eq!(graph.joins[0].topic, "limits");
    assert_eq!(graph.table.map(|t| t.topic), Some("limiter-table"));
}

//! Testing a processor without a broker (goka's `tester`): the messaging filter of the
//! `messaging` example in miniature, driven by `goka::tester::Tester`. Everything runs in
//! memory and in order, so the checks below hold on every run.
//!
//! `cargo run -p goka-examples --example testing`

use goka::codec::StringCodec;
use goka::context::{CallbackError, Context};
use goka::tester::Tester;

goka::stream!(pub Sent = "sent": String as StringCodec);
goka::stream!(pub Received = "received": String as StringCodec);
goka::table!(pub Blocked = "blocked": String as StringCodec);

#[goka::processor(group = "filter")]
#[input(topic = Sent, handler = Self::on_sent)]
#[join(table = Blocked)]
#[output(topic = Received)]
#[derive(Debug)]
pub struct Filter;

impl Filter {
    fn on_sent(&self, ctx: &mut Context<'_, Self>, text: String) -> Result<(), CallbackError> {
        if ctx.join::<Blocked>()?.is_none() {
            let sender = ctx.key().clone();
            ctx.emit::<Received>(&sender, &text)?;
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("testing failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut tester = Tester::new();
    tester.register(Filter).await?;
    tester.set_table_value::<Blocked>(&"spammer".into(), &"blocked by an operator".into())?;
    let mut received = tester.track::<Received>();

    for (sender, text) in [("alice", "hello"), ("spammer", "buy now"), ("bob", "hi")] {
        tester.consume::<Sent>(&sender.into(), &text.into()).await?;
        println!("consumed {sender}: {text}");
    }
    let delivered = received.drain()?;
    for message in &delivered {
        println!(
            "emitted  {}: {}",
            message.key,
            message.value.as_deref().unwrap_or("(tombstone)")
        );
    }
    let senders: Vec<&str> = delivered.iter().map(|m| m.key.as_str()).collect();
    if senders != ["alice", "bob"] {
        return Err(format!("expected alice and bob to get through, got {senders:?}").into());
    }
    println!("testing complete: the blocked sender was filtered, the others delivered");
    Ok(())
}

//! What a processor group is to the runtime: the [`Group`] trait the processor macro
//! implements on the user's struct (or a user implements by hand), and the marker traits
//! that gate the typed [`Context`].
//!
//! The runtime is generic over `Group`; everything it needs from the user's code is here: the
//! const [`GroupGraph`], the key type, and a dispatch from an input topic to a handler.

use std::marker::PhantomData;

use futures::future::BoxFuture;

use crate::codec::Codec;
use crate::codec::DecodeErrorPolicy;
use crate::context::{CallbackError, Context};
use crate::graph::GroupGraph;
use crate::processor::NilHandling;
use crate::topic::{Table, Topic, TopicKind};

/// A processor group: its graph and its handlers.
pub trait Group: Send + Sync + Sized + 'static {
    /// The edges of the group; validated before the processor starts.
    const GRAPH: GroupGraph;

    /// The key type of every input (co-partitioned topics share keys).
    type Key: Send + Sync + 'static;
    /// How keys are encoded.
    type KeyCodec: Codec<Self::Key>;

    /// What tombstones on inputs mean (`#[processor(nil_handling = "...")]`); with
    /// [`NilHandling::Process`] generated handlers take `Option<V>`.
    /// [`ProcessorConfig::nil_handling`](crate::processor::ProcessorConfig) overrides it.
    const NIL_HANDLING: NilHandling = NilHandling::Ignore;

    /// What to do with inputs that do not decode (`#[processor(decode_errors = "...")]`).
    /// [`ProcessorConfig::decode_errors`](crate::processor::ProcessorConfig) overrides it.
    const DECODE_ERRORS: DecodeErrorPolicy = DecodeErrorPolicy::Fail;

    /// The dead-letter topic, `<group>-dead-letters` for processors the macro makes; where
    /// messages go under [`DecodeErrorPolicy::DeadLetter`] or
    /// [`HandlerErrorPolicy::DeadLetter`](crate::processor::HandlerErrorPolicy).
    /// [`ProcessorConfig::dead_letter_topic`](crate::processor::ProcessorConfig) overrides it.
    const DEAD_LETTERS: &'static str = "";

    /// Decodes the message in `ctx` (topic, value) and calls the handler of its topic. The
    /// value is `None` for a tombstone that nil handling let through.
    fn dispatch<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), CallbackError>>;

    /// Calls the `on_close` handler of the window named `window` for the key in `ctx`, with
    /// the window's range and final value (encoded). Generated for groups with
    /// `#[window(..., on_close = ...)]` edges.
    fn close_window<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        window: &'a str,
        range: crate::window::WindowRange,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        let _ = (ctx, range, value);
        Box::pin(async move {
            Err(CallbackError::from(format!(
                "group {} has no on_close handler for window {window}",
                Self::GRAPH.group
            )))
        })
    }

    /// Calls the handler of the timer named `timer` for the key in `ctx`, with its payload
    /// (encoded). Generated for groups with `#[timer(...)]` edges.
    fn fire_timer<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        timer: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        let _ = (ctx, payload);
        Box::pin(async move {
            Err(CallbackError::from(format!(
                "group {} has no handler for timer {timer}",
                Self::GRAPH.group
            )))
        })
    }

    /// Calls the handler of the visitor named `visitor` for the key in `ctx`, with `value`
    /// (the visitor's value). Generated for groups with `#[visit(...)]` edges.
    fn visit<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        visitor: &'a str,
        value: &'a (dyn std::any::Any + Send + Sync),
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        let _ = (ctx, value);
        Box::pin(async move {
            Err(CallbackError::from(format!(
                "group {} has no visitor {visitor}",
                Self::GRAPH.group
            )))
        })
    }
}

/// A group that consumes the topic `T` with a handler (`#[input(topic = T, ...)]`). Every
/// input has the group's key type: inputs are co-partitioned, so their keys must agree.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not consume `{T}`",
    label = "not an input of this processor",
    note = "add `#[input(topic = {T}, handler = ...)]` to `{Self}`"
)]
pub trait Consumes<T: Topic<Key = Self::Key>>: Group {}

/// A group with a group table (`#[persist(...)]`): handlers may read and write its row.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no group table",
    label = "needs a persist edge",
    note = "add `#[persist(value = ..., codec = ...)]` to `{Self}` to keep state"
)]
pub trait Stateful: Group {
    /// The value type of a row.
    type Value: Send + Sync + 'static;
    /// How rows are encoded.
    type ValueCodec: Codec<Self::Value>;
}

/// A group that may emit to the stream `T` (`#[output(topic = T)]`). That `T` is a stream is
/// checked where it is declared (`__private::output_is_a_stream`) and where it is emitted
/// to (`Context::emit`), not here, so that a group's own table, which every stateful group
/// "emits" to through `set_value`, gets the one error that says so.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not declare `{T}` as an output",
    label = "not an output of this processor",
    note = "add `#[output(topic = {T})]` to `{Self}`"
)]
pub trait Emits<T: Topic>: Group {}

impl<P: Stateful> Emits<GroupTable<P>> for P {}

/// A group that joins the co-partitioned table `T` (`#[join(table = T)]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not join `{T}`",
    label = "not a joined table of this processor",
    note = "add `#[join(table = {T})]` to `{Self}`; a table declared with `#[lookup]` is read with `ctx.lookup::<{T}>(&key)`"
)]
pub trait Joins<T: Table<Key = Self::Key>>: Group {}

/// A group that looks up keys in the table `T` (`#[lookup(table = T)]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not look up `{T}`",
    label = "not a lookup table of this processor",
    note = "add `#[lookup(table = {T})]` to `{Self}`; a table declared with `#[join]` is read at the message's key with `ctx.join::<{T}>()`"
)]
pub trait LooksUp<T: Table>: Group {}

/// A group with a loop topic (`#[loopback(...)]`): handlers may send to other keys of the
/// group.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no loopback",
    label = "needs a loop edge",
    note = "add `#[loopback(value = ..., codec = ..., handler = ...)]` to `{Self}`"
)]
pub trait Loops: Group {
    /// The value type of loop messages.
    type Value: Send + Sync + 'static;
    /// How loop messages are encoded.
    type ValueCodec: Codec<Self::Value>;
}

/// A group that keeps the windows `W` (`#[window(window = W)]`): handlers may read and
/// write them with `ctx.window::<W>()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not keep the window `{W}`",
    label = "not a window of this processor",
    note = "add `#[window(window = {W})]` to `{Self}`"
)]
pub trait Windowed<W: crate::window::Window>: Group {}

/// A group that schedules the timer `T` (`#[timer(timer = T, handler = ...)]`): handlers
/// may schedule and cancel it with `ctx.schedule::<T>(...)` and `ctx.cancel::<T>(...)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not declare the timer `{T}`",
    label = "not a timer of this processor",
    note = "add `#[timer(timer = {T}, handler = ...)]` to `{Self}`"
)]
pub trait Timed<T: crate::timer::Timer>: Group {}

/// The group table of `P` as a table topic (`<group>-table`), so views of it are typed by
/// the processor and cannot disagree with it.
pub struct GroupTable<P>(PhantomData<fn() -> P>);

impl<P> std::fmt::Debug for GroupTable<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupTable")
    }
}

impl<P: Stateful> Topic for GroupTable<P> {
    const NAME: &'static str = match P::GRAPH.table {
        Some(edge) => edge.topic,
        None => "",
    };
    const KIND: TopicKind = TopicKind::Table;
    type Key = P::Key;
    type Value = <P as Stateful>::Value;
    type KeyCodec = P::KeyCodec;
    type ValueCodec = <P as Stateful>::ValueCodec;
}

impl<P: Stateful> Table for GroupTable<P> {}

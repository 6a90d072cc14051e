//! What a processor group is: the [`Group`] trait the processor macro implements on the
//! user's struct (or a user implements by hand), with the group's graph, key type and
//! policies, and the marker traits of its edges that gate the typed
//! [`Context`](crate::context::Context). The handlers the runtime calls are the
//! [`Handlers`](crate::processor::Handlers) trait's, beside it.
//!
//! Nothing here knows the context or the runtime: both are built on it.

use std::marker::PhantomData;

use crate::codec::{Codec, DecodeErrorPolicy};
use crate::graph::GroupGraph;
use crate::topic::{Table, Topic, TopicKind};

/// A processor group: its edges, its key, and what it does with tombstones, undecodable
/// inputs and dead letters.
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
}

/// What a message with a null value (a tombstone) on an input means (goka's `NilHandling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NilHandling {
    /// Drop the message without calling the handler (goka's default).
    #[default]
    Ignore,
    /// Call the handler with no value: handlers take `Option<V>` (goka's `NilProcess`).
    Process,
    /// Hand the tombstone to the value codec as empty bytes and call the handler with what
    /// it decodes (goka's `NilDecode`): for codecs that give a tombstone a meaning, such as
    /// a default value. A codec that refuses empty bytes makes it a decode error.
    Decode,
    /// Delete the group table's row at the key, without calling the handler (goka-rs's own:
    /// it keeps a table in step with a compacted input).
    Restore,
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

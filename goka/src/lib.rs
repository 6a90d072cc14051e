//! # goka
//!
//! Typed stateful stream processing on Apache Kafka, modelled on the Go library
//! [goka](https://github.com/lovoo/goka). Topics are types, codecs are types, and the
//! processing graph of a processor group is checked by the compiler.
//!
//! The crate maps goka's packages onto modules:
//!
//! | module | holds |
//! |---|---|
//! | [`topic`] | topics as types: [`Stream`] and [`Table`] |
//! | [`codec`] | bytes ↔ values, byte-compatible with goka's codecs |
//! | [`partitioner`] | which partition a key lives in (goka's FNV-1a, Java's murmur2) |
//! | [`graph`] | [`GroupGraph`](graph::GroupGraph): the edges of a processor group, and goka's rules |
//! | [`group`] | [`Group`](group::Group): what a processor group is, and the marker traits of its edges |
//! | [`processor`](mod@processor) | running a processor group: consumer group, recovery, handlers, commits |
//! | [`context`] | [`Context`](context::Context): what a handler can do, typed by its group |
//! | [`kafka`] | the seam to the Kafka client, and its librdkafka implementation |
//! | [`topic_manager`] | creating and checking topics |
//! | [`emitter`] | [`Emitter`](emitter::Emitter): typed producer of a stream topic |
//! | [`view`] | [`View`](view::View): local, always-catching-up copy of a table |
//! | [`reader`] | [`StreamReader`](reader::StreamReader): reading a topic back, typed, without a group |
//! | [`timer`](mod@timer) | timers per key, at a stream or wall-clock time, kept like a table |
//! | [`window`](mod@window) | windowed tables over event time: tumbling, hopping and session windows per key |
//! | [`storage`] | the local state of a table partition (memory, RocksDB) |
//! | [`tester`] | deterministic in-memory tests of processors, views and emitters |
//! | `web` | the web monitor, query page, JSON API and Prometheus metrics (feature `web`) |
//! | [`error`] | the error type of each layer |

#![warn(missing_docs)]

// The crate's own unit tests declare groups with its macros, whose code names `::goka`.
#[cfg(test)]
extern crate self as goka;

#[doc(hidden)]
pub mod __private;
pub mod codec;
pub mod context;
pub mod emitter;
pub mod error;
pub mod graph;
pub mod group;
pub mod kafka;
pub mod partitioner;
pub mod processor;
pub mod reader;
pub mod storage;
pub mod table;
pub mod tester;
pub mod timer;
pub mod topic;
pub mod topic_manager;
pub mod view;
#[cfg(feature = "web")]
pub mod web;
pub mod window;

pub use codec::Codec;
pub use error::Error;
/// Turns a struct into a processor group; see "Processors" in `docs/concepts.md`.
///
/// ```text
/// #[goka::processor(group = "click-counter")]   // first, above the helper attributes
/// #[input(topic = Clicks, handler = Self::on_click)]
/// #[persist(value = u64, codec = Json)]
/// struct ClickCounter;
/// ```
///
/// | attribute | meaning | goka |
/// |---|---|---|
/// | `#[processor(group = "g")]` | the group: consumer group id, `g-table`, `g-loop` | `DefineGroup` |
/// | `crate = "path"` | where the `goka` crate is, when renamed | |
/// | `nil_handling = "ignore" \| "process" \| "decode" \| "restore"` | tombstones on inputs: dropped; passed as `None` (handlers take `Option<V>`); decoded from empty bytes by the codec; or deleting the row | `WithNilHandling` (`restore` is goka-rs's own) |
/// | `decode_errors = "fail" \| "skip"` | inputs that do not decode stop the processor or are skipped and counted | |
/// | `#[input(topic = T, handler = h)]` | consume `T`; `h(&self, &mut Context<'_, Self>, T::Value)` | `Input` |
/// | `#[input(topics = [A, B], handler = h)]` | several topics, one handler | `Inputs` |
/// | `#[persist(value = V, codec = C)]` | the group table | `Persist` |
/// | `#[join(table = T)]` | read `T` at the message's key: `ctx.join::<T>()` | `Join` |
/// | `#[lookup(table = T)]` | read any key of `T`: `ctx.lookup::<T>(key)` | `Lookup` |
/// | `#[output(topic = T)]` | `ctx.emit::<T>(key, value)` | `Output` |
/// | `#[loopback(value = V, codec = C, handler = h)]` | `ctx.loopback(key, value)`, handled by `h` | `Loop` |
/// | `#[visit(visitor = V, handler = h)]` | `processor.visit_all::<V>(value)` runs `h` for every key | `Visitor` |
/// | `#[timer(timer = T, handler = h)]` | `ctx.schedule::<T>(at, payload)`; `h` runs when it fires | |
/// | `#[window(window = W, on_close = h)]` | a windowed table: `ctx.window::<W>()`; `h` gets each closed window once | |
///
/// Handlers are methods (sync or `async`) returning `()` or `Result<(), E>` for any error
/// `E` that converts into [`CallbackError`](context::CallbackError).
pub use goka_macros::processor;
pub use partitioner::Partitioner;
pub use topic::{Stream, Table, Topic};

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The examples of the chapters under `docs/`, compiled and run as doc tests.
#[cfg(doctest)]
pub mod chapters {
    #[doc = include_str!("../../docs/concepts.md")]
    pub struct Concepts;
    #[doc = include_str!("../../docs/windows-and-timers.md")]
    pub struct WindowsAndTimers;
    #[doc = include_str!("../../docs/failure-behaviour.md")]
    pub struct FailureBehaviour;
    #[doc = include_str!("../../docs/goka-compatibility.md")]
    pub struct GokaCompatibility;
    #[doc = include_str!("../../docs/benchmarks.md")]
    pub struct Benchmarks;
    #[doc = include_str!("../../docs/development.md")]
    pub struct Development;
}

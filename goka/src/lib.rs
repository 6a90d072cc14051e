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
//! | [`topic`] | topics as types: [`Stream`](topic::Stream) and [`Table`](topic::Table) |
//! | [`codec`] | bytes ↔ values, byte-compatible with goka's codecs |
//! | [`partitioner`] | which partition a key lives in (goka's FNV-1a, Java's murmur2) |
//! | [`graph`] | [`GroupGraph`](graph::GroupGraph): the edges of a processor group, and goka's rules |
//! | [`processor`] | running a processor group: consumer group, recovery, handlers, commits |
//! | [`context`] | [`Context`](context::Context): what a handler can do, typed by its group |
//! | [`kafka`] | the seam to the Kafka client, and its librdkafka implementation |
//! | [`topic_manager`] | creating and checking topics |
//! | [`emitter`] | [`Emitter`](emitter::Emitter): typed producer of a stream topic |
//! | [`view`] | [`View`](view::View): local, always-catching-up copy of a table |
//! | [`storage`] | the local state of a table partition (memory, RocksDB) |
//! | [`error`] | the error type of each layer |

pub mod codec;
pub mod context;
pub mod emitter;
pub mod error;
pub mod graph;
pub mod kafka;
pub mod partitioner;
pub mod processor;
pub mod storage;
pub mod topic;
pub mod topic_manager;
pub mod view;

pub use codec::Codec;
pub use error::Error;
pub use partitioner::Partitioner;
pub use topic::{Stream, Table, Topic};

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

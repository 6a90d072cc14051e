//! Topics as types.
//!
//! A topic is declared once, as a zero-sized type implementing [`Topic`], and every emitter,
//! processor and view names that type instead of a string: the name, the key and value types
//! and their codecs travel with it. [`Stream`] topics carry events and can be emitted to;
//! [`Table`] topics are compacted changelogs that can be joined, looked up and viewed, but are
//! written only by the processor that owns them.
//!
//! ```
//! use goka::codec::{Int64Codec, Json};
//! use goka::topic::{Topic, TopicKind};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! pub struct Click { pub page: String }
//!
//! goka::stream!(
//!     /// Clicks, keyed by user id.
//!     pub Clicks = "clicks": Click as Json
//! );
//! goka::table!(pub Scores = "scores": i64 as Int64Codec);
//!
//! assert_eq!(Clicks::NAME, "clicks");
//! assert_eq!(Scores::KIND, TopicKind::Table);
//! ```

use crate::codec::{Codec, CodecError};

/// What a topic carries: events (a stream) or the latest value per key (a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// An event stream: emitted to, consumed by processors.
    Stream,
    /// A compacted changelog: the state of a processor group, joined, looked up or viewed.
    Table,
}

/// A Kafka topic with typed keys and values.
///
/// Implement it with [`stream!`](crate::stream) or [`table!`](macro@crate::table) rather than by hand.
pub trait Topic: Send + Sync + 'static {
    /// The topic's name in Kafka.
    const NAME: &'static str;
    /// Stream or table.
    const KIND: TopicKind;
    /// The key type. goka's keys are strings; other types need a matching key codec.
    type Key: Send + Sync + 'static;
    /// The value type.
    type Value: Send + Sync + 'static;
    /// How keys are encoded. The partitioner hashes the encoded bytes.
    type KeyCodec: Codec<Self::Key>;
    /// How values are encoded.
    type ValueCodec: Codec<Self::Value>;

    /// Encodes a key with the topic's key codec.
    fn encode_key(key: &Self::Key) -> Result<Vec<u8>, CodecError> {
        Self::KeyCodec::encode_to_vec(key)
    }

    /// Decodes a key with the topic's key codec.
    fn decode_key(bytes: &[u8]) -> Result<Self::Key, CodecError> {
        Self::KeyCodec::decode(bytes)
    }

    /// Encodes a value with the topic's value codec.
    fn encode_value(value: &Self::Value) -> Result<Vec<u8>, CodecError> {
        Self::ValueCodec::encode_to_vec(value)
    }

    /// Decodes a value with the topic's value codec.
    fn decode_value(bytes: &[u8]) -> Result<Self::Value, CodecError> {
        Self::ValueCodec::decode(bytes)
    }

    /// The part of an encoded key the partitioner hashes: all of it, but for topics whose
    /// keys hold more than the key they are partitioned by (a window's `(key, start)`).
    fn partition_key(encoded: &[u8]) -> &[u8] {
        encoded
    }
}

/// A topic of events: can be emitted to and consumed as a processor input.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a stream topic",
    label = "declared as a table, or not a topic",
    note = "a table is written only by its own processor, in a handler with `ctx.set_value(...)`; declare event topics with `goka::stream!`"
)]
pub trait Stream: Topic {}

/// A compacted topic holding the latest value per key: joined, looked up, viewed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a table topic",
    label = "declared as a stream, or not a topic",
    note = "declare tables with `goka::table!`, or use a processor's `GroupTable<P>` or `WindowTable<P, W>`"
)]
pub trait Table: Topic {}

/// Declares a stream topic type: `stream!(pub Name = "topic-name": Value as ValueCodec)`.
///
/// Keys default to `String` with [`StringCodec`](crate::codec::StringCodec), as in goka; add
/// `, key: Key as KeyCodec` for another key type. Doc comments and attributes go first.
///
/// ```
/// use goka::codec::{BytesCodec, StringCodec};
/// goka::stream!(pub Raw = "raw-events": Vec<u8> as BytesCodec);
/// goka::stream!(
///     /// Keyed by opaque bytes.
///     pub ByBytes = "by-bytes": String as StringCodec, key: Vec<u8> as BytesCodec
/// );
/// ```
#[macro_export]
macro_rules! stream {
    ($($decl:tt)*) => {
        $crate::__declare_topic!(Stream; $($decl)*);
    };
}

/// Declares a table topic type: `table!(pub Name = "topic-name": Value as ValueCodec)`.
///
/// Same form as [`stream!`](crate::stream); the type implements [`Table`] instead of [`Stream`].
#[macro_export]
macro_rules! table {
    ($($decl:tt)*) => {
        $crate::__declare_topic!(Table; $($decl)*);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __declare_topic {
    ($kind:ident;
     $(#[$meta:meta])* $vis:vis $name:ident = $topic:literal : $value:ty as $codec:ty
     $(, key: $key:ty as $key_codec:ty)? $(,)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $crate::topic::Topic for $name {
            const NAME: &'static str = $topic;
            const KIND: $crate::topic::TopicKind = $crate::topic::TopicKind::$kind;
            type Key = $crate::__declare_topic!(@key $($key)?);
            type Value = $value;
            type KeyCodec = $crate::__declare_topic!(@key_codec $($key_codec)?);
            type ValueCodec = $codec;
        }

        impl $crate::topic::$kind for $name {}
    };
    (@key) => { ::std::string::String };
    (@key $key:ty) => { $key };
    (@key_codec) => { $crate::codec::StringCodec };
    (@key_codec $codec:ty) => { $codec };
}

/// The partition of `key` in a topic of `partitions` partitions, with the topic's key codec
/// and the given partitioner. Emitters and views use this; it is public so users can check
/// where a key lives.
pub fn partition_of<T: Topic>(
    key: &T::Key,
    partitions: u32,
    partitioner: &dyn crate::partitioner::Partitioner,
) -> Result<i32, CodecError> {
    let bytes = T::encode_key(key)?;
    Ok(partitioner.partition(&bytes, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Int64Codec, Json, StringCodec};
    use crate::partitioner::{GokaPartitioner, Partitioner};

    crate::stream!(
        /// Test stream.
        pub Events = "events": String as StringCodec
    );
    crate::table!(Totals = "totals": i64 as Int64Codec, key: i64 as Int64Codec,);

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Profile {
        name: String,
    }
    crate::table!(Profiles = "profiles": Profile as Json);

    fn assert_stream<T: Stream>() {}
    fn assert_table<T: Table>() {}

    #[test]
    fn declarations_carry_name_kind_and_types() {
        assert_eq!(Events::NAME, "events");
        assert_eq!(Events::KIND, TopicKind::Stream);
        assert_eq!(Totals::NAME, "totals");
        assert_eq!(Totals::KIND, TopicKind::Table);
        assert_eq!(Profiles::KIND, TopicKind::Table);
        assert_stream::<Events>();
        assert_table::<Totals>();
        assert_table::<Profiles>();
        let key: <Totals as Topic>::Key = -3i64;
        assert_eq!(Totals::encode_key(&key).unwrap(), b"-3");
        assert_eq!(Totals::decode_value(b"12").unwrap(), 12);
    }

    #[test]
    fn partition_of_hashes_the_encoded_key() {
        let p = partition_of::<Events>(&"some-key".to_string(), 10, &GokaPartitioner).unwrap();
        assert_eq!(p, 7);
        // Int64 keys hash their decimal text, as a goka service with codec.Int64 keys would.
        let p = partition_of::<Totals>(&1, 10, &GokaPartitioner).unwrap();
        assert_eq!(p, GokaPartitioner.partition(b"1", 10));
    }
}

//! Codecs turn typed values into the bytes Kafka stores and back.
//!
//! The built-in codecs are byte-compatible with goka's (`codec.String`, `codec.Bytes`,
//! `codec.Int64`), so a Go service and a Rust service can share topics and tables. `Json` and
//! `Bincode` cover serde types. A codec is a type, named by topics and processors at compile
//! time; write your own by implementing [`Codec`] for a unit struct.

use std::fmt;

/// Encodes values of type `T` into bytes and decodes them back.
///
/// Codecs are stateless types: topics and processors name them in type position
/// (`type ValueCodec = Json;`), and the runtime calls the associated functions.
///
/// ```
/// use goka::codec::{Codec, CodecError};
///
/// /// Temperatures in tenths of a degree, as big-endian 2-byte integers.
/// struct Tenths;
///
/// impl Codec<i16> for Tenths {
///     const NAME: &'static str = "tenths";
///     fn encode(value: &i16, buf: &mut Vec<u8>) -> Result<(), CodecError> {
///         buf.extend_from_slice(&value.to_be_bytes());
///         Ok(())
///     }
///     fn decode(bytes: &[u8]) -> Result<i16, CodecError> {
///         let raw: [u8; 2] = bytes
///             .try_into()
///             .map_err(|_| CodecError::custom(Self::NAME, format!("want 2 bytes, got {}", bytes.len())))?;
///         Ok(i16::from_be_bytes(raw))
///     }
/// }
///
/// assert_eq!(Tenths::encode_to_vec(&-5).unwrap(), vec![0xff, 0xfb]);
/// assert_eq!(Tenths::decode(&[0x00, 0x10]).unwrap(), 16);
/// ```
pub trait Codec<T>: 'static {
    /// A short name used in error messages ("json", "int64", ...).
    const NAME: &'static str;

    /// Appends the encoding of `value` to `buf`. Appending lets the runtime reuse buffers.
    fn encode(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a value from the complete message bytes.
    fn decode(bytes: &[u8]) -> Result<T, CodecError>;

    /// Checks that `bytes` decode, without keeping the value. Views call this for every
    /// changelog message they store; codecs that can check cheaply override it.
    fn validate(bytes: &[u8]) -> Result<(), CodecError> {
        Self::decode(bytes).map(drop)
    }

    /// Encodes `value` into a fresh vector.
    fn encode_to_vec(value: &T) -> Result<Vec<u8>, CodecError> {
        let mut buf = Vec::new();
        Self::encode(value, &mut buf)?;
        Ok(buf)
    }
}

/// Why a value could not be encoded or decoded. The runtime adds the coordinates (topic,
/// partition, offset, key) when it reports one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes of a `String` value are not valid UTF-8.
    #[error("string codec: value is not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The bytes of an `Int64Codec` value are not a decimal 64-bit integer.
    #[error("int64 codec: {text:?} is not a decimal 64-bit integer")]
    Int64 {
        /// The offending text (lossy UTF-8, at most 64 characters).
        text: String,
    },
    /// serde_json failed.
    #[error("json codec: {0}")]
    Json(#[from] serde_json::Error),
    /// bincode failed to encode.
    #[cfg(feature = "bincode")]
    #[error("bincode codec: {0}")]
    BincodeEncode(#[from] bincode::error::EncodeError),
    /// bincode failed to decode.
    #[cfg(feature = "bincode")]
    #[error("bincode codec: {0}")]
    BincodeDecode(#[from] bincode::error::DecodeError),
    /// A user codec failed.
    #[error("{codec} codec: {message}")]
    Custom {
        /// The codec's [`Codec::NAME`].
        codec: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl CodecError {
    /// An error of a user-defined codec.
    pub fn custom(codec: &'static str, message: impl fmt::Display) -> Self {
        CodecError::Custom {
            codec,
            message: message.to_string(),
        }
    }
}

/// What to do with a message whose key or value does not decode: an input message of a
/// processor, or a changelog message a view applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeErrorPolicy {
    /// Stop with an error naming topic, partition, offset and key.
    #[default]
    Fail,
    /// Skip the message and count it in the stats.
    SkipAndCount,
    /// Send the message as it came, with its coordinates and the error in headers, to the
    /// processor's dead-letter topic, count it, and go on (processors only; a view, which
    /// has nowhere to send it, stops as with `Fail`).
    DeadLetter,
}

/// UTF-8 strings, as goka's `codec.String`. Invalid UTF-8 is a decode error, never replaced.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringCodec;

impl Codec<String> for StringCodec {
    const NAME: &'static str = "string";

    fn encode(value: &String, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        buf.extend_from_slice(value.as_bytes());
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<String, CodecError> {
        Ok(std::str::from_utf8(bytes)?.to_owned())
    }

    fn validate(bytes: &[u8]) -> Result<(), CodecError> {
        std::str::from_utf8(bytes)?;
        Ok(())
    }
}

/// Raw bytes, passed through unchanged, as goka's `codec.Bytes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec<Vec<u8>> for BytesCodec {
    const NAME: &'static str = "bytes";

    fn encode(value: &Vec<u8>, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        buf.extend_from_slice(value);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.to_vec())
    }

    fn validate(_bytes: &[u8]) -> Result<(), CodecError> {
        Ok(())
    }
}

/// 64-bit integers as decimal ASCII text (`-42` is the bytes `"-42"`), as goka's `codec.Int64`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Int64Codec;

impl Codec<i64> for Int64Codec {
    const NAME: &'static str = "int64";

    fn encode(value: &i64, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        // Decimal ASCII, as goka's codec writes it; itoa skips the formatting machinery,
        // which cost more than the rest of a counting handler.
        buf.extend_from_slice(itoa::Buffer::new().format(*value).as_bytes());
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<i64, CodecError> {
        // Go's strconv.ParseInt accepts an optional sign and decimal digits, as does
        // i64::from_str; both reject whitespace and empty input.
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| CodecError::Int64 {
                text: String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned(),
            })
    }
}

/// Any serde type as JSON (serde_json).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T> Codec<T> for Json
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    const NAME: &'static str = "json";

    fn encode(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(buf, value)?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// The most a [`Bincode`] decode may allocate, in bytes.
#[cfg(feature = "bincode")]
pub const BINCODE_DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// The deepest a [`Bincode`] value may nest (each struct, enum, sequence, map or option is a
/// level): a recursive type decoded from hostile bytes would otherwise recurse until the
/// stack overflows, which aborts the process.
#[cfg(feature = "bincode")]
pub const BINCODE_DEPTH_LIMIT: usize = 128;

#[cfg(feature = "bincode")]
mod depth;

/// The unread rest of a bincode input; what is left after a decode are trailing bytes.
#[cfg(feature = "bincode")]
struct Unread<'a>(&'a [u8]);

#[cfg(feature = "bincode")]
impl bincode::de::read::Reader for Unread<'_> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        if bytes.len() > self.0.len() {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: bytes.len() - self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(bytes.len());
        bytes.copy_from_slice(head);
        self.0 = rest;
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.0.get(..n)
    }

    fn consume(&mut self, n: usize) {
        self.0 = self.0.get(n..).unwrap_or_default();
    }
}

/// Any serde type in bincode's standard (varint) encoding. Behind the `bincode` feature.
#[cfg(feature = "bincode")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

#[cfg(feature = "bincode")]
impl<T> Codec<T> for Bincode
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    const NAME: &'static str = "bincode";

    fn encode(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(value, buf, bincode::config::standard())?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        // A hostile length prefix must not make bincode reserve petabytes: cap what a decode
        // may claim (far above Kafka's default message size). Found by the fuzz tests.
        let config = bincode::config::standard().with_limit::<BINCODE_DECODE_LIMIT>();
        let mut unread = Unread(bytes);
        let mut decoder = bincode::serde::OwnedSerdeDecoder::from_reader(&mut unread, config);
        let value = T::deserialize(depth::limited(
            decoder.as_deserializer(),
            BINCODE_DEPTH_LIMIT,
        ))?;
        if !unread.0.is_empty() {
            return Err(CodecError::custom(
                "bincode",
                format!("{} trailing bytes after the value", unread.0.len()),
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trips_and_rejects_invalid_utf8() {
        let bytes = StringCodec::encode_to_vec(&"grüße".to_string()).unwrap();
        assert_eq!(bytes, "grüße".as_bytes());
        assert_eq!(StringCodec::decode(&bytes).unwrap(), "grüße");
        assert!(StringCodec::validate("ok".as_bytes()).is_ok());
        assert!(StringCodec::validate(&[0xff]).is_err());
        let err = StringCodec::decode(&[0x66, 0xff, 0x6f]).unwrap_err();
        assert!(matches!(err, CodecError::Utf8(_)), "{err}");
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn bytes_pass_through_unchanged() {
        let raw = vec![0u8, 1, 255, 128];
        assert_eq!(BytesCodec::encode_to_vec(&raw).unwrap(), raw);
        assert_eq!(BytesCodec::decode(&raw).unwrap(), raw);
        assert_eq!(BytesCodec::decode(&[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn int64_is_decimal_ascii_like_goka() {
        let cases: [(i64, &str); 5] = [
            (-42, "-42"),
            (0, "0"),
            (7, "7"),
            (i64::MAX, "9223372036854775807"),
            (i64::MIN, "-9223372036854775808"),
        ];
        for (value, text) in cases {
            assert_eq!(Int64Codec::encode_to_vec(&value).unwrap(), text.as_bytes());
            assert_eq!(Int64Codec::decode(text.as_bytes()).unwrap(), value);
        }
        assert!(Int64Codec::validate(b"12").is_ok() && Int64Codec::validate(b"x").is_err());
        // Go's strconv.ParseInt accepts a leading plus sign too.
        assert_eq!(Int64Codec::decode(b"+5").unwrap(), 5);
    }

    #[test]
    fn int64_rejects_what_goka_rejects() {
        for bad in [
            &b""[..],
            b" 1",
            b"1.5",
            b"0x10",
            b"9223372036854775808",
            b"\xff",
        ] {
            let err = Int64Codec::decode(bad).unwrap_err();
            assert!(matches!(err, CodecError::Int64 { .. }), "{bad:?}: {err}");
        }
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Click {
        user: String,
        count: u32,
    }

    #[test]
    fn json_round_trips_and_reports_bad_input() {
        let click = Click {
            user: "u1".into(),
            count: 3,
        };
        let bytes = <Json as Codec<Click>>::encode_to_vec(&click).unwrap();
        assert_eq!(bytes, br#"{"user":"u1","count":3}"#);
        assert_eq!(<Json as Codec<Click>>::decode(&bytes).unwrap(), click);
        let err = <Json as Codec<Click>>::decode(b"{\"user\":1}").unwrap_err();
        assert!(err.to_string().starts_with("json codec:"), "{err}");
    }

    #[cfg(feature = "bincode")]
    #[test]
    fn bincode_round_trips_and_rejects_trailing_bytes() {
        let click = Click {
            user: "u1".into(),
            count: 300,
        };
        let mut bytes = <Bincode as Codec<Click>>::encode_to_vec(&click).unwrap();
        assert_eq!(<Bincode as Codec<Click>>::decode(&bytes).unwrap(), click);
        bytes.push(0);
        let err = <Bincode as Codec<Click>>::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        assert!(<Bincode as Codec<Click>>::decode(&[0xff]).is_err());
    }

    #[cfg(feature = "bincode")]
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    #[cfg(feature = "bincode")]
    #[test]
    fn bincode_refuses_hostile_nesting_instead_of_overflowing_the_stack() {
        // Variant 1 (`Node`) a million times: a byte per level, far deeper than any stack.
        let mut hostile = vec![1u8; 1_000_000];
        hostile.push(0);
        let err = <Bincode as Codec<Tree>>::decode(&hostile).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");

        let mut tree = Tree::Leaf;
        for _ in 0..50 {
            tree = Tree::Node(Box::new(tree));
        }
        let bytes = <Bincode as Codec<Tree>>::encode_to_vec(&tree).unwrap();
        assert_eq!(<Bincode as Codec<Tree>>::decode(&bytes).unwrap(), tree);
    }
}

//! Property tests on everything that decodes bytes from outside: every codec and the stored
//! offset. Arbitrary input must give a value or an error, never a panic, and what a codec
//! encodes it decodes back. `PROPTEST_CASES=100000 cargo test -p goka --test fuzz_decoding`
//! runs a longer search than the default.

use goka::codec::{Bincode, BytesCodec, Codec, Int64Codec, Json, StringCodec};
use goka::storage::{MemoryStorage, Storage, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row {
    name: String,
    count: i64,
    tags: Vec<String>,
    nested: Option<Box<Row>>,
}

fn row() -> impl Strategy<Value = Row> {
    let leaf = (".*", any::<i64>(), proptest::collection::vec(".*", 0..3)).prop_map(
        |(name, count, tags)| Row {
            name,
            count,
            tags,
            nested: None,
        },
    );
    leaf.prop_recursive(3, 8, 1, |inner| {
        (inner, ".*", any::<i64>()).prop_map(|(nested, name, count)| Row {
            name,
            count,
            tags: Vec::new(),
            nested: Some(Box::new(nested)),
        })
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_codec(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = StringCodec::decode(&bytes);
        let _ = BytesCodec::decode(&bytes);
        let _ = Int64Codec::decode(&bytes);
        let _ = <Json as Codec<Row>>::decode(&bytes);
        let _ = <Json as Codec<serde_json::Value>>::decode(&bytes);
        let _ = <Bincode as Codec<Row>>::decode(&bytes);
        let _ = <Bincode as Codec<Vec<String>>>::decode(&bytes);
    }

    #[test]
    fn int64_reads_decimal_text_as_rust_parses_it(text in "[-+]?[0-9]{0,40}") {
        prop_assert_eq!(Int64Codec::decode(text.as_bytes()).ok(), text.parse::<i64>().ok());
    }

    #[test]
    fn codecs_round_trip(text in ".*", bytes in proptest::collection::vec(any::<u8>(), 0..64),
                         n in any::<i64>(), value in row()) {
        prop_assert_eq!(StringCodec::decode(&StringCodec::encode_to_vec(&text).unwrap()).unwrap(), text);
        prop_assert_eq!(BytesCodec::decode(&BytesCodec::encode_to_vec(&bytes).unwrap()).unwrap(), bytes);
        prop_assert_eq!(Int64Codec::decode(&Int64Codec::encode_to_vec(&n).unwrap()).unwrap(), n);
        let json = <Json as Codec<Row>>::encode_to_vec(&value).unwrap();
        prop_assert_eq!(<Json as Codec<Row>>::decode(&json).unwrap(), value.clone());
        let bin = <Bincode as Codec<Row>>::encode_to_vec(&value).unwrap();
        prop_assert_eq!(<Bincode as Codec<Row>>::decode(&bin).unwrap(), value);
    }

    #[test]
    fn a_row_keyed_offset_never_touches_the_stored_offset(
        raw in proptest::collection::vec(any::<u8>(), 0..32)
    ) {
        // The offset is written as text by the runtime; a row keyed `__offset` is a user row,
        // so corrupt offsets can only come from a damaged store. Here: any text through the
        // public API round-trips, and arbitrary bytes as a row never touch the offset.
        let storage = MemoryStorage::new("fuzz", 0);
        let mut batch = WriteBatch::new();
        batch.set(b"__offset", raw.clone());
        storage.apply(&batch, None).unwrap();
        prop_assert_eq!(storage.offset().unwrap(), None);
        prop_assert_eq!(storage.get(b"__offset").unwrap(), Some(raw));
    }

    #[test]
    fn offsets_round_trip_through_storage(offset in any::<i64>()) {
        let storage = MemoryStorage::new("fuzz", 0);
        storage.set_offset(offset).unwrap();
        prop_assert_eq!(storage.offset().unwrap(), Some(offset));
    }
}

/// Regression: a length prefix of 2^64 - 1 made bincode try to reserve that much and abort
/// the process (found by `arbitrary_bytes_never_panic_a_codec`).
#[test]
fn a_hostile_bincode_length_prefix_is_an_error() {
    let mut bytes = vec![0xfd];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    let error = <Bincode as Codec<Vec<String>>>::decode(&bytes).unwrap_err();
    assert!(error.to_string().contains("bincode"), "{error}");
}

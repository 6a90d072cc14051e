//! The behaviour every storage backend must have, as generic checks. Each backend's tests
//! instantiate them with `storage_suite!(|dir| ...)`, a closure that opens a fresh storage.

use super::{KeyRange, Storage, StorageError, WriteBatch, OFFSET_KEY};

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn rows(storage: &dyn Storage, range: KeyRange) -> Rows {
    storage
        .range(range)
        .expect("open iterator")
        .collect::<Result<_, _>>()
        .expect("iterate")
}

fn keys(rows: &Rows) -> Vec<&[u8]> {
    rows.iter().map(|(k, _)| k.as_slice()).collect()
}

pub(crate) fn get_set_delete(s: &dyn Storage) {
    assert_eq!(s.get(b"a").unwrap(), None);
    assert!(!s.has(b"a").unwrap());
    s.set(b"a", b"1").unwrap();
    s.set(b"a", b"2").unwrap();
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(s.has(b"a").unwrap());
    s.set(b"", b"empty key").unwrap();
    assert_eq!(s.get(b"").unwrap().as_deref(), Some(&b"empty key"[..]));
    s.set(b"e", b"").unwrap();
    assert_eq!(
        s.get(b"e").unwrap().as_deref(),
        Some(&b""[..]),
        "empty values are rows"
    );
    let mut read = Vec::new();
    assert!(s.get_with(b"a", &mut |v| read.push(v.to_vec())).unwrap());
    assert!(s.get_with(b"e", &mut |v| read.push(v.to_vec())).unwrap());
    assert!(!s.get_with(b"z", &mut |v| read.push(v.to_vec())).unwrap());
    assert_eq!(
        read,
        [b"2".to_vec(), Vec::new()],
        "get_with reads what get does"
    );
    s.delete(b"a").unwrap();
    s.delete(b"never-there").unwrap();
    assert_eq!(s.get(b"a").unwrap(), None);
    assert!(!s.has(b"a").unwrap());
    assert!(!s.get_with(b"a", &mut |_| panic!("deleted")).unwrap());
}

/// A long batch (as recovery writes) with several writes of the same keys, interleaved with
/// others: the last write of each key wins, whatever order a backend inserts in.
pub(crate) fn long_batches_keep_the_last_write_of_each_key(s: &dyn Storage) {
    let mut batch = WriteBatch::new();
    for round in 0..5u8 {
        for k in (0..100u8).rev() {
            batch.set(vec![b'k', k], vec![round, k]);
        }
        batch.delete(vec![b'k', 7]);
    }
    batch.set(vec![b'k', 9], b"last");
    s.apply(&batch, Some(600)).unwrap();
    assert_eq!(s.get(b"k\x07").unwrap(), None, "deleted last");
    assert_eq!(s.get(b"k\x09").unwrap().as_deref(), Some(&b"last"[..]));
    assert_eq!(s.get(b"k\x00").unwrap(), Some(vec![4, 0]));
    assert_eq!(s.get(b"k\x63").unwrap(), Some(vec![4, 99]));
    assert_eq!(s.offset().unwrap(), Some(600));
}

pub(crate) fn apply_writes_rows_and_offset_together(s: &dyn Storage) {
    assert_eq!(s.offset().unwrap(), None);
    s.set(b"gone", b"x").unwrap();
    let mut batch = WriteBatch::new();
    batch.set(b"k1", b"v1");
    batch.set(b"k2", b"v2");
    batch.delete(b"gone");
    batch.set(b"k1", b"v1b");
    s.apply(&batch, Some(41)).unwrap();
    assert_eq!(s.offset().unwrap(), Some(41));
    assert_eq!(
        s.get(b"k1").unwrap().as_deref(),
        Some(&b"v1b"[..]),
        "later ops win"
    );
    assert_eq!(s.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(s.get(b"gone").unwrap(), None);
    s.apply(&WriteBatch::new(), None).unwrap();
    assert_eq!(
        s.offset().unwrap(),
        Some(41),
        "no offset leaves it as it was"
    );
    s.set_offset(0).unwrap();
    assert_eq!(s.offset().unwrap(), Some(0));
}

pub(crate) fn offset_key_is_a_separate_namespace(s: &dyn Storage) {
    s.set_offset(7).unwrap();
    s.set(OFFSET_KEY, b"a row of the table").unwrap();
    assert_eq!(s.offset().unwrap(), Some(7));
    assert_eq!(
        s.get(OFFSET_KEY).unwrap().as_deref(),
        Some(&b"a row of the table"[..])
    );
    assert_eq!(keys(&rows(s, KeyRange::all())), vec![OFFSET_KEY]);
    s.delete(OFFSET_KEY).unwrap();
    assert_eq!(s.offset().unwrap(), Some(7));
    assert!(
        rows(s, KeyRange::all()).is_empty(),
        "the offset is not a row"
    );
}

fn fill(s: &dyn Storage, n: usize) {
    let mut batch = WriteBatch::new();
    for i in 0..n {
        batch.set(
            format!("key-{i:05}").into_bytes(),
            format!("value-{i}").into_bytes(),
        );
    }
    s.apply(&batch, Some(n as i64 - 1)).unwrap();
}

pub(crate) fn iter_returns_rows_in_key_order(s: &dyn Storage) {
    // More rows than one chunk of the memory iterator, inserted out of order.
    let n = 1000;
    for i in (0..n).rev() {
        s.set(
            format!("key-{i:05}").as_bytes(),
            format!("value-{i}").as_bytes(),
        )
        .unwrap();
    }
    let all = rows(s, KeyRange::all());
    assert_eq!(all.len(), n);
    for (i, (k, v)) in all.iter().enumerate() {
        assert_eq!(k, format!("key-{i:05}").as_bytes());
        assert_eq!(v, format!("value-{i}").as_bytes());
    }
}

pub(crate) fn seek_moves_to_the_first_key_at_or_after(s: &dyn Storage) {
    fill(s, 100);
    let mut it = s.iter().unwrap();
    assert_eq!(it.next().unwrap().unwrap().0, b"key-00000");
    it.seek(b"key-00050");
    assert_eq!(it.next().unwrap().unwrap().0, b"key-00050");
    assert_eq!(it.next().unwrap().unwrap().0, b"key-00051");
    it.seek(b"key-00060x");
    assert_eq!(it.next().unwrap().unwrap().0, b"key-00061");
    it.seek(b"key-00010");
    assert_eq!(
        it.next().unwrap().unwrap().0,
        b"key-00010",
        "seek can go backwards"
    );
    it.seek(b"zzz");
    assert!(it.next().is_none());
    it.seek(b"");
    assert_eq!(it.next().unwrap().unwrap().0, b"key-00000");
}

pub(crate) fn ranges_select_prefixes_and_intervals(s: &dyn Storage) {
    for key in ["a", "ab", "abc", "abd", "ac", "b", "b\u{ff}"] {
        s.set(key.as_bytes(), b"v").unwrap();
    }
    s.set(&[b'a', 0xff], b"v").unwrap();
    s.set(&[b'a', 0xff, 0xff], b"v").unwrap();
    let ab = rows(s, KeyRange::prefix(b"ab".to_vec()));
    assert_eq!(keys(&ab), vec![&b"ab"[..], b"abc", b"abd"]);
    let a_ff = rows(s, KeyRange::prefix(vec![b'a', 0xff]));
    assert_eq!(
        keys(&a_ff),
        vec![&[b'a', 0xff][..], &[b'a', 0xff, 0xff][..]]
    );
    let between = rows(s, KeyRange::between(b"abc".to_vec(), b"b".to_vec()));
    assert_eq!(
        keys(&between),
        vec![
            &b"abc"[..],
            b"abd",
            b"ac",
            &[b'a', 0xff][..],
            &[b'a', 0xff, 0xff][..]
        ]
    );
    assert!(
        rows(s, KeyRange::between(b"c".to_vec(), b"a".to_vec())).is_empty(),
        "inverted range"
    );
    assert!(
        rows(s, KeyRange::between(b"b".to_vec(), b"b".to_vec())).is_empty(),
        "empty range"
    );
    let from_b = rows(
        s,
        KeyRange {
            start: Some(b"b".to_vec()),
            end: None,
        },
    );
    assert_eq!(from_b.len(), 2);

    // Seeks stay inside the range.
    let mut it = s.range(KeyRange::prefix(b"ab".to_vec())).unwrap();
    it.seek(b"a");
    assert_eq!(
        it.next().unwrap().unwrap().0,
        b"ab",
        "seek before the range lands on its start"
    );
    it.seek(b"abd");
    assert_eq!(it.next().unwrap().unwrap().0, b"abd");
    assert!(it.next().is_none(), "the range ends before ac");
}

pub(crate) fn recovery_mode_loads_and_keeps_data(s: &dyn Storage) {
    s.begin_recovery().unwrap();
    let mut batch = WriteBatch::with_capacity(500);
    for round in 0..4 {
        batch.clear();
        for i in 0..500 {
            let n = round * 500 + i;
            batch.set(format!("r{n:06}").into_bytes(), vec![b'x'; 100]);
        }
        s.apply(&batch, Some(round as i64 * 500 + 499)).unwrap();
    }
    s.mark_recovered().unwrap();
    assert_eq!(s.offset().unwrap(), Some(1999));
    assert_eq!(rows(s, KeyRange::all()).len(), 2000);
    s.set(b"after", b"recovery").unwrap();
    assert!(s.has(b"after").unwrap());
}

pub(crate) fn closed_storage_refuses_use(s: &dyn Storage) {
    s.set(b"k", b"v").unwrap();
    s.close().unwrap();
    for result in [
        s.get(b"k").map(drop),
        s.set(b"k", b"v"),
        s.offset().map(drop),
        s.iter().map(drop),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, StorageError::Closed { .. }), "{err}");
    }
}

/// Instantiates the suite for a backend: `storage_suite!(|dir: &Path| -> Box<dyn Storage>)`.
#[macro_export]
#[doc(hidden)]
macro_rules! storage_suite {
    ($open:expr) => {
        mod suite {
            #[allow(unused_imports)]
            use super::*;
            use $crate::storage::suite as checks;

            fn with_storage(check: fn(&dyn $crate::storage::Storage)) {
                let dir = ::tempfile::tempdir().expect("temp dir");
                let open: fn(&::std::path::Path) -> Box<dyn $crate::storage::Storage> = $open;
                let storage = open(dir.path());
                check(&*storage);
            }

            #[test]
            fn get_set_delete() {
                with_storage(checks::get_set_delete);
            }
            #[test]
            fn long_batches_keep_the_last_write_of_each_key() {
                with_storage(checks::long_batches_keep_the_last_write_of_each_key);
            }
            #[test]
            fn apply_writes_rows_and_offset_together() {
                with_storage(checks::apply_writes_rows_and_offset_together);
            }
            #[test]
            fn offset_key_is_a_separate_namespace() {
                with_storage(checks::offset_key_is_a_separate_namespace);
            }
            #[test]
            fn iter_returns_rows_in_key_order() {
                with_storage(checks::iter_returns_rows_in_key_order);
            }
            #[test]
            fn seek_moves_to_the_first_key_at_or_after() {
                with_storage(checks::seek_moves_to_the_first_key_at_or_after);
            }
            #[test]
            fn ranges_select_prefixes_and_intervals() {
                with_storage(checks::ranges_select_prefixes_and_intervals);
            }
            #[test]
            fn recovery_mode_loads_and_keeps_data() {
                with_storage(checks::recovery_mode_loads_and_keeps_data);
            }
            #[test]
            fn closed_storage_refuses_use() {
                with_storage(checks::closed_storage_refuses_use);
            }
        }
    };
}

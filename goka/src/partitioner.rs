//! Which partition a key belongs to.
//!
//! Processors, views and emitters must agree on this, across languages: a Go goka service and
//! a Rust one sharing a topic must put every key in the same partition. The default is goka's
//! (FNV-1a 32-bit, Go's truncated remainder, absolute value); [`Murmur2Partitioner`] matches
//! the Java client's default partitioner for topics shared with Java producers. Any other
//! scheme is a [`Partitioner`] implementation away (goka's `WithHasher`).

/// Maps a key (its encoded bytes) to a partition of a topic.
pub trait Partitioner: Send + Sync + 'static {
    /// The partition in `0..partitions` for `key`.
    ///
    /// `partitions` comes from topic metadata and is at least 1; an implementation may treat
    /// 0 as 1 rather than divide by zero.
    fn partition(&self, key: &[u8], partitions: u32) -> i32;
}

/// goka's default partitioning: `abs(int32(fnv1a_32(key)) % n)`, with Go's truncated remainder.
///
/// ```
/// use goka::partitioner::{GokaPartitioner, Partitioner};
/// assert_eq!(GokaPartitioner.partition(b"some-key", 10), 7);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GokaPartitioner;

impl Partitioner for GokaPartitioner {
    fn partition(&self, key: &[u8], partitions: u32) -> i32 {
        // Go computes `int32(hash) % int32(n)` (the remainder takes the dividend's sign), then
        // negates a negative result. Rust's `%` on i32 is the same truncated remainder.
        let n = i32::try_from(partitions.max(1)).unwrap_or(i32::MAX);
        ((fnv1a_32(key) as i32) % n).abs()
    }
}

/// Kafka's Java client default: `(murmur2(key) & 0x7fffffff) % n`.
///
/// ```
/// use goka::partitioner::{Murmur2Partitioner, Partitioner};
/// assert!(Murmur2Partitioner.partition(b"user-1", 8) < 8);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Murmur2Partitioner;

impl Partitioner for Murmur2Partitioner {
    fn partition(&self, key: &[u8], partitions: u32) -> i32 {
        let positive = murmur2(key) & 0x7fff_ffff;
        (positive % partitions.max(1)) as i32
    }
}

/// The partitioner used when none is configured: goka's.
pub type DefaultPartitioner = GokaPartitioner;

/// 32-bit FNV-1a, as Go's `hash/fnv.New32a`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    })
}

/// Kafka's 32-bit murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), returned unsigned.
pub fn murmur2(bytes: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Kafka mixes in the length as a Java int; keys are far below 2^31 bytes.
    let mut h = SEED ^ (bytes.len() as u32);
    let mut chunks = bytes.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors computed with goka's partitioner: (key, n=10, n=12, n=32).
    const GOKA_GOLDEN: [(&str, i32, i32, i32); 6] = [
        ("", 5, 3, 27),
        ("a", 6, 0, 20),
        ("1", 4, 4, 28),
        ("some-key", 7, 7, 19),
        ("user-0", 7, 1, 25),
        ("key-1", 8, 10, 6),
    ];

    #[test]
    fn goka_partitioner_matches_golden_vectors() {
        for (key, p10, p12, p32) in GOKA_GOLDEN {
            let got = [10, 12, 32].map(|n| GokaPartitioner.partition(key.as_bytes(), n));
            assert_eq!(got, [p10, p12, p32], "key {key:?}");
        }
    }

    #[test]
    fn fnv1a_matches_reference_values() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    /// Kafka's own murmur2 test values (UtilsTest.testMurmur2), as Java ints.
    #[test]
    fn murmur2_matches_kafka_test_values() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key) as i32,
                want,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn murmur2_partitioner_masks_the_sign_bit() {
        let key = b"foobar";
        let want = ((murmur2(key) & 0x7fff_ffff) % 7) as i32;
        assert_eq!(Murmur2Partitioner.partition(key, 7), want);
    }

    #[test]
    fn partitions_stay_in_range_and_zero_counts_do_not_panic() {
        for i in 0..2000u32 {
            let key = format!("k{i}");
            for n in [1u32, 2, 3, 7, 64, 1000] {
                let p = GokaPartitioner.partition(key.as_bytes(), n);
                assert!((0..n as i32).contains(&p), "goka {key} n={n} -> {p}");
                let p = Murmur2Partitioner.partition(key.as_bytes(), n);
                assert!((0..n as i32).contains(&p), "murmur2 {key} n={n} -> {p}");
            }
        }
        assert_eq!(GokaPartitioner.partition(b"x", 0), 0);
        assert_eq!(Murmur2Partitioner.partition(b"x", 0), 0);
    }
}

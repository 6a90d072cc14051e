//! A partition's stream time kept with its committed input offsets, in Kafka's commit
//! metadata (as Kafka Streams keeps its partition time). The next owner of the partition
//! starts from the stream time of exactly the messages committed: windows that closed
//! before it stay closed, and windows closed by a message handled after the commit (which
//! is handled again) open again until that message closes them once more.

/// What the metadata starts with; other metadata (another client's) is ignored.
const PREFIX: &str = "goka-rs stream-time ";

/// The metadata for stream time `time`.
pub(super) fn encode(time: i64) -> String {
    format!("{PREFIX}{time}")
}

/// The stream time in `metadata`, if it holds one.
pub(super) fn decode(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_time_round_trips_and_other_metadata_is_none() {
        assert_eq!(decode(&encode(1_700_000_000_123)), Some(1_700_000_000_123));
        assert_eq!(decode(&encode(-5)), Some(-5));
        assert_eq!(decode(""), None);
        assert_eq!(decode("goka-rs stream-time x"), None);
        assert_eq!(decode("something else"), None);
    }
}

//! Where a table reader starts a partition: right after what its local state holds, kept
//! inside what the partition still has.

use crate::kafka::{KafkaError, StartOffset};

/// Where a reader starts a partition, and the offset it must reach before its first end of
/// partition for the local state to fit the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    pub(crate) from: StartOffset,
    /// Set when the reported end is before the local state: the end is confirmed by reading
    /// instead (see [`table_start`]).
    pub(crate) must_reach: Option<i64>,
}

impl Start {
    fn at(from: StartOffset) -> Self {
        Self {
            from,
            must_reach: None,
        }
    }
}

/// Where to start reading a partition whose local state holds up to `stored` (the offset of
/// the last message applied; `None` without local state), given the partition's
/// `(low, high)` watermarks if they could be read.
///
/// - No local state: the oldest message kept.
/// - Local state older than the oldest message kept (retention or compaction removed what
///   follows it, or an instance was offline for long): the oldest message kept, as goka
///   does. Rows deleted meanwhile stay in the local state: the changelog no longer says
///   they were deleted.
/// - Local state at or beyond the reported end: the local state is ahead of the changelog
///   (the topic was made anew, the state belongs to another cluster). Where the end is
///   exact (Kafka) that is [`KafkaError::LocalStateAhead`] at once. Where it may lag what
///   was acknowledged (`end_may_lag`, from `KafkaConfig::reported_end_may_lag`, for Tansu,
///   which reports the first offset of the last record batch) the reader starts at the
///   reported end and must reach the offset after the local state before its first end of
///   partition; replaying from the reported end is harmless: a changelog's suffix applied
///   again leaves the rows as they were.
/// - Unknown watermarks: right after the local state; the consumer then resets an offset out
///   of range to the oldest message.
pub(crate) fn table_start(
    topic: &str,
    partition: i32,
    stored: Option<i64>,
    watermarks: Option<(i64, i64)>,
    end_may_lag: bool,
) -> Result<Start, KafkaError> {
    let Some(stored) = stored else {
        return Ok(Start::at(StartOffset::Beginning));
    };
    let next = stored + 1;
    Ok(match watermarks {
        Some((_, high)) if next > high && !end_may_lag => {
            return Err(ahead(topic, partition, stored, high))
        }
        Some((low, high)) if next > high => Start {
            from: StartOffset::At(high.max(low)),
            must_reach: Some(next),
        },
        Some((low, _)) if next < low => {
            tracing::warn!(
                topic,
                partition,
                stored,
                low,
                "local state of the table partition is older than the oldest message its \
                 changelog keeps: reading from that message on (rows removed meanwhile stay)"
            );
            Start::at(StartOffset::At(low))
        }
        _ => Start::at(StartOffset::At(next)),
    })
}

/// The error of a local state found ahead of its changelog: it holds up to `stored`, and the
/// changelog ended at `end`.
pub(crate) fn ahead(topic: &str, partition: i32, stored: i64, end: i64) -> KafkaError {
    KafkaError::LocalStateAhead {
        topic: topic.to_owned(),
        partition,
        stored,
        high: end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_starts_after_its_state_within_the_kept_messages() {
        let start = |stored, watermarks| {
            table_start("t", 3, stored, watermarks, false).unwrap_or_else(|e| panic!("{e}"))
        };
        let at = |offset| Start::at(StartOffset::At(offset));
        assert_eq!(start(None, Some((5, 9))), Start::at(StartOffset::Beginning));
        assert_eq!(start(Some(6), Some((5, 9))), at(7));
        assert_eq!(start(Some(8), Some((5, 9))), at(9), "caught up");
        assert_eq!(
            start(Some(2), Some((5, 9))),
            at(5),
            "older than the oldest message kept"
        );
        assert_eq!(
            start(Some(4), Some((5, 9))),
            at(5),
            "right before the oldest message kept"
        );
        assert_eq!(start(Some(40), None), at(41), "unknown end");
    }

    #[test]
    fn a_state_beyond_the_reported_end_is_ahead_or_confirmed_by_reading_where_it_may_lag() {
        let lagging = |stored| {
            table_start("t", 3, Some(stored), Some((5, 9)), true).unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            lagging(12),
            Start {
                from: StartOffset::At(9),
                must_reach: Some(13)
            }
        );
        assert!(
            matches!(
                table_start("t", 3, Some(12), Some((5, 9)), false),
                Err(KafkaError::LocalStateAhead {
                    partition: 3,
                    stored: 12,
                    high: 9,
                    ..
                })
            ),
            "an exact end"
        );
        assert_eq!(lagging(9).must_reach, Some(10), "one past the end");
        let ahead = ahead("t", 3, 12, 9).to_string();
        assert!(
            ahead.contains("\"t\"")
                && ahead.contains("partition 3")
                && ahead.contains("offset 12")
                && ahead.contains("high watermark 9"),
            "{ahead}"
        );
    }
}

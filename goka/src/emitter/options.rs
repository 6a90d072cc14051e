//! What an emit may carry besides its key and value.

use std::time::SystemTime;

use crate::kafka::Headers;

/// Headers and the record's timestamp of one emit ([`Emitter::emit_with`](super::Emitter::emit_with)).
///
/// The timestamp is the message's event time: the windows and stream-time timers of the
/// processors that consume it go by it, so historical events emitted with their own times
/// land in the windows of those times. Without one, the client stamps the time of the emit.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use goka::emitter::EmitOptions;
/// use goka::kafka::Headers;
///
/// let at = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
/// let options = EmitOptions::new()
///     .at(at)
///     .headers([("source", "backfill")].into_iter().collect::<Headers>());
/// assert_eq!(options.timestamp(), Some(1_600_000_000_000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmitOptions {
    headers: Option<Headers>,
    timestamp: Option<i64>,
}

impl EmitOptions {
    /// No headers, the client's time.
    pub fn new() -> Self {
        Self::default()
    }

    /// The message's headers.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = Some(headers);
        self
    }

    /// The message's timestamp. A time before 1970 cannot be a Kafka timestamp: the emit
    /// fails with [`EmitError::Timestamp`](super::EmitError::Timestamp).
    pub fn at(mut self, time: SystemTime) -> Self {
        self.timestamp = Some(match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis().max(1)).unwrap_or(i64::MAX),
        });
        self
    }

    /// The message's timestamp in milliseconds since the epoch; a negative one fails the
    /// emit with [`EmitError::Timestamp`](super::EmitError::Timestamp).
    pub fn at_millis(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// The timestamp given, in milliseconds since the epoch.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The headers given.
    pub fn header_list(&self) -> Option<&Headers> {
        self.headers.as_ref()
    }
}

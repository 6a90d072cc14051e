//! The shape of a window ([`WindowSpec`]) and the windows a timestamp falls in.

use std::time::Duration;

/// Tumbling, hopping or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Windows of `size` one after the other: each timestamp is in exactly one.
    Tumbling,
    /// Windows of `size` starting every `hop`: a timestamp is in `size / hop` of them.
    Hopping,
    /// One window per burst of a key's messages: a message within the gap of a session
    /// joins it (and may join two into one); a session ends a gap after its last message.
    Session,
}

/// Size, hop, grace and retention of a window, built in a const:
/// `WindowSpec::tumbling(size)`, `WindowSpec::hopping(size, hop)` or
/// `WindowSpec::session(gap)`, then `.grace(...)` and `.retention(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    kind: WindowKind,
    size_ms: i64,
    hop_ms: i64,
    grace_ms: i64,
    /// `None`: as long as a window lasts, after it closed.
    retention_ms: Option<i64>,
}

/// A window of one key: `[start, end)` in milliseconds of event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowRange {
    /// The first millisecond in the window.
    pub start: i64,
    /// The first millisecond after it.
    pub end: i64,
}

const fn millis(duration: Duration) -> i64 {
    let ms = duration.as_millis();
    if ms > i64::MAX as u128 {
        i64::MAX
    } else {
        ms as i64
    }
}

impl WindowSpec {
    /// Windows of `size`, one after the other.
    pub const fn tumbling(size: Duration) -> Self {
        Self {
            kind: WindowKind::Tumbling,
            size_ms: millis(size),
            hop_ms: millis(size),
            grace_ms: 0,
            retention_ms: None,
        }
    }

    /// Windows of `size` starting every `hop` (`hop` divides `size`).
    pub const fn hopping(size: Duration, hop: Duration) -> Self {
        Self {
            kind: WindowKind::Hopping,
            size_ms: millis(size),
            hop_ms: millis(hop),
            grace_ms: 0,
            retention_ms: None,
        }
    }

    /// Sessions of a key: a message less than `gap` after a session's last message (or
    /// before its first) joins it. The size and hop of a session spec are the gap.
    pub const fn session(gap: Duration) -> Self {
        Self {
            kind: WindowKind::Session,
            size_ms: millis(gap),
            hop_ms: millis(gap),
            grace_ms: 0,
            retention_ms: None,
        }
    }

    /// How long after its end a window still takes late messages (default: none).
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = millis(grace);
        self
    }

    /// How long after its end a window stays readable (by handlers, views and the
    /// processor's `get`) before it is dropped; at least the grace. Default: the grace plus
    /// one window size.
    pub const fn retention(mut self, retention: Duration) -> Self {
        self.retention_ms = Some(millis(retention));
        self
    }

    /// Fails the build (in the const of [`window!`](crate::window!)) where the spec makes no
    /// sense.
    pub const fn check(&self) {
        assert!(self.size_ms > 0, "a window's size must be at least 1 ms");
        assert!(self.hop_ms > 0, "a window's hop must be at least 1 ms");
        assert!(
            self.hop_ms <= self.size_ms,
            "a hopping window's hop must not be longer than its size"
        );
        assert!(
            self.size_ms % self.hop_ms == 0,
            "a hopping window's hop must divide its size"
        );
        if let Some(retention) = self.retention_ms {
            assert!(
                retention >= self.grace_ms,
                "a window's retention must be at least its grace"
            );
        }
    }

    /// Tumbling or hopping.
    pub const fn kind(&self) -> WindowKind {
        self.kind
    }

    /// Whether this is a session window (the shape [`WindowShape`](super::WindowShape)
    /// names at compile time).
    pub const fn is_session(&self) -> bool {
        matches!(self.kind, WindowKind::Session)
    }

    /// The length of a window.
    pub const fn size(&self) -> Duration {
        Duration::from_millis(self.size_ms as u64)
    }

    /// How far apart window starts are (the size for tumbling windows).
    pub const fn hop(&self) -> Duration {
        Duration::from_millis(self.hop_ms as u64)
    }

    /// How long after its end a window takes late messages.
    pub const fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_ms as u64)
    }

    /// How long after its end a window stays readable.
    pub const fn retention_period(&self) -> Duration {
        Duration::from_millis(self.retention_millis() as u64)
    }

    const fn retention_millis(&self) -> i64 {
        match self.retention_ms {
            Some(ms) => ms,
            None => self.grace_ms.saturating_add(self.size_ms),
        }
    }

    /// The windows `timestamp` falls in, oldest first (for a session spec, the session it
    /// would start).
    pub fn windows(&self, timestamp: i64) -> impl Iterator<Item = WindowRange> {
        let (size, hop) = match self.kind {
            // One window, [timestamp, timestamp + 1): where a session of it would start.
            WindowKind::Session => (1, 1),
            _ => (self.size_ms, self.hop_ms),
        };
        // The last start at or before the timestamp, then back by hops while the window
        // still covers it.
        let last = timestamp.div_euclid(hop).saturating_mul(hop);
        let count = size / hop;
        (0..count).rev().filter_map(move |back| {
            let start = last.checked_sub(back.checked_mul(hop)?)?;
            let end = start.checked_add(size)?;
            (start <= timestamp && timestamp < end).then_some(WindowRange { start, end })
        })
    }

    /// The window starting at `start`.
    pub fn range(&self, start: i64) -> WindowRange {
        WindowRange {
            start,
            end: start.saturating_add(self.size_ms),
        }
    }

    /// The stream time at which `window` closes: its final value is known, and it takes no
    /// more messages. A session (`end` one past its last message) closes a gap after its
    /// last message, plus the grace.
    pub fn closes_at(&self, window: WindowRange) -> i64 {
        self.settles_at(window).saturating_add(self.grace_ms)
    }

    /// The stream time at which `window` is dropped.
    pub fn dropped_at(&self, window: WindowRange) -> i64 {
        self.settles_at(window)
            .saturating_add(self.retention_millis())
    }

    /// When no message can reach the window any more but a late one.
    fn settles_at(&self, window: WindowRange) -> i64 {
        match self.kind {
            WindowKind::Session => window.end.saturating_sub(1).saturating_add(self.size_ms),
            _ => window.end,
        }
    }

    /// The gap of a session spec.
    pub const fn gap(&self) -> Duration {
        self.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn starts(spec: WindowSpec, timestamp: i64) -> Vec<i64> {
        spec.windows(timestamp).map(|w| w.start).collect()
    }

    #[test]
    fn a_timestamp_is_in_one_tumbling_window() {
        let spec = WindowSpec::tumbling(MINUTE);
        assert_eq!(starts(spec, 0), [0]);
        assert_eq!(starts(spec, 59_999), [0]);
        assert_eq!(starts(spec, 60_000), [60_000]);
        assert_eq!(starts(spec, -1), [-60_000]);
        assert_eq!(
            spec.windows(125_000).next(),
            Some(WindowRange {
                start: 120_000,
                end: 180_000
            })
        );
    }

    #[test]
    fn a_timestamp_is_in_size_over_hop_hopping_windows_oldest_first() {
        let spec = WindowSpec::hopping(5 * MINUTE, MINUTE);
        assert_eq!(
            starts(spec, 300_500),
            [60_000, 120_000, 180_000, 240_000, 300_000]
        );
        assert_eq!(starts(spec, 0), [-240_000, -180_000, -120_000, -60_000, 0]);
        for w in spec.windows(300_500) {
            assert!(w.start <= 300_500 && 300_500 < w.end, "{w:?}");
        }
    }

    #[test]
    fn grace_and_retention_set_when_a_window_closes_and_is_dropped() {
        let spec = WindowSpec::tumbling(MINUTE).grace(Duration::from_secs(10));
        let window = spec.range(60_000);
        assert_eq!(spec.closes_at(window), 130_000);
        // By default a window stays one more window's length after it closed.
        assert_eq!(spec.dropped_at(window), 190_000);
        let kept = spec.retention(Duration::from_secs(3600));
        assert_eq!(kept.dropped_at(window), 120_000 + 3_600_000);
        assert_eq!(kept.retention_period(), Duration::from_secs(3600));
    }

    #[test]
    fn extreme_timestamps_neither_overflow_nor_panic() {
        let spec = WindowSpec::hopping(5 * MINUTE, MINUTE);
        assert!(spec.windows(i64::MAX).all(|w| w.start < w.end));
        assert!(spec.windows(i64::MIN).count() <= 5);
        assert_eq!(spec.closes_at(spec.range(i64::MAX - 5)), i64::MAX);
    }
}

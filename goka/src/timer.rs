//! Timers: a handler schedules a callback for its key at a time of the partition's stream
//! time (driven by its messages) or of the wall clock; the processor keeps them in local
//! storage and in the compacted changelog `<group>-timers` with the inputs' partitioning,
//! so they survive restarts and move with their partition.
//!
//! A timer is declared once as a type with [`timer!`](crate::timer!) (its payload's type and
//! codec), and a processor names it with `#[timer(timer = T, handler = h)]`; handlers
//! schedule it with `ctx.schedule::<T>(TimerTime::Stream(ms), &payload)`. A stream-time
//! timer fires with the first message that brings stream time to its time or past it; a
//! wall-clock timer fires within a second of its time (in the tester, at
//! `Tester::fire_timers`). A fired timer's handler runs for its key as a message would, and
//! the timer is removed with a tombstone: at least once, as the rest of the processor.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::codec::Codec;
use crate::storage::Storage;

/// A timer declaration: its name and payload. Implement it with [`timer!`](crate::timer!).
pub trait Timer: Send + Sync + 'static {
    /// The timer's name; handlers see it as the topic of the call.
    const NAME: &'static str;
    /// What the handler gets when the timer fires.
    type Value: Send + Sync + 'static;
    /// How payloads are encoded.
    type ValueCodec: Codec<Self::Value>;
}

/// When a timer fires, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerTime {
    /// Once the partition's stream time (its highest message timestamp) reaches it.
    Stream(i64),
    /// Once the wall clock reaches it.
    Wall(i64),
}

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// The partition's stream time, moved by its messages.
    Stream,
    /// The wall clock.
    Wall,
}

impl Clock {
    /// The first byte of every timer row of the clock.
    fn byte(self) -> u8 {
        match self {
            Self::Stream => STREAM,
            Self::Wall => WALL,
        }
    }
}

impl TimerTime {
    /// Its clock and its time.
    pub(crate) fn clock(self) -> (Clock, i64) {
        match self {
            Self::Stream(t) => (Clock::Stream, t),
            Self::Wall(t) => (Clock::Wall, t),
        }
    }
}

/// Declares a timer type.
///
/// ```
/// use goka::codec::StringCodec;
/// use goka::timer::Timer;
///
/// goka::timer!(
///     /// Fires when a user went quiet; the payload is their last page.
///     pub Quiet: String as StringCodec
/// );
/// assert_eq!(Quiet::NAME, "Quiet");
/// ```
#[macro_export]
macro_rules! timer {
    ($(#[$meta:meta])* $vis:vis $name:ident : $value:ty as $codec:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::timer::Timer for $name {
            const NAME: &'static str = stringify!($name);
            type Value = $value;
            type ValueCodec = $codec;
        }
    };
}

/// A partition's timers: their storage, and for each clock the earliest time a stored or
/// scheduled timer may be due at, so a message whose stream time has not reached it skips the
/// storage scan. Only ever lowered between scans, so a cancelled timer costs one extra scan,
/// never a late firing. No stored timer of the clock is earlier, so a scan starts there: past
/// the tombstones of the timers fired before, which a storage such as RocksDB would otherwise
/// step over on every scan until it compacts them away.
pub(crate) struct PartitionTimers {
    pub(crate) storage: Arc<dyn Storage>,
    /// Indexed by clock: stream, wall. `i64::MIN` until the first scan.
    next: [AtomicI64; 2],
}

impl PartitionTimers {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            next: [AtomicI64::new(i64::MIN), AtomicI64::new(i64::MIN)],
        }
    }

    fn slot(&self, clock: Clock) -> &AtomicI64 {
        &self.next[usize::from(clock == Clock::Wall)]
    }

    /// Where a scan of this clock's timers starts: no stored timer is earlier.
    pub(crate) fn scan_from(&self, clock: Clock) -> crate::storage::KeyRange {
        let mut range = crate::storage::KeyRange::prefix(clock_prefix(clock));
        let mut start = Vec::with_capacity(9);
        time_prefix(clock, self.slot(clock).load(Ordering::Relaxed), &mut start);
        range.start = Some(start);
        range
    }

    /// Whether a timer of this clock may be due at `now`.
    pub(crate) fn may_be_due(&self, clock: Clock, now: i64) -> bool {
        self.slot(clock).load(Ordering::Relaxed) <= now
    }

    /// A timer was scheduled at `at`.
    pub(crate) fn scheduled(&self, at: TimerTime) {
        let (clock, time) = at.clock();
        self.slot(clock).fetch_min(time, Ordering::Relaxed);
    }

    /// A scan of this clock found `next` as the earliest timer it did not fire (`i64::MAX`
    /// for none).
    pub(crate) fn scanned(&self, clock: Clock, next: i64) {
        self.slot(clock).store(next, Ordering::Relaxed);
    }
}

/// Suffix of a group's timer changelog: `<group>-timers`.
pub const TIMERS_SUFFIX: &str = "-timers";

const STREAM: u8 = 0;
const WALL: u8 = 1;

/// The row key of a timer: clock, time (ordered as a number), name, message key. Rows of
/// one clock sort by time, so the due ones are the first of a scan.
pub(crate) fn row_key(at: TimerTime, name: &str, key: &[u8], out: &mut Vec<u8>) {
    let (clock, time) = at.clock();
    let name = &name.as_bytes()[..name.len().min(255)];
    time_prefix(clock, time, out);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(key);
}

/// The clock and time that begin the row key of every timer of that clock at that time;
/// times sort as the bytes do (the sign bit flipped, big-endian).
fn time_prefix(clock: Clock, time: i64, out: &mut Vec<u8>) {
    out.push(clock.byte());
    out.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
}

/// The first byte of every row of `clock`'s timers.
pub(crate) fn clock_prefix(clock: Clock) -> Vec<u8> {
    vec![clock.byte()]
}

/// A timer row key, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TimerRow<'a> {
    pub(crate) at: TimerTime,
    pub(crate) name: &'a str,
    pub(crate) key: &'a [u8],
}

/// Parses a timer row key; `None` for bytes that are not one.
pub(crate) fn parse_row(row: &[u8]) -> Option<TimerRow<'_>> {
    let (&clock, rest) = row.split_first()?;
    let (time, rest) = rest.split_first_chunk::<8>()?;
    let time = (u64::from_be_bytes(*time) ^ (1 << 63)) as i64;
    let (&len, rest) = rest.split_first()?;
    let (name, key) = rest.split_at_checked(len as usize)?;
    let at = match clock {
        STREAM => TimerTime::Stream(time),
        WALL => TimerTime::Wall(time),
        _ => return None,
    };
    Some(TimerRow {
        at,
        name: std::str::from_utf8(name).ok()?,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: TimerTime, name: &str, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        row_key(at, name, key, &mut out);
        out
    }

    #[test]
    fn a_scan_starts_at_the_earliest_timer_that_may_be_stored() {
        let timers = PartitionTimers::new(Arc::new(crate::storage::MemoryStorage::default()));
        let stream = |t| row(TimerTime::Stream(t), "A", b"k");
        // Before the first scan every timer of the clock is in range, and no other clock's.
        let first = timers.scan_from(Clock::Stream);
        assert!(first.contains(&stream(i64::MIN)) && first.contains(&stream(i64::MAX)));
        assert!(!first.contains(&row(TimerTime::Wall(i64::MIN), "A", b"k")));
        // A scan fired everything before 200: the next one skips their tombstones.
        timers.scanned(Clock::Stream, 200);
        let next = timers.scan_from(Clock::Stream);
        assert!(!next.contains(&stream(199)));
        assert!(next.contains(&stream(200)) && next.contains(&stream(5_000)));
        // A timer scheduled earlier since is in range again.
        timers.scheduled(TimerTime::Stream(120));
        assert!(timers.scan_from(Clock::Stream).contains(&stream(120)));
        assert!(timers
            .scan_from(Clock::Wall)
            .contains(&row(TimerTime::Wall(0), "A", b"k")));
    }

    #[test]
    fn rows_round_trip_and_sort_by_clock_then_time() {
        let parsed = row(TimerTime::Wall(-5), "Quiet", b"ann");
        assert_eq!(
            parse_row(&parsed),
            Some(TimerRow {
                at: TimerTime::Wall(-5),
                name: "Quiet",
                key: b"ann"
            })
        );
        let mut rows = [
            row(TimerTime::Stream(200), "A", b"x"),
            row(TimerTime::Wall(1), "A", b"x"),
            row(TimerTime::Stream(-10), "B", b"y"),
            row(TimerTime::Stream(100), "A", b"z"),
        ];
        rows.sort();
        let times: Vec<_> = rows
            .iter()
            .filter_map(|r| parse_row(r).map(|p| p.at))
            .collect();
        assert_eq!(
            times,
            [
                TimerTime::Stream(-10),
                TimerTime::Stream(100),
                TimerTime::Stream(200),
                TimerTime::Wall(1)
            ]
        );
        assert!(rows[0].starts_with(&clock_prefix(Clock::Stream)));
        assert!(parse_row(b"\x07").is_none());
        assert!(parse_row(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }
}

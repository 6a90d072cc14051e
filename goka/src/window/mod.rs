//! Windowed aggregation over event time: tumbling, hopping and session windows per key,
//! kept like a group table (local storage, a compacted changelog `<group>-<window>-window`
//! with the inputs' partitioning, recovered on rebalance), closed by the partition's stream
//! time.
//!
//! A window is declared once as a type with [`window!`](crate::window!), and a processor
//! names it with `#[window(window = W)]` (optionally `on_close = Self::handler`); handlers
//! reach it with `ctx.window::<W>()`. Using a window the processor does not declare does
//! not compile.
//!
//! Time is the message's timestamp (event time). Each partition keeps a stream time, the
//! highest timestamp it has handled; a window `[start, end)` *closes* once stream time
//! reaches `end + grace`, and is *dropped* (locally, and with a tombstone in its changelog)
//! once stream time reaches `end + retention`. A message for a window that closed already
//! is late: it is counted and skipped.

mod key;
pub(crate) mod partition;
pub(crate) mod row;
mod spec;
mod topic;

pub(crate) use self::key::window_key_prefix;
pub use self::key::{decode_window_key, encode_window_key, WindowKeyError};
pub use self::spec::{WindowKind, WindowRange, WindowSpec};
pub use self::topic::{WindowKeyCodec, WindowTable, WindowValueCodec};

use crate::codec::Codec;

/// A window declaration: its name, value type, codec and shape. Implement it with
/// [`window!`](crate::window!).
pub trait Window: Send + Sync + 'static {
    /// The window's name; its changelog is `<group>-<NAME>-window`.
    const NAME: &'static str;
    /// Size, hop, grace and retention.
    const SPEC: WindowSpec;
    /// The value of one window of one key (a count, a sum, a list).
    type Value: Send + Sync + 'static;
    /// How values are encoded.
    type ValueCodec: Codec<Self::Value>;
}

/// The shape of a window as a type, implemented by [`window!`](crate::window!) for the
/// shape of its spec: `WindowShape<false>` for tumbling and hopping windows, which
/// handlers update with `update`, `WindowShape<true>` for session windows, which they
/// update with `update_session`. Calling the other one does not compile.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is the other kind of window: tumbling and hopping windows are updated with `update`, session windows with `update_session`",
    label = "not a method for this kind of window"
)]
pub trait WindowShape<const SESSION: bool>: Window {}

/// One window declaration of one processor partition
/// ([`ProcessorPartitionStats::windows`](crate::processor::ProcessorPartitionStats::windows)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowStats {
    /// The window's name.
    pub window: &'static str,
    /// Its changelog topic.
    pub topic: &'static str,
    /// The partition's stream time: the latest message timestamp handled. After a restart
    /// it is the stream time committed with the input offsets, or, for offsets committed
    /// without it, the latest window start stored, until a later message comes.
    pub stream_time: Option<i64>,
    /// Windows kept: open, or closed and not yet dropped.
    pub windows: usize,
    /// Messages that came after their windows closed, counted and not applied.
    pub late: u64,
}

/// What an `on_close` handler gets: the window and its final value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedWindow<V> {
    /// The window that closed.
    pub window: WindowRange,
    /// Its final value.
    pub value: V,
}

/// Declares a window type.
///
/// ```
/// use std::time::Duration;
/// use goka::codec::Json;
/// use goka::window::{Window, WindowSpec};
///
/// goka::window!(
///     /// Clicks per user and minute, late clicks accepted for 10 s.
///     pub PerMinute = "per-minute": u64 as Json,
///     WindowSpec::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10))
/// );
/// assert_eq!(PerMinute::NAME, "per-minute");
/// assert_eq!(PerMinute::SPEC.size(), Duration::from_secs(60));
/// ```
#[macro_export]
macro_rules! window {
    ($(#[$meta:meta])* $vis:vis $name:ident = $topic:literal : $value:ty as $codec:ty, $spec:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::window::Window for $name {
            const NAME: &'static str = $topic;
            const SPEC: $crate::window::WindowSpec = $spec;
            type Value = $value;
            type ValueCodec = $codec;
        }

        impl $crate::window::WindowShape<{ $crate::window::WindowSpec::is_session(&$spec) }>
            for $name
        {
        }

        const _: () = $crate::window::WindowSpec::check(&<$name as $crate::window::Window>::SPEC);
    };
}

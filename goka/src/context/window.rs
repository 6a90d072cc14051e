//! A handler's windows: `ctx.window::<W>()`, typed by the window declaration `W`.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use super::{codec_error, storage_error, CallbackError, Context, OutgoingKind};
use crate::codec::Codec;
use crate::group::{Group, Windowed};
use crate::storage::KeyRange;
use crate::window::partition::WindowStore;
use crate::window::row::{self, OPEN};
use crate::window::{
    decode_window_key, encode_window_key, Window, WindowKind, WindowRange, WindowShape,
};

/// The windows of `W` at the message's key ([`Context::window`]). Writes go to the window's
/// changelog after the handler returns, and to local storage when they are queued, as group
/// table writes do.
pub struct WindowRows<'a, 'c, P: Group, W: Window> {
    ctx: &'a mut Context<'c, P>,
    table: &'c WindowStore,
    /// Where the message falls in event time: its timestamp, or the stream time.
    time: i64,
    _window: PhantomData<fn() -> W>,
}

impl<P: Group, W: Window> std::fmt::Debug for WindowRows<'_, '_, P, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowRows")
            .field("window", &W::NAME)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl<'c, P: Group> Context<'c, P> {
    /// The windows `W` keeps for this message's key (`#[window(window = W)]`).
    pub fn window<W>(&mut self) -> Result<WindowRows<'_, 'c, P, W>, CallbackError>
    where
        W: Window,
        P: Windowed<W>,
    {
        let resources = self.resources;
        let table = P::GRAPH
            .windows
            .iter()
            .find(|w| w.name == W::NAME)
            .and_then(|edge| resources.windows.table(edge.topic()))
            .ok_or_else(|| CallbackError::from(format!("window {} is not open", W::NAME)))?;
        let time = self
            .message
            .timestamp
            .or_else(|| resources.windows.stream_time())
            .unwrap_or_else(crate::kafka::now_millis);
        Ok(WindowRows {
            ctx: self,
            table,
            time,
            _window: PhantomData,
        })
    }
}

/// A stored or just written window of this key, with its encoded value.
struct Found {
    window: WindowRange,
    state: u8,
    value: Vec<u8>,
}

impl<P: Group, W: Window> WindowRows<'_, '_, P, W> {
    /// The message's time in event time: its timestamp (or the partition's stream time, for
    /// a message without one).
    pub fn time(&self) -> i64 {
        self.time
    }

    /// The windows the message falls in that still take messages, oldest first; none for a
    /// late message. (For session windows, the session the message would start.)
    pub fn windows(&self) -> Vec<WindowRange> {
        let now = self.ctx.resources.windows.stream_time();
        W::SPEC
            .windows(self.time)
            .filter(|w| !self.table.closed(*w, now))
            .collect()
    }

    /// Whether every window the message falls in closed already (the message came later
    /// than the grace period allows).
    pub fn is_late(&self) -> bool {
        self.windows().is_empty()
    }

    /// The value of the window starting at `start` at this key: what this handler wrote,
    /// or else the stored value.
    pub fn get(&mut self, window: WindowRange) -> Result<Option<W::Value>, CallbackError> {
        match self.find(window.start)? {
            Some(found) => W::ValueCodec::decode(&found.value)
                .map(Some)
                .map_err(codec_error),
            None => Ok(None),
        }
    }

    /// Sets the value of `window` at this key. A window that closed takes no more values,
    /// and a range that is not one of `W`'s windows is refused: both are errors.
    pub fn set(&mut self, window: WindowRange, value: &W::Value) -> Result<(), CallbackError> {
        self.check_open(window)?;
        self.write(window, Some(value))
    }

    /// Deletes `window` at this key.
    pub fn delete(&mut self, window: WindowRange) -> Result<(), CallbackError> {
        self.check_open(window)?;
        self.write(window, None)
    }

    /// Sets every window the message falls in to what `f` makes of its current value
    /// (`None` for a window without one): `update(|_, count| count.unwrap_or(0) + 1)`
    /// counts. Returns how many windows it updated; a late message updates none and is
    /// counted in the partition's stats. For tumbling and hopping windows: session windows
    /// merge, with [`update_session`](Self::update_session) (the other one does not
    /// compile).
    pub fn update(
        &mut self,
        mut f: impl FnMut(WindowRange, Option<W::Value>) -> W::Value,
    ) -> Result<usize, CallbackError>
    where
        W: WindowShape<false>,
    {
        let windows = self.windows();
        if windows.is_empty() {
            self.count_late();
            return Ok(0);
        }
        for window in &windows {
            let current = self.get(*window)?;
            let next = f(*window, current);
            self.write(*window, Some(&next))?;
        }
        Ok(windows.len())
    }

    /// Adds the message to its key's session of `W` (a session window): it joins every open
    /// session it is less than the gap away from, which `merge` combines into one, oldest
    /// first; `f` then makes the session's new value from the merged one (`None` for a new
    /// session). Returns the session, or `None` for a late message (counted in the stats).
    pub fn update_session(
        &mut self,
        mut merge: impl FnMut(W::Value, W::Value) -> W::Value,
        f: impl FnOnce(WindowRange, Option<W::Value>) -> W::Value,
    ) -> Result<Option<WindowRange>, CallbackError>
    where
        W: WindowShape<true>,
    {
        let t = self.time;
        if self.is_late() {
            self.count_late();
            return Ok(None);
        }
        let gap = W::SPEC.gap().as_millis() as i64;
        let mut session = WindowRange {
            start: t,
            end: t.saturating_add(1),
        };
        let mut value: Option<W::Value> = None;
        let mut joined = Vec::new();
        let now = self.ctx.resources.windows.stream_time();
        for found in self.sessions()? {
            let last = found.window.end.saturating_sub(1);
            let near = t < last.saturating_add(gap) && t > found.window.start.saturating_sub(gap);
            // A session marked closed after the committed stream time is open again after
            // a restart (see `PartitionWindows::index_stored`).
            let closed = found.state != OPEN && self.table.closed(found.window, now);
            if closed || !near {
                continue;
            }
            session.start = session.start.min(found.window.start);
            session.end = session.end.max(found.window.end);
            let decoded = W::ValueCodec::decode(&found.value).map_err(codec_error)?;
            value = Some(match value {
                Some(earlier) => merge(earlier, decoded),
                None => decoded,
            });
            joined.push(found.window);
        }
        let next = f(session, value);
        for old in joined {
            if old.start != session.start {
                self.write(old, None)?;
            }
        }
        self.write(session, Some(&next))?;
        Ok(Some(session))
    }

    /// Counts a late message and, under `LatePolicy::DeadLetter`, sends it to the
    /// dead-letter topic (once, however many windows it was late for).
    fn count_late(&mut self) {
        self.table
            .late
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resources = self.ctx.resources;
        let Some(topic) = resources.late_letters else {
            return;
        };
        let message = self.ctx.message;
        let sent = self
            .ctx
            .outgoing
            .iter()
            .any(|o| o.kind == OutgoingKind::Emit && o.topic == topic && o.key == message.key);
        if !sent {
            let now = resources.windows.stream_time().unwrap_or_default();
            let error = format!(
                "late for window {}: event time {}, stream time {now}",
                W::NAME,
                self.time
            );
            crate::processor::policies::push_dead_letter(
                resources.group,
                resources,
                message,
                self.ctx.outgoing,
                topic,
                "late",
                &error,
            );
        }
    }

    fn row(&self, start: i64) -> Vec<u8> {
        let mut row = Vec::with_capacity(self.ctx.message.key.len() + 12);
        encode_window_key(&self.ctx.message.key, start, &mut row);
        row
    }

    /// The window of this key starting at `start`: this handler's last write of it, or
    /// else the stored row.
    fn find(&self, start: i64) -> Result<Option<Found>, CallbackError> {
        let row = self.row(start);
        let topic = self.table.topic();
        let bytes = match self
            .ctx
            .outgoing
            .last_write(OutgoingKind::Window, topic, &row)
        {
            Some(written) => written.map(<[u8]>::to_vec),
            None => self.table.storage.get(&row).map_err(storage_error)?,
        };
        Ok(bytes.and_then(|bytes| found(start, &bytes)))
    }

    /// Every window of this key, stored or written by this handler, oldest first.
    fn sessions(&self) -> Result<Vec<Found>, CallbackError> {
        let mut prefix = Vec::new();
        crate::window::window_key_prefix(&self.ctx.message.key, &mut prefix);
        let mut rows: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for stored in self
            .table
            .storage
            .range(KeyRange::prefix(prefix.clone()))
            .map_err(storage_error)?
        {
            let (key, value) = stored.map_err(storage_error)?;
            rows.insert(key, Some(value));
        }
        let topic = self.table.topic();
        for out in self.ctx.outgoing.iter() {
            if out.kind == OutgoingKind::Window
                && out.topic == topic
                && out.key.starts_with(&prefix)
            {
                rows.insert(out.key.to_vec(), out.value.map(<[u8]>::to_vec));
            }
        }
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| {
                let (_, start) = decode_window_key(&key).ok()?;
                found(start, &value?)
            })
            .collect())
    }

    fn check_open(&self, window: WindowRange) -> Result<(), CallbackError> {
        let now = self.ctx.resources.windows.stream_time();
        if self.table.closed(window, now) {
            return Err(CallbackError::from(format!(
                "window {} [{}, {}) closed at stream time {}: it takes no more values",
                W::NAME,
                window.start,
                window.end,
                now.unwrap_or_default()
            )));
        }
        let hop = W::SPEC.hop().as_millis() as i64;
        let fixed = W::SPEC.kind() != WindowKind::Session;
        let misaligned =
            window != W::SPEC.range(window.start) || window.start.rem_euclid(hop.max(1)) != 0;
        if fixed && misaligned || window.end <= window.start {
            return Err(CallbackError::from(format!(
                "[{}, {}) is not a window of {}",
                window.start,
                window.end,
                W::NAME
            )));
        }
        Ok(())
    }

    /// Queues a write of `window` at this key (a delete for `None`) for the window's
    /// changelog, in the message's partition.
    fn write(
        &mut self,
        window: WindowRange,
        value: Option<&W::Value>,
    ) -> Result<(), CallbackError> {
        let row = self.row(window.start);
        let (key, bytes) = self.ctx.outgoing.scratch();
        key.extend_from_slice(&row);
        if let Some(value) = value {
            row::header(OPEN, window.end, bytes);
            W::ValueCodec::encode(value, bytes).map_err(codec_error)?;
        }
        let topic = self.table.topic();
        let partition = self.ctx.message.partition;
        self.ctx.outgoing.push_scratch(
            OutgoingKind::Window,
            topic,
            partition,
            value.is_some(),
            None,
        );
        Ok(())
    }
}

/// A window found at `start` with the row value `bytes`.
fn found(start: i64, bytes: &[u8]) -> Option<Found> {
    let parsed = row::parse(bytes)?;
    Some(Found {
        window: WindowRange {
            start,
            end: parsed.end,
        },
        state: parsed.state,
        value: parsed.value.to_vec(),
    })
}

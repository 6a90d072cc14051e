//! A handler's windows: `ctx.window::<W>()`, typed by the window declaration `W`.

use std::marker::PhantomData;

use super::{codec_error, storage_error, CallbackError, Context, OutgoingKind};
use crate::codec::Codec;
use crate::processor::group::{Group, Windowed};
use crate::window::partition::{WindowTable, OPEN};
use crate::window::{encode_window_key, Window, WindowRange};

/// The windows of `W` at the message's key ([`Context::window`]). Writes go to the window's
/// changelog after the handler returns, and to local storage when they are queued, as group
/// table writes do.
pub struct WindowRows<'a, 'c, P: Group, W: Window> {
    ctx: &'a mut Context<'c, P>,
    table: &'c WindowTable,
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
            .and_then(|edge| resources.windows.table(edge.edge.topic))
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

impl<P: Group, W: Window> WindowRows<'_, '_, P, W> {
    /// The message's time in event time: its timestamp (or the partition's stream time, for
    /// a message without one).
    pub fn time(&self) -> i64 {
        self.time
    }

    /// The windows the message falls in that still take messages, oldest first; none for a
    /// late message.
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
        let now = self.ctx.resources.windows.stream_time();
        W::SPEC
            .windows(self.time)
            .all(|w| self.table.closed(w, now))
    }

    /// The value of `window` at this key: what this handler wrote, or else the stored
    /// value.
    pub fn get(&mut self, window: WindowRange) -> Result<Option<W::Value>, CallbackError> {
        let row = self.row(window);
        let topic = self.table.edge.edge.topic;
        if let Some(written) = self
            .ctx
            .outgoing
            .last_write(OutgoingKind::Window, topic, &row)
        {
            return written
                .map(|value| W::ValueCodec::decode(value.get(1..).unwrap_or_default()))
                .transpose()
                .map_err(codec_error);
        }
        let mut decoded = None;
        self.table
            .storage
            .get_with(&row, &mut |raw| {
                decoded = Some(W::ValueCodec::decode(raw.get(1..).unwrap_or_default()))
            })
            .map_err(storage_error)?;
        decoded.transpose().map_err(codec_error)
    }

    /// Sets the value of `window` at this key. A window that closed takes no more values:
    /// that is an error.
    pub fn set(&mut self, window: WindowRange, value: &W::Value) -> Result<(), CallbackError> {
        self.check_open(window)?;
        let row = self.row(window);
        let (key, bytes) = self.ctx.outgoing.scratch();
        key.extend_from_slice(&row);
        bytes.push(OPEN);
        W::ValueCodec::encode(value, bytes).map_err(codec_error)?;
        self.push(true);
        Ok(())
    }

    /// Deletes `window` at this key.
    pub fn delete(&mut self, window: WindowRange) -> Result<(), CallbackError> {
        self.check_open(window)?;
        let row = self.row(window);
        let (key, _) = self.ctx.outgoing.scratch();
        key.extend_from_slice(&row);
        self.push(false);
        Ok(())
    }

    /// Sets every window the message falls in to what `f` makes of its current value
    /// (`None` for a window without one): `update(|_, count| count.unwrap_or(0) + 1)`
    /// counts. Returns how many windows it updated; a late message updates none and is
    /// counted in the partition's stats.
    pub fn update(
        &mut self,
        mut f: impl FnMut(WindowRange, Option<W::Value>) -> W::Value,
    ) -> Result<usize, CallbackError> {
        let windows = self.windows();
        if windows.is_empty() {
            self.table
                .late
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(0);
        }
        for window in &windows {
            let current = self.get(*window)?;
            let next = f(*window, current);
            self.set(*window, &next)?;
        }
        Ok(windows.len())
    }

    fn row(&self, window: WindowRange) -> Vec<u8> {
        let mut row = Vec::with_capacity(self.ctx.message.key.len() + 12);
        encode_window_key(&self.ctx.message.key, window.start, &mut row);
        row
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
        if window != W::SPEC.range(window.start) || window.start.rem_euclid(hop.max(1)) != 0 {
            return Err(CallbackError::from(format!(
                "[{}, {}) is not a window of {}",
                window.start,
                window.end,
                W::NAME
            )));
        }
        Ok(())
    }

    /// Queues the row write in the scratch buffers for the window's changelog, in the
    /// message's partition.
    fn push(&mut self, has_value: bool) {
        let topic = self.table.edge.edge.topic;
        let partition = self.ctx.message.partition;
        self.ctx
            .outgoing
            .push_scratch(OutgoingKind::Window, topic, partition, has_value, None);
    }
}

//! A handler's timers: `ctx.schedule::<T>(...)` and `ctx.cancel::<T>(...)`, typed by the
//! timer declaration `T`.

use super::{codec_error, CallbackError, Context, OutgoingKind};
use crate::codec::Codec;
use crate::group::{Group, Timed};
use crate::timer::{row_key, Timer, TimerTime};

impl<P: Group> Context<'_, P> {
    /// Schedules the timer `T` for this message's key at `at`, with `payload` for its
    /// handler (`#[timer(timer = T, handler = ...)]`). One timer of `T` per key and time:
    /// scheduling it again replaces the payload. Stored once the handler returned, like a
    /// table write.
    pub fn schedule<T>(&mut self, at: TimerTime, payload: &T::Value) -> Result<(), CallbackError>
    where
        T: Timer,
        P: Timed<T>,
    {
        let topic = self.timer_topic()?;
        if let Some(timers) = &self.resources.timers {
            timers.scheduled(at);
        }
        let key = self.message.key.clone();
        let (row, bytes) = self.outgoing.scratch();
        row_key(at, T::NAME, &key, row);
        T::ValueCodec::encode(payload, bytes).map_err(codec_error)?;
        self.send(OutgoingKind::Timer, topic, true, None);
        Ok(())
    }

    /// Cancels the timer `T` of this message's key at `at`, if it was scheduled.
    pub fn cancel<T>(&mut self, at: TimerTime) -> Result<(), CallbackError>
    where
        T: Timer,
        P: Timed<T>,
    {
        let topic = self.timer_topic()?;
        let key = self.message.key.clone();
        let (row, _) = self.outgoing.scratch();
        row_key(at, T::NAME, &key, row);
        self.send(OutgoingKind::Timer, topic, false, None);
        Ok(())
    }

    fn timer_topic(&self) -> Result<&'static str, CallbackError> {
        match (P::GRAPH.timers, &self.resources.timers) {
            (Some(edge), Some(_)) => Ok(edge.topic),
            _ => Err(CallbackError::from("the group's timers are not open")),
        }
    }
}

//! The handlers of a processor group, as the runtime calls them: the [`Handlers`] trait the
//! processor macro implements beside [`Group`] (or a user implements by hand), a dispatch
//! from an input topic, a window, a timer or a visitor to the user's method.

use futures::future::BoxFuture;

use crate::context::{CallbackError, Context};
use crate::group::Group;

/// A processor group's handlers: everything the runtime needs from the user's code besides
/// the [`Group`]'s graph and key.
pub trait Handlers: Group {
    /// Decodes the message in `ctx` (topic, value) and calls the handler of its topic. The
    /// value is `None` for a tombstone that nil handling let through.
    fn dispatch<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        value: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<(), CallbackError>>;

    /// Whether an input reads its messages' event time from their values
    /// (`#[input(..., event_time = ...)]`): then [`event_time`](Self::event_time) is asked
    /// for each message before it is handled.
    const EVENT_TIME: bool = false;

    /// The event time of a message of `topic` with `value`, read from the decoded value by
    /// the input's `event_time` method; `None` keeps the record's timestamp (no such method,
    /// a tombstone, a value that does not decode: its handler reports that).
    fn event_time(&self, topic: &str, value: Option<&[u8]>) -> Option<i64> {
        let _ = (topic, value);
        None
    }

    /// Calls the `on_close` handler of the window named `window` for the key in `ctx`, with
    /// the window's range and final value (encoded). Generated for groups with
    /// `#[window(..., on_close = ...)]` edges.
    fn close_window<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        window: &'a str,
        range: crate::window::WindowRange,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        let _ = (ctx, range, value);
        Box::pin(async move {
            Err(CallbackError::from(format!(
                "group {} has no on_close handler for window {window}",
                Self::GRAPH.group
            )))
        })
    }

    /// Calls the handler of the timer named `timer` for the key in `ctx`, with its payload
    /// (encoded). Generated for groups with `#[timer(...)]` edges.
    fn fire_timer<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        timer: &'a str,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        let _ = (ctx, payload);
        Box::pin(async move {
            Err(CallbackError::from(format!(
                "group {} has no handler for timer {timer}",
                Self::GRAPH.group
            )))
        })
    }

    /// Calls the handler of the visitor named `visitor` for the key in `ctx`, with `value`
    /// (the visitor's value). Generated for groups with `#[visit(...)]` edges.
    fn visit<'a>(
        &'a self,
        ctx: &'a mut Context<'_, Self>,
        visitor: &'a str,
        value: &'a (dyn std::any::Any + Send + Sync),
    ) -> BoxFuture<'a, Result<(), CallbackError>> {
        let _ = (ctx, value);
        Box::pin(async move {
            Err(CallbackError::from(format!(
                "group {} has no visitor {visitor}",
                Self::GRAPH.group
            )))
        })
    }
}

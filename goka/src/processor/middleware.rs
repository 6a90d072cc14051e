//! Code that runs around every handler call (goka's `WithContextWrapper`): tracing spans,
//! timing, logging, error mapping. goka wraps the context; a typed context cannot be
//! wrapped generically, so a middleware gets the message's coordinates and the handler's
//! call to await (or not).

use futures::future::BoxFuture;

use crate::context::CallbackError;
use crate::kafka::Headers;

/// The message a handler is about to be called for.
#[derive(Debug, Clone, Copy)]
pub struct MessageInfo<'a> {
    /// The processor's group.
    pub group: &'static str,
    /// The message's topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its encoded key.
    pub key: &'a [u8],
    /// Its timestamp in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// Its headers.
    pub headers: &'a Headers,
}

/// The handler's call: awaiting [`run`](Next::run) runs it. A middleware that does not
/// run it skips the message's handler (what it would have produced is not sent, and the
/// message counts as handled).
pub struct Next<'a>(pub(crate) BoxFuture<'a, Result<(), CallbackError>>);

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}

impl Next<'_> {
    /// Runs the handler.
    pub async fn run(self) -> Result<(), CallbackError> {
        self.0.await
    }
}

/// Runs around every handler call of a processor ([`ProcessorConfig::middleware`]); the
/// tester runs it too.
///
/// ```
/// use futures::future::BoxFuture;
/// use goka::context::CallbackError;
/// use goka::processor::{MessageInfo, Middleware, Next};
///
/// /// Logs handlers slower than 100 ms.
/// struct SlowHandlers;
///
/// impl Middleware for SlowHandlers {
///     fn around<'a>(
///         &'a self,
///         message: MessageInfo<'a>,
///         next: Next<'a>,
///     ) -> BoxFuture<'a, Result<(), CallbackError>> {
///         Box::pin(async move {
///             let started = std::time::Instant::now();
///             let result = next.run().await;
///             if started.elapsed().as_millis() > 100 {
///                 eprintln!("slow: {} {}@{}", message.topic, message.partition, message.offset);
///             }
///             result
///         })
///     }
/// }
/// ```
///
/// [`ProcessorConfig::middleware`]: super::ProcessorConfig::middleware
pub trait Middleware: Send + Sync + 'static {
    /// Called for each message with the handler's call, which it should run.
    fn around<'a>(
        &'a self,
        message: MessageInfo<'a>,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), CallbackError>>;
}

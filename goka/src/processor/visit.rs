//! Visitors (goka's `Visitor` edge and `VisitAll`): a callback run over every key of the
//! group table of every partition an instance owns, as if a message for the key arrived.
//! State writes, emits and loopbacks behave as in a handler; the visit runs in the
//! partition's task, between its messages, so nothing else touches the row meanwhile.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Group;

/// A visitor: a name and the type of the value [`Processor::visit_all`] hands to each call.
/// Declared with [`visitor!`](crate::visitor).
///
/// [`Processor::visit_all`]: super::Processor::visit_all
pub trait Visitor: Send + Sync + 'static {
    /// Its name, in errors, logs and stats.
    const NAME: &'static str;
    /// What every call of the visit gets (cloned per key).
    type Value: Clone + Send + Sync + 'static;
}

/// Declares a visitor type: `visitor!(pub Expire: Deadline)`; a processor visits with it
/// once it declares `#[visit(visitor = Expire, handler = Self::on_expire)]`.
///
/// ```
/// goka::visitor!(
///     /// Drops rows older than the given age.
///     pub Expire: std::time::Duration
/// );
/// ```
#[macro_export]
macro_rules! visitor {
    ($(#[$meta:meta])* $vis:vis $name:ident : $value:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;

        impl $crate::processor::Visitor for $name {
            const NAME: &'static str = stringify!($name);
            type Value = $value;
        }
    };
}

/// A group that visits its table with `V` (`#[visit(visitor = V, handler = ...)]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not visit with `{V}`",
    label = "no visit edge for this visitor",
    note = "add `#[visit(visitor = {V}, handler = ...)]` to `{Self}`"
)]
pub trait Visits<V: Visitor>: Group {}

/// A visit asked of one partition task.
pub(super) struct VisitRequest {
    pub(super) visitor: &'static str,
    pub(super) value: Arc<dyn Any + Send + Sync>,
    /// Answered with the keys visited, once every key was.
    pub(super) done: oneshot::Sender<Result<u64, super::ProcessorError>>,
}

/// How far a partition's visit got ([`ProcessorPartitionStats::visit`]).
///
/// [`ProcessorPartitionStats::visit`]: super::ProcessorPartitionStats::visit
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitProgress {
    /// The visitor.
    pub visitor: &'static str,
    /// Keys visited so far.
    pub visited: u64,
    /// Keys the partition's table held when the visit began.
    pub total: u64,
    /// Whether the visit finished.
    pub finished: bool,
}

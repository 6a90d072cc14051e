//! The lookup tables' views while the processor runs: a view that ends before the processor
//! stops it, so lookups never serve frozen rows under `Running`.

use std::sync::Arc;

use futures::future::select_all;
use tokio::task::{JoinError, JoinHandle};

use super::error::panic_text;
use super::shared::Shared;
use super::ProcessorError;
use crate::view::ViewError;

/// The task of one lookup table's view, with the table's topic.
pub(super) type LookupTask = (&'static str, JoinHandle<Result<(), ViewError>>);

/// The error for the view of `topic` whose task ended with `ended` before it was told to
/// stop.
pub(super) fn ended(
    group: &'static str,
    topic: &'static str,
    ended: Result<Result<(), ViewError>, JoinError>,
) -> ProcessorError {
    let source = match ended {
        Ok(Err(error)) => error,
        Ok(Ok(())) => ViewError::Ended {
            topic,
            reason: "its run returned without an error".into(),
        },
        Err(join) => ViewError::Ended {
            topic,
            reason: match join.try_into_panic() {
                Ok(panic) => format!("it panicked: {}", panic_text(&*panic)),
                Err(join) => format!("its task was cancelled: {join}"),
            },
        },
    };
    ProcessorError::Lookup { group, source }
}

/// Waits for the lookup views' tasks, which end when the processor stops; one that ends
/// before stops the processor with its error.
pub(super) async fn watch(shared: Arc<Shared>, tasks: Vec<LookupTask>) {
    let (mut topics, mut handles): (Vec<&'static str>, Vec<_>) = tasks.into_iter().unzip();
    while !handles.is_empty() {
        let (result, index, rest) = select_all(handles).await;
        let topic = topics.remove(index);
        handles = rest;
        match result {
            // Stopped with the processor.
            Ok(Ok(())) if shared.cancel.is_cancelled() => {}
            ended => {
                let error = self::ended(shared.group, topic, ended);
                tracing::error!(group = shared.group, table = topic, %error, "lookup table's view ended");
                shared.fail(error);
            }
        }
    }
}

//! The loop of a running view: one table reader for all partitions of the table, and the
//! view's state made from theirs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ViewError, ViewInner, ViewState};
use crate::kafka::HeaderUse;
use crate::table::{Apply, Step, TableError, TableReader};

/// How often a running view reads its partitions' high watermarks (for lag).
const WATERMARK_REFRESH: Duration = Duration::from_secs(2);

/// The loop of [`View::run`](super::View::run): recovers every partition, then applies new
/// changelog messages until `cancel` fires.
pub(super) async fn run(
    inner: &Arc<ViewInner>,
    cancel: CancellationToken,
) -> Result<(), ViewError> {
    let topic = inner.topic;
    inner.state.send_replace(ViewState::Recovering);
    let apply = Apply {
        validate: Some(inner.validate),
        decode_errors: inner.decode_errors,
        update: inner.update.clone(),
    };
    // Rows keep no headers: only an update callback might look at them.
    let headers = if inner.update.is_some() {
        HeaderUse::Read
    } else {
        HeaderUse::Skip
    };
    let start = TableReader::start(
        &*inner.client,
        topic,
        inner.partitions.clone(),
        headers,
        apply,
    );
    let mut reader = tokio::select! {
        reader = start => reader.map_err(|e| view_error(topic, e))?,
        _ = cancel.cancelled() => return Ok(()),
    };
    let watermarks = cancel.child_token();
    let following = tokio::spawn(follow_watermarks(inner.clone(), watermarks.clone()));
    let mut disconnected = None;
    let result = loop {
        let step = tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            step = reader.next() => step,
        };
        match step {
            Ok(Step::Closed) => break Ok(()),
            Ok(Step::StateChanged) => {
                if !inner.auto_reconnect {
                    let lost = inner
                        .partitions
                        .iter()
                        .find(|p| p.progress.state() == ViewState::Reconnecting);
                    if let Some(lost) = lost {
                        disconnected = Some(lost.progress.stats().partition);
                        break Ok(());
                    }
                }
                update_view_state(inner);
            }
            // Messages after a reconnect bring the view back to its partitions' state.
            Ok(Step::Read) if *inner.state.borrow() == ViewState::Reconnecting => {
                update_view_state(inner);
            }
            Ok(Step::Read) => {}
            Err(error) => break Err(error),
        }
    };
    let stopped = stop(inner, reader, watermarks, following).await?;
    result.and(stopped).map_err(|e| view_error(topic, e))?;
    match disconnected {
        Some(partition) => Err(ViewError::Disconnected { topic, partition }),
        None => Ok(()),
    }
}

/// Stops following watermarks and stops the reader (its offsets written, its consumer
/// closed), on a thread of its own: a client that never returns from closing is abandoned
/// after the view's stop timeout, and `run` says so instead of hanging.
async fn stop(
    inner: &ViewInner,
    reader: TableReader,
    watermarks: CancellationToken,
    following: tokio::task::JoinHandle<()>,
) -> Result<Result<(), TableError>, ViewError> {
    let (done, stopped) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("goka-view-{}", inner.topic))
        .spawn(move || {
            let _ = done.send(reader.stop());
        });
    if let Err(error) = spawned {
        // The reader went with the thread that did not start: its consumer is closed, but
        // its last offsets are not written, so the next run reads a little more.
        tracing::warn!(topic = inner.topic, %error, "no thread to stop the view on: its last offsets are not stored");
    }
    let stopping = async {
        watermarks.cancel();
        let _ = following.await;
        stopped.await.unwrap_or(Ok(()))
    };
    tokio::time::timeout(inner.stop_timeout, stopping)
        .await
        .map_err(|_| {
            tracing::error!(
                topic = inner.topic,
                "the view did not finish stopping within stop_timeout and was abandoned"
            );
            ViewError::Abandoned {
                topic: inner.topic,
                after: inner.stop_timeout,
            }
        })
}

fn view_error(topic: &'static str, error: TableError) -> ViewError {
    match error {
        TableError::Kafka(source) => ViewError::Kafka { topic, source },
        TableError::Storage(source) => ViewError::Storage { topic, source },
        TableError::Decode {
            partition,
            offset,
            key,
            source,
        } => ViewError::Decode {
            topic,
            partition,
            offset,
            key,
            source,
        },
    }
}

/// Follows the high watermarks of the view's partitions (for lag), and the view's state
/// with them: a quiet table shows `Running` again once the cluster answers.
async fn follow_watermarks(inner: Arc<ViewInner>, cancel: CancellationToken) {
    let partitions = inner
        .partitions
        .iter()
        .map(|p| p.progress.clone())
        .collect::<Vec<_>>();
    crate::table::follow_high_watermarks(
        inner.client.clone(),
        inner.topic,
        move || partitions.clone(),
        || {
            if *inner.state.borrow() == ViewState::Reconnecting {
                update_view_state(&inner);
            }
        },
        WATERMARK_REFRESH,
        cancel,
    )
    .await;
}

/// `Running` once every partition runs, `Reconnecting` when none recovers and one lost its
/// connection, `Recovering` before.
fn update_view_state(inner: &ViewInner) {
    let states = inner.partitions.iter().map(|p| p.progress.state());
    let mut state = ViewState::Running;
    for partition in states {
        match partition {
            ViewState::Running => {}
            ViewState::Reconnecting if state == ViewState::Running => {
                state = ViewState::Reconnecting;
            }
            ViewState::Reconnecting => {}
            _ => state = ViewState::Recovering,
        }
    }
    inner.state.send_if_modified(|s| {
        let changed = *s != state;
        *s = state;
        changed
    });
}

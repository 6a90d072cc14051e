//! Waiting between attempts to reach a cluster that does not answer (goka's
//! `WithBackoffBuilder` and `WithBackoffResetTimeout`).
//!
//! The client reconnects to brokers by itself (librdkafka's `reconnect.backoff.ms` and
//! `reconnect.backoff.max.ms`, set through [`KafkaConfig`](super::KafkaConfig)); a
//! [`Backoff`] paces what goka-rs starts again on its own: a processor or a view that cannot
//! reach the cluster when it starts (reading topic metadata, creating topics, recovering
//! lookups) tries again after each wait, until it gets through or gives up.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long to wait between attempts, when to forget earlier failures, and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure; each further failure doubles it.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// A failure this long after the previous one starts from `initial` again (goka's
    /// `WithBackoffResetTimeout`, 60 s there and here).
    pub reset_after: Duration,
    /// Stop with the last error once failures have gone on this long without a success
    /// in between. `None` tries until cancelled, as a goka view with auto-reconnect does.
    /// Default: 5 minutes, as long as a message may wait for its delivery (librdkafka's
    /// `message.timeout.ms`), the bound of an outage while running.
    pub give_up_after: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            give_up_after: Some(Duration::from_secs(300)),
        }
    }
}

impl Backoff {
    /// A backoff that never retries: the first failure stops.
    pub fn never() -> Self {
        Self {
            give_up_after: Some(Duration::ZERO),
            ..Self::default()
        }
    }

    /// Starts counting failures.
    pub(crate) fn start(self) -> Retries {
        Retries {
            backoff: self,
            attempts: 0,
            first: None,
            last: None,
            wait: Duration::ZERO,
        }
    }
}

/// The failures of one series of attempts under a [`Backoff`].
#[derive(Debug)]
pub(crate) struct Retries {
    backoff: Backoff,
    attempts: u32,
    /// The first failure of the current series.
    first: Option<Instant>,
    /// The latest failure.
    last: Option<Instant>,
    wait: Duration,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait this long, then try again: this is attempt `attempt` of the series.
    Wait { wait: Duration, attempt: u32 },
    /// Failures went on longer than `give_up_after`: stop.
    GiveUp {
        attempts: u32,
        failing_for: Duration,
    },
}

impl Retries {
    /// Counts a failure at `now` and says what to do.
    pub(crate) fn failed_at(&mut self, now: Instant) -> Next {
        let forgotten = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) >= self.backoff.reset_after);
        if forgotten || self.first.is_none() {
            self.first = Some(now);
            self.attempts = 0;
            self.wait = Duration::ZERO;
        }
        self.last = Some(now);
        self.attempts += 1;
        let failing_for = self
            .first
            .map_or(Duration::ZERO, |first| now.saturating_duration_since(first));
        if self
            .backoff
            .give_up_after
            .is_some_and(|limit| failing_for >= limit)
        {
            return Next::GiveUp {
                attempts: self.attempts,
                failing_for,
            };
        }
        self.wait = if self.wait.is_zero() {
            self.backoff.initial
        } else {
            self.wait.saturating_mul(2)
        }
        .min(self.backoff.max);
        Next::Wait {
            wait: self.wait,
            attempt: self.attempts,
        }
    }

    /// Counts a failure now.
    pub(crate) fn failed(&mut self) -> Next {
        self.failed_at(Instant::now())
    }
}

/// Why [`retry`] stopped without a result.
#[derive(Debug)]
pub(crate) enum Stopped<E> {
    /// The attempt failed for a reason trying again does not help with.
    Failed(E),
    /// The cluster stayed unreachable longer than [`Backoff::give_up_after`].
    GaveUp {
        /// The last attempt's error.
        error: E,
        /// Attempts made.
        attempts: u32,
        /// Since the first failure of the series.
        failing_for: Duration,
    },
}

/// Runs `attempt` until it succeeds, fails in a way `retryable` says waiting does not help
/// with, or `backoff` gives up; waits between attempts, warning about each failure with
/// `what` (which names the group or table). `Ok(None)` when `cancel` fires first.
pub(crate) async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    what: &str,
    cancel: &CancellationToken,
    retryable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<Option<T>, Stopped<E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut retries = backoff.start();
    loop {
        let error = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            result = attempt() => match result {
                Ok(value) => return Ok(Some(value)),
                Err(error) if retryable(&error) => error,
                Err(error) => return Err(Stopped::Failed(error)),
            },
        };
        match retries.failed() {
            Next::GiveUp {
                attempts,
                failing_for,
            } => {
                return Err(Stopped::GaveUp {
                    error,
                    attempts,
                    failing_for,
                })
            }
            Next::Wait { wait, attempt } => {
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    %error,
                    "{what}: the cluster did not answer; trying again"
                );
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
            give_up_after: Some(Duration::from_secs(30)),
        }
    }

    fn wait(next: Next) -> Duration {
        match next {
            Next::Wait { wait, .. } => wait,
            Next::GiveUp { .. } => panic!("gave up: {next:?}"),
        }
    }

    #[tokio::test]
    async fn retry_tries_until_the_cluster_answers_and_stops_on_other_errors() {
        let quick = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            reset_after: Duration::from_secs(60),
            give_up_after: Some(Duration::from_millis(40)),
        };
        let cancel = CancellationToken::new();
        let down = |e: &&str| *e == "down";
        let mut calls = 0;
        let answered = retry(quick, "test", &cancel, down, || {
            calls += 1;
            let result = if calls < 4 { Err("down") } else { Ok(calls) };
            async move { result }
        })
        .await;
        assert!(matches!(answered, Ok(Some(4))));

        let refused: Result<Option<()>, _> =
            retry(quick, "test", &cancel, down, || async { Err("forbidden") }).await;
        assert!(matches!(refused, Err(Stopped::Failed("forbidden"))));

        let gave_up: Result<Option<()>, _> =
            retry(quick, "test", &cancel, down, || async { Err("down") }).await;
        match gave_up {
            Err(Stopped::GaveUp {
                error,
                attempts,
                failing_for,
            }) => {
                assert_eq!(error, "down");
                // Waits of at least 1, 2, 4, 4, ... ms before 40 ms passed.
                assert!((2..=13).contains(&attempts), "{attempts} attempts");
                assert!(failing_for >= Duration::from_millis(40));
            }
            other => panic!("did not give up: {other:?}"),
        }

        cancel.cancel();
        let cancelled: Result<Option<()>, _> =
            retry(quick, "test", &cancel, down, || async { Err("down") }).await;
        assert!(matches!(cancelled, Ok(None)));
    }

    #[test]
    fn waits_double_up_to_the_longest_wait() {
        let start = Instant::now();
        let mut retries = backoff().start();
        let waits: Vec<u64> = (0..5)
            .map(|i| wait(retries.failed_at(start + Duration::from_secs(i))).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn failures_longer_than_the_limit_give_up_with_the_count() {
        let start = Instant::now();
        let mut retries = backoff().start();
        for second in [0, 10, 20] {
            wait(retries.failed_at(start + Duration::from_secs(second)));
        }
        assert_eq!(
            retries.failed_at(start + Duration::from_secs(30)),
            Next::GiveUp {
                attempts: 4,
                failing_for: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_quiet_spell_of_reset_after_starts_the_series_again() {
        let start = Instant::now();
        let mut retries = backoff().start();
        for second in [0, 1, 3, 7, 12, 17] {
            wait(retries.failed_at(start + Duration::from_secs(second)));
        }
        // 60 s without a failure: the next wait is the first one, and the limit counts anew.
        let later = start + Duration::from_secs(77);
        assert_eq!(
            retries.failed_at(later),
            Next::Wait {
                wait: Duration::from_secs(1),
                attempt: 1
            }
        );
        assert!(matches!(
            retries.failed_at(later + Duration::from_secs(29)),
            Next::Wait { attempt: 2, .. }
        ));
    }

    #[test]
    fn never_stops_at_the_first_failure_and_none_never_stops() {
        let mut retries = Backoff::never().start();
        assert!(matches!(retries.failed(), Next::GiveUp { attempts: 1, .. }));
        let forever = Backoff {
            give_up_after: None,
            ..backoff()
        };
        let start = Instant::now();
        let mut retries = forever.start();
        for hour in 0..48 {
            wait(retries.failed_at(start + Duration::from_secs(hour * 50)));
        }
    }
}

//! What the monitor remembers of a component: a bounded ring of samples of its counters and
//! partitions, taken about once a second (by `Monitor::serve`'s sampler, and whenever
//! someone looks). The charts, the rates and the marks of partitions that do not keep up
//! are all read from it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ComponentStats;

/// Samples closer together than this are not kept.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: five minutes at one a second.
pub const CAPACITY: usize = 300;
/// Rates are taken over about this much history.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// A partition that has had lag for this long is stalled if it did not move, and lagging if
/// it moved without catching up.
const QUIET: Duration = Duration::from_secs(10);

/// The counters a rate is shown for: flows, not levels such as `lag` or `pending`.
pub(super) fn is_flow(counter: &str) -> bool {
    counter.starts_with("messages") || counter.starts_with("bytes")
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    counters: Vec<(&'static str, u64)>,
    partitions: Vec<PartitionSample>,
}

#[derive(Debug, Clone, Copy)]
struct PartitionSample {
    partition: i32,
    lag: Option<i64>,
    /// What grows as the partition is read: its offset, or its message count.
    progress: Option<i64>,
}

/// The samples of one component.
#[derive(Debug, Default)]
pub(super) struct History {
    samples: VecDeque<Sample>,
}

/// The history of a component as charts draw it (`/api/components/{name}/history`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Samples taken (at most [`CAPACITY`]).
    pub samples: usize,
    /// When each sample was taken, in seconds before the newest (0 for the newest).
    pub seconds_ago: Vec<f64>,
    /// Per-second rate of each message counter between consecutive samples: one point per
    /// sample after the first.
    pub rates: Vec<(&'static str, Vec<f64>)>,
    /// The component's total lag at each sample, where it has partitions with a known lag.
    pub lag: Vec<Option<i64>>,
    /// Each partition's lag and read rate.
    pub partitions: Vec<PartitionSeries>,
}

/// The history of one partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionSeries {
    /// The partition.
    pub partition: i32,
    /// Its lag at each sample.
    pub lag: Vec<Option<i64>>,
    /// Messages per second read between consecutive samples.
    pub rate: Vec<f64>,
}

impl History {
    /// Records `stats` as seen `now`, unless the last sample is less than a second old.
    pub(super) fn observe(&mut self, now: Instant, stats: &ComponentStats) {
        if self
            .samples
            .back()
            .is_some_and(|last| now.duration_since(last.at) < SAMPLE_EVERY)
        {
            return;
        }
        let partitions = stats
            .partitions
            .iter()
            .map(|p| PartitionSample {
                partition: p.partition,
                lag: p.lag,
                progress: p.offset.or(p.messages.map(|m| m as i64)),
            })
            .collect();
        self.samples.push_back(Sample {
            at: now,
            counters: stats.counters.clone(),
            partitions,
        });
        while self.samples.len() > CAPACITY {
            self.samples.pop_front();
        }
    }

    /// The rates of the flow counters over the last ten seconds or so; empty until two
    /// samples a second apart exist.
    pub(super) fn rates(&self) -> Vec<(&'static str, f64)> {
        let Some(newest) = self.samples.back() else {
            return Vec::new();
        };
        // The newest sample at least a window older than the newest, or the oldest.
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| newest.at.duration_since(s.at) >= RATE_WINDOW)
            .or(self.samples.front())
            .filter(|base| newest.at.duration_since(base.at) >= SAMPLE_EVERY);
        let Some(base) = base else {
            return Vec::new();
        };
        newest
            .counters
            .iter()
            .filter(|(name, _)| is_flow(name))
            .map(|&(name, value)| (name, rate(base, newest, name, value)))
            .collect()
    }

    /// Everything the charts draw.
    pub(super) fn series(&self) -> Series {
        let newest = self.samples.back().map(|s| s.at);
        let seconds_ago = self
            .samples
            .iter()
            .map(|s| newest.map_or(0.0, |n| n.duration_since(s.at).as_secs_f64()))
            .collect();
        let pairs: Vec<(&Sample, &Sample)> = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .collect();
        let names: Vec<&'static str> = self.samples.back().map_or(Vec::new(), |s| {
            s.counters
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| name.starts_with("messages"))
                .collect()
        });
        let rates = names
            .into_iter()
            .map(|name| {
                let points = pairs
                    .iter()
                    .map(|(before, after)| {
                        let value = counter(after, name).unwrap_or(0);
                        rate(before, after, name, value)
                    })
                    .collect();
                (name, points)
            })
            .collect();
        let lag = self
            .samples
            .iter()
            .map(|s| {
                let known: Vec<i64> = s.partitions.iter().filter_map(|p| p.lag).collect();
                (!known.is_empty()).then(|| known.iter().sum())
            })
            .collect();
        let mut ids: Vec<i32> = self
            .samples
            .iter()
            .flat_map(|s| s.partitions.iter().map(|p| p.partition))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let partitions = ids
            .into_iter()
            .map(|partition| PartitionSeries {
                partition,
                lag: self
                    .samples
                    .iter()
                    .map(|s| find(s, partition).and_then(|p| p.lag))
                    .collect(),
                rate: pairs
                    .iter()
                    .map(|(before, after)| {
                        let progress = |s: &Sample| find(s, partition).and_then(|p| p.progress);
                        match (progress(before), progress(after)) {
                            (Some(b), Some(a)) => per_second(a.saturating_sub(b), before, after),
                            _ => 0.0,
                        }
                    })
                    .collect(),
            })
            .collect();
        Series {
            samples: self.samples.len(),
            seconds_ago,
            rates,
            lag,
            partitions,
        }
    }

    /// The samples of `partition` over the last [`QUIET`], if they cover it and it had lag
    /// at every one of them.
    fn lagging_throughout(&self, partition: i32) -> Option<Vec<PartitionSample>> {
        let newest = self.samples.back()?.at;
        let start = self
            .samples
            .iter()
            .rposition(|s| newest.duration_since(s.at) >= QUIET)?;
        let window: Vec<PartitionSample> = self
            .samples
            .iter()
            .skip(start)
            .map(|s| find(s, partition).copied())
            .collect::<Option<_>>()?;
        window
            .iter()
            .all(|p| p.lag.is_some_and(|lag| lag > 0))
            .then_some(window)
    }

    /// The partition has had lag for ten seconds and not moved.
    pub(super) fn stuck(&self, partition: i32) -> bool {
        self.lagging_throughout(partition).is_some_and(|window| {
            let first = window.first().and_then(|p| p.progress);
            first.is_some() && window.iter().all(|p| p.progress == first)
        })
    }

    /// The partition has had lag for ten seconds and moved, but did not catch up: its lag
    /// is not below what it was ten seconds ago.
    pub(super) fn lagging(&self, partition: i32) -> bool {
        !self.stuck(partition)
            && self.lagging_throughout(partition).is_some_and(|window| {
                match (window.first(), window.last()) {
                    (Some(first), Some(last)) => last.lag >= first.lag,
                    _ => false,
                }
            })
    }
}

fn find(sample: &Sample, partition: i32) -> Option<&PartitionSample> {
    sample.partitions.iter().find(|p| p.partition == partition)
}

fn counter(sample: &Sample, name: &str) -> Option<u64> {
    sample
        .counters
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
}

/// The rate of counter `name`, now `value`, from `before` to `after`.
fn rate(before: &Sample, after: &Sample, name: &str, value: u64) -> f64 {
    let was = counter(before, name).unwrap_or(0);
    per_second(value.saturating_sub(was) as i64, before, after)
}

fn per_second(delta: i64, before: &Sample, after: &Sample) -> f64 {
    let elapsed = after.at.duration_since(before.at).as_secs_f64();
    if elapsed <= 0.0 {
        return 0.0;
    }
    delta.max(0) as f64 / elapsed
}

#[cfg(test)]
mod tests {
    use super::super::{ComponentKind, PartitionRow};
    use super::*;

    fn stats(messages: u64, lag: i64, offset: i64) -> ComponentStats {
        ComponentStats {
            kind: ComponentKind::Processor,
            name: "g".into(),
            state: "Running".into(),
            counters: vec![("messages_in", messages), ("lag_like_level", 7)],
            rates: Vec::new(),
            callback_latency: None,
            partitions: vec![PartitionRow {
                partition: 0,
                state: "Running".into(),
                offset: Some(offset),
                high_watermark: Some(offset + lag),
                lag: Some(lag),
                messages: None,
                recovery_remaining: None,
                recovery_percent: None,
                stalled: false,
                lagging: false,
            }],
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn rates_follow_the_counters_over_the_window() {
        let mut history = History::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        history.observe(t0, &stats(0, 0, 0));
        assert!(history.rates().is_empty(), "one sample gives no rate");
        history.observe(t0 + Duration::from_millis(500), &stats(50, 0, 0));
        assert_eq!(history.series().samples, 1, "samples are a second apart");
        history.observe(at(2), &stats(200, 0, 0));
        assert_eq!(
            history.rates(),
            vec![("messages_in", 100.0)],
            "levels get no rate"
        );
        for s in 3..=22 {
            history.observe(at(s), &stats(200 + 10 * (s - 2), 0, 0));
        }
        let recent = history.rates();
        assert_eq!(recent.len(), 1);
        assert!(
            (recent[0].1 - 10.0).abs() < 0.01,
            "the rate is over the last window: {recent:?}"
        );
    }

    #[test]
    fn the_ring_keeps_the_last_five_minutes_and_series_align_with_it() {
        let mut history = History::default();
        let t0 = Instant::now();
        for s in 0..(CAPACITY as u64 + 50) {
            history.observe(t0 + Duration::from_secs(s), &stats(s * 5, 3, s as i64 * 5));
        }
        let series = history.series();
        assert_eq!(series.samples, CAPACITY);
        assert_eq!(series.seconds_ago.len(), CAPACITY);
        assert_eq!(series.seconds_ago.last(), Some(&0.0));
        assert_eq!(series.seconds_ago.first(), Some(&((CAPACITY - 1) as f64)));
        assert_eq!(series.lag.len(), CAPACITY);
        let (name, rate) = &series.rates[0];
        assert_eq!(*name, "messages_in");
        assert_eq!(rate.len(), CAPACITY - 1);
        assert!(rate.iter().all(|r| (*r - 5.0).abs() < 1e-9));
        assert_eq!(series.partitions[0].rate.len(), CAPACITY - 1);
        assert!(series.partitions[0].lag.iter().all(|l| *l == Some(3)));
    }

    #[test]
    fn a_partition_with_lag_is_stuck_when_it_does_not_move_and_lagging_when_it_falls_behind() {
        let t0 = Instant::now();
        let run = |lag: &dyn Fn(u64) -> i64, offset: &dyn Fn(u64) -> i64| {
            let mut history = History::default();
            for s in 0..=12 {
                history.observe(t0 + Duration::from_secs(s), &stats(0, lag(s), offset(s)));
            }
            (history.stuck(0), history.lagging(0))
        };
        assert_eq!(run(&|_| 5, &|_| 100), (true, false), "lag, no movement");
        assert_eq!(
            run(&|s| 5 + s as i64, &|s| 100 + s as i64),
            (false, true),
            "moving, lag growing"
        );
        assert_eq!(
            run(&|s| 20 - s as i64, &|s| 100 + 3 * s as i64),
            (false, false),
            "catching up"
        );
        assert_eq!(run(&|_| 0, &|_| 100), (false, false), "idle without lag");
        let mut short = History::default();
        for s in 0..5 {
            short.observe(t0 + Duration::from_secs(s), &stats(0, 5, 100));
        }
        assert!(!short.stuck(0), "five seconds are not enough to tell");
    }
}

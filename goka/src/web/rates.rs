//! Per-second rates of a component's counters, from the samples the monitor takes whenever
//! someone looks (a page, the API, a scrape): no background task, and several readers at once
//! do not disturb each other's figures.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples closer together than this are not kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Rates are taken over about this much history.
const WINDOW: Duration = Duration::from_secs(10);

/// The counters a rate is shown for: flows, not levels such as `lag` or `pending`.
fn is_flow(counter: &str) -> bool {
    counter.starts_with("messages") || counter.starts_with("bytes")
}

#[derive(Debug, Default)]
pub(super) struct Rates {
    samples: VecDeque<(Instant, Vec<(&'static str, u64)>)>,
}

impl Rates {
    /// Records `counters` as seen `now`; returns the rates since the oldest sample of the
    /// window, if that sample is at least a second old.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        counters: &[(&'static str, u64)],
    ) -> Vec<(&'static str, f64)> {
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= SAMPLE_EVERY)
        {
            self.samples.push_back((now, counters.to_vec()));
        }
        // Keep the newest sample that is at least a window old as the base.
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            self.samples.pop_front();
        }
        let Some((base_at, base)) = self.samples.front() else {
            return Vec::new();
        };
        let elapsed = now.duration_since(*base_at);
        if elapsed < SAMPLE_EVERY {
            return Vec::new();
        }
        counters
            .iter()
            .filter(|(name, _)| is_flow(name))
            .map(|&(name, value)| {
                let before = base.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
                (
                    name,
                    value.saturating_sub(before) as f64 / elapsed.as_secs_f64(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_counters_over_the_window() {
        let mut rates = Rates::default();
        let t0 = Instant::now();
        assert!(rates.observe(t0, &[("messages", 0), ("lag", 7)]).is_empty());
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(
            rates
                .observe(t0 + Duration::from_millis(500), &[("messages", 50)])
                .is_empty(),
            "less than a second of history gives no rate"
        );
        assert_eq!(
            rates.observe(at(2), &[("messages", 200), ("lag", 3)]),
            vec![("messages", 100.0)],
            "levels such as lag get no rate"
        );
        // Twenty seconds on, at 10/s: only the last window counts.
        for s in 3..=22 {
            rates.observe(at(s), &[("messages", 200 + 10 * (s - 2))]);
        }
        let recent = rates.observe(at(23), &[("messages", 410)]);
        assert_eq!(recent.len(), 1);
        assert!(
            (recent[0].1 - 10.0).abs() < 0.01,
            "rate over the window: {recent:?}"
        );
    }
}

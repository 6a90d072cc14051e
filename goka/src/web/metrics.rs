//! `/metrics` in the Prometheus text format, built from the components' figures at each
//! scrape (prometheus-client encodes it).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::{ComponentKind, Monitor};
use crate::processor::{LatencyHistogram, LATENCY_BOUNDS_MICROS};

type Labels = Vec<(String, String)>;

/// A processor's handler-latency histogram as read at this scrape, in seconds.
#[derive(Debug, Default)]
struct LatencySnapshot(Mutex<LatencyHistogram>);

impl TypedMetric for LatencySnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencySnapshot {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let histogram = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The encoder takes per-bucket counts and adds them up; the last bound is +Inf.
        let buckets: Vec<(f64, u64)> = histogram
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let bound = LATENCY_BOUNDS_MICROS
                    .get(i)
                    .map_or(f64::MAX, |&micros| micros as f64 / 1e6);
                (bound, count)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            histogram.sum_micros as f64 / 1e6,
            histogram.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics of `monitor` in the text format.
pub(super) fn render(monitor: &Monitor) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("goka");
    let counters = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    let partitions = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge>::default();
    let offset = Family::<Labels, Gauge>::default();
    let recovery = Family::<Labels, Gauge>::default();
    let stalled = Family::<Labels, Gauge>::default();
    let lagging = Family::<Labels, Gauge>::default();
    let input_lag = Family::<Labels, Gauge>::default();
    let input_messages = Family::<Labels, Gauge>::default();
    let input_delay = Family::<Labels, Gauge>::default();
    let output_messages = Family::<Labels, Gauge>::default();
    let output_bytes = Family::<Labels, Gauge>::default();
    let latency = Family::<Labels, LatencySnapshot>::default();
    for stats in monitor.stats() {
        let kind = match stats.kind {
            ComponentKind::Processor => "processor",
            ComponentKind::View => "view",
            ComponentKind::Emitter => "emitter",
        };
        let base = vec![
            ("kind".to_owned(), kind.to_owned()),
            ("name".to_owned(), stats.name.clone()),
        ];
        for (counter, value) in &stats.counters {
            let mut labels = base.clone();
            labels.push(("counter".to_owned(), (*counter).to_owned()));
            counters
                .get_or_create(&labels)
                .set(i64::try_from(*value).unwrap_or(i64::MAX));
        }
        if let Some(histogram) = stats.callback_latency {
            *latency
                .get_or_create(&base)
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = histogram;
        }
        let mut state = base.clone();
        state.push(("state".to_owned(), stats.state.clone()));
        up.get_or_create(&state).set(1);
        for p in &stats.partitions {
            let mut labels = base.clone();
            labels.push(("partition".to_owned(), p.partition.to_string()));
            let mut with_state = labels.clone();
            with_state.push(("state".to_owned(), p.state.clone()));
            partitions.get_or_create(&with_state).set(1);
            if let Some(l) = p.lag {
                lag.get_or_create(&labels).set(l);
            }
            if let Some(o) = p.offset {
                offset.get_or_create(&labels).set(o);
            }
            if let Some(remaining) = p.recovery_remaining {
                recovery.get_or_create(&labels).set(remaining);
            }
            stalled.get_or_create(&labels).set(i64::from(p.stalled));
            lagging.get_or_create(&labels).set(i64::from(p.lagging));
        }
        for i in &stats.inputs {
            let mut labels = base.clone();
            labels.push(("topic".to_owned(), i.topic.clone()));
            labels.push(("partition".to_owned(), i.partition.to_string()));
            if let Some(l) = i.lag {
                input_lag.get_or_create(&labels).set(l);
            }
            input_messages
                .get_or_create(&labels)
                .set(i64::try_from(i.messages).unwrap_or(i64::MAX));
            if let Some(ms) = i.delay_ms {
                input_delay
                    .get_or_create(&labels)
                    .set(i64::try_from(ms).unwrap_or(i64::MAX));
            }
        }
        for o in &stats.outputs {
            let mut labels = base.clone();
            labels.push(("topic".to_owned(), o.topic.clone()));
            output_messages
                .get_or_create(&labels)
                .set(i64::try_from(o.messages).unwrap_or(i64::MAX));
            output_bytes
                .get_or_create(&labels)
                .set(i64::try_from(o.bytes).unwrap_or(i64::MAX));
        }
    }
    registry.register(
        "component_counter",
        "Counters of each processor, view and emitter (messages, bytes, errors), by name",
        counters,
    );
    registry.register(
        "component_state",
        "1 for the current state of each component",
        up,
    );
    registry.register(
        "partition_state",
        "1 for the current state of each partition of each component",
        partitions,
    );
    registry.register(
        "partition_lag",
        "Messages between a partition's offset and its high watermark",
        lag,
    );
    registry.register("partition_offset", "Next offset a partition reads", offset);
    registry.register(
        "partition_recovery_remaining",
        "Changelog messages a recovering partition still has to read",
        recovery,
    );
    registry.register(
        "partition_stalled",
        "1 for a partition (its input or a table) that has had lag and not moved for 10 s",
        stalled,
    );
    registry.register(
        "partition_lagging",
        "1 for a partition that has had lag for 10 s and moves without catching up",
        lagging,
    );
    registry.register(
        "input_lag",
        "Messages between a processor partition's commit offset and the high watermark, per consumed topic",
        input_lag,
    );
    registry.register(
        "input_messages",
        "Messages a processor partition handled per consumed topic since it started here",
        input_messages,
    );
    registry.register(
        "input_delay_milliseconds",
        "How old the last message of a consumed topic was when it was handled",
        input_delay,
    );
    registry.register(
        "output_messages",
        "Messages a processor produced per topic (emits, loopbacks, table writes, dead letters)",
        output_messages,
    );
    registry.register(
        "output_bytes",
        "Key and value bytes a processor produced per topic",
        output_bytes,
    );
    registry.register(
        "callback_latency_seconds",
        "How long a processor's handlers took per message",
        latency,
    );
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// `GET /metrics`.
pub(super) async fn metrics(State(monitor): State<Monitor>) -> impl IntoResponse {
    match render(&monitor) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the metrics failed: {e}"),
        ),
    }
}

//! `/metrics` in the Prometheus text format, built from the components' figures at each
//! scrape (prometheus-client encodes it).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ComponentKind, Monitor};

type Labels = Vec<(String, String)>;

/// The metrics of `monitor` in the text format.
pub(super) fn render(monitor: &Monitor) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("goka");
    let counters = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    let partitions = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge>::default();
    let offset = Family::<Labels, Gauge>::default();
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

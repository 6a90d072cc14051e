//! The HTML pages: server-rendered, refreshing themselves, no build step.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;

use super::browse::Browse;
use super::chart::{self, Line};
use super::history::Series;
use super::html::esc;
use super::{ComponentStats, Monitor, Snapshot, MAX_KEY_LEN};
use crate::processor::LATENCY_BOUNDS_MICROS;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}.Running{color:#070}.Recovering,.Starting{color:#a60}.stalled{color:#b00;font-weight:bold}.Standby{color:#668}\
.lagging{color:#c60;font-weight:bold}.Stopped,.Stopping,.Idle,.Reconnecting{color:#a00}nav a{margin-right:1em}\
.charts{display:flex;flex-wrap:wrap;gap:1em}figure.chart{margin:0}figcaption{font-size:.9em;color:#555}\
svg .axis{stroke:#999}svg .grid{stroke:#eee}svg .tick{font-size:10px;fill:#666}.legend{font-size:.85em}\
td pre{margin:0;font-size:.85em}form.browse input{width:8em}";

/// Percent-encodes a path segment or query value.
fn url(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn page(title: &str, refresh: bool, body: &str) -> Html<String> {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"2\">"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<title>{title} · goka</title>\
         <style>{STYLE}</style></head><body><nav><a href=\"/\">monitor</a>\
         <a href=\"/query\">query</a><a href=\"/api/components\">api</a>\
         <a href=\"/metrics\">metrics</a></nav><h1>{title}</h1>{body}</body></html>",
        title = esc(title)
    ))
}

/// Each counter, with its rate where the monitor has one (`messages_in 1200 (40.5/s)`).
fn counters(stats: &ComponentStats) -> String {
    stats
        .counters
        .iter()
        .map(
            |(name, value)| match stats.rates.iter().find(|(rate, _)| rate == name) {
                Some((_, per_s)) => format!("{name} {value} ({per_s:.1}/s)"),
                None => format!("{name} {value}"),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// Handler latency as bucket bounds: `p50 <= 25µs, p99 <= 1ms, mean 12µs`.
fn latency(stats: &ComponentStats) -> String {
    let Some(histogram) = stats.callback_latency.filter(|h| h.count() > 0) else {
        return String::new();
    };
    let bound = |q| {
        histogram
            .quantile_bound(q)
            .map_or("> 10s".to_owned(), |d| format!("<= {d:?}"))
    };
    format!(
        "<p>handler latency over {} calls: p50 {}, p99 {}, mean {:?}</p>",
        histogram.count(),
        esc(&bound(0.5)),
        esc(&bound(0.99)),
        histogram.mean().unwrap_or_default()
    )
}

fn partitions_table(stats: &ComponentStats, series: &Series) -> String {
    let mut out = String::from(
        "<table class=\"partitions\"><tr><th>partition</th><th>state</th><th>offset</th>\
         <th>high watermark</th><th>lag</th><th>lag, last minutes</th><th>messages/s</th>\
         <th>messages</th><th>recovery</th></tr>",
    );
    let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    for p in &stats.partitions {
        let history = series
            .partitions
            .iter()
            .find(|s| s.partition == p.partition);
        let lag: Vec<f64> = history.map_or(Vec::new(), |h| {
            h.lag.iter().map(|l| l.unwrap_or(0) as f64).collect()
        });
        let rate = history.map_or(&[][..], |h| &h.rate[..]);
        let recovery = match (p.recovery_percent, p.recovery_remaining) {
            (Some(percent), remaining) => format!(
                "{} {}",
                chart::progress(percent),
                remaining.map_or(String::new(), |r| format!("({r} left)"))
            ),
            (None, Some(remaining)) => format!("{remaining} left"),
            (None, None) => "-".to_owned(),
        };
        let mark = if p.stalled {
            " stalled"
        } else if p.lagging {
            " lagging"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr data-partition=\"{partition}\"><td>{partition}</td><td class=\"{state}{mark}\">{state}{mark}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{recovery}</td></tr>",
            show(p.offset),
            show(p.high_watermark),
            show(p.lag),
            chart::sparkline(&format!("lag of partition {}", p.partition), &lag),
            chart::sparkline(&format!("messages/s of partition {}", p.partition), rate),
            p.messages.map_or("-".to_owned(), |m| m.to_string()),
            partition = p.partition,
            state = esc(&p.state),
        );
    }
    out.push_str("</table>");
    out
}

/// Each consumed topic of each partition, and each topic written (processors).
fn topics_tables(stats: &ComponentStats) -> String {
    let mut out = String::new();
    let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    if !stats.inputs.is_empty() {
        out.push_str(
            "<h3>inputs</h3><table id=\"inputs\"><tr><th>partition</th><th>topic</th><th>offset</th>\
             <th>high watermark</th><th>lag</th><th>messages</th><th>bytes</th>\
             <th>last offset</th><th>delay</th></tr>",
        );
        for i in &stats.inputs {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i.partition,
                esc(&i.topic),
                show(i.offset),
                show(i.high_watermark),
                show(i.lag),
                i.messages,
                i.bytes,
                show(i.last_offset),
                i.delay_ms.map_or("-".to_owned(), |ms| format!("{ms} ms")),
            );
        }
        out.push_str("</table>");
    }
    if !stats.outputs.is_empty() {
        out.push_str(
            "<h3>outputs</h3><table id=\"outputs\"><tr><th>topic</th><th>messages</th><th>bytes</th></tr>",
        );
        for o in &stats.outputs {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&o.topic),
                o.messages,
                o.bytes
            );
        }
        out.push_str("</table>");
    }
    out
}

/// The component's charts: messages per second, lag, handler latency.
fn charts(stats: &ComponentStats, series: &Series) -> String {
    let span = series.seconds_ago.first().copied().unwrap_or(0.0);
    let colours = ["#07c", "#c70", "#393"];
    let flows: Vec<Line<'_>> = series
        .rates
        .iter()
        .zip(colours)
        .map(|((name, points), colour)| Line {
            label: name,
            colour,
            points: series
                .seconds_ago
                .iter()
                .skip(1)
                .copied()
                .zip(points.iter().copied())
                .collect(),
        })
        .collect();
    let mut out = String::from("<div class=\"charts\">");
    out.push_str(&chart::lines("rates", "messages per second", span, &flows));
    if series.lag.iter().any(Option::is_some) {
        let lag = Line {
            label: "lag",
            colour: "#b00",
            points: series
                .seconds_ago
                .iter()
                .zip(&series.lag)
                .filter_map(|(&ago, lag)| lag.map(|l| (ago, l as f64)))
                .collect(),
        };
        out.push_str(&chart::lines("lag", "lag (messages behind)", span, &[lag]));
    }
    if let Some(histogram) = stats.callback_latency.filter(|h| h.count() > 0) {
        let labels = LATENCY_BOUNDS_MICROS
            .iter()
            .map(|&micros| format!("{:?}", std::time::Duration::from_micros(micros)))
            .chain(["more".to_owned()]);
        let bars: Vec<(String, u64)> = labels.zip(histogram.buckets).collect();
        out.push_str(&chart::bars(
            "latency",
            "handler latency (calls per bucket, at most)",
            &bars,
        ));
    }
    out.push_str("</div>");
    out
}

/// The table browser: a filter form and a page of rows, with a link to the next page.
fn browser(
    name: &str,
    snapshot: &Snapshot,
    monitor: &Monitor,
    browse: &Result<Browse, String>,
) -> String {
    let Some(table) = &snapshot.table else {
        return String::new();
    };
    let table = table.table();
    let mut out = format!("<h3>rows of {}</h3>", esc(table));
    let given = browse.as_ref().ok().cloned().unwrap_or_default();
    let _ = write!(
        out,
        "<form class=\"browse\" action=\"/components/{link}\"><label>prefix <input name=\"prefix\" value=\"{}\"></label> \
         <label>from <input name=\"from\" value=\"{}\"></label> <label>to <input name=\"to\" value=\"{}\"></label> \
         <label>rows <input name=\"limit\" value=\"{}\" size=\"3\"></label> <button>list</button></form>",
        esc(&given.prefix),
        esc(&given.from),
        esc(&given.to),
        given.limit,
        link = url(name),
    );
    let browse = match browse {
        Ok(browse) => browse,
        Err(error) => {
            let _ = write!(out, "<p id=\"rows-error\">{}</p>", esc(error));
            return out;
        }
    };
    match monitor.rows(table, browse) {
        Ok(page) => {
            let _ = write!(
                out,
                "<table id=\"rows\"><tr><th>key</th><th>value</th></tr>"
            );
            for row in &page.rows {
                let pretty = serde_json::to_string(&row.value).unwrap_or_default();
                let _ = write!(
                    out,
                    "<tr><td><a href=\"/query?table={t}&key={k}\">{key}</a></td><td><pre>{value}</pre></td></tr>",
                    t = url(table),
                    k = url(&row.key),
                    key = esc(&row.key),
                    value = esc(&pretty),
                );
            }
            out.push_str("</table>");
            let _ = write!(
                out,
                "<p>{} rows from the {} partitions held here.",
                page.rows.len(),
                page.partitions
            );
            if let Some(next) = &page.next {
                let _ = write!(
                    out,
                    " <a id=\"next\" href=\"/components/{link}?prefix={}&from={}&to={}&limit={}&after={next}\">next page</a>",
                    url(&browse.prefix),
                    url(&browse.from),
                    url(&browse.to),
                    browse.limit,
                    link = url(name),
                );
            }
            out.push_str("</p>");
        }
        Err(error) => {
            let _ = write!(out, "<p id=\"rows-error\">{}</p>", esc(&error.to_string()));
        }
    }
    out
}

/// `GET /`: every component with its state, partitions and counters.
pub(super) async fn overview(State(monitor): State<Monitor>) -> Html<String> {
    let mut body = String::from(
        "<table><tr><th>kind</th><th>name</th><th>state</th><th>partitions</th>\
         <th>messages/s, last minutes</th><th>counters</th></tr>",
    );
    for Snapshot { stats, series, .. } in monitor.snapshots(|_| true) {
        let count = |state: &str| stats.partitions.iter().filter(|p| p.state == state).count();
        let (running, standby) = (count("Running"), count("Standby"));
        let stalled = stats.partitions.iter().filter(|p| p.stalled).count();
        let lagging = stats.partitions.iter().filter(|p| p.lagging).count();
        let partitions = if stats.partitions.is_empty() {
            "-".to_owned()
        } else {
            let mut text = format!("{running}/{} running", stats.partitions.len() - standby);
            if standby > 0 {
                let _ = write!(text, ", {standby} in standby");
            }
            if stalled > 0 {
                let _ = write!(text, ", <span class=\"stalled\">{stalled} stalled</span>");
            }
            if lagging > 0 {
                let _ = write!(text, ", <span class=\"lagging\">{lagging} lagging</span>");
            }
            text
        };
        let flow = series.rates.first();
        let spark = flow.map_or("-".to_owned(), |(name, points)| {
            let now = stats.rates.iter().find(|(rate, _)| rate == name);
            format!(
                "{} {}",
                chart::sparkline(&format!("{name}/s of {}", stats.name), points),
                now.map_or(String::new(), |(_, per_s)| format!("{per_s:.1}/s"))
            )
        });
        let _ = write!(
            body,
            "<tr><td>{kind:?}</td><td><a href=\"/components/{link}\">{name}</a></td>\
             <td class=\"{state}\">{state}</td><td>{partitions}</td><td>{spark}</td><td>{counters}</td></tr>",
            kind = stats.kind,
            link = url(&stats.name),
            name = esc(&stats.name),
            state = esc(&stats.state),
            counters = esc(&counters(&stats)),
        );
    }
    body.push_str("</table>");
    page("goka monitor", true, &body)
}

/// `GET /components/{name}`: one component's charts, partitions and rows.
pub(super) async fn detail(
    State(monitor): State<Monitor>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, Html<String>) {
    let found = monitor.snapshots(|s| s.name == name);
    if found.is_empty() {
        let body = format!("<p>No component is named {}.</p>", esc(&name));
        return (StatusCode::NOT_FOUND, page("not found", false, &body));
    }
    let browse = Browse::from_params(&params);
    let mut status = StatusCode::OK;
    if browse.is_err() {
        status = StatusCode::BAD_REQUEST;
    }
    let mut body = String::new();
    for snapshot in &found {
        let stats = &snapshot.stats;
        let _ = write!(
            body,
            "<h2>{kind:?} {name}</h2><p>state <span class=\"{state}\">{state}</span>; {counters}; \
             {samples} samples</p>{latency}{charts}{partitions}{topics}{rows}",
            kind = stats.kind,
            name = esc(&stats.name),
            state = esc(&stats.state),
            counters = esc(&counters(stats)),
            samples = snapshot.series.samples,
            latency = latency(stats),
            charts = charts(stats, &snapshot.series),
            partitions = if stats.partitions.is_empty() {
                String::new()
            } else {
                partitions_table(stats, &snapshot.series)
            },
            topics = topics_tables(stats),
            rows = browser(&name, snapshot, &monitor, &browse),
        );
    }
    // Refreshing would lose a browsing position: only the first page refreshes.
    let refresh = !params.contains_key("after");
    (status, page(&name, refresh, &body))
}

/// `GET /query?table=T&key=K`: a form, and the value when both are given.
pub(super) async fn query(
    State(monitor): State<Monitor>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, Html<String>) {
    let tables = monitor.tables();
    let table = params.get("table").cloned().unwrap_or_default();
    let key = params.get("key").cloned().unwrap_or_default();
    let mut body = String::from("<form action=\"/query\"><label>table <select name=\"table\">");
    for t in &tables {
        let selected = if *t == table { " selected" } else { "" };
        let _ = write!(body, "<option{selected}>{}</option>", esc(t));
    }
    let _ = write!(
        body,
        "</select></label> <label>key <input name=\"key\" value=\"{}\" maxlength=\"{MAX_KEY_LEN}\"></label> \
         <button>look up</button></form>",
        esc(&key)
    );
    let mut status = StatusCode::OK;
    if !table.is_empty() && params.contains_key("key") {
        match monitor.query(&table, &key) {
            Ok(Some(value)) => {
                let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
                let _ = write!(
                    body,
                    "<h2>{} in {}</h2><pre id=\"value\">{}</pre>",
                    esc(&key),
                    esc(&table),
                    esc(&pretty)
                );
            }
            Ok(None) => {
                let _ = write!(
                    body,
                    "<p id=\"value\">No value at key {} in {}.</p>",
                    esc(&key),
                    esc(&table)
                );
            }
            Err(error) => {
                status = super::api::status_of(&error);
                let _ = write!(body, "<p id=\"error\">{}</p>", esc(&error.to_string()));
            }
        }
    }
    (status, page("query", false, &body))
}

//! The HTML pages: server-rendered, refreshing themselves, no build step.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Html;

use super::{ComponentStats, Monitor, MAX_KEY_LEN};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}.Running{color:#070}.Recovering,.Starting{color:#a60}.stalled{color:#b00;font-weight:bold}.Standby{color:#668}\
.Stopped,.Stopping,.Idle,.Reconnecting{color:#a00}nav a{margin-right:1em}";

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

fn partitions_table(stats: &ComponentStats) -> String {
    let mut out = String::from(
        "<table><tr><th>partition</th><th>state</th><th>offset</th><th>high watermark</th>\
         <th>lag</th><th>messages</th><th>recovery left</th></tr>",
    );
    let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
    for p in &stats.partitions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.partition,
            show(p.offset),
            show(p.high_watermark),
            show(p.lag),
            p.messages.map_or("-".to_owned(), |m| m.to_string()),
            show(p.recovery_remaining),
            state = if p.stalled {
                format!("{} stalled", esc(&p.state))
            } else {
                esc(&p.state)
            },
        );
    }
    out.push_str("</table>");
    out
}

/// `GET /`: every component with its state, partitions and counters.
pub(super) async fn overview(State(monitor): State<Monitor>) -> Html<String> {
    let mut body = String::from(
        "<table><tr><th>kind</th><th>name</th><th>state</th><th>partitions</th><th>counters</th></tr>",
    );
    for stats in monitor.stats() {
        let count = |state: &str| stats.partitions.iter().filter(|p| p.state == state).count();
        let (running, standby) = (count("Running"), count("Standby"));
        let stalled = stats.partitions.iter().filter(|p| p.stalled).count();
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
            text
        };
        let _ = write!(
            body,
            "<tr><td>{kind:?}</td><td><a href=\"/components/{link}\">{name}</a></td>\
             <td class=\"{state}\">{state}</td><td>{partitions}</td><td>{counters}</td></tr>",
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

/// `GET /components/{name}`: one component's partitions.
pub(super) async fn detail(
    State(monitor): State<Monitor>,
    Path(name): Path<String>,
) -> (StatusCode, Html<String>) {
    let found: Vec<ComponentStats> = monitor
        .stats()
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    if found.is_empty() {
        let body = format!("<p>No component is named {}.</p>", esc(&name));
        return (StatusCode::NOT_FOUND, page("not found", false, &body));
    }
    let mut body = String::new();
    for stats in &found {
        let _ = write!(
            body,
            "<h2>{kind:?} {name}</h2><p>state <span class=\"{state}\">{state}</span>; {counters}</p>{latency}{partitions}",
            kind = stats.kind,
            name = esc(&stats.name),
            state = esc(&stats.state),
            counters = esc(&counters(stats)),
            latency = latency(stats),
            partitions = partitions_table(stats),
        );
    }
    (StatusCode::OK, page(&name, true, &body))
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

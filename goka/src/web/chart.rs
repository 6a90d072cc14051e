//! Charts as inline SVG, drawn on the server from the monitor's history: no script, no
//! stylesheet or font from elsewhere, so the pages work offline and print as they show.
//! Every path carries `data-points` (how many points it has), which the browser test
//! checks against the samples taken.

use std::fmt::Write;

use super::html::esc;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
/// Room for the value labels left of the plot.
const LEFT: f64 = 56.0;

/// One line of a chart: `(seconds before now, value)` points, oldest first.
pub(super) struct Line<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of the last `span` seconds; the y axis runs from 0 to the largest value.
pub(super) fn lines(id: &str, title: &str, span: f64, lines: &[Line<'_>]) -> String {
    let max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|&(_, v)| v))
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let span = span.max(1.0);
    let x = |ago: f64| LEFT + (WIDTH - LEFT) * (1.0 - (ago / span).clamp(0.0, 1.0));
    let y = |v: f64| HEIGHT - 14.0 - (HEIGHT - 24.0) * (v / top).clamp(0.0, 1.0);
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{title}</figcaption>\
         <svg id=\"{id}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         role=\"img\" aria-label=\"{title}\">\
         <line x1=\"{LEFT}\" y1=\"{y0:.1}\" x2=\"{WIDTH}\" y2=\"{y0:.1}\" class=\"axis\"/>\
         <line x1=\"{LEFT}\" y1=\"{ytop:.1}\" x2=\"{WIDTH}\" y2=\"{ytop:.1}\" class=\"grid\"/>\
         <text x=\"{lx}\" y=\"{ytop_text:.1}\" class=\"tick\" text-anchor=\"end\">{top}</text>\
         <text x=\"{lx}\" y=\"{y0_text:.1}\" class=\"tick\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{HEIGHT}\" class=\"tick\">-{span_text}</text>\
         <text x=\"{WIDTH}\" y=\"{HEIGHT}\" class=\"tick\" text-anchor=\"end\">now</text>",
        id = esc(id),
        title = esc(title),
        y0 = y(0.0),
        ytop = y(top),
        lx = LEFT - 4.0,
        ytop_text = y(top) + 4.0,
        y0_text = y(0.0) + 4.0,
        top = short(top),
        span_text = duration(span),
    );
    for line in lines {
        let mut d = String::new();
        for (i, &(ago, v)) in line.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(ago),
                y(v)
            );
        }
        let _ = write!(
            svg,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" \
             data-series=\"{label}\" data-points=\"{n}\"><title>{label}</title></path>",
            colour = esc(line.colour),
            label = esc(line.label),
            n = line.points.len(),
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for line in lines {
        let last = line
            .points
            .last()
            .map_or("-".to_owned(), |&(_, v)| short(v));
        let _ = write!(
            svg,
            "<span style=\"color:{}\">&#9632;</span> {} {} ",
            esc(line.colour),
            esc(line.label),
            last
        );
    }
    svg.push_str("</div></figure>");
    svg
}

/// A small line of `values` (oldest first) for a table cell.
pub(super) fn sparkline(label: &str, values: &[f64]) -> String {
    let (w, h) = (120.0, 22.0);
    let top = values.iter().copied().fold(0.0_f64, f64::max).max(1e-9);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let mut d = String::new();
    for (i, v) in values.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            i as f64 * step,
            h - 2.0 - (h - 4.0) * (v / top).clamp(0.0, 1.0)
        );
    }
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"{label}\"><path d=\"{d}\" fill=\"none\" stroke=\"#07c\" stroke-width=\"1.2\" \
         data-series=\"{label}\" data-points=\"{n}\"/></svg>",
        label = esc(label),
        n = values.len(),
    )
}

/// A bar chart: one bar per `(label, value)`.
pub(super) fn bars(id: &str, title: &str, bars: &[(String, u64)]) -> String {
    let top = bars.iter().map(|&(_, v)| v).max().unwrap_or(0).max(1) as f64;
    let slot = (WIDTH - LEFT) / bars.len().max(1) as f64;
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{title}</figcaption>\
         <svg id=\"{id}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         role=\"img\" aria-label=\"{title}\">\
         <text x=\"{lx}\" y=\"14\" class=\"tick\" text-anchor=\"end\">{top}</text>",
        id = esc(id),
        title = esc(title),
        lx = LEFT - 4.0,
        top = short(top),
    );
    let plot = HEIGHT - 28.0;
    for (i, (label, value)) in bars.iter().enumerate() {
        let h = plot * (*value as f64 / top);
        let x = LEFT + i as f64 * slot;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" \
             fill=\"#07c\" data-value=\"{value}\"><title>{label}: {value}</title></rect>\
             <text x=\"{tx:.1}\" y=\"{HEIGHT}\" class=\"tick\" text-anchor=\"middle\">{label}</text>",
            y = 10.0 + plot - h,
            w = (slot - 3.0).max(1.0),
            tx = x + slot / 2.0,
            label = esc(label),
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// A progress bar for `percent` (0 to 100).
pub(super) fn progress(percent: u8) -> String {
    let p = percent.min(100);
    format!(
        "<svg class=\"progress\" viewBox=\"0 0 100 10\" width=\"100\" height=\"10\" role=\"img\" \
         aria-label=\"{p}%\" data-percent=\"{p}\"><rect width=\"100\" height=\"10\" fill=\"#eee\"/>\
         <rect width=\"{p}\" height=\"10\" fill=\"#a60\"/></svg> {p}%"
    )
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v` (1 for 0).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * magnitude)
}

/// `1234.5` as `1.2k`, `3.0` as `3`.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn duration(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{:.0}m{:02.0}s", (seconds / 60.0).floor(), seconds % 60.0)
    } else {
        format!("{seconds:.0}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_one_point_per_sample_inside_the_plot() {
        let points: Vec<(f64, f64)> = (0..30).map(|i| (29.0 - i as f64, i as f64 * 3.0)).collect();
        let svg = lines(
            "in",
            "messages/s",
            29.0,
            &[Line {
                label: "messages_in",
                colour: "#07c",
                points,
            }],
        );
        assert!(svg.contains("data-points=\"30\""), "{svg}");
        let d = svg
            .split("<path d=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        let coords: Vec<(f64, f64)> = d
            .split(['M', 'L'])
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (x, y) = p.trim().split_once(',').unwrap_or(("nan", "nan"));
                (x.parse().unwrap_or(f64::NAN), y.parse().unwrap_or(f64::NAN))
            })
            .collect();
        assert_eq!(coords.len(), 30);
        assert!(coords
            .iter()
            .all(|&(x, y)| (LEFT..=WIDTH).contains(&x) && (0.0..=HEIGHT).contains(&y)));
        assert!(
            coords.windows(2).all(|w| w[0].0 < w[1].0),
            "time runs left to right"
        );
        assert!(
            svg.contains(">100<"),
            "the axis top is a round number above 87"
        );
    }

    #[test]
    fn round_axis_tops_and_short_figures() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(87.0), 100.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(4.1), 5.0);
        assert_eq!(short(1234.0), "1.2k");
        assert_eq!(short(3.0), "3");
        assert_eq!(duration(299.0), "4m59s");
    }

    #[test]
    fn bars_and_progress_carry_their_values() {
        let svg = bars("lat", "latency", &[("5µs".into(), 3), ("10µs".into(), 9)]);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        assert!(svg.contains("data-value=\"9\""));
        assert!(progress(140).contains("data-percent=\"100\""));
    }
}

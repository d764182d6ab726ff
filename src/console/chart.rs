//! The overview's small line charts, drawn on the server as SVG: no
//! script, and a screen reader gets the title and the latest values.

use std::fmt::Write;

const WIDTH: f64 = 420.0;
const HEIGHT: f64 = 140.0;
const PAD: f64 = 28.0;

/// One line: a label (in the legend) and its points, oldest first, as
/// (seconds since the first point, value).
pub struct Series<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// An SVG chart of `series` over the same time span.
pub fn lines(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    let span = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let latest: Vec<String> = series
        .iter()
        .map(|s| match s.points.last() {
            Some((_, v)) => format!("{} {} {unit}", s.label, round(*v)),
            None => format!("{} no samples yet", s.label),
        })
        .collect();
    let description = format!("{title}: {}", latest.join("; "));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg role="img" aria-label="{}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"><title>{}</title>"#,
        escape(&description),
        escape(&description)
    );
    let _ = write!(
        svg,
        r##"<text x="{PAD}" y="14" fill="#4a5563">{} (max {} {})</text><line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="#c9d1d9"/>"##,
        escape(title),
        round(top),
        escape(unit),
        HEIGHT - PAD,
        WIDTH - 8.0,
        HEIGHT - PAD
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| {
                let x = PAD + (t / span) * (WIDTH - PAD - 8.0);
                let y = (HEIGHT - PAD) - (v / top) * (HEIGHT - PAD - 22.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        if points.len() > 1 {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                s.colour,
                points.join(" ")
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
            PAD + i as f64 * 150.0,
            HEIGHT - 8.0,
            s.colour,
            escape(&latest[i])
        );
    }
    svg.push_str("</svg>");
    svg
}

fn round(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_series_and_names_its_latest_value() {
        let svg = lines(
            "Lag",
            "messages",
            &[Series {
                label: "lag",
                colour: "#0b57b5",
                points: vec![(0.0, 0.0), (10.0, 50.0), (20.0, 200.0)],
            }],
        );
        assert!(svg.starts_with("<svg role=\"img\""));
        assert!(svg.contains("lag 200 messages"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
        // One point draws no line but still says so.
        let svg = lines(
            "Lag",
            "messages",
            &[Series {
                label: "<lag>",
                colour: "#000",
                points: vec![],
            }],
        );
        assert!(!svg.contains("<polyline") && svg.contains("&lt;lag&gt; no samples yet"));
    }
}

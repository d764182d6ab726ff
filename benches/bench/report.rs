//! The table the bench prints, its rows and the figures around them
//! (latency percentiles, peak memory).

use crate::common::machine;

#[derive(serde::Serialize, Clone)]
pub(crate) struct Row {
    figure: String,
    value: f64,
    unit: String,
    ceiling: Option<f64>,
    ratio: Option<f64>,
    target: String,
}

/// A figure for the table; also printed as soon as it is measured, so a
/// long run shows its progress.
pub(crate) fn row(figure: &str, value: f64, unit: &str, ceiling: Option<f64>, target: &str) -> Row {
    eprintln!("measured: {figure}: {value:.1} {unit}");
    Row {
        figure: figure.into(),
        value,
        unit: unit.into(),
        ceiling,
        ratio: ceiling.map(|c| value / c),
        target: target.into(),
    }
}

/// Rows for the p50, p95 and p99 of `sorted` latencies (seconds) in ms;
/// the target applies to the p99.
pub(crate) fn latency_rows(figure: &str, sorted: &[f64], p99_target: &str) -> Vec<Row> {
    [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")]
        .into_iter()
        .map(|(p, name)| {
            row(
                &format!("{figure}, {name}"),
                percentile(sorted, p) * 1000.0,
                "ms",
                None,
                if name == "p99" { p99_target } else { "-" },
            )
        })
        .collect()
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Peak resident set size of a process, from /proc (VmHWM), in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub(crate) fn max_rss(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn print_table(rows: &[Row], quick: bool) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.figure.clone(),
                format!("{:.1} {}", r.value, r.unit),
                r.ceiling.map_or("-".into(), |c| format!("{c:.0}")),
                r.ratio.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
                r.target.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        stripe_sync::ops::table(&["FIGURE", "VALUE", "CEILING", "RATIO", "TARGET"], &cells)
    );
    if quick {
        println!("(--quick smoke run: short and small; figures are not representative)");
    }
    println!("machine: {}", machine());
}

//! PNG plots of a run (plotters): per scenario, P99 latency over time and
//! answers per second over time for every side (ours, the baseline) with each
//! side's fixed-rate runs laid end to end, so the rate search shows as a
//! staircase; scenarios measured as single figures (batch, drain) get a bar of
//! ours next to the baseline. Text needs a TrueType font: DejaVu Sans from the
//! system; without it the plots are skipped with a note, never the run.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;

const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1000, 500);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Registers the font once; false when there is none.
fn font() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| match std::fs::read(FONT_FILE) {
        Ok(bytes) => {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        }
        Err(_) => false,
    })
}

/// One series: (seconds since the side's first run, value) points.
type Series = Vec<(f64, f64)>;

/// The per-second charts of a scenario with fixed-rate runs: file suffix,
/// title, y axis, log scale. Beside the P99, how long the host held a thread
/// that does nothing (`crate::stalls`) in the same seconds.
const CHARTS: [(&str, &str, &str, bool); 3] = [
    ("latency", "P99 latency per second", "P99 ms (log)", true),
    ("throughput", "answers per second", "requests/s", false),
    (
        "host-stalls",
        "longest host stall per second",
        "stall ms (log)",
        true,
    ),
];

/// Writes the plots of `report` next to its results; answers the files.
pub fn write(report: &Report, out: &Path, stamp: &str) -> anyhow::Result<Vec<String>> {
    if !font() {
        anyhow::bail!("no font at {FONT_FILE}: plots skipped");
    }
    let mut files = Vec::new();
    // scenario -> side -> [latency, throughput, host stalls], as in `CHARTS`
    let mut by_scenario: BTreeMap<&str, BTreeMap<&str, [Series; 3]>> = BTreeMap::new();
    for (scenario, side, summary) in &report.runs {
        let sides = by_scenario.entry(scenario).or_default();
        let [latency, throughput, stalls] = sides.entry(side).or_default();
        let offset = throughput.last().map_or(0.0, |(t, _)| t + 1.0);
        for s in &summary.series {
            let t = offset + f64::from(s.t);
            throughput.push((t, s.ok as f64));
            stalls.push((t, s.stall_ms.max(0.01)));
            if s.ok > 0 {
                latency.push((t, s.p99_ms.max(0.01)));
            }
        }
    }
    for (scenario, sides) in &by_scenario {
        let slug = slug(scenario);
        for (i, (suffix, what, y_label, log)) in CHARTS.iter().enumerate() {
            let path = out.join(format!("{stamp}-{slug}-{suffix}.png"));
            let lines: Vec<(&str, &Series)> = sides
                .iter()
                .map(|(side, series)| (*side, &series[i]))
                .collect();
            lines_chart(&path, &format!("{scenario}: {what}"), y_label, &lines, *log)?;
            files.push(file_name(&path));
        }
    }
    for row in report.rows.iter().filter(|r| r.better == "higher") {
        if by_scenario.contains_key(row.scenario.as_str()) {
            continue;
        }
        let path = out.join(bar_file(stamp, row));
        bars(&path, &format!("{}: {}", row.scenario, row.metric), row)?;
        files.push(file_name(&path));
    }
    Ok(files)
}

/// The file of one row's bar chart: named by its scenario and its metric, as
/// a scenario has several such rows (the drain: events/s, at three table
/// sizes, with two shards, against the peer), and named by the scenario alone
/// each overwrote the one before, leaving the last row's chart under the
/// drain's name and listed once per row.
fn bar_file(stamp: &str, row: &crate::report::Row) -> String {
    format!("{stamp}-{}-{}.png", slug(&row.scenario), slug(&row.metric))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn slug(scenario: &str) -> String {
    scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Lines of `(t, value)`; with `log`, values are drawn on a log10 axis.
fn lines_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    lines: &[(&str, &Series)],
    log: bool,
) -> anyhow::Result<()> {
    let scale = |v: f64| if log { v.max(0.01).log10() } else { v };
    let x_max = lines
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let values = || {
        lines
            .iter()
            .flat_map(|(_, s)| s.iter().map(|(_, v)| scale(*v)))
    };
    let y_max = values().fold(scale(1.0), f64::max) + if log { 0.2 } else { 0.0 };
    let y_max = if log { y_max } else { y_max * 1.1 };
    let y_min = if log {
        values().fold(0.0, f64::min) - 0.2
    } else {
        0.0
    };
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, y_min..y_max)?;
    let unscale = |v: &f64| {
        if log {
            let ms = 10f64.powf(*v);
            if ms >= 10.0 {
                format!("{ms:.0}")
            } else {
                format!("{ms:.2}")
            }
        } else {
            format!("{v:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc("seconds (each side's runs end to end)")
        .y_desc(y_label)
        .y_label_formatter(&unscale)
        .draw()?;
    for (i, (name, series)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|(t, v)| (*t, scale(*v))),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn bars(path: &Path, title: &str, row: &crate::report::Row) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let y_max = row.ours.max(row.baseline).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..2.0, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(&row.metric)
        .draw()?;
    for (i, (name, value)) in [
        ("ours", row.ours),
        (row.baseline_name.as_str(), row.baseline),
    ]
    .into_iter()
    .enumerate()
    {
        let x = i as f64;
        let color = COLORS[i];
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, value)],
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{name}: {value:.0}"),
            (x + 0.15, value + y_max * 0.03),
            ("sans-serif", 16),
        )))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Row;

    fn row(scenario: &str, metric: &str) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            ours: 1.0,
            baseline: 1.0,
            ratio: 1.0,
            better: "higher",
            baseline_name: "baseline".into(),
            target: None,
            met: None,
        }
    }

    #[test]
    fn each_row_of_a_scenario_gets_a_bar_chart_of_its_own() {
        let drain = bar_file(
            "t",
            &row("3 projector drain", "events/s (from first commit)"),
        );
        let at_size = bar_file(
            "t",
            &row(
                "3 projector drain",
                "events/s at 5000000 rows already present (200000 new events)",
            ),
        );
        assert_ne!(drain, at_size);
        assert_eq!(drain, "t-3-projector-drain-events-s-from-first-commit.png");
    }
}

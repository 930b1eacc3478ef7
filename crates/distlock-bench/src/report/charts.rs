//! SVG charts of a section: latency distributions of its rows, and the hand-off gap of its
//! contention runs by N.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::{Chart, Section, distribution_points};
use crate::Result;

const SIZE: (u32, u32) = (900, 520);

/// Draws the charts `section` has data for into `dir` (as `<section id>-*.svg`) and records
/// them in `section.charts` with paths `<link_prefix><file>`.
pub fn draw(section: &mut Section, dir: &Path, link_prefix: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if section.rows.iter().any(charted) {
        let file = format!("{}-latency.svg", section.id);
        latency(section, &dir.join(&file))?;
        section.charts.push(Chart {
            title: format!("{}: latency distribution", section.title),
            path: format!("{link_prefix}{file}"),
        });
    }
    let holds: Vec<u64> = {
        let mut holds: Vec<u64> = section.contention.iter().map(|r| r.hold_us).collect();
        holds.sort_unstable();
        holds.dedup();
        holds
    };
    for hold in holds {
        let file = format!("{}-handoff-hold{hold}us.svg", section.id);
        if handoff(section, hold, &dir.join(&file))? {
            section.charts.push(Chart {
                title: format!("{}: hand-off gap p50 by N, hold {hold} µs", section.title),
                path: format!("{link_prefix}{file}"),
            });
        }
    }
    Ok(())
}

/// Whether a row has enough samples for its distribution to mean something.
fn charted(row: &super::Row) -> bool {
    !row.distribution.is_empty() && row.summary.n >= 100
}

/// `-log10(1 - q)`: 0.5 → 0.3, 0.9 → 1, 0.99 → 2, 0.999 → 3, so the tail gets room.
fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

fn latency(section: &Section, path: &Path) -> Result<()> {
    let unit = section.unit;
    let rows: Vec<_> = section.rows.iter().filter(|r| charted(r)).collect();
    let points = distribution_points();
    let values = rows
        .iter()
        .flat_map(|r| r.distribution.iter())
        .map(|&ns| unit.of_ns(ns as f64));
    let (lo, hi) = bounds(values);
    let x_max = nines(*points.last().unwrap_or(&0.999));

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} — latency by percentile", section.title),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(format!("latency ({})", unit.symbol()))
        .x_label_formatter(&|x| {
            let q = 1.0 - 10f64.powf(-x);
            format!("p{}", trim(q * 100.0))
        })
        .draw()
        .map_err(draw_error)?;
    for (i, row) in rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = points
            .iter()
            .zip(&row.distribution)
            .map(|(&q, &ns)| (nines(q), unit.of_ns(ns as f64)));
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(draw_error)?
            .label(row.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    legend(&mut chart)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// Draws the hand-off gap p50 by N of every subject at one hold time; false if none had one.
fn handoff(section: &Section, hold_us: u64, path: &Path) -> Result<bool> {
    let unit = section.unit;
    let mut by_label: BTreeMap<(usize, &str), Vec<(f64, f64)>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for row in section.contention.iter().filter(|r| r.hold_us == hold_us) {
        let Some(gap) = &row.handoff else { continue };
        let index = match order.iter().position(|l| *l == row.label) {
            Some(i) => i,
            None => {
                order.push(&row.label);
                order.len() - 1
            }
        };
        by_label
            .entry((index, &row.label))
            .or_default()
            .push((row.workers as f64, unit.of_ns(gap.p50_ns as f64)));
    }
    if by_label.is_empty() {
        return Ok(false);
    }
    let (lo, hi) = bounds(by_label.values().flatten().map(|p| p.1));
    let x_max = by_label.values().flatten().map(|p| p.0).fold(2.0, f64::max);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} — hand-off gap p50, hold {hold_us} µs", section.title),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_max * 1.3).log_scale(), (lo..hi).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("N (clients contending)")
        .y_desc(format!("hand-off gap p50 ({})", unit.symbol()))
        .x_label_formatter(&|x| trim(*x))
        .draw()
        .map_err(draw_error)?;
    for ((i, label), points) in by_label {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(label.to_owned())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(draw_error)?;
    }
    legend(&mut chart)?;
    root.present().map_err(draw_error)?;
    Ok(true)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(draw_error)
}

/// A log axis' range around `values`, with some room either side.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.1, 1.0);
    }
    (lo / 1.3, hi * 1.3)
}

/// A number without trailing zeros: 99.9, 50, 2.
fn trim(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn draw_error(e: impl std::fmt::Display) -> crate::Error {
    format!("cannot draw a chart: {e}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_helpers() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(trim(99.9), "99.9");
        assert_eq!(trim(50.0), "50");
        assert_eq!(bounds([2.0, 13.0].into_iter()), (2.0 / 1.3, 13.0 * 1.3));
        assert_eq!(bounds(std::iter::empty()), (0.1, 1.0));
    }
}

//! Renders a [`Report`] as the Markdown page docs/benchmarks.md.

use std::fmt::Write;

use super::{Kind, Report, Row, Section, Unit};

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    floors(&mut out, report);
    targets(&mut out, report);
    for (i, section) in report.sections.iter().enumerate() {
        render_section(&mut out, i + 1, section);
    }
    out
}

fn header(out: &mut String, report: &Report) {
    let m = &report.machine;
    out.push_str("# distlock benchmarks\n\n");
    out.push_str(
        "Every figure on this page was measured by one run of `scripts/bench`, described below; \
         none is written by hand. Each floor is the raw work any lock on that backend must do, \
         measured in the same run, and distlock and its peers are reported as ratios to it. \
         Regenerate with `scripts/bench` (it starts its own servers and installs the \
         peers; the table below gives this run's time); check a change with `scripts/bench \
         --quick` (a few minutes, writes to `target/bench/`), or one part with `--scenarios` \
         and `--backends`. Charts are in [benchmarks/](benchmarks/).\n\n",
    );
    out.push_str("| | |\n|---|---|\n");
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    line("date", report.date.clone());
    line("machine", m.one_line());
    if let Some(fs) = &m.lock_fs {
        line("lock files on", fs.clone());
    }
    if let Some(rustc) = &m.rustc {
        line("toolchain", rustc.clone());
    }
    if let Some(rev) = &report.revision {
        line("revision", format!("`{rev}`"));
    }
    if let Some(invocation) = &report.invocation {
        line("command", format!("`{invocation}`"));
    }
    line("bench binary", format!("`{}`", report.command_line));
    line("profile", report.profile_summary.clone());
    line("run time", format!("{:.0} s", report.duration_s));
    if let Some(share) = report.others_cpu_share {
        let verdict = if share > 0.05 {
            " — **busy: other work skewed these figures; rerun on an idle machine**"
        } else {
            ""
        };
        line(
            "CPU used by other processes during the run",
            format!("{:.1}% of the machine{verdict}", share * 100.0),
        );
    }
    out.push('\n');
}

fn floors(out: &mut String, report: &Report) {
    out.push_str("## Floors\n\n| scenario | floor | p50 | p99 | mean |\n|---|---|--:|--:|--:|\n");
    for section in &report.sections {
        for row in section.rows.iter().filter(|r| r.kind == Kind::Floor) {
            let u = section.unit;
            let s = &row.summary;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                section.title,
                row.label,
                time(u, s.p50_ns as f64),
                time(u, s.p99_ns as f64),
                time(u, s.mean_ns),
            );
        }
    }
    out.push('\n');
}

fn targets(out: &mut String, report: &Report) {
    let rows: Vec<(&Section, &Row)> = report
        .sections
        .iter()
        .flat_map(|s| s.rows.iter().map(move |r| (s, r)))
        .filter(|(_, r)| r.target.is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "## Targets\n\n| scenario | subject | p50 ÷ floor | mean ÷ floor | target | met |\n\
         |---|---|--:|--:|--:|---|\n",
    );
    for (section, row) in rows {
        let target = row.target.expect("filtered");
        let ratio = row.ratios.first();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | ≤ {:.2}× | {} |",
            section.title,
            row.label,
            ratio_cell(ratio.and_then(|r| r.p50)),
            ratio_cell(ratio.and_then(|r| r.mean)),
            target.max_p50_ratio,
            match target.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    out.push('\n');
}

fn render_section(out: &mut String, number: usize, section: &Section) {
    let _ = writeln!(
        out,
        "## {number}. {}\n\n{}\n",
        section.title, section.method
    );
    if !section.rows.is_empty() {
        latency_table(out, section);
    }
    contention_table(out, section);
    many_keys_table(out, section);
    for chart in &section.charts {
        let _ = writeln!(out, "![{}]({})\n", chart.title, chart.path);
    }
    for note in &section.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !section.notes.is_empty() {
        out.push('\n');
    }
}

fn latency_table(out: &mut String, section: &Section) {
    let u = section.unit;
    out.push_str("| subject | kind | p50 | p99 | p99.9 | mean | n |");
    let mut rule = String::from("|---|---|--:|--:|--:|--:|--:|");
    for baseline in &section.baselines {
        let _ = write!(out, " p50 ÷ {0} | mean ÷ {0} |", baseline.label);
        rule.push_str("--:|--:|");
    }
    out.push_str(" target |\n");
    rule.push_str("---|\n");
    out.push_str(&rule);
    for row in &section.rows {
        let s = &row.summary;
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.kind.as_str(),
            time(u, s.p50_ns as f64),
            time(u, s.p99_ns as f64),
            time(u, s.p999_ns as f64),
            time(u, s.mean_ns),
            s.n,
        );
        for ratio in &row.ratios {
            let _ = write!(
                out,
                " {} | {} |",
                ratio_cell(ratio.p50),
                ratio_cell(ratio.mean)
            );
        }
        let target = match row.target {
            Some(t) => format!(
                "≤ {:.2}×: {}",
                t.max_p50_ratio,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "n/a",
                }
            ),
            None => String::new(),
        };
        let _ = writeln!(out, " {target} |");
    }
    out.push('\n');
}

fn many_keys_table(out: &mut String, section: &Section) {
    if section.many_keys.is_empty() {
        return;
    }
    out.push_str(
        "| backend | keys | clients | raw cycles/s | distlock cycles/s | distlock ÷ raw | busy |\n\
         |---|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &section.many_keys {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2}× | {:.1}% |",
            row.backend,
            row.keys,
            row.clients,
            row.raw_per_s,
            row.distlock_per_s,
            row.ratio,
            row.distlock_busy * 100.0
        );
    }
    out.push('\n');
}

fn contention_table(out: &mut String, section: &Section) {
    if section.contention.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "N-way contention on one lock (hand-off gap: holder starts releasing → a waiter that \
         was already blocked is granted):\n\n\
         | subject | N | hold | grants/s | gap p50 | gap p99 | gap p50 ÷ floor | Jain | FIFO | \
         utilisation | overlaps | stalled |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let u = section.unit;
    for row in &section.contention {
        let gap = |f: fn(&crate::stats::Summary) -> u64| {
            row.handoff
                .as_ref()
                .map_or_else(|| "–".to_owned(), |h| time(u, f(h) as f64))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.3} | {} | {:.0}% | {} | {} |",
            row.label,
            row.workers,
            if row.hold_us == 0 {
                "0".to_owned()
            } else {
                format!("{} ms", row.hold_us as f64 / 1000.0)
            },
            row.grants_per_s,
            gap(|h| h.p50_ns),
            gap(|h| h.p99_ns),
            ratio_cell(row.handoff_p50_ratio),
            row.jain,
            row.fifo_rate
                .map_or_else(|| "–".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            row.utilisation * 100.0,
            if row.overlaps == 0 {
                "0".to_owned()
            } else {
                format!("**{}**", row.overlaps)
            },
            if row.stalled == 0 {
                "0".to_owned()
            } else {
                format!("**{} of {}**", row.stalled, row.workers)
            },
        );
    }
    out.push('\n');
}

/// A duration in `unit` with three significant figures or so, and the unit's symbol.
pub fn time(unit: Unit, ns: f64) -> String {
    let v = unit.of_ns(ns);
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", unit.symbol())
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(time(Unit::Micros, 2_345.0), "2.35 µs");
        assert_eq!(time(Unit::Micros, 23_456.0), "23.5 µs");
        assert_eq!(time(Unit::Millis, 123_456_789.0), "123 ms");
        assert_eq!(ratio_cell(Some(1.234)), "1.23×");
        assert_eq!(ratio_cell(None), "–");
    }
}

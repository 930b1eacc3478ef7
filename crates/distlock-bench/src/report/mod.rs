//! The results of one run: sections of rows with their ratios to floors, rendered as Markdown
//! ([`markdown`]) and JSON (serde).

pub mod charts;
pub mod machine;
pub mod markdown;

use serde::Serialize;

use crate::contention::ContentionRow;
use crate::stats::{Summary, ratio};

pub use machine::Machine;

/// Everything one run measured, with where and how.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started, RFC 3339 UTC.
    pub date: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// What the user ran (such as `scripts/bench --quick`), when the caller says.
    pub invocation: Option<String>,
    /// The bench binary's own command line.
    pub command_line: String,
    /// The profile's name and settings.
    pub profile: serde_json::Value,
    /// The profile in one line, for people.
    pub profile_summary: String,
    /// `git describe` of the workspace, when known.
    pub revision: Option<String>,
    /// One per scenario run.
    pub sections: Vec<Section>,
    /// How long the whole run took, in seconds.
    pub duration_s: f64,
    /// The share (0 to 1) of the machine's CPU time that other processes used during the run:
    /// above a few percent, they skewed the figures.
    pub others_cpu_share: Option<f64>,
}

/// What a row is, in relation to its section's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A floor: the raw work every lock has to do.
    Floor,
    /// distlock itself.
    Distlock,
    /// Another lock library or tool.
    Peer,
    /// Shown for information: not a floor and not compared with a target.
    Reference,
}

impl Kind {
    /// The label used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Distlock => "distlock",
            Kind::Peer => "peer",
            Kind::Reference => "reference",
        }
    }
}

/// A floor other rows are divided by.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// A short name for table headings, such as `floor`.
    pub label: String,
    /// The measured row it comes from (in this section or an earlier one).
    pub row: String,
    /// Its median, ns.
    pub p50_ns: u64,
    /// Its mean, ns.
    pub mean_ns: f64,
}

impl Baseline {
    /// The baseline of a measured row, called `label` in headings.
    pub fn of(row: &Row, label: &str) -> Self {
        Baseline {
            label: label.to_owned(),
            row: row.label.clone(),
            p50_ns: row.summary.p50_ns,
            mean_ns: row.summary.mean_ns,
        }
    }
}

/// One row's ratio to one baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The baseline's label.
    pub to: String,
    /// p50 ÷ baseline p50.
    pub p50: Option<f64>,
    /// mean ÷ baseline mean.
    pub mean: Option<f64>,
}

/// A target on the ratio of p50s to the section's first baseline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    /// The largest acceptable ratio.
    pub max_p50_ratio: f64,
    /// Whether this run met it; filled in by [`Section::finish`].
    pub met: Option<bool>,
}

/// One measured subject.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured, as shown in tables.
    pub label: String,
    /// Its role.
    pub kind: Kind,
    /// Its samples, summarised.
    pub summary: Summary,
    /// Ratios to each of the section's baselines; filled in by [`Section::finish`].
    pub ratios: Vec<Ratio>,
    /// The target it is held to, if any.
    pub target: Option<Target>,
    /// The latency at each of [`DISTRIBUTION_POINTS`]' quantiles, ns, for the latency chart;
    /// empty when only a summary is known.
    #[serde(skip)]
    pub distribution: Vec<u64>,
}

/// The quantiles [`Row::distribution`] holds: 0.5 % steps to 99 %, then the tail.
pub fn distribution_points() -> Vec<f64> {
    let mut points: Vec<f64> = (1..=198).map(|i| i as f64 * 0.005).collect();
    points.extend([0.995, 0.999, 0.9995, 0.9999]);
    points
}

impl Row {
    /// A row without a target.
    pub fn new(label: impl Into<String>, kind: Kind, summary: Summary) -> Self {
        Row {
            label: label.into(),
            kind,
            summary,
            ratios: Vec::new(),
            target: None,
            distribution: Vec::new(),
        }
    }

    /// A row summarising `samples` (ns, any order), keeping their distribution for charts.
    pub fn measured(label: impl Into<String>, kind: Kind, samples: &[u64]) -> crate::Result<Self> {
        let label = label.into();
        let summary = Summary::of(samples).ok_or_else(|| format!("{label}: no samples"))?;
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let mut row = Row::new(label, kind, summary);
        row.distribution = distribution_points()
            .into_iter()
            .map(|q| crate::stats::percentile(&sorted, q))
            .collect();
        Ok(row)
    }

    /// Holds the row to p50 ≤ `max` × the first baseline's p50.
    pub fn with_target(mut self, max: f64) -> Self {
        self.target = Some(Target {
            max_p50_ratio: max,
            met: None,
        });
        self
    }
}

/// The results of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// A short stable id, such as `file_cycle`.
    pub id: String,
    /// Its heading.
    pub title: String,
    /// What was measured and how, in Markdown.
    pub method: String,
    /// The unit that suits its figures: `"us"` or `"ms"`.
    pub unit: Unit,
    /// The floors rows are divided by; the first is the one targets refer to.
    pub baselines: Vec<Baseline>,
    /// The measured subjects.
    pub rows: Vec<Row>,
    /// Findings derived from this run's figures, in Markdown.
    pub notes: Vec<String>,
    /// N-way contention runs, when the section has them (see [`crate::contention`]).
    pub contention: Vec<ContentionRow>,
    /// Many-keys throughput points, when the section has them.
    pub many_keys: Vec<ManyKeysRow>,
    /// Charts drawn from this section, paths relative to the Markdown file; filled in when the
    /// report is written.
    pub charts: Vec<Chart>,
}

/// Throughput of one (backend, keys, clients) point of the many-keys scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ManyKeysRow {
    /// The backend.
    pub backend: String,
    /// How many keys the clients pick from.
    pub keys: usize,
    /// How many clients.
    pub clients: usize,
    /// Raw try-lock + unlock cycles per second.
    pub raw_per_s: f64,
    /// distlock's cycles per second.
    pub distlock_per_s: f64,
    /// distlock ÷ raw.
    pub ratio: f64,
    /// Share of distlock's attempts that found the key busy.
    pub distlock_busy: f64,
}

/// A chart image drawn from a section.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// What it shows.
    pub title: String,
    /// The SVG file, relative to the Markdown page.
    pub path: String,
}

/// The unit a section's figures are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
}

impl Unit {
    /// The unit's symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
        }
    }

    /// Nanoseconds in this unit.
    pub fn of_ns(self, ns: f64) -> f64 {
        match self {
            Unit::Micros => ns / 1e3,
            Unit::Millis => ns / 1e6,
        }
    }
}

impl Section {
    /// An empty section: add baselines, rows, contention runs and notes, then [`finish`].
    ///
    /// [`finish`]: Section::finish
    pub fn new(id: &str, title: impl Into<String>, method: impl Into<String>, unit: Unit) -> Self {
        Section {
            id: id.to_owned(),
            title: title.into(),
            method: method.into(),
            unit,
            baselines: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            contention: Vec::new(),
            many_keys: Vec::new(),
            charts: Vec::new(),
        }
    }

    /// Computes every row's ratios and target verdicts. Call once all rows and baselines are in.
    pub fn finish(mut self) -> Self {
        for row in &mut self.rows {
            row.ratios = self
                .baselines
                .iter()
                .map(|b| Ratio {
                    to: b.label.clone(),
                    p50: ratio(row.summary.p50_ns as f64, b.p50_ns as f64),
                    mean: ratio(row.summary.mean_ns, b.mean_ns),
                })
                .collect();
            if let Some(target) = &mut row.target {
                target.met = row
                    .ratios
                    .first()
                    .and_then(|r| r.p50)
                    .map(|r| r <= target.max_p50_ratio);
            }
        }
        self
    }

    /// The row labelled `label`.
    pub fn row(&self, label: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50: u64, mean: f64) -> Summary {
        Summary {
            n: 1,
            min_ns: p50,
            p50_ns: p50,
            p90_ns: p50,
            p99_ns: p50,
            p999_ns: p50,
            max_ns: p50,
            mean_ns: mean,
        }
    }

    #[test]
    fn ratios_and_targets() {
        let floor = Row::new("floor", Kind::Floor, summary(100, 110.0));
        let section = Section {
            id: "t".into(),
            title: "t".into(),
            method: String::new(),
            unit: Unit::Micros,
            baselines: vec![Baseline::of(&floor, "floor")],
            rows: vec![
                floor,
                Row::new("fast", Kind::Distlock, summary(140, 220.0)).with_target(1.5),
                Row::new("slow", Kind::Distlock, summary(160, 160.0)).with_target(1.5),
            ],
            notes: vec![],
            contention: vec![],
            many_keys: vec![],
            charts: vec![],
        }
        .finish();
        let fast = section.row("fast").unwrap();
        assert_eq!(fast.ratios[0].p50, Some(1.4));
        assert_eq!(fast.ratios[0].mean, Some(2.0));
        assert_eq!(fast.target.unwrap().met, Some(true));
        assert_eq!(
            section.row("slow").unwrap().target.unwrap().met,
            Some(false)
        );
        assert_eq!(section.row("floor").unwrap().ratios[0].p50, Some(1.0));
    }
}

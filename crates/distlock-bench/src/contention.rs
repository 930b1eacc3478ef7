//! N-way contention on one lock: N peer processes (see [`crate::peers`]) loop acquire → hold →
//! release on one name, and their timestamps are analysed together.
//!
//! What is computed from the events (all on `CLOCK_MONOTONIC`, so comparable across processes):
//!
//! - **hand-off gap**: from the holder starting its release to the next grant, counted only
//!   when the next holder had asked before that release started (it was already blocked), so
//!   that it measures how fast a waiting client learns of and takes a freed lock;
//! - **Jain's fairness index** of the grants per worker: 1 when every worker got as many;
//! - **FIFO rate**: of the hand-offs with two or more clients already waiting, the share that
//!   went to the one that had asked first;
//! - **utilisation**: the share of the run during which someone held the lock;
//! - **overlaps**: grants whose believed-held interval (granted .. releasing) intersects
//!   another worker's. Must be zero.

use std::time::Duration;

use serde::Serialize;

use crate::Result;
use crate::peers::{ContendOutput, PeerCommand, PeerProcess};
use crate::report::{Baseline, Kind};
use crate::stats::{Summary, ratio};

/// One critical section of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The worker (process) index.
    pub worker: usize,
    /// When it asked.
    pub requested: u64,
    /// When it got the lock.
    pub granted: u64,
    /// When it started releasing.
    pub releasing: u64,
    /// When the release returned.
    pub released: u64,
}

/// What [`analyse`] finds in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Critical sections completed.
    pub grants: usize,
    /// Hand-off gaps, ns.
    pub handoff_gaps: Vec<u64>,
    /// Jain's fairness index of grants per worker, 1/N to 1.
    pub jain: f64,
    /// FIFO-kept hand-offs ÷ hand-offs with ≥ 2 waiters; `None` when there were none.
    pub fifo_rate: Option<f64>,
    /// How many hand-offs had ≥ 2 waiters.
    pub fifo_decisions: usize,
    /// Share of the run (first grant .. last release) during which the lock was held.
    pub utilisation: f64,
    /// Grants whose held interval intersects another worker's.
    pub overlaps: usize,
}

/// Analyses the grants of `workers` workers (any order).
pub fn analyse(grants: &[Grant], workers: usize) -> Analysis {
    let mut sorted = grants.to_vec();
    sorted.sort_by_key(|g| (g.granted, g.worker));

    // Per worker, its grants in order, and a cursor to the one pending at a given time.
    let mut per_worker: Vec<Vec<Grant>> = vec![Vec::new(); workers];
    for g in &sorted {
        if g.worker < workers {
            per_worker[g.worker].push(*g);
        }
    }
    let mut cursors = vec![0usize; workers];

    let mut handoff_gaps = Vec::new();
    let mut fifo_kept = 0;
    let mut fifo_decisions = 0;
    let mut overlaps = 0;
    // The latest `releasing` so far and whose it was, to find intersecting intervals.
    let mut held_until: Option<(u64, usize)> = None;
    let mut busy = 0u64;
    let mut busy_until = 0u64;
    for (i, g) in sorted.iter().enumerate() {
        if let Some((until, worker)) = held_until
            && g.granted < until
            && worker != g.worker
        {
            overlaps += 1;
        }
        if held_until.is_none_or(|(until, _)| g.releasing > until) {
            held_until = Some((g.releasing, g.worker));
        }
        // Busy time: the union of the held intervals.
        let start = g.granted.max(busy_until);
        if g.releasing > start {
            busy += g.releasing - start;
        }
        busy_until = busy_until.max(g.releasing);

        let Some(prev) = i.checked_sub(1).map(|p| sorted[p]) else {
            continue;
        };
        if g.worker != prev.worker && g.requested < prev.releasing && g.granted >= prev.releasing {
            handoff_gaps.push(g.granted - prev.releasing);
        }
        // Who was already waiting when `prev` started releasing: per worker, its first grant
        // not before this one, if it asked before that moment.
        let mut waiting_first: Option<u64> = None;
        let mut waiting = 0;
        for (w, list) in per_worker.iter().enumerate() {
            while cursors[w] < list.len() && list[cursors[w]].granted < g.granted {
                cursors[w] += 1;
            }
            if let Some(pending) = list.get(cursors[w])
                && pending.requested < prev.releasing
                && w != prev.worker
            {
                waiting += 1;
                waiting_first = Some(
                    waiting_first.map_or(pending.requested, |f: u64| f.min(pending.requested)),
                );
            }
        }
        if waiting >= 2 {
            fifo_decisions += 1;
            if waiting_first == Some(g.requested) {
                fifo_kept += 1;
            }
        }
    }

    let counts: Vec<f64> = per_worker.iter().map(|l| l.len() as f64).collect();
    let sum: f64 = counts.iter().sum();
    let squares: f64 = counts.iter().map(|c| c * c).sum();
    let jain = if squares > 0.0 {
        sum * sum / (workers as f64 * squares)
    } else {
        0.0
    };
    let span = match (sorted.first(), sorted.iter().map(|g| g.released).max()) {
        (Some(first), Some(last)) if last > first.granted => last - first.granted,
        _ => 0,
    };
    Analysis {
        grants: sorted.len(),
        handoff_gaps,
        jain,
        fifo_rate: (fifo_decisions > 0).then(|| fifo_kept as f64 / fifo_decisions as f64),
        fifo_decisions,
        utilisation: if span > 0 {
            busy as f64 / span as f64
        } else {
            0.0
        },
        overlaps,
    }
}

/// Worker counts, hold times and run length of the contention scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct ContentionPlan {
    /// The N of N-way contention, one run each.
    pub workers: Vec<usize>,
    /// Hold times in µs, one run each.
    pub holds_us: Vec<u64>,
    /// How long each run lasts.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// One subject of a contention section.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Its label in tables and charts.
    pub label: String,
    /// Its role.
    pub kind: Kind,
    /// How to start one of its workers.
    pub command: PeerCommand,
}

/// One run of N workers of one subject.
#[derive(Debug, Clone, Serialize)]
pub struct ContentionRow {
    /// The subject's label.
    pub label: String,
    /// Its role.
    pub kind: Kind,
    /// The library and its version, as the peer reported them.
    pub version: String,
    /// N.
    pub workers: usize,
    /// Hold time, µs.
    pub hold_us: u64,
    /// Critical sections completed in the run.
    pub grants: usize,
    /// Grants per second.
    pub grants_per_s: f64,
    /// Hand-off gaps, summarised; `None` when no hand-off had a waiter.
    pub handoff: Option<Summary>,
    /// Hand-off gap p50 ÷ one round trip's p50.
    pub handoff_p50_ratio: Option<f64>,
    /// Jain's fairness index.
    pub jain: f64,
    /// Share of FIFO-kept hand-offs.
    pub fifo_rate: Option<f64>,
    /// Share of the run with the lock held.
    pub utilisation: f64,
    /// Intersecting held intervals: must be 0.
    pub overlaps: usize,
    /// Workers still waiting for the lock long after the run ended, killed (their events are
    /// lost): a lost wake-up in that library.
    pub stalled: usize,
}

/// Runs every subject at every N and hold time of `plan`, each run on a fresh lock name
/// `<prefix>-<n>`. Hand-off ratios are to `rtt`, which must be one round trip to the server
/// (a PING, a `SELECT 1`) measured in the same run, when given.
pub fn measure(
    plan: &ContentionPlan,
    prefix: &str,
    rtt: Option<&Baseline>,
    subjects: &[Subject],
    notes: &mut Vec<String>,
) -> Result<Vec<ContentionRow>> {
    let mut rows = Vec::new();
    let mut run = 0;
    // A peer that fails (a hung client library) is reported and left out of the later runs;
    // the rest of the section, and the run, go on. distlock failing fails the run.
    let mut failed = vec![false; subjects.len()];
    // Subjects innermost, so that drift over the section affects all of them alike.
    for &workers in &plan.workers {
        for &hold_us in &plan.holds_us {
            for (index, subject) in subjects.iter().enumerate() {
                if failed[index] {
                    continue;
                }
                run += 1;
                let name = format!("{prefix}-{run}");
                eprintln!(
                    "distlock-bench:   {} × {workers}, hold {hold_us} µs",
                    subject.label
                );
                match measure_one(plan.duration, &name, subject, workers, hold_us, rtt) {
                    Ok(row) => rows.push(row),
                    Err(e) if subject.kind != Kind::Distlock => {
                        eprintln!("distlock-bench:   {} failed: {e}", subject.label);
                        notes.push(format!(
                            "{} failed with {workers} contenders, hold {hold_us} µs, and was \
                             left out of the larger runs: {e}",
                            subject.label
                        ));
                        failed[index] = true;
                    }
                    Err(e) => return Err(format!("{} × {workers}: {e}", subject.label).into()),
                }
            }
        }
    }
    Ok(rows)
}

fn measure_one(
    duration: Duration,
    name: &str,
    subject: &Subject,
    workers: usize,
    hold_us: u64,
    rtt: Option<&Baseline>,
) -> Result<ContentionRow> {
    let mut contenders: Vec<PeerProcess> = (0..workers)
        .map(|_| subject.command.contend(name, hold_us, duration))
        .collect::<Result<_>>()?;
    for contender in &mut contenders {
        contender.wait_ready()?;
    }
    for contender in &mut contenders {
        contender.go()?;
    }
    let mut grants = Vec::new();
    let mut version = String::new();
    let mut stalled = 0;
    // Every worker should be done soon after the run's end: the last holder releases within
    // a hold time, and each waiter gets its turn. One still waiting long after is stuck.
    let grace = duration + STALL_GRACE;
    for (worker, contender) in contenders.into_iter().enumerate() {
        let Some(output): Option<ContendOutput> = contender.finish_within(grace)? else {
            stalled += 1;
            continue;
        };
        version = format!("{} {}", output.lib, output.version);
        grants.extend(output.events.iter().map(|e| Grant {
            worker,
            requested: e[0],
            granted: e[1],
            releasing: e[2],
            released: e[3],
        }));
    }
    let span_ns = match (
        grants.iter().map(|g| g.granted).min(),
        grants.iter().map(|g| g.released).max(),
    ) {
        (Some(first), Some(last)) if last > first => last - first,
        _ => 0,
    };
    let analysis = analyse(&grants, workers);
    let handoff = Summary::of(&analysis.handoff_gaps);
    Ok(ContentionRow {
        label: subject.label.clone(),
        kind: subject.kind,
        version,
        workers,
        hold_us,
        grants: analysis.grants,
        grants_per_s: if span_ns > 0 {
            analysis.grants as f64 * 1e9 / span_ns as f64
        } else {
            0.0
        },
        handoff_p50_ratio: handoff
            .zip(rtt)
            .and_then(|(h, b)| ratio(h.p50_ns as f64, b.p50_ns as f64)),
        handoff,
        jain: analysis.jain,
        fifo_rate: analysis.fifo_rate,
        utilisation: analysis.utilisation,
        overlaps: analysis.overlaps,
        stalled,
    })
}

/// How long after a run's end a worker may still be waiting before it counts as stalled.
const STALL_GRACE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn g(worker: usize, requested: u64, granted: u64, releasing: u64) -> Grant {
        Grant {
            worker,
            requested,
            granted,
            releasing,
            released: releasing + 1,
        }
    }

    #[test]
    fn gaps_count_only_waiting_clients() {
        // 1 waits from 5; 0 releases at 10; 1 gets it at 13: a gap of 3. Then 0 asks at 20,
        // after 1 started releasing at 15: not a hand-off to a waiter.
        let a = analyse(&[g(0, 0, 1, 10), g(1, 5, 13, 15), g(0, 20, 21, 22)], 2);
        assert_eq!(a.handoff_gaps, vec![3]);
        assert_eq!(a.overlaps, 0);
        assert_eq!(a.grants, 3);
    }

    #[test]
    fn overlaps_are_seen() {
        let a = analyse(&[g(0, 0, 1, 10), g(1, 2, 5, 12)], 2);
        assert_eq!(a.overlaps, 1);
        // The same worker's back-to-back grants never count.
        let a = analyse(&[g(0, 0, 1, 10), g(0, 10, 11, 12)], 1);
        assert_eq!(a.overlaps, 0);
    }

    #[test]
    fn fifo_rate_and_fairness() {
        // 0 holds until 10; 1 asked at 2, 2 asked at 3. FIFO gives 1 then 2.
        let fifo = analyse(&[g(0, 0, 1, 10), g(1, 2, 11, 20), g(2, 3, 21, 30)], 3);
        assert_eq!(fifo.fifo_rate, Some(1.0));
        assert_eq!(fifo.fifo_decisions, 1);
        assert!((fifo.jain - 1.0).abs() < 1e-9);
        // 2 overtakes 1.
        let unfair = analyse(&[g(0, 0, 1, 10), g(2, 3, 11, 20), g(1, 2, 21, 30)], 3);
        assert_eq!(unfair.fifo_rate, Some(0.0));
        // One worker got everything: Jain = 1/N.
        let hog = analyse(&[g(0, 0, 1, 2), g(0, 3, 4, 5)], 2);
        assert!((hog.jain - 0.5).abs() < 1e-9);
    }

    #[test]
    fn utilisation_is_the_held_share() {
        let a = analyse(&[g(0, 0, 0, 5), g(1, 1, 10, 15)], 2);
        // Held 10 of the 16 ns from the first grant to the last release.
        assert!((a.utilisation - 10.0 / 16.0).abs() < 1e-9);
    }
}

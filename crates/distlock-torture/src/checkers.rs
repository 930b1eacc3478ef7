//! The checkers: they read the clients' logs, the observer's samples and the faults applied,
//! and count what went wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::ms_between;
use crate::events::{ClientEvent, FaultEvent, ObserverSample};

/// Everything the checkers look at.
pub struct Input<'a> {
    /// Every client event of the run.
    pub events: &'a [ClientEvent],
    /// The observer's samples.
    pub samples: &'a [ObserverSample],
    /// The faults applied.
    pub faults: &'a [FaultEvent],
    /// Lease TTL.
    pub ttl: Duration,
    /// Run start, ns.
    pub t_start: u64,
    /// Run end, ns.
    pub t_end: u64,
}

/// What the checkers found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checks {
    /// Grants logged.
    pub grants: u64,
    /// Critical sections completed (commits logged).
    pub operations: u64,
    /// `acquire()` calls that failed with an error (not a wait that ran out while another
    /// client held the lock): server down, connection or session gone.
    #[serde(default)]
    pub acquire_errors: u64,
    /// Pairs of grants (A, B) where A was acknowledged before B was requested yet token A ≥
    /// token B.
    pub token_order_violations: u64,
    /// Tokens granted more than once.
    pub duplicate_tokens: u64,
    /// Pairs of believed-held intervals (granted .. min(releasing, lost, killed)) of two
    /// acquisitions that overlap.
    pub overlaps: u64,
    /// The longest overlap, ms.
    pub max_overlap_ms: f64,
    /// Observer samples with more than one exclusive holder.
    pub double_grants: u64,
    /// Holder SIGKILLs measured.
    pub crashes: u64,
    /// The longest time from a holder's SIGKILL to the next grant, ms (`None` without kills).
    pub max_unavailability_ms: Option<f64>,
    /// Lost signals matched to a server-side release seen by the observer.
    pub lost_signals: u64,
    /// The latest Lost signal relative to the server-side release of the same token, ms
    /// (negative: the holder knew before the server let go).
    pub max_lost_latency_ms: Option<f64>,
    /// The earliest such signal, ms.
    pub min_lost_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    token: u64,
    requested: u64,
    granted: u64,
    end: u64,
}

/// Runs every checker.
pub fn check(input: &Input) -> Checks {
    let mut by_client: BTreeMap<&str, Vec<&ClientEvent>> = BTreeMap::new();
    for e in input.events {
        by_client.entry(&e.client).or_default().push(e);
    }
    let killed_at: HashMap<&str, u64> = input
        .faults
        .iter()
        .filter(|f| f.kind == "sigkill")
        .filter_map(|f| Some((f.client.as_deref()?, f.t)))
        .collect();
    let mut checks = Checks::default();
    let mut holds: Vec<(usize, Hold)> = Vec::new();
    let mut lost_at: HashMap<u64, u64> = HashMap::new();
    for (ci, (client, events)) in by_client.iter_mut().enumerate() {
        events.sort_by_key(|e| e.t);
        let mut requested = input.t_start;
        let mut open: Option<Hold> = None;
        for e in events.iter() {
            match e.ev.as_str() {
                "request" => requested = e.t,
                "granted" => {
                    checks.grants += 1;
                    if let Some(h) = open.take() {
                        holds.push((ci, h));
                    }
                    open = Some(Hold {
                        token: e.token.unwrap_or(0),
                        requested,
                        granted: e.t,
                        end: u64::MAX,
                    });
                }
                "commit" => checks.operations += 1,
                "acquire_error" if !e.detail.as_deref().is_some_and(is_wait_timeout) => {
                    checks.acquire_errors += 1;
                }
                "lost" | "releasing" => {
                    // Lost-detection latency counts only a Lost that reached a holder still
                    // inside its critical section: one that surfaces while the holder is
                    // already releasing (a release stuck behind a partition, say) is the
                    // release's outcome, not a detection.
                    if e.ev == "lost"
                        && let Some(token) = e.token
                        && open
                            .as_ref()
                            .is_some_and(|h| h.token == token && h.end == u64::MAX)
                    {
                        lost_at.entry(token).or_insert(e.t);
                    }
                    if let Some(h) = open.as_mut()
                        && Some(h.token) == e.token
                    {
                        h.end = h.end.min(e.t);
                    }
                }
                "released" => {
                    if let Some(h) = open.take() {
                        holds.push((ci, h));
                    }
                }
                _ => {}
            }
        }
        if let Some(mut h) = open {
            // The log stops inside a hold: the process was killed (it believed until then).
            let death = killed_at.get(client).copied().unwrap_or(input.t_end);
            h.end = h.end.min(death);
            holds.push((ci, h));
        }
    }
    for (_, h) in holds.iter_mut() {
        if h.end == u64::MAX {
            h.end = input.t_end;
        }
    }

    // Token order and uniqueness.
    let mut seen = HashSet::new();
    for (_, h) in &holds {
        if !seen.insert(h.token) {
            checks.duplicate_tokens += 1;
        }
    }
    let mut by_grant: Vec<Hold> = holds.iter().map(|(_, h)| *h).collect();
    by_grant.sort_by_key(|h| h.granted);
    let mut prefix_max = Vec::with_capacity(by_grant.len());
    let mut max = 0u64;
    for h in &by_grant {
        max = max.max(h.token);
        prefix_max.push(max);
    }
    for b in &by_grant {
        let before = by_grant.partition_point(|a| a.granted < b.requested);
        if before > 0 && prefix_max[before - 1] >= b.token {
            // Count the individual pairs for the report.
            checks.token_order_violations += by_grant[..before]
                .iter()
                .filter(|a| a.token >= b.token)
                .count() as u64;
        }
    }

    // Overlaps of believed-held intervals of different acquisitions.
    let mut intervals: Vec<(usize, Hold)> = holds.clone();
    intervals.sort_by_key(|(_, h)| h.granted);
    for (i, (ci, a)) in intervals.iter().enumerate() {
        for (cj, b) in &intervals[i + 1..] {
            if b.granted >= a.end {
                continue;
            }
            if ci == cj && a.token == b.token {
                continue;
            }
            let overlap = ms_between(b.granted, a.end.min(b.end));
            if overlap > 0.0 {
                checks.overlaps += 1;
                checks.max_overlap_ms = checks.max_overlap_ms.max(overlap);
            }
        }
    }

    // Server-side double grants.
    checks.double_grants = input
        .samples
        .iter()
        .filter(|s| s.error.is_none() && s.tokens.len() > 1)
        .count() as u64;

    // Unavailability after a holder crash: SIGKILL to the next grant of anyone.
    let mut grants: Vec<u64> = holds.iter().map(|(_, h)| h.granted).collect();
    grants.sort_unstable();
    for f in input.faults.iter().filter(|f| f.kind == "sigkill") {
        checks.crashes += 1;
        let next = grants
            .get(grants.partition_point(|&g| g <= f.t))
            .copied()
            .unwrap_or(input.t_end);
        let gap = ms_between(f.t, next);
        checks.max_unavailability_ms =
            Some(checks.max_unavailability_ms.map_or(gap, |m| m.max(gap)));
    }

    // Lost-detection latency: the holder's Lost relative to the observer first seeing its
    // token gone from the server.
    let mut gone_at: HashMap<u64, u64> = HashMap::new();
    let mut present: HashSet<u64> = HashSet::new();
    for s in input.samples.iter().filter(|s| s.error.is_none()) {
        let now: HashSet<u64> = s.tokens.iter().copied().collect();
        for t in present.difference(&now) {
            gone_at.entry(*t).or_insert(s.t);
        }
        present = now;
    }
    for (token, lost) in &lost_at {
        if let Some(gone) = gone_at.get(token) {
            let latency = ms_between(*gone, *lost);
            checks.lost_signals += 1;
            checks.max_lost_latency_ms = Some(
                checks
                    .max_lost_latency_ms
                    .map_or(latency, |m| m.max(latency)),
            );
            checks.min_lost_latency_ms = Some(
                checks
                    .min_lost_latency_ms
                    .map_or(latency, |m| m.min(latency)),
            );
        }
    }
    let _ = input.ttl;
    checks
}

/// Whether an acquire error is only the wait bound running out.
fn is_wait_timeout(detail: &str) -> bool {
    detail.contains("not acquired within")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, client: &str, ev: &str, token: Option<u64>) -> ClientEvent {
        ClientEvent {
            t: t * 1_000_000,
            client: client.into(),
            ev: ev.into(),
            token,
            detail: None,
        }
    }

    fn input<'a>(events: &'a [ClientEvent], faults: &'a [FaultEvent]) -> Input<'a> {
        Input {
            events,
            samples: &[],
            faults,
            ttl: Duration::from_secs(2),
            t_start: 0,
            t_end: 100_000_000_000,
        }
    }

    #[test]
    fn sequential_holds_are_clean() {
        let events = [
            ev(1, "a", "request", None),
            ev(2, "a", "granted", Some(10)),
            ev(3, "a", "commit", Some(10)),
            ev(4, "a", "releasing", Some(10)),
            ev(5, "a", "released", Some(10)),
            ev(3, "b", "request", None),
            ev(6, "b", "granted", Some(11)),
            ev(7, "b", "releasing", Some(11)),
            ev(8, "b", "released", Some(11)),
        ];
        let c = check(&input(&events, &[]));
        assert_eq!((c.grants, c.operations, c.overlaps), (2, 1, 0));
        assert_eq!(c.token_order_violations + c.duplicate_tokens, 0);
    }

    #[test]
    fn overlap_order_and_duplicates_are_seen() {
        let events = [
            ev(1, "a", "request", None),
            ev(2, "a", "granted", Some(10)),
            ev(9, "a", "lost", Some(10)),
            ev(10, "a", "releasing", Some(10)),
            ev(10, "a", "released", Some(10)),
            ev(3, "b", "request", None),
            ev(4, "b", "granted", Some(10)),
            ev(5, "b", "releasing", Some(10)),
            ev(5, "b", "released", Some(10)),
        ];
        let c = check(&input(&events, &[]));
        assert_eq!(c.overlaps, 1);
        assert_eq!(c.token_order_violations, 1);
        assert_eq!(c.duplicate_tokens, 1);
    }

    #[test]
    fn a_lost_during_the_release_is_no_detection() {
        let events = [
            ev(1, "a", "request", None),
            ev(2, "a", "granted", Some(10)),
            ev(3, "a", "releasing", Some(10)),
            ev(6, "a", "lost", Some(10)),
            ev(6, "a", "released", Some(10)),
            ev(1, "b", "request", None),
            ev(7, "b", "granted", Some(11)),
            ev(9, "b", "lost", Some(11)),
            ev(10, "b", "releasing", Some(11)),
            ev(10, "b", "released", Some(11)),
        ];
        let samples = [
            ObserverSample {
                t: 2_000_000,
                tokens: vec![10],
                pids: vec![1],
                error: None,
            },
            ObserverSample {
                t: 4_000_000,
                tokens: vec![],
                pids: vec![],
                error: None,
            },
            ObserverSample {
                t: 7_000_000,
                tokens: vec![11],
                pids: vec![2],
                error: None,
            },
            ObserverSample {
                t: 8_000_000,
                tokens: vec![],
                pids: vec![],
                error: None,
            },
        ];
        let mut i = input(&events, &[]);
        i.samples = &samples;
        let c = check(&i);
        assert_eq!(c.lost_signals, 1);
        assert_eq!(c.max_lost_latency_ms, Some(1.0));
    }

    #[test]
    fn a_killed_holder_stops_believing_at_its_death() {
        let events = [
            ev(1, "a", "request", None),
            ev(2, "a", "granted", Some(10)),
            ev(1, "b", "request", None),
            ev(6, "b", "granted", Some(11)),
            ev(7, "b", "releasing", Some(11)),
            ev(7, "b", "released", Some(11)),
        ];
        let faults = [FaultEvent {
            t: 3_000_000,
            t_end: 3_000_000,
            kind: "sigkill".into(),
            client: Some("a".into()),
            token: Some(10),
        }];
        let c = check(&input(&events, &faults));
        assert_eq!(c.overlaps, 0);
        assert_eq!(c.max_unavailability_ms, Some(3.0));
    }
}

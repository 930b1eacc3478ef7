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
    /// Server-side double grants seen by the observer: samples with more than one exclusive
    /// holder, plus (sample state, acquisition) pairs where the server showed another holder
    /// while a running, connected client still believed in an acquisition it had been granted
    /// before the read (see [`server_double_grants`]).
    pub double_grants: u64,
    /// Holder SIGKILLs measured.
    pub crashes: u64,
    /// The longest time from a holder's SIGKILL to the next grant, ms (`None` without kills).
    pub max_unavailability_ms: Option<f64>,
    /// The time from the end of the last fault (SIGCONT, heal, server back) to the next grant
    /// of anyone, ms, or to the end of the run when none came (`None` without faults): a lock
    /// left held by a client that lives on shows here.
    #[serde(default)]
    pub recovery_ms: Option<f64>,
    /// Lost signals matched to a server-side release seen by the observer.
    pub lost_signals: u64,
    /// The latest Lost signal relative to the server-side release of the same token, ms
    /// (negative: the holder knew before the server let go).
    pub max_lost_latency_ms: Option<f64>,
    /// The earliest such signal, ms.
    pub min_lost_latency_ms: Option<f64>,
}

#[derive(Debug, Clone)]
struct Hold {
    token: u64,
    requested: u64,
    granted: u64,
    end: u64,
    owner: Option<String>,
}

/// How long a believer must still believe after a read showing another holder for the pair
/// to count: a client whose lease just ran out logs its Lost a little after the server let go
/// (scheduling), and that is no double grant.
const BELIEF_SLACK_NS: u64 = 100_000_000;

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
                        owner: e.owner.clone(),
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
    let mut by_grant: Vec<Hold> = holds.iter().map(|(_, h)| h.clone()).collect();
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
    let client_names: Vec<&str> = by_client.keys().copied().collect();
    checks.double_grants = input
        .samples
        .iter()
        .filter(|s| s.error.is_none() && s.tokens.len() > 1)
        .count() as u64
        + server_double_grants(&holds, input.samples, input.faults, &client_names);

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

    if let Some(last) = input.faults.iter().map(|f| f.t_end.max(f.t)).max() {
        let next = grants
            .get(grants.partition_point(|&g| g <= last))
            .copied()
            .unwrap_or(input.t_end);
        checks.recovery_ms = Some(ms_between(last, next));
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

/// Counts (server state, acquisition) pairs where the observer saw the server give the lock
/// to another owner while a client that was running and connected still believed in an
/// acquisition the server had granted it before.
///
/// Sound by construction, so it can gate: an owner id names one acquisition, which is the
/// holder from the moment it becomes it until it is gone, so a sample's holders held over the
/// whole span from its first read's reply to the send of the last read that still showed them.
/// A believer counts only if its grant was logged before that span ends (the server had
/// granted it by then) and it still believed [`BELIEF_SLACK_NS`] after the span began. A
/// client that was SIGSTOPped or partitioned stops counting when that fault began: what it
/// believes afterwards is the stale holder that overlaps and fencing measure, and the server
/// was right to move on. What is left is a server that forgot or never saw a live grant
/// (a restart without persistence) or granted around a live holder (a waiter that believes).
fn server_double_grants(
    holds: &[(usize, Hold)],
    samples: &[ObserverSample],
    faults: &[FaultEvent],
    names: &[&str],
) -> u64 {
    // Believed-and-valid intervals, with the owner each one is known by on the server.
    let believers: Vec<(&str, u64, u64, u64)> = holds
        .iter()
        .filter_map(|(ci, h)| {
            let owner = h.owner.as_deref()?;
            let client = names.get(*ci).copied()?;
            let cut = faults
                .iter()
                .filter(|f| matches!(f.kind.as_str(), "sigstop" | "partition"))
                .filter(|f| f.client.as_deref() == Some(client))
                .filter(|f| f.t >= h.granted)
                .map(|f| f.t)
                .min()
                .unwrap_or(u64::MAX);
            Some((owner, h.token, h.granted, h.end.min(cut)))
        })
        .collect();
    let mut count = 0;
    for (k, s) in samples.iter().enumerate() {
        if s.error.is_some() || s.owners.is_empty() {
            continue;
        }
        // Two reads show the holders holding over [first reply, last send]; a lone read only
        // says "somewhere in [send, reply]", so the believer must span all of it.
        let last_send = samples
            .get(k + 1)
            .and_then(|n| n.prev_last_send)
            .filter(|&last| last >= s.t);
        for &(owner, token, granted, end) in &believers {
            // The same acquisition by owner id, or by the server entry its token names: etcd
            // adopts a key an earlier failed attempt of the same session left behind, whose
            // record still carries that attempt's owner id.
            if s.owners.iter().any(|o| o == owner) || s.tokens.contains(&token) {
                continue;
            }
            let believed_until = end.saturating_sub(BELIEF_SLACK_NS);
            let double = match last_send {
                Some(last) => granted.max(s.t) < believed_until.min(last),
                None => granted < s.t_send && believed_until > s.t,
            };
            if double {
                count += 1;
            }
        }
    }
    count
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
            owner: None,
        }
    }

    /// A grant by `client` known on the server as owner `owner`.
    fn grant(t: u64, client: &str, token: u64, owner: &str) -> ClientEvent {
        ClientEvent {
            owner: Some(owner.into()),
            ..ev(t, client, "granted", Some(token))
        }
    }

    /// An observer record: first read sent at `send` and answered at `t` (ms), holders
    /// `owners`, waiters `waiters`; `prev` = send time of the last read of the previous state.
    fn seen(
        send: u64,
        t: u64,
        prev: Option<u64>,
        owners: &[&str],
        waiters: &[&str],
    ) -> ObserverSample {
        ObserverSample {
            t: t * 1_000_000,
            t_send: send * 1_000_000,
            prev_last_send: prev.map(|p| p * 1_000_000),
            tokens: owners.iter().map(|_| 1).collect(),
            pids: owners.iter().map(|_| 1).collect(),
            owners: owners.iter().map(|&o| o.into()).collect(),
            waiters: waiters.iter().map(|&o| o.into()).collect(),
            error: None,
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
                ..ObserverSample::default()
            },
            ObserverSample {
                t: 4_000_000,
                tokens: vec![],
                pids: vec![],
                ..ObserverSample::default()
            },
            ObserverSample {
                t: 7_000_000,
                tokens: vec![11],
                pids: vec![2],
                ..ObserverSample::default()
            },
            ObserverSample {
                t: 8_000_000,
                tokens: vec![],
                pids: vec![],
                ..ObserverSample::default()
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
        assert_eq!(c.recovery_ms, Some(3.0));
    }

    #[test]
    fn recovery_runs_from_the_last_fault_to_the_next_grant_or_the_end() {
        let restart = |t: u64, t_end: u64| FaultEvent {
            t: t * 1_000_000,
            t_end: t_end * 1_000_000,
            kind: "restart".into(),
            client: None,
            token: None,
        };
        let faults = [restart(3, 5), restart(10, 12)];
        let passing = [
            ev(1, "a", "request", None),
            ev(2, "a", "granted", Some(10)),
            ev(4, "a", "releasing", Some(10)),
            ev(4, "a", "released", Some(10)),
            ev(11, "b", "request", None),
            ev(19, "b", "granted", Some(11)),
        ];
        assert_eq!(check(&input(&passing, &faults)).recovery_ms, Some(7.0));
        // No grant after the last fault: the lock stayed with someone until the run ended.
        let mut stuck = input(&passing[..4], &faults);
        stuck.t_end = 40_000_000;
        assert_eq!(check(&stuck).recovery_ms, Some(28.0));
        assert_eq!(check(&input(&passing, &[])).recovery_ms, None);
    }

    #[test]
    fn a_server_that_forgot_a_live_holder_is_a_double_grant() {
        // a holds from 1000 ms to 3000 ms; the server forgets it (a restart without
        // persistence) and grants b at 1500 ms while a is running and still believes.
        let events = [
            ev(900, "a", "request", None),
            grant(1000, "a", 10, "A"),
            ev(3000, "a", "lost", Some(10)),
            ev(3000, "a", "releasing", Some(10)),
            ev(3001, "a", "released", Some(10)),
            ev(900, "b", "request", None),
            grant(1500, "b", 11, "B"),
            ev(2000, "b", "releasing", Some(11)),
            ev(2001, "b", "released", Some(11)),
        ];
        let samples = [
            seen(1001, 1005, None, &["A"], &[]),
            seen(1401, 1405, Some(1390), &[], &[]),
            seen(1502, 1506, Some(1495), &["B"], &[]),
            seen(2002, 2006, Some(1995), &[], &[]),
        ];
        let mut i = input(&events, &[]);
        i.samples = &samples;
        assert_eq!(check(&i).double_grants, 1);
    }

    #[test]
    fn a_believer_the_server_ranks_as_waiting_is_a_double_grant() {
        // ZooKeeper / etcd: b believes it holds while the server still ranks a's node first.
        let events = [
            grant(1000, "a", 10, "A"),
            ev(2500, "a", "releasing", Some(10)),
            grant(1200, "b", 11, "B"),
            ev(2600, "b", "releasing", Some(11)),
        ];
        let samples = [
            seen(1150, 1160, None, &["A"], &["B"]),
            seen(2501, 2505, Some(2490), &["B"], &[]),
        ];
        let mut i = input(&events, &[]);
        i.samples = &samples;
        assert_eq!(check(&i).double_grants, 1);
    }

    #[test]
    fn a_clean_handoff_and_a_stopped_holder_are_no_double_grant() {
        // a hands over to b; then b is SIGSTOPped past its TTL, the server lets go, c is
        // granted while b still believes (an overlap, not a server-side double grant).
        let events = [
            grant(1000, "a", 10, "A"),
            ev(1200, "a", "releasing", Some(10)),
            grant(1210, "b", 11, "B"),
            grant(4000, "c", 12, "C"),
            ev(4200, "c", "releasing", Some(12)),
            ev(5000, "b", "lost", Some(11)),
            ev(5000, "b", "releasing", Some(11)),
        ];
        let faults = [FaultEvent {
            t: 1_300_000_000,
            t_end: 4_800_000_000,
            kind: "sigstop".into(),
            client: Some("b".into()),
            token: Some(11),
        }];
        let samples = [
            seen(1001, 1005, None, &["A"], &["B"]),
            seen(1203, 1206, Some(1195), &["B"], &[]),
            seen(3400, 3405, Some(3390), &[], &[]),
            seen(4001, 4003, Some(3990), &["C"], &[]),
            seen(4201, 4203, Some(4195), &[], &[]),
        ];
        let mut i = input(&events, &faults);
        i.samples = &samples;
        let c = check(&i);
        assert_eq!(c.double_grants, 0);
        assert_eq!(c.overlaps, 1);
    }
}

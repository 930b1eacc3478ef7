//! Runs several subjects in interleaved batches, so that drift (frequency scaling, page cache,
//! other load) affects all of them alike.

use std::time::Instant;

use crate::Result;
use crate::peers::thread_cpu_ns;

/// Runs `n` timed iterations, appending one duration in nanoseconds per iteration to `out`.
pub type BatchFn<'a> = Box<dyn FnMut(usize, &mut Vec<u64>) -> Result<()> + 'a>;

/// One thing being measured.
pub struct Subject<'a> {
    /// Its label in the report.
    pub label: String,
    /// Runs a batch.
    pub run: BatchFn<'a>,
    /// CPU time the measuring thread used in the timed batches, in nanoseconds: all of the
    /// subject's client-side work when it runs on a current-thread runtime.
    pub cpu_ns: u64,
}

impl<'a> Subject<'a> {
    /// A subject measured by `run`.
    pub fn new(
        label: impl Into<String>,
        run: impl FnMut(usize, &mut Vec<u64>) -> Result<()> + 'a,
    ) -> Self {
        Subject {
            label: label.into(),
            run: Box::new(run),
            cpu_ns: 0,
        }
    }

    /// A subject whose every iteration is one call of `cycle`, timed around the call.
    pub fn per_call(label: impl Into<String>, mut cycle: impl FnMut() -> Result<()> + 'a) -> Self {
        Subject::new(label, move |n, out| {
            for _ in 0..n {
                let started = Instant::now();
                cycle()?;
                out.push(elapsed_ns(started));
            }
            Ok(())
        })
    }
}

/// How many iterations, in what batches.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Plan {
    /// Untimed iterations per subject before measuring.
    pub warmup: usize,
    /// Timed iterations per subject.
    pub iterations: usize,
    /// Iterations per subject per round.
    pub batch: usize,
}

/// Warms every subject up, then runs rounds in which every subject runs one batch, the order
/// rotating by one each round. Returns the samples of each subject, in `subjects` order.
pub fn interleaved(plan: Plan, subjects: &mut [Subject<'_>]) -> Result<Vec<Vec<u64>>> {
    let count = subjects.len();
    let mut sink = Vec::with_capacity(plan.warmup);
    for subject in subjects.iter_mut() {
        sink.clear();
        (subject.run)(plan.warmup, &mut sink)
            .map_err(|e| format!("{} (warm-up): {e}", subject.label))?;
    }
    let mut samples = vec![Vec::with_capacity(plan.iterations); count];
    let batch = plan.batch.max(1);
    let mut done = 0;
    let mut round = 0;
    while done < plan.iterations {
        let n = batch.min(plan.iterations - done);
        for offset in 0..count {
            let i = (round + offset) % count;
            let cpu_before = thread_cpu_ns();
            (subjects[i].run)(n, &mut samples[i])
                .map_err(|e| format!("{}: {e}", subjects[i].label))?;
            subjects[i].cpu_ns += thread_cpu_ns().saturating_sub(cpu_before);
        }
        done += n;
        round += 1;
    }
    Ok(samples)
}

/// Nanoseconds since `started`.
pub fn elapsed_ns(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn rotates_order_and_counts_iterations() {
        let log = RefCell::new(Vec::new());
        let mut subjects: Vec<Subject<'_>> = ["a", "b", "c"]
            .into_iter()
            .map(|label| {
                let log = &log;
                Subject::new(label, move |n, out: &mut Vec<u64>| {
                    log.borrow_mut().push((label, n));
                    out.extend(std::iter::repeat_n(1, n));
                    Ok(())
                })
            })
            .collect();
        let plan = Plan {
            warmup: 2,
            iterations: 7,
            batch: 3,
        };
        let samples = interleaved(plan, &mut subjects).unwrap();
        assert!(samples.iter().all(|s| s.len() == 7));
        assert!(subjects.iter().all(|s| s.cpu_ns > 0));
        drop(subjects);
        let log = log.into_inner();
        let order: Vec<_> = log.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            order,
            ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
        );
        assert_eq!(log[3..].iter().map(|(_, n)| n).sum::<usize>(), 21);
    }
}

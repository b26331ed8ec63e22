#![cfg(shuttle)]
//! # Fan-out, fan-in: combinators and unobserved faults under concurrency
//!
//! The rules of `runtime/src/when.rs` (1–3) and `runtime/src/unobserved.rs` (1–2), checked
//! against the real runtime under shuttle's PCT and random schedulers, with dozens of tasks.
//!
//! ## The scenario
//!
//! A two-worker pool runs [`TASKS`] tasks, numbered `0..32`, in four groups of eight. Task
//! `i` succeeds with `i`, faults with `boom i` or ends canceled (`TaskError::canceled()`),
//! by `i % 4` ([`plan`]); one in three yields once first. Two completion sources add inputs
//! that stay pending until the very end: `never` (in group B) and `late` (in group C).
//!
//! - **A** (`0..8`): a thread awaits `when_all(A)` with a blocking `wait`.
//! - **B** (`8..16`, plus `A[1]` and `never`): a thread awaits `when_any(B)` and keeps the
//!   winner without looking at its outcome.
//! - **C** (`16..24`, plus `late`): a thread builds `when_each(C, token)` and then reads
//!   the outcome of each C task that is complete by then (which ones depends on the
//!   schedule); another thread cancels the token.
//! - **D** (`24..32`): fire-and-forget. A thread builds a `when_any` over `D[1]` and drops
//!   it at once, detaches `D[0..4]`, opens the gate the D tasks wait for, and detaches
//!   `D[4..8]` while the pool may be running them.
//!
//! The B tasks and `A[1]` wait for a gate the B thread opens right after its `when_any`
//! call, so that call always registers on its inputs and the first to complete wins.
//!
//! The main thread joins the threads, shuts the pool down (it drains, so every pool task
//! has completed), checks that every task is terminal, and then drops the handles it kept.
//! In every schedule:
//!
//! 1. `when_all(A)` is Faulted with exactly A's faults, in input order (`boom 1`, `boom 5`),
//!    although A also has canceled and successful inputs (when.rs rule 1);
//! 2. `when_any(B)` succeeded with one of B's pool tasks, complete; `never` is still
//!    pending, untouched, with no continuation left on it (rule 2);
//! 3. the `when_each` stream (inspected through its `Debug` state, see below) holds all
//!    eight C tasks, `late` is still pending, the token's cancellation reached it; once it
//!    is dropped, no continuation is left on `late` (rule 3);
//! 4. the unobserved-error hook — the process-wide one, per OS thread in model builds, so
//!    set inside the closure — received exactly the faulted tasks whose error nobody
//!    observed, each exactly once: B's own faults (winning observes nothing, whoever won),
//!    the C faults the C thread did not read (computed from what it read in this
//!    schedule), and D's faults (`D[1]` included: a dropped `when_any` won by it observes
//!    nothing); not A's (`when_all` observed them, including `A[1]`, which is also in B);
//!    no canceled task (unobserved.rs rules 1–2).
//!
//! ## Why the stream is inspected and not polled
//!
//! `WhenEach` is a `futures_core::Stream`; polling it needs that trait in scope, and this
//! crate does not depend on `futures-core` (the runtime does not re-export it). So the
//! model checks the stream's concurrent side — eager registration, arrivals racing each
//! other and the cancellation, removal at drop — through its `Debug` output
//! (`WhenEach { ready, pending, canceled }`) and `registered_continuations`, and the
//! consumer's side (waking a parked poll) is left to `runtime/tests/combinators.rs`.
//!
//! ## Breaking it on purpose
//!
//! - `Knob::UnobservedDoubleReport`: the unobserved check forgets that it reported, so a
//!   fault whose last handle goes while its completion is between "outcome set" and "is it
//!   unobserved?" is reported twice. `D[1]` gets there in every schedule: its completion
//!   runs the dropped `when_any`'s callback, which releases the last handle (and reports),
//!   then the completion checks again. Caught by property 4.
//! - `Knob::WhenAllRacyCount`: `when_all` counts arrivals with a read and a write under two
//!   lock acquisitions; two A tasks completing together lose an arrival, the `when_all`
//!   never completes, and its waiting thread hangs: shuttle reports the deadlock.
//! - `Knob::WhenAnyKeepLosers`: the losers keep `when_any`'s continuation. Caught by
//!   property 2 (`never` keeps one).
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" cargo test --release -p taskcheck-models \
//!     --target-dir target/shuttle --test shuttle_when -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt;

use shuttle::sync::{Arc, Mutex};
use shuttle::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{
    reset_unobserved_error_hook, set_unobserved_error_hook, when_all, when_any, when_each,
    yield_now, CancellationTokenSource, Clock, Task, TaskCompletionSource, TaskError, TaskId,
    TaskStatus, ThreadPool,
};
use taskcheck_models::{shuttle_expect_failure, shuttle_pct, shuttle_random, Strategy};

/// Executions per strategy.
const ITERATIONS: usize = 1_000;
/// PCT's bug depth.
const PCT_DEPTH: usize = 3;
/// Pool tasks, four groups of [`GROUP`].
const TASKS: usize = 32;
const GROUP: usize = 8;

/// How task `i` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Succeed,
    Fault,
    Cancel,
}

fn plan(i: usize) -> Plan {
    match i % 4 {
        1 => Plan::Fault,
        2 => Plan::Cancel,
        _ => Plan::Succeed,
    }
}

/// The fault of task `i`.
#[derive(Debug)]
struct Boom(usize);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boom {}", self.0)
    }
}

impl Error for Boom {}

fn texts(error: &TaskError) -> Vec<String> {
    error.errors().map(ToString::to_string).collect()
}

/// Every task the scenario keeps a handle to, by name, to check at the end that none is
/// left pending.
#[derive(Default)]
struct Ledger(Vec<(String, Task<usize>)>);

impl Ledger {
    fn assert_all_terminal(&self) {
        let pending: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, task)| task.status() == TaskStatus::Pending)
            .map(|(name, _)| name.as_str())
            .collect();
        assert!(
            pending.is_empty(),
            "every task must reach a terminal state before the scenario ends, but these are \
             still pending: {pending:?}"
        );
    }
}

fn fan_out_fan_in() -> impl Fn() + Send + Sync + 'static {
    || {
        // The process-wide hook is per OS thread in model builds: set it for this execution.
        let reported: std::sync::Arc<std::sync::Mutex<Vec<TaskId>>> = Default::default();
        set_unobserved_error_hook({
            let reported = reported.clone();
            move |report| reported.lock().unwrap().push(report.task())
        });
        let reports_so_far = || reported.lock().unwrap().clone();

        let pool = ThreadPool::with_name("pool", 2);
        let finished = Arc::new(Mutex::new(0usize));
        // B's own tasks and A[1] wait for a gate that the when_any thread opens after its
        // call, so the when_any always registers on its inputs (rule 2's racing path).
        let b_gate = Arc::new(TaskCompletionSource::<()>::new());
        // D waits for a gate its detacher opens halfway through detaching them, so half
        // the drops race the completions.
        let d_gate = TaskCompletionSource::<()>::new();
        let spawn = |i: usize| {
            let finished = finished.clone();
            let gate = if (GROUP..2 * GROUP).contains(&i) || i == 1 {
                Some(b_gate.task())
            } else if i >= 3 * GROUP {
                Some(d_gate.task())
            } else {
                None
            };
            pool.spawn(async move {
                if let Some(gate) = gate {
                    gate.await?;
                }
                if i.is_multiple_of(3) {
                    yield_now().await;
                }
                *finished.lock().unwrap() += 1;
                match plan(i) {
                    Plan::Succeed => Ok(i),
                    Plan::Fault => Err(TaskError::from_error(Boom(i))),
                    Plan::Cancel => Err(TaskError::canceled()),
                }
            })
        };
        // D first, so the pool is busy with it while everything else is set up.
        let order: Vec<usize> = (3 * GROUP..4 * GROUP).chain(0..3 * GROUP).collect();
        let mut tasks: Vec<Task<usize>> = order.iter().copied().map(spawn).collect();
        let ids: BTreeMap<TaskId, usize> = tasks.iter().map(Task::id).zip(order).collect();
        let d: Vec<Task<usize>> = tasks.drain(..GROUP).collect();

        // D: fire-and-forget, detached one by one by a thread while the pool runs them.
        let detacher = thread::spawn(move || {
            // A when_any nobody keeps, over D[1]: when D[1] completes, the when_any's
            // callback on it is the last holder of a handle of it.
            drop(when_any([d[1].clone()]).unwrap());
            let mut d = d.into_iter();
            // Half detached while surely pending, half while the pool may be running them.
            for task in d.by_ref().take(GROUP / 2) {
                task.detach();
            }
            d_gate.set_result(()).unwrap();
            for task in d {
                task.detach();
            }
        });

        let mut ledger = Ledger::default();
        for (i, task) in tasks.iter().enumerate() {
            ledger.0.push((format!("task {i}"), task.clone()));
        }
        let c: Vec<Task<usize>> = tasks.drain(2 * GROUP..).collect();
        let b: Vec<Task<usize>> = tasks.drain(GROUP..).collect();
        let a = tasks;
        let never = TaskCompletionSource::<usize>::new();
        let late = TaskCompletionSource::<usize>::new();
        ledger.0.push(("never".to_owned(), never.task()));
        ledger.0.push(("late".to_owned(), late.task()));

        // A: when_all, waited for on its own thread.
        let all_thread = thread::spawn({
            let a = a.clone();
            move || {
                when_all(a)
                    .wait()
                    .map_err(|e| e.task_error().unwrap().clone())
            }
        });

        // B: when_any over `never`, B and A[1]; the winner is kept, not looked at.
        let any_thread = thread::spawn({
            let mut inputs = vec![never.task()];
            inputs.extend(b.iter().cloned());
            inputs.push(a[1].clone());
            let (a1, b_gate) = (a[1].clone(), b_gate.clone());
            move || {
                // No input can be complete before the gate opens.
                assert!(!a1.is_completed());
                let any = when_any(inputs).unwrap();
                b_gate.set_result(()).unwrap();
                let winner = any.wait().unwrap();
                (winner.id(), winner.is_completed())
            }
        });

        // C: when_each with a token another thread cancels; then read the outcome of
        // whichever C tasks are complete by now.
        let cts = Arc::new(CancellationTokenSource::with_clock(Clock::manual()));
        let each_thread = thread::spawn({
            let mut inputs = c.clone();
            inputs.push(late.task());
            let token = cts.token();
            move || {
                let each = when_each(inputs.clone(), &token);
                let read: Vec<TaskId> = inputs
                    .iter()
                    .filter(|task| task.is_faulted())
                    .filter(|task| task.outcome().is_some_and(|o| o.is_err()))
                    .map(Task::id)
                    .collect();
                (each, read)
            }
        });
        let cancel_thread = thread::spawn({
            let cts = cts.clone();
            move || cts.cancel().unwrap()
        });

        drop((a, b, c));

        detacher.join().unwrap();
        let all = all_thread.join().unwrap();
        let (winner, winner_complete) = any_thread.join().unwrap();
        let (each, read) = each_thread.join().unwrap();
        cancel_thread.join().unwrap();
        pool.shutdown();

        // Every task is terminal: D's bodies all ran (they have no handle left to ask).
        assert_eq!(*finished.lock().unwrap(), TASKS, "a pool task never ran");
        assert!(b_gate.task().is_completed());
        let never_task = never.task();
        let late_task = late.task();
        assert_eq!(never_task.status(), TaskStatus::Pending);
        assert_eq!(late_task.status(), TaskStatus::Pending);

        // 1. when_all.
        let all_error = all.expect_err("A has faulted inputs");
        assert!(all_error.is_faulted(), "when_all(A) must be Faulted");
        assert_eq!(
            texts(&all_error),
            ["boom 1", "boom 5"],
            "A's faults, in input order"
        );

        // 2. when_any.
        let winner_index = ids.get(&winner).copied();
        assert!(
            winner_index.is_some_and(|i| (GROUP..2 * GROUP).contains(&i) || i == 1),
            "when_any(B) won with a task that is not a pool task of B: {winner_index:?}"
        );
        assert!(winner_complete, "the winner must be complete");
        assert_eq!(
            never_task.registered_continuations(),
            0,
            "when_any left its continuation on the loser `never`"
        );

        // 3. when_each.
        assert_eq!(
            format!("{each:?}"),
            "WhenEach { ready: 8, pending: 1, canceled: true }"
        );
        drop(each);
        assert_eq!(late_task.registered_continuations(), 0, "when_each leaked");

        // Terminal: complete the two sources, then check everything.
        never.set_result(100).unwrap();
        late.set_result(101).unwrap();
        ledger.assert_all_terminal();
        drop(ledger);
        drop((never_task, late_task));

        // 4. Exactly the unobserved faults, each once.
        let read: BTreeSet<TaskId> = read.into_iter().collect();
        let expected: BTreeSet<TaskId> = ids
            .iter()
            .filter(|(_, &i)| plan(i) == Plan::Fault)
            .filter(|(_, &i)| i >= GROUP)
            .filter(|(id, _)| !read.contains(id))
            .map(|(&id, _)| id)
            .collect();
        let reports = reports_so_far();
        let mut counts: BTreeMap<TaskId, usize> = BTreeMap::new();
        for id in &reports {
            *counts.entry(*id).or_default() += 1;
        }
        let twice: Vec<(usize, usize)> = counts
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(id, &n)| (ids.get(id).copied().unwrap_or(usize::MAX), n))
            .collect();
        assert!(
            twice.is_empty(),
            "an unobserved fault must be reported exactly once, but (task, reports): {twice:?}"
        );
        let got: BTreeSet<TaskId> = counts.keys().copied().collect();
        let name = |set: &BTreeSet<TaskId>| -> Vec<usize> {
            set.iter()
                .map(|id| ids.get(id).copied().unwrap_or(usize::MAX))
                .collect()
        };
        assert_eq!(
            name(&got),
            name(&expected),
            "the unobserved reports must be exactly the faults nobody observed (C read: {:?})",
            name(&read)
        );
        reset_unobserved_error_hook();
    }
}

#[test]
fn fan_out_fan_in_reports_exactly_the_unobserved_faults() {
    let name = "shuttle_when::fan_out_fan_in_reports_exactly_the_unobserved_faults";
    shuttle_pct(name, ITERATIONS, PCT_DEPTH, fan_out_fan_in());
    shuttle_random(name, ITERATIONS, fan_out_fan_in());
}

/// The deliberate bug: a fault reported by the last drop and again by the completion.
#[test]
fn unobserved_double_report_is_caught() {
    let story = fan_out_fan_in();
    shuttle_expect_failure(
        "shuttle_when::unobserved_double_report_is_caught",
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        "must be reported exactly once",
        move || with_knob(Knob::UnobservedDoubleReport, &story),
    );
}

/// The deliberate bug: two racing arrivals lose a count; `when_all(A)` never completes
/// and the thread waiting for it hangs.
#[test]
fn when_all_racy_count_is_caught() {
    let story = fan_out_fan_in();
    let failure = shuttle_expect_failure(
        "shuttle_when::when_all_racy_count_is_caught",
        Strategy::Pct {
            iterations: ITERATIONS,
            depth: PCT_DEPTH,
        },
        "deadlock",
        move || with_knob(Knob::WhenAllRacyCount, &story),
    );
    assert!(failure.starts_with("deadlock!"), "{failure}");
}

/// The deliberate bug: the losers keep `when_any`'s continuation.
#[test]
fn when_any_keep_losers_is_caught() {
    let story = fan_out_fan_in();
    shuttle_expect_failure(
        "shuttle_when::when_any_keep_losers_is_caught",
        Strategy::Random(ITERATIONS),
        "when_any left its continuation on the loser",
        move || with_knob(Knob::WhenAnyKeepLosers, &story),
    );
}

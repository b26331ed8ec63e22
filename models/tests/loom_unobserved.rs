#![cfg(loom)]
//! # Unobserved errors: where a task's error goes when nobody awaits it
//!
//! loom explores every interleaving (up to `LOOM_MAX_PREEMPTIONS`, 2 in the suite) of the
//! runtime's handle counting and unobserved-error reporting (`runtime/src/unobserved.rs`,
//! `runtime/src/task_core.rs` rule 5) against completions and handle drops on other
//! threads. Each model has at most 3 threads.
//!
//! Reports are counted with the process-wide unobserved-error hook, which model builds keep
//! per OS thread (loom runs every model thread on the test's OS thread), so each execution
//! installs its own inside the model closure. The counter is a std atomic on purpose: the
//! hook outlives the execution in a thread-local, where a loom object must not be, and loom
//! runs the model threads one at a time, so it counts exactly.
//!
//! ## Properties (correct code, every execution passes)
//!
//! - [`last_drop_races_completion_reports_once`] (rule 2): a method's task faults on one
//!   thread (the thread that opens the gate its body awaits) while another drops the task's
//!   only handle; nobody observes. (A method, not a completion source: a source is a handle
//!   of its task, so its task cannot complete with no handle left.)
//!   Exactly one report, of that task and error, by whichever of {the drop, the
//!   completion} came last (loom reaches both); and as soon as both have returned, it has
//!   happened (it is never left for later).
//! - [`an_observer_and_a_report_exclude_each_other`] (rules 1, 2): the same race, plus the
//!   main thread reading the error through a second handle (`outcome()`) and dropping it.
//!   Observed XOR reported: if the read saw the error, nothing is ever reported; if it saw
//!   the task pending, the error is reported exactly once (loom reaches both).
//! - [`an_await_always_observes`]: the same race with the main thread *awaiting* its handle
//!   in an eagerly started method: an await in flight is a handle and takes the error
//!   before it lets go, so nothing is reported in any execution.
//! - [`detach_reports_a_fire_and_forget_error`] (the correct half of the bug model "naive
//!   fire-and-forget loses the error"): work that faults after awaiting a signal from
//!   another thread is detached with `task.detach()`; its error reaches the hook exactly
//!   once in every execution, whether it faulted before the detach (the detach reports) or
//!   after (the completion reports); loom reaches both.
//! - [`start_is_eager_and_never_raises_at_the_call`] (the correct half of the bug model
//!   "exception timing"): `taskcheck::start` runs the body up to its first suspension
//!   before it returns (an effect before the first await is visible to the caller right
//!   after the call), an error before the first await gives an already-faulted task, and a
//!   body that awaits a source faulted on another thread returns a pending (or, if the
//!   source already faulted, faulted) task; `start` itself never panics, in any execution.
//!   The errors arrive through the tasks, and observing them there leaves nothing to
//!   report.
//!
//! ## Bug models (a program's mistake, must be caught)
//!
//! | model | the mistake | caught as |
//! |---|---|---|
//! | [`naive_fire_and_forget_loses_the_error`] | a hand-rolled fire-and-forget helper awaits the work and hands its error to the caller only while the caller still listens | the error reaches nobody when the work fails after the caller stopped listening |
//! | [`expecting_the_error_at_the_call`] | a caller wraps `start(..)` in `catch_unwind`, C#-style `try { Method(arg) } catch`, expecting an argument error raised before the method's first await to surface there | it never does: `start` returns a faulted task |
//!
//! ## Broken twins (deliberate runtime bugs, must be caught)
//!
//! | twin | knob | caught as |
//! |---|---|---|
//! | [`double_report_when_the_last_drop_races_completion`] | `UnobservedDoubleReport` | the last drop lands between the completion storing the fault and checking for a report: both report |
//! | [`double_report_breaks_the_observer_xor`] | `UnobservedDoubleReport` | the same, in the model with an observer that saw the task pending |
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p taskcheck-models \
//!     --target-dir target/loom --test loom_unobserved -- --nocapture
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{
    Task, TaskCompletionSource, TaskError, TaskId, TaskStatus, UnhandledKind, WaitError,
};
use taskcheck_models::fixtures::{messages, Boom, Cases};
use taskcheck_models::{loom_expect_failure, loom_model};

// ---------------------------------------------------------------------------------------
// Helpers

/// The unobserved-error reports of one execution: which task, its error's message, and
/// the model thread that reported it.
#[derive(Clone)]
struct Reports(std::sync::Arc<std::sync::Mutex<Vec<(TaskId, String, thread::ThreadId)>>>);

impl Reports {
    /// Installs this execution's hook (see the module docs).
    fn install() -> Reports {
        let reports = Reports(std::sync::Arc::default());
        let sink = reports.clone();
        taskcheck::set_unobserved_error_hook(move |report| {
            assert_eq!(report.kind(), UnhandledKind::Unobserved);
            sink.0.lock().unwrap().push((
                report.task(),
                report.error().to_string(),
                thread::current().id(),
            ));
        });
        reports
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The thread that made the first report.
    fn first_reporter(&self) -> Option<thread::ThreadId> {
        self.0.lock().unwrap().first().map(|report| report.2)
    }

    /// Asserts that every report so far is of `task`, with an error mentioning `what`.
    fn assert_all_of(&self, task: TaskId, what: &str) {
        for (reported, error, _) in self.0.lock().unwrap().iter() {
            assert_eq!(*reported, task, "another task was reported: {error}");
            assert!(error.contains(what), "the report lost the error: {error}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. The last handle's drop racing the completion

/// A method (started eagerly) that faults once `gate` opens. Its body is not a handle of
/// its task, so the task can complete with no handle left — unlike a completion source's
/// task, whose source is a handle until it is dropped.
fn faults_after(gate: Task<()>) -> Task<u32> {
    taskcheck::start(async move {
        gate.await?;
        Err(TaskError::from_error(Boom("a")))
    })
}

/// Thread A opens the gate, so the method faults there; thread B drops the task's only
/// handle. Each, once its own step returned, looks whether the other's has too; if so, the
/// report must be done.
fn last_drop_races_completion_model() -> bool {
    let reports = Reports::install();
    let gate = TaskCompletionSource::<()>::new();
    let task = faults_after(gate.task());
    let id = task.id();
    let completed = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));

    let completer = {
        let (completed, dropped, reports) = (completed.clone(), dropped.clone(), reports.clone());
        thread::spawn(move || {
            gate.set_result(()).expect("the only completer");
            drop(gate);
            completed.store(true, Ordering::SeqCst);
            dropped.load(Ordering::SeqCst).then(|| reports.count())
        })
    };
    let dropper = {
        let (completed, dropped, reports) = (completed.clone(), dropped.clone(), reports.clone());
        thread::spawn(move || {
            drop(task);
            dropped.store(true, Ordering::SeqCst);
            completed.load(Ordering::SeqCst).then(|| reports.count())
        })
    };
    let dropper_id = dropper.thread().id();
    let seen_by_completer = completer.join().unwrap();
    let seen_by_dropper = dropper.join().unwrap();

    for seen in [seen_by_completer, seen_by_dropper].into_iter().flatten() {
        assert_eq!(
            seen, 1,
            "once both the completion and the last drop returned, the fault must be reported \
             exactly once"
        );
    }
    assert_eq!(
        reports.count(),
        1,
        "an unobserved fault must be reported exactly once"
    );
    reports.assert_all_of(id, "a failed");
    taskcheck::reset_unobserved_error_hook();
    reports.first_reporter() == Some(dropper_id)
}

#[test]
fn last_drop_races_completion_reports_once() {
    let reporters = Cases::default();
    loom_model(
        "loom_unobserved::last_drop_races_completion_reports_once",
        {
            let reporters = reporters.clone();
            move || reporters.hit(last_drop_races_completion_model())
        },
    );
    reporters.assert_both(["the completion reported", "the last drop reported"]);
}

/// Broken twin: the report check forgets it already reported, so a last drop between the
/// completion's storing of the fault and its own report check reports, and then so does
/// the completion.
#[test]
fn double_report_when_the_last_drop_races_completion() {
    loom_expect_failure(
        "loom_unobserved::double_report_when_the_last_drop_races_completion",
        "double_report_when_the_last_drop_races_completion",
        "reported exactly once",
        || {
            with_knob(Knob::UnobservedDoubleReport, || {
                last_drop_races_completion_model();
            });
        },
    );
}

/// Thread A opens the gate, so the method faults there; thread B drops one handle; the
/// main thread reads the outcome through the other handle and drops it. Observed XOR
/// reported.
fn observer_xor_report_model() -> bool {
    let reports = Reports::install();
    let gate = TaskCompletionSource::<()>::new();
    let faulting = faults_after(gate.task());
    let (dropped_handle, read_handle) = (faulting.clone(), faulting);
    let id = read_handle.id();

    let completer = thread::spawn(move || {
        gate.set_result(()).expect("the only completer");
    });
    let dropper = thread::spawn(move || drop(dropped_handle));

    let read = read_handle.outcome();
    drop(read_handle);
    let observed = match read {
        None => false,
        Some(Err(error)) => {
            assert_eq!(messages(&error), ["a failed"]);
            true
        }
        Some(Ok(value)) => panic!("the task faulted, but the read saw {value}"),
    };
    completer.join().unwrap();
    dropper.join().unwrap();

    assert_eq!(
        reports.count(),
        usize::from(!observed),
        "observed XOR reported: the read {} the error, so the fault must be reported exactly \
         once if it was not observed and never if it was",
        if observed { "saw" } else { "did not see" }
    );
    reports.assert_all_of(id, "a failed");
    taskcheck::reset_unobserved_error_hook();
    observed
}

#[test]
fn an_observer_and_a_report_exclude_each_other() {
    let reads = Cases::default();
    loom_model(
        "loom_unobserved::an_observer_and_a_report_exclude_each_other",
        {
            let reads = reads.clone();
            move || reads.hit(observer_xor_report_model())
        },
    );
    reads.assert_both(["the read saw the task pending", "the read saw the error"]);
}

/// Broken twin: with the observer reading too early (the task pending), the fault is
/// reported by the last drop and again by the completion.
#[test]
fn double_report_breaks_the_observer_xor() {
    loom_expect_failure(
        "loom_unobserved::double_report_breaks_the_observer_xor",
        "double_report_breaks_the_observer_xor",
        "observed XOR reported",
        || {
            with_knob(Knob::UnobservedDoubleReport, || {
                observer_xor_report_model();
            });
        },
    );
}

/// Thread A faults the source; thread B drops one handle; the main thread awaits the other
/// in an eagerly started method. The await observes in every execution.
#[test]
fn an_await_always_observes() {
    loom_model("loom_unobserved::an_await_always_observes", || {
        let reports = Reports::install();
        let source = TaskCompletionSource::<u32>::new();
        let (dropped_handle, awaited_handle) = (source.task(), source.task());

        let completer = thread::spawn(move || {
            source.set_exception(Boom("a")).expect("the only completer");
        });
        let dropper = thread::spawn(move || drop(dropped_handle));

        let method = taskcheck::start(async move {
            let outcome = awaited_handle.await;
            Ok::<_, TaskError>(outcome.err().map(|error| messages(&error)))
        });
        let seen = method.wait().expect("the method succeeds");
        completer.join().unwrap();
        dropper.join().unwrap();
        drop(method);

        assert_eq!(
            seen,
            Some(vec!["a failed".to_owned()]),
            "the await saw the fault"
        );
        assert_eq!(
            reports.count(),
            0,
            "an awaited fault is observed and must never be reported"
        );
        taskcheck::reset_unobserved_error_hook();
    });
}

// ---------------------------------------------------------------------------------------
// 5. Bug model: naive fire-and-forget loses the error

/// The work: an eagerly started method that awaits a signal a background thread gives,
/// then fails. Returns the work and the thread.
fn failing_work() -> (Task<()>, thread::JoinHandle<()>) {
    let signal = TaskCompletionSource::<()>::new();
    let signal_task = signal.task();
    let work = taskcheck::start(async move {
        signal_task.await?;
        Err::<(), _>(TaskError::from_error(Boom("work")))
    });
    let background = thread::spawn(move || signal.set_result(()).expect("the only completer"));
    (work, background)
}

/// Where the naive helper hands the work's error: to the caller, while it listens.
struct Listener {
    listening: AtomicBool,
    error: Mutex<Option<TaskError>>,
}

/// The naive fire-and-forget helper: a watcher awaits the work and passes its error to the
/// caller if the caller is still listening; the watcher itself is dropped (nothing could
/// fail in it, so why keep it?). Awaiting the work observes its error, so once the caller
/// has stopped listening the error goes nowhere: not to the caller, not to the
/// unobserved-error hook.
fn naive_fire_and_forget(work: Task<()>, listener: Arc<Listener>) {
    let watcher = taskcheck::start(async move {
        if let Err(error) = work.await {
            if listener.listening.load(Ordering::SeqCst) {
                *listener.error.lock().unwrap() = Some(error);
            }
        }
        Ok::<_, TaskError>(())
    });
    drop(watcher);
}

/// The caller fires the work off with the naive helper, goes on, and later stops listening
/// and handles the error that arrived, if any. The work fails in every execution, so its
/// error must be handled (here or by the hook) in every execution.
#[test]
fn naive_fire_and_forget_loses_the_error() {
    loom_expect_failure(
        "loom_unobserved::naive_fire_and_forget_loses_the_error",
        "naive_fire_and_forget_loses_the_error",
        "its error must be reported exactly once",
        || {
            let reports = Reports::install();
            let (work, background) = failing_work();
            let listener = Arc::new(Listener {
                listening: AtomicBool::new(true),
                error: Mutex::new(None),
            });
            naive_fire_and_forget(work, listener.clone());

            listener.listening.store(false, Ordering::SeqCst);
            let handled = listener.error.lock().unwrap().take();
            background.join().unwrap();

            assert_eq!(
                usize::from(handled.is_some()) + reports.count(),
                1,
                "the work failed: its error must be reported exactly once, to the caller or \
                 to the unobserved-error hook; it was lost"
            );
            taskcheck::reset_unobserved_error_hook();
        },
    );
}

/// The same workload with `task.detach()`: the runtime keeps the error accountable, and
/// reports it exactly once, when the work faults or at the detach, whichever is last.
#[test]
fn detach_reports_a_fire_and_forget_error() {
    let reporters = Cases::default();
    loom_model("loom_unobserved::detach_reports_a_fire_and_forget_error", {
        let reporters = reporters.clone();
        move || {
            let reports = Reports::install();
            let (work, background) = failing_work();
            let id = work.id();
            work.detach();
            let background_id = background.thread().id();
            background.join().unwrap();

            assert_eq!(
                reports.count(),
                1,
                "a detached task's fault must be reported exactly once"
            );
            reports.assert_all_of(id, "work failed");
            taskcheck::reset_unobserved_error_hook();
            reporters.hit(reports.first_reporter() == Some(background_id));
        }
    });
    reporters.assert_both([
        "the detach reported (the work had faulted)",
        "the completion reported (the work was detached first)",
    ]);
}

// ---------------------------------------------------------------------------------------
// 6. Bug model: exception timing

/// What C# calls argument validation in an `async` method: an error before the first
/// await. Then the method awaits `signal` (completed on another thread).
fn validate_then_await(valid: bool, signal: Task<u32>) -> Task<u32> {
    taskcheck::start(async move {
        if !valid {
            return Err(TaskError::from_error(Boom("validation")));
        }
        signal.await
    })
}

/// The caller's mistake: it wraps the call in `catch_unwind` (C#'s `try { M(arg); } catch`)
/// and expects the validation error there. `start` never raises at the call: the error is
/// in the task it returns, whatever the other thread does.
#[test]
fn expecting_the_error_at_the_call() {
    loom_expect_failure(
        "loom_unobserved::expecting_the_error_at_the_call",
        "expecting_the_error_at_the_call",
        "the validation error must be raised at the call",
        || {
            let _reports = Reports::install();
            let signal = TaskCompletionSource::<u32>::new();
            let signal_task = signal.task();
            let completer =
                thread::spawn(move || signal.set_result(1).expect("the only completer"));

            let at_call =
                catch_unwind(AssertUnwindSafe(|| validate_then_await(false, signal_task)));
            let raised_at_call = at_call.is_err();
            // The buggy caller believes a call that returned succeeded, and forgets the task.
            drop(at_call);
            completer.join().unwrap();

            assert!(
                raised_at_call,
                "the validation error must be raised at the call (start returned a task \
                 instead, and the error went with it)"
            );
        },
    );
}

/// The eager-start rules, in every execution.
#[test]
fn start_is_eager_and_never_raises_at_the_call() {
    loom_model(
        "loom_unobserved::start_is_eager_and_never_raises_at_the_call",
        || {
            let reports = Reports::install();
            let signal = TaskCompletionSource::<u32>::new();
            let signal_task = signal.task();
            let completer = thread::spawn(move || {
                signal
                    .set_exception(Boom("signal"))
                    .expect("the only completer");
            });

            // An error before the first await: an already-faulted task, never a panic.
            let invalid = catch_unwind(AssertUnwindSafe(|| {
                validate_then_await(false, Task::from_result(0))
            }))
            .expect("start never raises at the call site");
            assert!(
                invalid.is_faulted(),
                "an error before the first await must give an already-faulted task"
            );

            // Effects before the first await happen before `start` returns; the body then
            // waits for the other thread's signal.
            let before = Arc::new(AtomicBool::new(false));
            let after = Arc::new(AtomicBool::new(false));
            let waiting = catch_unwind(AssertUnwindSafe(|| {
                let (before, after, signal_task) =
                    (before.clone(), after.clone(), signal_task.clone());
                taskcheck::start(async move {
                    before.store(true, Ordering::Relaxed);
                    let value = signal_task.await?;
                    after.store(true, Ordering::Relaxed);
                    Ok::<_, TaskError>(value)
                })
            }))
            .expect("start never raises at the call site");
            assert!(
                before.load(Ordering::Relaxed),
                "the body's effects before its first await must have happened when start \
                 returns"
            );
            let status = waiting.status();
            // Read after the status: a complete body implies a complete signal.
            let signal_done = signal_task.is_completed();
            match status {
                TaskStatus::Pending => {}
                TaskStatus::Faulted => assert!(
                    signal_done,
                    "the body faulted at the call before the signal it awaits did"
                ),
                other => panic!("the body can only be pending or faulted, not {other:?}"),
            }

            completer.join().unwrap();
            match waiting.wait() {
                Err(WaitError::Task(error)) => assert_eq!(messages(&error), ["signal failed"]),
                other => panic!("the signal's fault must arrive through the task: {other:?}"),
            }
            assert!(
                !after.load(Ordering::Relaxed),
                "the body ran past a faulted await"
            );
            let invalid_outcome = invalid.outcome().expect("complete");
            assert_eq!(
                messages(&invalid_outcome.expect_err("faulted")),
                ["validation failed"]
            );
            drop((invalid, waiting, signal_task));
            assert_eq!(
                reports.count(),
                0,
                "both faults were observed through their tasks"
            );
            taskcheck::reset_unobserved_error_hook();
        },
    );
}

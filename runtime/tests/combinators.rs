//! Combinators, unobserved errors and `async void`: one or more small tests per numbered
//! rule of the module docs of `when.rs` (modules `when_rule_1` … `when_rule_4`) and
//! `unobserved.rs` (modules `unobserved_rule_1` … `unobserved_rule_5`), then the report's
//! contents (task, spawn location, message).
//!
//! # Hooks and parallel tests
//!
//! The process-wide hooks (`set_unobserved_error_hook`, `set_async_void_error_handler`) are
//! process-global in std builds, and libtest runs tests on parallel threads. So:
//!
//! - most tests use a **context's** hook: a [`SingleThreadContext`] owned by the test
//!   thread, whose unobserved-error hook collects into the test's own [`Reports`];
//! - every test that sets a process-wide hook or handler holds [`GlobalHooks`], one static
//!   mutex, for its whole run (so they run one at a time) and resets the hooks when it
//!   ends; and because a test that does *not* hold it may still drop some unrelated task
//!   whose report lands in the process-wide hook meanwhile, those tests only count the
//!   reports of their own tasks (by id, or by spawn line);
//! - what goes to stderr (the default hook, a panicking hook) is checked in a child
//!   process: the test re-runs this test binary on one `child_…` test with
//!   [`CHILD_ENV`] set and reads the child's stderr. Run normally (without the variable),
//!   the `child_…` tests do nothing.
//!
//! Nothing here is timed: completions are ordered by hand (`TaskCompletionSource`, gates,
//! `run_until_idle`), and there are no timeouts.

#![cfg(not(any(loom, shuttle)))]

use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::thread;

use taskcheck::{
    reset_async_void_error_handler, reset_unobserved_error_hook, set_async_void_error_handler,
    set_unobserved_error_hook, start, start_void, when_all, when_any, when_each, CancellationToken,
    CancellationTokenSource, Clock, Context, SingleThreadContext, Task, TaskCompletionSource,
    TaskError, TaskId, TaskStatus, ThreadPool, UnhandledKind, UnhandledTaskError, WhenAnyError,
};
use tokio_test::task::spawn;
use tokio_test::{assert_pending, assert_ready};

// ---------------------------------------------------------------------------------------
// Helpers

/// A typed error to fault tasks with; its text names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Boom(&'static str);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boom {}", self.0)
    }
}

impl Error for Boom {}

fn boom(what: &'static str) -> TaskError {
    TaskError::from_error(Boom(what))
}

/// The texts of a fault's errors, in order.
fn texts(error: &TaskError) -> Vec<String> {
    error.errors().map(ToString::to_string).collect()
}

/// Collects the reports a hook or handler receives, and where it ran.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<Received>>>);

#[derive(Clone, Debug)]
struct Received {
    report: UnhandledTaskError,
    thread: Option<String>,
    context: Option<String>,
}

impl Reports {
    fn hook(&self) -> impl Fn(&UnhandledTaskError) + Send + Sync + 'static {
        let reports = self.clone();
        move |report: &UnhandledTaskError| {
            let current = Context::current();
            reports.lock().push(Received {
                report: report.clone(),
                thread: thread::current().name().map(str::to_owned),
                context: current.map(|c| c.name().to_owned()),
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Received>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn all(&self) -> Vec<Received> {
        self.lock().clone()
    }

    fn count(&self) -> usize {
        self.lock().len()
    }

    /// The reports about `task` (a process-wide hook also sees other tests' tasks).
    fn about(&self, task: TaskId) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.report.task() == task)
            .collect()
    }

    /// The reports about tasks spawned on `line` of this file.
    fn spawned_on_line(&self, line: u32) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| {
                r.report.spawned_at().file() == file!() && r.report.spawned_at().line() == line
            })
            .collect()
    }
}

/// A single-thread context owned by the test thread, with an unobserved-error hook
/// collecting into the returned [`Reports`].
fn hooked(name: &str) -> (SingleThreadContext, Reports) {
    let ui = SingleThreadContext::new(name);
    let reports = Reports::default();
    ui.context().set_unobserved_error_hook(reports.hook());
    (ui, reports)
}

/// A task started on `ui` (its hook reports it) that faults at once with `what`.
fn faulted_on(ui: &SingleThreadContext, what: &'static str) -> Task<u32> {
    let task = ui
        .enter(|| start(async move { Err::<u32, _>(boom(what)) }))
        .unwrap();
    assert_eq!(task.status(), TaskStatus::Faulted);
    task
}

/// A task started on `ui` that waits for `gate`, then ends with `outcome`. Its await
/// captured `ui`, so it finishes when `ui` is pumped after the gate opened.
fn gated_on(
    ui: &SingleThreadContext,
    gate: &TaskCompletionSource<()>,
    outcome: Result<u32, TaskError>,
) -> Task<u32> {
    let gate = gate.task();
    ui.enter(|| {
        start(async move {
            gate.await?;
            outcome
        })
    })
    .unwrap()
}

/// Serialises the tests that set the process-wide hooks (see the module docs) and resets
/// both hooks when dropped.
struct GlobalHooks {
    _guard: MutexGuard<'static, ()>,
}

impl GlobalHooks {
    fn take() -> Self {
        static LOCK: Mutex<()> = Mutex::new(());
        let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        GlobalHooks { _guard: guard }
    }
}

impl Drop for GlobalHooks {
    fn drop(&mut self) {
        reset_unobserved_error_hook();
        reset_async_void_error_handler();
    }
}

/// Set in a child process (see the module docs) to the name of the `child_…` test to run.
const CHILD_ENV: &str = "TASKCHECK_COMBINATORS_CHILD";

/// Whether this process is the child that should run `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
}

/// Runs the test `name` of this binary in a child process and returns its stderr; fails
/// if the child failed.
fn child_stderr(name: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("run the test binary as a child");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    stderr
}

fn thread_name() -> Option<String> {
    thread::current().name().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------
// when.rs rule 1: when_all

mod when_rule_1 {
    use super::*;

    /// The values come in input order, whatever the completion order, and the task
    /// completes only with the last input.
    #[test]
    fn values_come_in_input_order_not_completion_order() {
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..3).map(|_| TaskCompletionSource::new()).collect();
        let all = when_all(sources.iter().map(TaskCompletionSource::task));
        sources[2].set_result(30).unwrap();
        sources[0].set_result(10).unwrap();
        assert_eq!(all.status(), TaskStatus::Pending);
        sources[1].set_result(20).unwrap();
        assert_eq!(all.outcome().unwrap().unwrap(), [10, 20, 30]);
    }

    /// A fault does not short-circuit: the `when_all` waits for every other input.
    #[test]
    fn a_fault_does_not_short_circuit() {
        let (first, second) = (
            TaskCompletionSource::<u32>::new(),
            TaskCompletionSource::new(),
        );
        let all = when_all([first.task(), second.task()]);
        first.set_exception(Boom("first")).unwrap();
        assert_eq!(all.status(), TaskStatus::Pending);
        assert_eq!(second.task().registered_continuations(), 1);
        second.set_result(2).unwrap();
        assert_eq!(texts(&all.outcome().unwrap().unwrap_err()), ["boom first"]);
    }

    /// Every faulted input's errors, in input order (not completion order); canceled and
    /// successful inputs add nothing.
    #[test]
    fn faults_are_collected_in_input_order() {
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..5).map(|_| TaskCompletionSource::new()).collect();
        let all = when_all(sources.iter().map(TaskCompletionSource::task));
        sources[4].set_exception(Boom("e")).unwrap();
        sources[3].set_canceled().unwrap();
        sources[0].set_result(1).unwrap();
        sources[2].set_exception(Boom("c")).unwrap();
        sources[1].set_exception(Boom("b")).unwrap();
        let error = all.outcome().unwrap().unwrap_err();
        assert!(error.is_faulted());
        assert_eq!(all.status(), TaskStatus::Faulted);
        assert_eq!(texts(&error), ["boom b", "boom c", "boom e"]);
        assert_eq!(error.downcast_ref::<Boom>(), Some(&Boom("b")));
    }

    /// A `when_all` of a `when_all`: the inner aggregate's errors are spliced in at the
    /// inner task's place, and so is a single input's own list of several errors.
    #[test]
    fn a_when_all_of_a_when_all_is_flattened_one_level() {
        let inner = when_all([
            Task::<u32>::from_error(boom("inner 1")),
            Task::from_result(5),
            Task::from_error(boom("inner 2")),
        ]);
        let several = Task::<u32>::from_error(TaskError::from_errors([
            Box::new(Boom("several 1")) as Box<dyn Error + Send + Sync>,
            Box::new(Boom("several 2")),
        ]));
        let outer_inputs: Vec<Task<Vec<u32>>> = vec![
            Task::from_error(boom("before")),
            inner,
            when_all([several]),
            Task::from_error(boom("after")),
        ];
        let outer = when_all(outer_inputs);
        let error = outer.outcome().unwrap().unwrap_err();
        assert_eq!(
            texts(&error),
            [
                "boom before",
                "boom inner 1",
                "boom inner 2",
                "boom several 1",
                "boom several 2",
                "boom after"
            ]
        );
    }

    /// Canceled inputs without any fault: Canceled. One fault anywhere, before or after
    /// the cancellations in input order: Faulted, with only the fault's error.
    #[test]
    fn faulted_wins_over_canceled() {
        let canceled_only = when_all([Task::from_result(1u32), Task::canceled()]);
        let error = canceled_only.outcome().unwrap().unwrap_err();
        assert!(error.is_canceled());
        assert_eq!(canceled_only.status(), TaskStatus::Canceled);
        assert_eq!(error.errors().count(), 0);

        for inputs in [
            vec![Task::canceled(), Task::from_error(boom("x"))],
            vec![Task::from_error(boom("x")), Task::canceled()],
        ] {
            let all = when_all::<u32, _>(inputs);
            let error = all.outcome().unwrap().unwrap_err();
            assert!(error.is_faulted() && !error.is_canceled());
            assert_eq!(texts(&error), ["boom x"]);
        }
    }

    /// No input: a task that has already succeeded with no values.
    #[test]
    fn empty_input_completes_at_once() {
        let all = when_all(Vec::<Task<u32>>::new());
        assert!(all.is_completed());
        assert_eq!(all.outcome().unwrap().unwrap(), Vec::<u32>::new());
    }

    /// A task given twice counts twice: its value (or error) appears at both places, and
    /// the `when_all` registers on it twice.
    #[test]
    fn an_input_given_twice_counts_twice() {
        let source = TaskCompletionSource::<u32>::new();
        let other = TaskCompletionSource::<u32>::new();
        let all = when_all([source.task(), other.task(), source.task()]);
        assert_eq!(source.task().registered_continuations(), 2);
        source.set_result(7).unwrap();
        assert_eq!(all.status(), TaskStatus::Pending);
        other.set_result(8).unwrap();
        assert_eq!(all.outcome().unwrap().unwrap(), [7, 8, 7]);

        let faulted = Task::<u32>::from_error(boom("twice"));
        let all = when_all([faulted.clone(), faulted]);
        assert_eq!(
            texts(&all.outcome().unwrap().unwrap_err()),
            ["boom twice", "boom twice"]
        );
    }

    /// The inputs' errors count as observed: faulted inputs given to `when_all` and then
    /// dropped are never reported, already faulted or faulting later, even when the
    /// caller dropped its own handles before they faulted. The same tasks without the
    /// `when_all` are each reported once (the control).
    #[test]
    fn the_inputs_errors_are_observed() {
        let (ui, reports) = hooked("ui");
        let gate = TaskCompletionSource::<()>::new();
        let all = when_all([
            faulted_on(&ui, "now"),
            gated_on(&ui, &gate, Err(boom("later"))),
            gated_on(&ui, &gate, Ok(3)),
        ]);
        gate.set_result(()).unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 2);
        assert_eq!(
            texts(&all.outcome().unwrap().unwrap_err()),
            ["boom now", "boom later"]
        );
        drop(all);
        assert_eq!(reports.count(), 0, "{:?}", reports.all());

        // The control: the same tasks, dropped without a when_all.
        let gate = TaskCompletionSource::<()>::new();
        drop(faulted_on(&ui, "now"));
        gated_on(&ui, &gate, Err(boom("later"))).detach();
        gate.set_result(()).unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(reports.count(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// when.rs rule 2: when_any

mod when_rule_2 {
    use super::*;

    /// No input is an error at the call, whose message says what to do.
    #[test]
    fn empty_input_is_an_error_at_the_call() {
        let error = when_any(Vec::<Task<u32>>::new()).unwrap_err();
        assert_eq!(error, WhenAnyError::Empty);
        let message = error.to_string();
        println!("{message}");
        assert!(message.contains("at least one task"), "{message}");
        assert!(message.contains("check for an empty list"), "{message}");
        let _: &dyn Error = &error;
    }

    /// Among inputs already complete at the call, the first in input order wins, even a
    /// faulted one; the `when_any` task itself succeeds at once and registers nothing.
    #[test]
    fn the_first_complete_input_in_input_order_wins() {
        let pending = TaskCompletionSource::<u32>::new();
        let ok = Task::from_result(20u32);
        let faulted = Task::<u32>::from_error(boom("first"));
        let any = when_any([pending.task(), faulted.clone(), ok.clone()]).unwrap();
        assert_eq!(any.status(), TaskStatus::Succeeded);
        let winner = any.outcome().unwrap().unwrap();
        assert_eq!(winner.id(), faulted.id());
        assert_eq!(pending.task().registered_continuations(), 0);

        let any = when_any([pending.task(), ok.clone(), faulted.clone()]).unwrap();
        assert_eq!(any.outcome().unwrap().unwrap().id(), ok.id());
        // Observe the fault: this test is not about reports.
        assert!(faulted.outcome().unwrap().is_err());
    }

    /// Otherwise the first input to complete wins, whatever its outcome: the `when_any`
    /// task succeeds with the winning task, and the winner's own outcome is the fault.
    #[test]
    fn the_first_to_complete_wins_whatever_its_outcome() {
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..3).map(|_| TaskCompletionSource::new()).collect();
        let any = when_any(sources.iter().map(TaskCompletionSource::task)).unwrap();
        assert_eq!(any.status(), TaskStatus::Pending);
        sources[1].set_exception(Boom("winner")).unwrap();
        assert_eq!(any.status(), TaskStatus::Succeeded);
        let winner = any.outcome().unwrap().unwrap();
        assert_eq!(winner.id(), sources[1].task().id());
        assert_eq!(
            texts(&winner.outcome().unwrap().unwrap_err()),
            ["boom winner"]
        );
        sources[0].set_result(0).unwrap();
        assert_eq!(any.outcome().unwrap().unwrap().id(), winner.id());
        sources[2].set_result(2).unwrap();
    }

    /// Winning does not observe: with every handle dropped (the winner, the `when_any`
    /// task, the inputs), the winner's fault is reported once. Awaiting the winner instead
    /// observes it.
    #[test]
    fn the_winners_fault_is_not_observed() {
        let (ui, reports) = hooked("ui");
        let winner_in = faulted_on(&ui, "won");
        let winner_id = winner_in.id();
        let gate = TaskCompletionSource::<()>::new();
        let loser = gated_on(&ui, &gate, Ok(1));
        let any = when_any([winner_in, loser.clone()]).unwrap();
        let winner = any.outcome().unwrap().unwrap();
        assert_eq!(winner.id(), winner_id);
        assert_eq!(winner.status(), TaskStatus::Faulted);
        drop(winner);
        assert_eq!(
            reports.count(),
            0,
            "the when_any task still holds the winner"
        );
        drop(any);
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.task(), winner_id);
        assert_eq!(received[0].report.kind(), UnhandledKind::Unobserved);

        // Awaiting the winner observes it.
        let any = when_any([faulted_on(&ui, "won again"), loser.clone()]).unwrap();
        let outcome = ui
            .block_on(async move { Ok::<_, TaskError>(any.await?.await) })
            .unwrap();
        assert_eq!(texts(&outcome.unwrap_err()), ["boom won again"]);
        assert_eq!(reports.count(), 1);
        gate.set_result(()).unwrap();
        ui.run_until_idle().unwrap();
        assert_eq!(loser.outcome().unwrap().unwrap(), 1);
    }

    /// The losers are untouched (still pending, not canceled, completed later by their
    /// own producers) and the `when_any` removed its continuations from them at the win.
    #[test]
    fn losers_are_untouched_and_lose_the_continuation() {
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..3).map(|_| TaskCompletionSource::new()).collect();
        let tasks: Vec<Task<u32>> = sources.iter().map(TaskCompletionSource::task).collect();
        let any = when_any(tasks.clone()).unwrap();
        for task in &tasks {
            assert_eq!(task.registered_continuations(), 1);
        }
        sources[2].set_result(2).unwrap();
        assert_eq!(any.outcome().unwrap().unwrap().id(), tasks[2].id());
        for task in &tasks[..2] {
            assert_eq!(task.status(), TaskStatus::Pending);
            assert_eq!(
                task.registered_continuations(),
                0,
                "a loser keeps a continuation"
            );
        }
        sources[0].set_result(0).unwrap();
        sources[1].set_exception(Boom("loser")).unwrap();
        assert_eq!(tasks[0].outcome().unwrap().unwrap(), 0);
        assert_eq!(
            texts(&tasks[1].outcome().unwrap().unwrap_err()),
            ["boom loser"]
        );
    }

    /// The losers are not observed either: a loser that faults later and is dropped is
    /// reported once.
    #[test]
    fn a_losers_fault_is_not_observed() {
        let (ui, reports) = hooked("ui");
        let (winner_gate, loser_gate) = (TaskCompletionSource::new(), TaskCompletionSource::new());
        let winner = gated_on(&ui, &winner_gate, Ok(1));
        let loser = gated_on(&ui, &loser_gate, Err(boom("loser")));
        let loser_id = loser.id();
        let any = when_any([winner, loser]).unwrap();
        winner_gate.set_result(()).unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(
            any.outcome().unwrap().unwrap().outcome().unwrap().unwrap(),
            1
        );
        drop(any);
        loser_gate.set_result(()).unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.task(), loser_id);
    }
}

// ---------------------------------------------------------------------------------------
// when.rs rule 3: when_each

mod when_rule_3 {
    use super::*;

    /// The item's task id, unwrapping a `Ready(Some(Ok(task)))`.
    fn id_of(item: Poll<Option<Result<Task<u32>, TaskError>>>) -> TaskId {
        match item {
            Poll::Ready(Some(Ok(task))) => {
                assert!(task.is_completed(), "an item is a completed task");
                task.id()
            }
            other => panic!("expected an item, got {other:?}"),
        }
    }

    /// Inputs already complete at the call come first, in input order; the others in
    /// completion order; then the stream ends. Each completion wakes the consumer.
    #[test]
    fn complete_first_in_input_order_then_completion_order() {
        let done_1 = Task::from_result(1u32);
        let done_3 = Task::<u32>::from_error(boom("three"));
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..3).map(|_| TaskCompletionSource::new()).collect();
        let inputs = vec![
            sources[0].task(),
            done_1.clone(),
            sources[1].task(),
            done_3.clone(),
            sources[2].task(),
        ];
        let mut each = spawn(when_each(inputs, &CancellationToken::none()));
        assert_eq!(id_of(each.poll_next()), done_1.id());
        assert_eq!(id_of(each.poll_next()), done_3.id());
        assert_pending!(each.poll_next());
        for index in [2, 0, 1] {
            sources[index].set_result(index as u32).unwrap();
            assert!(each.is_woken());
            assert_eq!(id_of(each.poll_next()), sources[index].task().id());
            if index != 1 {
                assert_pending!(each.poll_next());
            }
        }
        assert!(matches!(each.poll_next(), Poll::Ready(None)));
        assert!(matches!(each.poll_next(), Poll::Ready(None)));
        assert!(done_3.outcome().unwrap().is_err());
    }

    /// It registers on every pending input at the call, before any poll: inputs that
    /// complete before the first poll still come in completion order.
    #[test]
    fn it_registers_eagerly() {
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..3).map(|_| TaskCompletionSource::new()).collect();
        let each = when_each(
            sources.iter().map(TaskCompletionSource::task),
            &CancellationToken::none(),
        );
        for source in &sources {
            assert_eq!(source.task().registered_continuations(), 1);
        }
        for index in [1, 2, 0] {
            sources[index].set_result(index as u32).unwrap();
        }
        let mut each = spawn(each);
        let order: Vec<TaskId> = (0..3).map(|_| id_of(each.poll_next())).collect();
        let expected: Vec<TaskId> = [1, 2, 0].iter().map(|&i| sources[i].task().id()).collect();
        assert_eq!(order, expected);
        assert!(matches!(each.poll_next(), Poll::Ready(None)));
    }

    /// A canceled token: the next item is a cancellation carrying the token (even with
    /// items ready), then the stream ends; the consumer suspended on it is woken.
    #[test]
    fn a_canceled_token_ends_it_with_a_cancellation() {
        let cts = CancellationTokenSource::with_clock(Clock::manual());
        let token = cts.token();
        let ready = Task::from_result(1u32);
        let source = TaskCompletionSource::<u32>::new();
        let mut each = spawn(when_each([ready.clone(), source.task()], &token));
        assert_eq!(id_of(each.poll_next()), ready.id());
        assert_pending!(each.poll_next());
        cts.cancel().unwrap();
        assert!(each.is_woken());
        match assert_ready!(each.poll_next()) {
            Some(Err(error)) => {
                assert!(error.is_canceled());
                assert_eq!(error.cancellation_token(), Some(&token));
            }
            other => panic!("expected the cancellation, got {other:?}"),
        }
        assert!(matches!(each.poll_next(), Poll::Ready(None)));
        // The input is untouched.
        assert_eq!(source.task().status(), TaskStatus::Pending);
        drop(each);
        source.set_result(2).unwrap();

        // Canceled before the first poll, with items ready: the cancellation comes first.
        let cts = CancellationTokenSource::with_clock(Clock::manual());
        let mut each = spawn(when_each([ready.clone()], &cts.token()));
        cts.cancel().unwrap();
        assert!(matches!(each.poll_next(), Poll::Ready(Some(Err(e))) if e.is_canceled()));
        assert!(matches!(each.poll_next(), Poll::Ready(None)));
    }

    /// Dropping the stream removes its continuations from the pending inputs.
    #[test]
    fn dropping_it_unregisters_from_pending_inputs() {
        let sources: Vec<TaskCompletionSource<u32>> =
            (0..3).map(|_| TaskCompletionSource::new()).collect();
        let mut each = spawn(when_each(
            sources.iter().map(TaskCompletionSource::task),
            &CancellationToken::none(),
        ));
        sources[0].set_result(0).unwrap();
        assert_eq!(id_of(each.poll_next()), sources[0].task().id());
        assert_pending!(each.poll_next());
        assert_eq!(sources[1].task().registered_continuations(), 1);
        assert_eq!(sources[2].task().registered_continuations(), 1);
        drop(each);
        assert_eq!(sources[1].task().registered_continuations(), 0);
        assert_eq!(sources[2].task().registered_continuations(), 0);
        sources[1].set_result(1).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// when.rs rule 4: the combinators' own continuations

mod when_rule_4 {
    use super::*;

    /// An await of a `when_all` that captured nothing runs inline on the thread that
    /// completes the last input: when `set_result` returns, the awaiting method is done.
    #[test]
    fn an_await_that_captured_nothing_runs_inline_on_the_completing_thread() {
        let (a, b) = (
            TaskCompletionSource::<u32>::new(),
            TaskCompletionSource::new(),
        );
        let all = when_all([a.task(), b.task()]);
        // Called on a thread with no context: its await captures nothing.
        let method = start(async move {
            let values = all.await?;
            Ok::<_, TaskError>((values, thread_name()))
        });
        a.set_result(1).unwrap();
        assert_eq!(method.status(), TaskStatus::Pending);
        let done_inside = thread::Builder::new()
            .name("completer".into())
            .spawn(move || {
                b.set_result(2).unwrap();
                method
                    .is_completed()
                    .then(|| method.outcome().unwrap().unwrap())
            })
            .unwrap()
            .join()
            .unwrap();
        let (values, ran_on) = done_inside.expect("the method finished inside set_result");
        assert_eq!(values, [1, 2]);
        assert_eq!(ran_on.as_deref(), Some("completer"));
    }

    /// An await of a `when_any` that captured a context: completed from another thread,
    /// it is queued to that context (one job); completed by a job on that context, it
    /// runs inline inside that job.
    #[test]
    fn an_await_that_captured_a_context_runs_there() {
        let ui = SingleThreadContext::new("ui");
        let awaiting = |any: Task<Task<u32>>| {
            ui.enter(|| {
                start(async move {
                    let winner = any.await?;
                    Ok::<_, TaskError>((winner.id(), Context::current().map(|c| c.id())))
                })
            })
            .unwrap()
        };

        let source = TaskCompletionSource::<u32>::new();
        let method = awaiting(when_any([source.task()]).unwrap());
        thread::scope(|s| s.spawn(|| source.set_result(1).unwrap()).join().unwrap());
        assert_eq!(method.status(), TaskStatus::Pending);
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        let (winner, ran_on) = method.outcome().unwrap().unwrap();
        assert_eq!(winner, source.task().id());
        assert_eq!(ran_on, Some(ui.context().id()));

        let source = Arc::new(TaskCompletionSource::<u32>::new());
        let method = awaiting(when_any([source.task()]).unwrap());
        let completer = source.clone();
        let done_inside = Arc::new(Mutex::new(None));
        ui.post({
            let (method, done_inside) = (method.clone(), done_inside.clone());
            move || {
                completer.set_result(1).unwrap();
                *done_inside.lock().unwrap() = Some(method.is_completed());
            }
        })
        .unwrap();
        assert_eq!(
            ui.run_until_idle().unwrap(),
            1,
            "one job: the continuation ran in it"
        );
        assert_eq!(*done_inside.lock().unwrap(), Some(true));
        assert_eq!(
            method.outcome().unwrap().unwrap().1,
            Some(ui.context().id())
        );
    }
}

// ---------------------------------------------------------------------------------------
// unobserved.rs rule 1: what observes

mod unobserved_rule_1 {
    use super::*;

    /// Awaiting, `outcome()`, `wait()`, `when_all` and a `wait_async` that passes the
    /// error on each observe: dropping the task afterwards reports nothing.
    #[test]
    fn observing_ways_prevent_the_report() {
        let (ui, reports) = hooked("ui");

        let awaited = faulted_on(&ui, "awaited");
        let outcome = ui.block_on(async move { Ok::<_, TaskError>(awaited.await) });
        assert!(outcome.unwrap().is_err());

        let read = faulted_on(&ui, "read");
        assert!(read.outcome().unwrap().is_err());
        drop(read);

        let waited = faulted_on(&ui, "waited");
        assert!(waited.wait().is_err());
        drop(waited);

        let combined = when_all([faulted_on(&ui, "combined")]);
        assert!(combined.outcome().unwrap().is_err());
        drop(combined);

        // wait_async passes a pending task's error on when it faults.
        let gate = TaskCompletionSource::<()>::new();
        let passed = gated_on(&ui, &gate, Err(boom("passed on")));
        let waiting = passed.wait_async_on(&Clock::manual(), None, &CancellationToken::none());
        drop(passed);
        gate.set_result(()).unwrap();
        ui.run_until_idle().unwrap();
        assert_eq!(
            texts(&waiting.outcome().unwrap().unwrap_err()),
            ["boom passed on"]
        );
        drop(waiting);

        assert_eq!(reports.count(), 0, "{:?}", reports.all());
    }

    /// Status queries observe nothing: after `status`, `is_faulted`, `is_completed`,
    /// `is_canceled` and `is_completed_successfully`, dropping the task reports it.
    #[test]
    fn status_queries_do_not_observe() {
        let (ui, reports) = hooked("ui");
        let task = faulted_on(&ui, "queried");
        let id = task.id();
        assert_eq!(task.status(), TaskStatus::Faulted);
        assert!(task.is_faulted() && task.is_completed());
        assert!(!task.is_canceled() && !task.is_completed_successfully());
        assert_eq!(task.registered_continuations(), 0);
        drop(task);
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.task(), id);
    }

    /// An await that suppresses throwing does not take the error, so it does not observe
    /// it either: the fault is reported when the last handle goes. As in .NET, where
    /// `ConfigureAwaitOptions.SuppressThrowing` leaves the exception unobserved.
    #[test]
    fn an_await_that_suppresses_throwing_does_not_observe() {
        let (ui, reports) = hooked("ui");
        let task = faulted_on(&ui, "suppressed");
        let id = task.id();
        ui.block_on(async move {
            task.configure_await(true).suppress_throwing().await;
            Ok::<_, TaskError>(())
        })
        .unwrap();
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.task(), id);
    }

    /// Winning a `when_any` does not observe (see also `when_rule_2`).
    #[test]
    fn winning_a_when_any_does_not_observe() {
        let (ui, reports) = hooked("ui");
        let any = when_any([faulted_on(&ui, "winner")]).unwrap();
        assert!(any.outcome().unwrap().unwrap().is_faulted());
        drop(any);
        assert_eq!(reports.count(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// unobserved.rs rule 2: handles

mod unobserved_rule_2 {
    use super::*;

    /// Reported exactly once, at the drop of the last handle: not at an earlier drop.
    #[test]
    fn reported_once_at_the_last_handle_drop() {
        let (ui, reports) = hooked("ui");
        let task = faulted_on(&ui, "once");
        let id = task.id();
        let clones = vec![task.clone(), task.clone()];
        drop(task);
        assert_eq!(reports.count(), 0);
        let mut clones = clones.into_iter();
        drop(clones.next());
        assert_eq!(reports.count(), 0);
        drop(clones.next());
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.task(), id);
        assert_eq!(texts(received[0].report.error()), ["boom once"]);
        // Nothing reports it again.
        ui.run_until_idle().unwrap();
        assert_eq!(reports.count(), 1);
    }

    /// A task detached while pending is reported when it faults, on the thread that
    /// completes it, and only then.
    #[test]
    fn detached_then_faulted_is_reported_at_completion() {
        let (ui, reports) = hooked("ui");
        let gate = TaskCompletionSource::<()>::new();
        let awaited = gate.task();
        let task = ui
            .enter(|| {
                start(async move {
                    awaited.configure_await(false).await?;
                    Err::<u32, _>(boom("detached"))
                })
            })
            .unwrap();
        let id = task.id();
        task.detach();
        assert_eq!(reports.count(), 0);
        thread::Builder::new()
            .name("completer".into())
            .spawn(move || gate.set_result(()).unwrap())
            .unwrap()
            .join()
            .unwrap();
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.task(), id);
        assert_eq!(received[0].thread.as_deref(), Some("completer"));
    }

    /// An await in flight is a handle: with every `Task` value gone, the fault is not
    /// reported while the await is suspended, and the await then observes it.
    #[test]
    fn an_await_in_flight_is_a_handle() {
        let (ui, reports) = hooked("ui");
        let gate = TaskCompletionSource::<()>::new();
        let task = gated_on(&ui, &gate, Err(boom("awaited")));
        let mut awaiting = spawn(task.configure_await(false));
        assert_pending!(awaiting.poll());
        gate.set_result(()).unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(reports.count(), 0, "the suspended await holds the task");
        assert!(awaiting.is_woken());
        assert!(assert_ready!(awaiting.poll()).is_err());
        drop(awaiting);
        assert_eq!(reports.count(), 0);
    }

    /// Canceled tasks are never reported: an already-canceled task dropped, and a
    /// detached task that ends canceled.
    #[test]
    fn canceled_is_never_reported() {
        let (ui, reports) = hooked("ui");
        drop(
            ui.enter(|| start(async { Err::<u32, _>(TaskError::canceled()) }))
                .unwrap(),
        );
        let gate = TaskCompletionSource::<()>::new();
        gated_on(&ui, &gate, Err(TaskError::canceled())).detach();
        gate.set_result(()).unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(reports.count(), 0);
    }

    /// A completion source dropped unset abandons its task; with no handle left at that
    /// moment, nothing is reported. A handle still held then is dropped later: the
    /// abandoned fault is reported once, like any fault.
    #[test]
    fn an_abandoned_source_with_no_handle_is_not_reported() {
        let _global = GlobalHooks::take();
        let global = Reports::default();
        set_unobserved_error_hook(global.hook());

        let source = TaskCompletionSource::<u32>::new();
        let unheld = source.task().id();
        drop(source);
        assert!(
            global.about(unheld).is_empty(),
            "{:?}",
            global.about(unheld)
        );

        let source = TaskCompletionSource::<u32>::new();
        let held = source.task();
        drop(source);
        assert!(held.is_faulted());
        let held_id = held.id();
        assert!(global.about(held_id).is_empty());
        drop(held);
        let received = global.about(held_id);
        assert_eq!(received.len(), 1);
        assert!(received[0].report.error().is_abandoned());
    }
}

// ---------------------------------------------------------------------------------------
// unobserved.rs rule 3: which hook

mod unobserved_rule_3 {
    use super::*;

    /// A task spawned onto a context reports to that context's hook, not the
    /// process-wide one; `start` called while the context is current counts as spawned
    /// onto it. Without a context hook, or after a reset, the process-wide hook gets it;
    /// so does a task started off any context.
    #[test]
    fn context_hook_then_process_wide_hook() {
        let _global = GlobalHooks::take();
        let global = Reports::default();
        set_unobserved_error_hook(global.hook());
        let (ui, local) = hooked("ui");

        let spawned = ui.spawn(async { Err::<u32, _>(boom("spawned")) });
        ui.run_until_idle().unwrap();
        let started = faulted_on(&ui, "started");
        let ids = [spawned.id(), started.id()];
        drop((spawned, started));
        let local_ids: Vec<TaskId> = local.all().iter().map(|r| r.report.task()).collect();
        assert_eq!(local_ids, ids);
        assert!(global.about(ids[0]).is_empty() && global.about(ids[1]).is_empty());

        ui.context().reset_unobserved_error_hook();
        let after_reset = faulted_on(&ui, "after reset");
        let after_reset_id = after_reset.id();
        drop(after_reset);
        assert_eq!(local.count(), 2);
        assert_eq!(global.about(after_reset_id).len(), 1);

        let no_context = start(async { Err::<u32, _>(boom("no context")) });
        let no_context_id = no_context.id();
        drop(no_context);
        assert_eq!(global.about(no_context_id).len(), 1);

        // A completion source's task has no context: the process-wide hook. The source is
        // a handle too (anyone may still take the task from it): the report comes when the
        // last of the task and the source goes.
        let source = TaskCompletionSource::<u32>::new();
        let sourced = source.task();
        let sourced_id = sourced.id();
        source.set_exception(Boom("sourced")).unwrap();
        drop(sourced);
        assert!(global.about(sourced_id).is_empty());
        drop(source);
        assert_eq!(global.about(sourced_id).len(), 1);
    }

    /// A pool is a context too: a detached pool task that faults reports to the pool's
    /// hook, on the worker that completed it.
    #[test]
    fn a_pool_tasks_fault_goes_to_the_pools_hook() {
        let pool = ThreadPool::with_name("hooked-pool", 1);
        let (sender, received) = std::sync::mpsc::channel();
        let sender = Mutex::new(sender);
        pool.context().set_unobserved_error_hook(move |report| {
            let thread = thread_name();
            let _ = sender.lock().unwrap().send((report.task(), thread));
        });
        let gate = TaskCompletionSource::<()>::new();
        let opened = gate.task();
        let task = pool.spawn(async move {
            opened.await?;
            Err::<u32, _>(boom("pool"))
        });
        let id = task.id();
        task.detach();
        // Detached while surely pending; its await resumes on the pool.
        gate.set_result(()).unwrap();
        // A watchdog, not an ordering: the report comes when the worker completes it.
        let (reported, thread) = received
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the pool's hook never got the report");
        assert_eq!(reported, id);
        assert!(
            thread
                .as_deref()
                .is_some_and(|name| name.starts_with("hooked-pool")),
            "{thread:?}"
        );
        pool.shutdown();
        assert!(received.try_recv().is_err(), "reported once");
    }

    /// The hook runs on the thread that drops the last handle, with no context current
    /// when that thread has none.
    #[test]
    fn the_hook_runs_where_the_last_handle_drops() {
        let (ui, reports) = hooked("ui");
        let task = faulted_on(&ui, "moved");
        thread::Builder::new()
            .name("dropper".into())
            .spawn(move || drop(task))
            .unwrap()
            .join()
            .unwrap();
        let received = reports.all();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].thread.as_deref(), Some("dropper"));
        assert_eq!(received[0].context, None);
    }

    /// With no hook at all, the report is printed to stderr (checked in a child process).
    #[test]
    fn with_no_hook_the_report_goes_to_stderr() {
        let stderr = child_stderr("unobserved_rule_3::child_prints_the_report");
        let line = stderr
            .lines()
            .find(|line| line.contains("boom printed"))
            .unwrap_or_else(|| panic!("no report on stderr:\n{stderr}"));
        assert!(line.starts_with("taskcheck: task #"), "{line}");
        assert!(line.contains(file!()), "{line}");
        assert!(line.contains("await the task"), "{line}");
    }

    /// The child of [`with_no_hook_the_report_goes_to_stderr`]; does nothing otherwise.
    #[test]
    fn child_prints_the_report() {
        if !is_child("unobserved_rule_3::child_prints_the_report") {
            return;
        }
        reset_unobserved_error_hook();
        drop(start(async { Err::<u32, _>(boom("printed")) }));
    }
}

// ---------------------------------------------------------------------------------------
// unobserved.rs rule 4: async void

mod unobserved_rule_4 {
    use super::*;

    /// A `start_void` started on a context: its error is posted to that context's error
    /// handler, which runs on the context when it is pumped, and the caller cannot catch
    /// it (`start_void` returns nothing and does not panic). It is never also reported
    /// as unobserved.
    #[test]
    fn the_error_goes_to_the_captured_contexts_handler_on_that_context() {
        let (ui, unobserved) = hooked("ui");
        let handled = Reports::default();
        ui.context().set_error_handler(handled.hook());
        let ran_before_return = Arc::new(Mutex::new(false));
        let line = line!() + 5;
        let caught = ui
            .enter(|| {
                let ran = ran_before_return.clone();
                catch_unwind(AssertUnwindSafe(|| {
                    start_void(async move {
                        *ran.lock().unwrap() = true;
                        Err(boom("async void"))
                    });
                }))
            })
            .unwrap();
        assert!(caught.is_ok(), "nothing reaches the caller");
        assert!(*ran_before_return.lock().unwrap(), "it started eagerly");
        assert_eq!(handled.count(), 0, "posted, not run inside start_void");
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        let received = handled.all();
        assert_eq!(received.len(), 1);
        let report = &received[0].report;
        assert_eq!(report.kind(), UnhandledKind::AsyncVoid);
        assert_eq!(texts(report.error()), ["boom async void"]);
        assert_eq!(received[0].context.as_deref(), Some("ui"));
        assert_eq!(received[0].thread, thread_name());
        assert_eq!(
            (report.spawned_at().file(), report.spawned_at().line()),
            (file!(), line)
        );
        let message = report.to_string();
        println!("{message}");
        assert!(message.contains("fire-and-forget task"), "{message}");
        assert!(message.contains(&report.task().to_string()), "{message}");
        assert_eq!(unobserved.count(), 0);
    }

    /// One that faults after a suspension: the handler gets it when the context is
    /// pumped after the fault, and a panic is a fault like any other.
    #[test]
    fn a_later_fault_or_a_panic_goes_there_too() {
        let ui = SingleThreadContext::new("ui");
        let handled = Reports::default();
        ui.context().set_error_handler(handled.hook());
        let gate = TaskCompletionSource::<()>::new();
        let awaited = gate.task();
        ui.enter(|| {
            start_void(async move {
                awaited.await?;
                if Context::current().is_some() {
                    panic!("async void panic [expected panic]");
                }
                Ok(())
            });
        })
        .unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 0);
        gate.set_result(()).unwrap();
        // The resumption, then the posted error.
        assert_eq!(ui.run_until_idle().unwrap(), 2);
        let received = handled.all();
        assert_eq!(received.len(), 1);
        let error = received[0].report.error();
        assert!(error.is_panic(), "{error}");
        assert_eq!(
            error.panic_message(),
            Some("async void panic [expected panic]")
        );
    }

    /// A canceled `start_void` is reported too: .NET rethrows an `OperationCanceledException`
    /// escaping an `async void` method like any other exception.
    #[test]
    fn a_canceled_one_is_reported_like_a_fault() {
        let ui = SingleThreadContext::new("ui");
        let handled = Reports::default();
        ui.context().set_error_handler(handled.hook());
        ui.enter(|| start_void(async { Err(TaskError::canceled()) }))
            .unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(handled.count(), 1);
        assert!(handled.all()[0].report.error().is_canceled());
    }

    /// With no context current, the error goes to the process-wide handler, on the
    /// completing thread (here: inside the call, since it faults before suspending); a
    /// context without a handler also falls back to it, but on the context. Neither is
    /// reported as unobserved.
    #[test]
    fn with_no_context_the_process_wide_handler() {
        let _global = GlobalHooks::take();
        let handled = Reports::default();
        let unobserved = Reports::default();
        set_async_void_error_handler(handled.hook());
        set_unobserved_error_hook(unobserved.hook());

        let (no_context_line, ()) = (line!(), start_void(async { Err(boom("no context")) }));
        let received = handled.spawned_on_line(no_context_line);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].report.kind(), UnhandledKind::AsyncVoid);
        assert_eq!(received[0].thread, thread_name());
        assert_eq!(received[0].context, None);

        let ui = SingleThreadContext::new("no handler");
        let no_handler_line = line!() + 1;
        ui.enter(|| start_void(async { Err(boom("no handler")) }))
            .unwrap();
        assert!(
            handled.spawned_on_line(no_handler_line).is_empty(),
            "posted first"
        );
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        let received = handled.spawned_on_line(no_handler_line);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].context.as_deref(), Some("no handler"));

        for line in [no_context_line, no_handler_line] {
            let also = unobserved.spawned_on_line(line);
            assert!(also.is_empty(), "also reported as unobserved: {also:?}");
        }
    }

    /// A captured context that was shut down cannot take the error: it goes to the
    /// process-wide handler, on the completing thread.
    #[test]
    fn a_shut_down_context_falls_back_to_the_process_wide_handler() {
        let _global = GlobalHooks::take();
        let handled = Reports::default();
        set_async_void_error_handler(handled.hook());
        let ui = SingleThreadContext::new("closed");
        let on_ui = Reports::default();
        ui.context().set_error_handler(on_ui.hook());
        let gate = TaskCompletionSource::<()>::new();
        let awaited = gate.task();
        let line = line!() + 2;
        ui.enter(|| {
            start_void(async move {
                awaited.configure_await(false).await?;
                Err(boom("after shutdown"))
            });
        })
        .unwrap();
        ui.shutdown();
        thread::Builder::new()
            .name("completer".into())
            .spawn(move || gate.set_result(()).unwrap())
            .unwrap()
            .join()
            .unwrap();
        let received = handled.spawned_on_line(line);
        assert_eq!(received.len(), 1, "{:?}", handled.all());
        assert_eq!(received[0].thread.as_deref(), Some("completer"));
        assert_eq!(on_ui.count(), 0);
    }
}

// ---------------------------------------------------------------------------------------
// unobserved.rs rule 5: panicking hooks

mod unobserved_rule_5 {
    use super::*;

    /// A context hook that panics: the drop that reported returns normally, and the next
    /// report still reaches the hook.
    #[test]
    fn a_panicking_hook_is_contained() {
        let ui = SingleThreadContext::new("ui");
        let calls = Reports::default();
        let record = calls.hook();
        ui.context().set_unobserved_error_hook(move |report| {
            record(report);
            panic!("hook panic [expected panic]");
        });
        quiet_expected_panics();
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(faulted_on(&ui, "first"))));
        assert!(
            dropped.is_ok(),
            "the hook's panic reached the dropping code"
        );
        drop(faulted_on(&ui, "second"));
        assert_eq!(calls.count(), 2);
    }

    /// An error handler that panics on its context: the pump carries on with the next
    /// job.
    #[test]
    fn a_panicking_error_handler_is_contained() {
        let ui = SingleThreadContext::new("ui");
        ui.context()
            .set_error_handler(|_| panic!("handler panic [expected panic]"));
        quiet_expected_panics();
        let after = Arc::new(Mutex::new(false));
        ui.enter(|| start_void(async { Err(boom("handled badly")) }))
            .unwrap();
        ui.post({
            let after = after.clone();
            move || *after.lock().unwrap() = true
        })
        .unwrap();
        assert_eq!(ui.run_until_idle().unwrap(), 2);
        assert!(*after.lock().unwrap());
    }

    /// What a contained panic prints (checked in a child process): the panic and the
    /// report.
    #[test]
    fn a_contained_panic_is_printed_with_the_report() {
        let stderr = child_stderr("unobserved_rule_5::child_panicking_hook");
        let line = stderr
            .lines()
            .find(|line| line.contains("an error hook panicked"))
            .unwrap_or_else(|| panic!("nothing printed:\n{stderr}"));
        assert!(line.contains("hook panic [expected panic]"), "{line}");
        assert!(line.contains("boom contained"), "{line}");
    }

    /// The child of [`a_contained_panic_is_printed_with_the_report`].
    #[test]
    fn child_panicking_hook() {
        if !is_child("unobserved_rule_5::child_panicking_hook") {
            return;
        }
        quiet_expected_panics();
        let ui = SingleThreadContext::new("ui");
        ui.context()
            .set_unobserved_error_hook(|_| panic!("hook panic [expected panic]"));
        drop(faulted_on(&ui, "contained"));
    }

    /// Keeps the expected panics of this module off stderr.
    fn quiet_expected_panics() {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
                if !message.is_some_and(|m| m.contains("[expected panic]")) {
                    previous(info);
                }
            }));
        });
    }
}

// ---------------------------------------------------------------------------------------
// The report: which task, spawned where, what to do

mod report {
    use super::*;

    /// The report names the task and the line of this file that spawned it
    /// (`#[track_caller]` on `start`, `spawn` and `from_error`), and its message says what
    /// to do.
    #[test]
    fn it_names_the_task_and_where_it_was_spawned() {
        let (ui, reports) = hooked("ui");
        let (started, started_line) = (ui.enter(|| start(fault())).unwrap(), line!());
        let (spawned, spawned_line) = (ui.spawn(fault()), line!());
        let (made, made_line) = (Task::<u32>::from_error(boom("made")), line!());
        ui.run_until_idle().unwrap();
        let ids = [started.id(), spawned.id(), made.id()];
        drop((started, spawned));

        let received = reports.all();
        assert_eq!(received.len(), 2);
        for (got, (id, line)) in received
            .iter()
            .zip([(ids[0], started_line), (ids[1], spawned_line)])
        {
            let report = &got.report;
            assert_eq!(report.task(), id);
            assert_eq!(report.kind(), UnhandledKind::Unobserved);
            let at = report.spawned_at();
            assert_eq!((at.file(), at.line()), (file!(), line));
            let message = report.to_string();
            println!("{message}");
            assert!(message.contains(&format!("task {id} ")), "{message}");
            assert!(
                message.contains(&format!("{}:{line}", file!())),
                "{message}"
            );
            assert!(message.contains("boom late"), "{message}");
            assert!(
                message.contains("await the task, call wait() or outcome()"),
                "{message}"
            );
            assert!(format!("{report:?}").contains("Unobserved"));
        }
        // `from_error` has no context: observe it rather than reach for a global hook,
        // but its location is recorded all the same.
        assert!(format!("{made:?}").contains(&format!("line: {made_line}")));
        assert!(made.outcome().unwrap().is_err());

        /// Faults after one suspension, so `start` returns a pending task.
        async fn fault() -> Result<u32, TaskError> {
            taskcheck::yield_now().await;
            Err(boom("late"))
        }
    }
}

/// Regressions from a review of the unobserved-error rules: each test failed before its fix.
mod review_regressions {
    use super::*;
    use std::time::Duration;

    /// A completion source is a handle: faulting it before anyone took its task reports
    /// nothing, and the task taken later still has the error to observe.
    #[test]
    fn a_source_faulted_before_its_task_is_taken_reports_nothing() {
        let _hooks = GlobalHooks::take();
        let global = Reports::default();
        set_unobserved_error_hook(global.hook());
        let source = TaskCompletionSource::<u32>::new();
        source.set_exception(Boom("early")).unwrap();
        let task = source.task();
        let id = task.id();
        assert!(
            global.about(id).is_empty(),
            "reported before anyone could take the task"
        );
        assert_eq!(texts(&task.outcome().unwrap().unwrap_err()), ["boom early"]);
        drop((task, source));
        assert!(global.about(id).is_empty(), "observed: never reported");
    }

    /// A handle dropped while the completion is still running its waiters leaves the report
    /// decision to the completion: here `wait_async`'s waiter passes the error on (observing
    /// it), so nothing is reported although the last handle went mid-completion.
    #[test]
    fn a_waiter_that_passes_the_error_on_prevents_the_report() {
        let _hooks = GlobalHooks::take();
        let global = Reports::default();
        set_unobserved_error_hook(global.hook());
        let source = TaskCompletionSource::<u32>::new();
        let task = source.task();
        let id = task.id();
        let clock = Clock::manual();
        let cancel = CancellationTokenSource::with_clock(clock.clone());
        // A when_any registered first: its waiter drops a handle of `task` mid-completion.
        drop(when_any([task.clone()]).unwrap());
        let waited = task.wait_async_on(&clock, None, &cancel.token());
        drop(task);
        source.set_exception(Boom("passed on")).unwrap();
        drop(source);
        assert_eq!(
            texts(&waited.outcome().unwrap().unwrap_err()),
            ["boom passed on"]
        );
        assert!(global.about(id).is_empty(), "{:?}", global.about(id));
    }

    /// Spawning onto a context that was shut down returns the error to the caller; the
    /// task the caller never saw is not reported as an unobserved fault.
    #[test]
    fn a_refused_spawn_is_not_an_unobserved_fault() {
        let (ui, reports) = hooked("closed-ui");
        let context = ui.context();
        ui.shutdown();
        assert!(context
            .try_spawn(async { Ok::<_, TaskError>(1u32) })
            .is_err());
        assert_eq!(reports.count(), 0);
    }

    /// An async-void error posted to a context that shuts down before running it goes to
    /// the process-wide handler instead of being lost (unobserved.rs rule 4).
    #[test]
    fn an_async_void_error_outlives_its_contexts_shutdown() {
        let _hooks = GlobalHooks::take();
        let global = Reports::default();
        set_async_void_error_handler(global.hook());
        let ui = SingleThreadContext::new("closing-ui");
        let handled = Reports::default();
        ui.context().set_error_handler(handled.hook());
        ui.enter(|| start_void(async { Err(boom("lost?")) }))
            .unwrap();
        drop(ui);
        assert_eq!(
            handled.count(),
            0,
            "the context never ran the posted report"
        );
        let received = global.all();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0].report.kind(), UnhandledKind::AsyncVoid);
        assert_eq!(texts(received[0].report.error()), ["boom lost?"]);
    }

    /// when_all's cancellation is its first canceled input's, with that input's token.
    #[test]
    fn when_all_cancellation_carries_the_first_canceled_inputs_token() {
        let (first, second) = (
            CancellationTokenSource::new(),
            CancellationTokenSource::new(),
        );
        let inputs = [
            Task::from_result(1u32),
            Task::from_error(TaskError::canceled_by(&first.token())),
            Task::from_error(TaskError::canceled_by(&second.token())),
        ];
        let error = when_all(inputs).outcome().unwrap().unwrap_err();
        assert!(error.is_canceled());
        assert_eq!(error.cancellation_token(), Some(&first.token()));
    }

    /// A wait with no timeout and a token that can never be canceled cannot end early:
    /// `wait_async` returns the task itself, as .NET's `WaitAsync` returns `this`.
    #[test]
    fn an_unbounded_wait_async_is_the_task_itself() {
        let source = TaskCompletionSource::<u32>::new();
        let task = source.task();
        let waited = task.wait_async(None, &CancellationToken::none());
        assert_eq!(waited.id(), task.id());
        assert_eq!(task.registered_continuations(), 0);
        source.set_result(3).unwrap();
    }

    /// The system clock's timer thread hands due callbacks to the default pool: user code
    /// resumed by a timer never runs on the timer thread, so it cannot stop other timers.
    #[test]
    fn timer_callbacks_run_on_the_default_pool_not_the_timer_thread() {
        let none = CancellationToken::none();
        let fired = taskcheck::delay(Duration::from_millis(1), &none);
        let thread_name = Task::run(async move {
            when_all([fired]).configure_await(false).await?;
            Ok::<_, TaskError>(thread::current().name().map(str::to_owned))
        })
        .wait()
        .unwrap();
        let name = thread_name.unwrap_or_default();
        assert!(name.starts_with("taskcheck-pool"), "resumed on {name:?}");
        // A callback that blocks on another timer does not stop that timer.
        let source = CancellationTokenSource::new();
        let (sender, receiver) = std::sync::mpsc::channel();
        source
            .token()
            .register(move || {
                let inner = taskcheck::delay(Duration::from_millis(1), &CancellationToken::none());
                sender.send(inner.wait().is_ok()).unwrap();
            })
            .detach();
        source.cancel_after(Duration::from_millis(1)).unwrap();
        assert_eq!(receiver.recv_timeout(Duration::from_secs(60)), Ok(true));
    }
}

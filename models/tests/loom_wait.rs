#![cfg(loom)]
//! loom models of the classic .NET deadlock: `.Result` on the UI thread.
//!
//! If you know .NET, this is the bug:
//!
//! ```csharp
//! // On the UI thread:
//! var n = GetAsync().Result;        // blocks the UI thread...
//! async Task<int> GetAsync() {
//!     var x = await Task.Run(() => 1); // ...while this await captured the UI context,
//!     return x + 1;                    // so this line is posted to the blocked UI thread.
//! }
//! ```
//!
//! The UI thread waits for `GetAsync`, and `GetAsync` waits for the UI thread to run the
//! rest of it. Neither ever moves. taskcheck's default ([`WaitMode::FailFast`]) is to notice
//! the moment the deadlock is certain (the method's continuation is queued on the very
//! context whose only thread is blocked) and return [`WaitError::WouldDeadlock`] instead.
//!
//! The scenario, in every model: a thread named "ui-thread" owns a [`SingleThreadContext`]
//! named "ui" and a one-worker [`ThreadPool`]. Inside `ui.enter` (so "ui" is current, as on a
//! UI thread) it spawns the pool task (`Task.Run`), calls the async method with
//! [`taskcheck::start`] (an eager start, like calling a C# `async` method), and blocks on it
//! with `wait()` (`.Result`). Three loom threads: main (which only joins), ui-thread and the
//! worker.
//!
//! 1. **Fail fast** (`blocking_on_the_ui_thread_reports_the_deadlock`): whenever the
//!    method's `await` suspended, the wait returns `WouldDeadlock`, never hangs and never
//!    returns early, and its message names the context ("ui"), the blocked thread
//!    ("ui-thread"), the awaited task and the task stuck in the ui queue. The deadlock can
//!    become certain before the wait starts (the pool finished first) or while it sleeps;
//!    both are covered. When the pool task finished before the `await` even looked, the
//!    `await` does not suspend and the method completes synchronously: C# returns 2 there
//!    too, and so must taskcheck (no false alarm). The test asserts that loom saw both kinds
//!    of interleaving. Broken twin: a post to ui that does not wake the blocked wait leaves
//!    it asleep forever once the deadlock becomes certain after the wait began.
//! 2. **The fix** (`configure_await_false_fixes_the_deadlock`): the same code with
//!    `configure_await(false)` in the method returns 2 in every interleaving. Broken twin:
//!    a wake that arrives while the method is still in its first poll is forgotten, and the
//!    wait hangs.
//! 3. **No false alarm** (`waiting_for_pool_work_on_the_ui_thread_is_fine`): the ui thread
//!    may block on work that needs nothing from ui, even while that work posts unrelated
//!    jobs to ui (each post wakes the wait to look again) and awaits other pool work.
//! 4. **Faithful mode** (`faithful_mode_deadlocks_like_dotnet`): with
//!    [`WaitMode::Faithful`] the wait blocks exactly as .NET does, and loom reports the
//!    deadlock (every thread blocked). This is the bug model: the checker finds the bug.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as PollContext, Poll};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{Context, SingleThreadContext, TaskError, TaskId, ThreadPool, WaitError, WaitMode};
use taskcheck_models::{loom_expect_failure, loom_model};

/// The name of the thread that owns "ui" and blocks.
const UI_THREAD: &str = "ui-thread";

/// What one run of the scenario saw.
struct Attempt {
    /// What `method.wait()` returned.
    result: Result<i32, WaitError>,
    /// Whether the method's `await` suspended (the pool task was not complete yet).
    suspended: bool,
    /// The async method's task.
    method: TaskId,
}

/// Runs `body` on a thread named [`UI_THREAD`] and returns what it returns.
fn on_ui_thread<R: Send + 'static>(body: impl FnOnce() -> R + Send + 'static) -> R {
    thread::Builder::new()
        .name(UI_THREAD.to_owned())
        .spawn(body)
        .expect("loom starts the thread")
        .join()
        .unwrap()
}

/// The scenario (module docs): on the ui thread, `.Result` on an async method that awaits a
/// pool task with `configure_await(resume_on_ui)`. `configure_await(true)` is exactly what
/// a plain `.await` does.
fn ui_blocks_on_async_method(mode: WaitMode, resume_on_ui: bool) -> Attempt {
    let ui = SingleThreadContext::builder()
        .name("ui")
        .wait_mode(mode)
        .build();
    let pool = ThreadPool::new(1);
    let suspended = Arc::new(AtomicBool::new(false));

    let (result, method) = ui
        .enter(|| {
            let inner = pool.spawn(async { Ok::<_, TaskError>(1) });
            let method = taskcheck::start({
                let suspended = Arc::clone(&suspended);
                async move {
                    let awaited =
                        NoteSuspension::new(inner.configure_await(resume_on_ui), suspended);
                    Ok::<_, TaskError>(awaited.await? + 1)
                }
            });
            (method.wait(), method.id())
        })
        .expect("the ui thread owns ui");

    // The first poll ran on this thread, inside `start`: a Relaxed load sees its store.
    let suspended = suspended.load(Ordering::Relaxed);
    // Shut both down before the execution ends: the worker exits and is joined, and a
    // method still queued on ui is abandoned (faulted), so nothing is left behind.
    pool.shutdown();
    ui.shutdown();
    Attempt {
        result,
        suspended,
        method,
    }
}

// ---------------------------------------------------------------------------------------
// 1. Fail fast.

/// Checks one run of the bug under `WaitMode::FailFast`; returns whether it was reported.
fn fail_fast_model() -> bool {
    let attempt = on_ui_thread(|| ui_blocks_on_async_method(WaitMode::FailFast, true));
    if !attempt.suspended {
        // The pool task was already complete: the await ran synchronously, as in C#.
        assert_eq!(
            attempt
                .result
                .expect("an await that did not suspend needs nothing from ui"),
            2
        );
        return false;
    }
    let report = match attempt.result {
        Err(WaitError::WouldDeadlock(report)) => report,
        other => panic!(
            "the method's await suspended, so its continuation is queued on the blocked ui \
             thread, yet the wait returned {other:?} instead of WouldDeadlock"
        ),
    };
    let method = attempt.method.to_string();
    assert!(
        report.context().contains("'ui'"),
        "the report must name the context: {report}"
    );
    assert_eq!(
        report.thread(),
        UI_THREAD,
        "the report must name the blocked thread: {report}"
    );
    assert!(
        report.awaited().contains(&method),
        "the report must name the awaited task {method}: {report}"
    );
    assert!(
        report.stuck().contains(&method),
        "the report must name the task stuck in the ui queue (the method, {method}): {report}"
    );
    let message = report.to_string();
    for part in [
        report.context(),
        UI_THREAD,
        report.awaited(),
        report.stuck(),
    ] {
        assert!(
            message.contains(part),
            "the message must say {part:?}: {message}"
        );
    }
    assert!(
        message.contains("configure_await(false)"),
        "the message must say how to fix it: {message}"
    );
    true
}

#[test]
fn blocking_on_the_ui_thread_reports_the_deadlock() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Counted across executions (plain std atomics: they are not part of the model).
    let outcomes = std::sync::Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let seen = std::sync::Arc::clone(&outcomes);
    loom_model(
        "loom_wait::blocking_on_the_ui_thread_reports_the_deadlock",
        move || {
            let reported = fail_fast_model();
            seen[usize::from(reported)].fetch_add(1, Ordering::Relaxed);
        },
    );
    let [synchronous, reported] = &*outcomes;
    let (synchronous, reported) = (
        synchronous.load(Ordering::Relaxed),
        reported.load(Ordering::Relaxed),
    );
    println!(
        "        {reported} schedules reported WouldDeadlock; in {synchronous} the pool task \
         finished before the await, which then did not suspend"
    );
    assert!(
        reported > 0 && synchronous > 0,
        "loom should explore both a suspended await ({reported}) and a synchronous one \
         ({synchronous})"
    );
}

/// Broken twin: the ui thread's blocked wait is not woken when a task it depends on is
/// queued. When the pool task completes after the wait began, the method's continuation
/// lands in the ui queue but the wait never looks again: it sleeps forever instead of
/// reporting.
#[test]
fn unwoken_wait_hangs_instead_of_reporting() {
    loom_expect_failure(
        "loom_wait::unwoken_wait_hangs_instead_of_reporting",
        "unwoken_wait_hangs_instead_of_reporting",
        "deadlock; threads",
        || {
            with_knob(Knob::SkipBlockedWake, || {
                fail_fast_model();
            })
        },
    );
}

// ---------------------------------------------------------------------------------------
// 2. The fix: configure_await(false).

fn configure_await_false_model() {
    let attempt = on_ui_thread(|| ui_blocks_on_async_method(WaitMode::FailFast, false));
    match attempt.result {
        Ok(value) => assert_eq!(value, 2),
        Err(error) => panic!(
            "with configure_await(false) the method needs nothing from ui, yet the wait \
             failed (await suspended: {}): {error}",
            attempt.suspended
        ),
    }
}

#[test]
fn configure_await_false_fixes_the_deadlock() {
    loom_model(
        "loom_wait::configure_await_false_fixes_the_deadlock",
        configure_await_false_model,
    );
}

/// Broken twin: the pool task completes while the method is still inside its first poll
/// (after registering), the wake is forgotten, and the method is never polled again: the
/// ui thread waits forever.
#[test]
fn forgotten_wake_hangs_the_fixed_code() {
    loom_expect_failure(
        "loom_wait::forgotten_wake_hangs_the_fixed_code",
        "forgotten_wake_hangs_the_fixed_code",
        "deadlock; threads",
        || with_knob(Knob::ForgetWakeWhileRunning, configure_await_false_model),
    );
}

// ---------------------------------------------------------------------------------------
// 3. No false alarm.

/// The ui thread blocks on a pool task that awaits another pool task (so the dependency
/// chain is two spawned tasks, both on the pool); the inner one posts an unrelated job to
/// ui, which wakes the blocked wait to look again. Nothing in the chain is queued on ui, so
/// the wait must simply return the value.
fn no_false_alarm_model() {
    let value = on_ui_thread(|| {
        let ui = SingleThreadContext::new("ui");
        let pool = ThreadPool::new(1);
        let ui_context = ui.context();
        let ran = Arc::new(AtomicBool::new(false));

        let result = ui
            .enter(|| {
                let ran = Arc::clone(&ran);
                let outer = pool.spawn(async move {
                    let on_pool = Context::current().expect("a pool task runs on the pool");
                    let inner = on_pool.spawn(async move {
                        ui_context.post(move || ran.store(true, Ordering::Relaxed))?;
                        Ok::<_, TaskError>(1)
                    });
                    Ok::<_, TaskError>(inner.await? + 1)
                });
                outer.wait()
            })
            .expect("the ui thread owns ui");
        if let Err(error) = &result {
            panic!("a wait that needs nothing from ui failed: {error}");
        }
        // The unrelated job is still queued on ui; run it, as the message loop would.
        ui.run_until_idle().expect("the ui thread owns ui");
        assert!(ran.load(Ordering::Relaxed), "the job posted to ui ran");
        pool.shutdown();
        ui.shutdown();
        result
    });
    match value {
        Ok(value) => assert_eq!(value, 2),
        Err(error) => panic!("a wait that needs nothing from ui failed: {error}"),
    }
}

#[test]
fn waiting_for_pool_work_on_the_ui_thread_is_fine() {
    loom_model(
        "loom_wait::waiting_for_pool_work_on_the_ui_thread_is_fine",
        no_false_alarm_model,
    );
}

/// Broken on purpose: with `Knob::OverEagerDeadlockProof` the proof counts a task queued on
/// the *pool* as stuck, so the same harmless wait is reported as a deadlock. The model
/// above must catch that false alarm.
#[test]
fn over_eager_proof_raises_a_false_alarm() {
    loom_expect_failure(
        "loom_wait::over_eager_proof_raises_a_false_alarm",
        "over_eager_proof_raises_a_false_alarm",
        "a wait that needs nothing from ui failed",
        || with_knob(Knob::OverEagerDeadlockProof, no_false_alarm_model),
    );
}

// ---------------------------------------------------------------------------------------
// 4. Faithful mode: the bug, as .NET has it.

/// Broken on purpose: `WaitMode::Faithful` blocks like .NET, so in the interleavings where
/// the method's await suspends the ui thread and the (idle) worker are both blocked
/// forever. loom must report the deadlock.
#[test]
fn faithful_mode_deadlocks_like_dotnet() {
    loom_expect_failure(
        "loom_wait::faithful_mode_deadlocks_like_dotnet",
        "faithful_mode_deadlocks_like_dotnet",
        "deadlock; threads",
        || {
            let attempt = on_ui_thread(|| ui_blocks_on_async_method(WaitMode::Faithful, true));
            // Only the interleavings where the pool won the race get here.
            assert_eq!(attempt.result.expect("a synchronous await"), 2);
        },
    );
}

// ---------------------------------------------------------------------------------------
// Probe.

/// Records whether a future's poll ever returned `Pending` (the `await` suspended).
struct NoteSuspension<F> {
    future: F,
    suspended: Arc<AtomicBool>,
}

impl<F> NoteSuspension<F> {
    fn new(future: F, suspended: Arc<AtomicBool>) -> Self {
        NoteSuspension { future, suspended }
    }
}

impl<F: Future + Unpin> Future for NoteSuspension<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<F::Output> {
        let poll = Pin::new(&mut self.future).poll(cx);
        if poll.is_pending() {
            self.suspended.store(true, Ordering::Relaxed);
        }
        poll
    }
}

#![cfg(loom)]
//! loom models of context capture: where the code after an `await` runs.
//!
//! If you know .NET: on a UI thread, `var x = await SomethingAsync();` captures
//! `SynchronizationContext.Current`, and the rest of the method is posted back to the UI
//! thread, even though `SomethingAsync` finished on a thread-pool thread. That is what lets
//! the code after the `await` touch UI controls. `ConfigureAwait(false)` turns the capture
//! off: the rest of the method then runs wherever the awaited task completed (typically
//! inline on the pool thread that completed it), which is what library code wants.
//!
//! The scenario: the main thread owns a [`SingleThreadContext`] named "ui" and pumps it with
//! `block_on` (a message loop running one async handler); a one-worker [`ThreadPool`] runs the
//! awaited task. Two threads in all, main and the worker.
//!
//! 1. **Capture** (`await_resumes_on_the_captured_ui_context`): after a plain `await` of a
//!    pool task, the code runs on the ui context (`Context::current()` is ui) and on the ui
//!    owner thread, in every interleaving: whether the pool task finished before the `await`
//!    looked (no suspension, no hop) or after (the pool worker completes it and must *post*
//!    the continuation to ui instead of running it inline on itself). Broken twin: with
//!    capture ignored, the continuation runs inline on the pool worker.
//! 2. **`configure_await(false)`** (`configure_await_false_resumes_on_the_pool`): the code
//!    after the `await` does not run on ui; it runs inline on the pool worker that completed
//!    the task, with the pool as its current context. Broken twin: the same handler with a
//!    plain `await` (capturing ui) fails this model's check, so the check really
//!    distinguishes the two.
//!
//! In model 2 the pool task is held back until the handler has suspended (see
//! [`configure_await_model`]): an awaitable that is already complete never suspends and
//! never hops context, so without the gate the interleavings where the pool wins the race
//! would (correctly) stay on ui and the check would have nothing to say about them.

use loom::thread::{self, ThreadId};
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{
    Context, ContextId, SingleThreadContext, TaskCompletionSource, TaskError, ThreadPool,
};
use taskcheck_models::{loom_expect_failure, loom_model};

/// Where the code after an `await` ran.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RanOn {
    context: Option<ContextId>,
    thread: ThreadId,
}

impl RanOn {
    fn here() -> Self {
        RanOn {
            context: Context::current().map(|context| context.id()),
            thread: thread::current().id(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Capture.

/// A ui handler awaits a pool task; the code after the `await` must run on ui, on the ui
/// owner thread, and see the pool task's value.
fn capture_model() {
    let ui = SingleThreadContext::new("ui");
    let pool = ThreadPool::new(1);
    let ui_id = ui.context().id();
    let owner = thread::current().id();

    let pool_task = pool.spawn(async { Ok::<_, TaskError>(1) });
    let (value, after) = ui
        .block_on(async move {
            let value = pool_task.await?;
            Ok::<_, TaskError>((value, RanOn::here()))
        })
        .expect("the handler succeeds");

    assert_eq!(value, 1);
    assert_eq!(
        after.context,
        Some(ui_id),
        "the code after a plain await resumed off the ui context it captured"
    );
    assert_eq!(
        after.thread, owner,
        "the code after a plain await resumed off the ui owner thread"
    );
    // Shut down before the execution ends, so the worker thread exits (loom checks it).
    pool.shutdown();
    ui.shutdown();
}

#[test]
fn await_resumes_on_the_captured_ui_context() {
    loom_model(
        "loom_context::await_resumes_on_the_captured_ui_context",
        capture_model,
    );
}

/// Broken twin: awaits ignore the captured context and resume anywhere, so when the pool
/// worker completes the task it runs the ui handler's continuation inline, on itself.
#[test]
fn ignored_capture_resumes_off_the_ui_context() {
    loom_expect_failure(
        "loom_context::ignored_capture_resumes_off_the_ui_context",
        "ignored_capture_resumes_off_the_ui_context",
        "resumed off the ui context it captured",
        || with_knob(Knob::IgnoreCapture, capture_model),
    );
}

// ---------------------------------------------------------------------------------------
// 2. configure_await(false).

/// A ui handler awaits a pool task with `configure_await(continue_on_captured_context)`; the
/// model asserts the `configure_await(false)` behaviour: the code after the `await` runs
/// on the pool, on the worker thread, not on ui.
///
/// The pool task waits on a gate that the handler opens *after* it has suspended: it posts
/// the opening to ui, and ui runs posted work in order, after the handler's current step
/// returns. So the pool task always completes after the handler's continuation is
/// registered, and the completing worker is the one that resumes the handler.
fn configure_await_model(continue_on_captured_context: bool) {
    let ui = SingleThreadContext::new("ui");
    let pool = ThreadPool::new(1);
    let ui_context = ui.context();
    let pool_id = pool.context().id();
    let owner = thread::current().id();

    let gate = TaskCompletionSource::<()>::new();
    let gate_task = gate.task();
    let pool_task = pool.spawn(async move {
        gate_task.await?;
        Ok::<_, TaskError>(1)
    });
    let (value, after) = ui
        .block_on(async move {
            ui_context.post(move || gate.set_result(()).expect("the only completer"))?;
            let value = pool_task
                .configure_await(continue_on_captured_context)
                .await?;
            Ok::<_, TaskError>((value, RanOn::here()))
        })
        .expect("the handler succeeds");

    assert_eq!(value, 1);
    assert_eq!(
        after.context,
        Some(pool_id),
        "the code after configure_await(false) ran on {:?}, not inline on the pool worker \
         that completed the task",
        after.context
    );
    assert_ne!(
        after.thread, owner,
        "the code after configure_await(false) ran on the ui owner thread"
    );
    pool.shutdown();
    ui.shutdown();
}

#[test]
fn configure_await_false_resumes_on_the_pool() {
    loom_model(
        "loom_context::configure_await_false_resumes_on_the_pool",
        || configure_await_model(false),
    );
}

/// Broken twin: the same handler awaiting with capture on (a plain `await`) comes back to
/// ui, and the check above must say so.
#[test]
fn captured_await_fails_the_configure_await_false_check() {
    loom_expect_failure(
        "loom_context::captured_await_fails_the_configure_await_false_check",
        "captured_await_fails_the_configure_await_false_check",
        "not inline on the pool worker",
        || configure_await_model(true),
    );
}

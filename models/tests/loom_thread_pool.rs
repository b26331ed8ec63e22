#![cfg(loom)]
//! loom models of the thread pool (.NET's default `TaskScheduler` / `ThreadPool`).
//!
//! A pool worker with nothing to do goes to sleep; posting work must wake it. The pool's
//! owner can shut it down; work already given to it must still run, and work offered after
//! must be refused loudly rather than dropped. A task that panics must fault, like an
//! exception escaping a `Task.Run` lambda faults the task, and must not take the worker
//! thread down with it.
//!
//! Each model uses one worker (`ThreadPool::new(1)`), so two loom threads: main and the
//! worker. Every model shuts the pool down before the execution ends, so the worker exits
//! and is joined (loom checks that every thread finished).
//!
//! 1. **No lost wakeup** (`a_post_wakes_a_sleeping_worker`): main spawns a task onto the
//!    pool and blocks on it. Whether the worker is still starting, looking for work, or
//!    already asleep when the task is posted, it runs the task. Broken twin: a post that does
//!    not wake a sleeping worker leaves the task queued and main waiting forever.
//! 2. **Shutdown drains, then refuses** (`shutdown_drains_then_refuses`): a task posted
//!    before `shutdown` runs, and so does the task it spawns onto the pool while the pool is
//!    draining (a continuation of work already running is not "new work from outside");
//!    after `shutdown` returns, `try_spawn` fails with a `SpawnError` and `spawn` returns an
//!    already-faulted task carrying it. Broken twin: workers that exit at shutdown without
//!    draining skip the queued work.
//! 3. **A panic faults the task, not the worker** (`a_panic_faults_its_task_and_the_worker_survives`):
//!    a task that panics is faulted with the panic's message (`is_panic`), and the single
//!    worker goes on to run the next task. No runtime knob breaks this (panics are caught
//!    where the body is polled, with no switch to turn that off), so this model has no
//!    broken twin.
//! 4. **Sync-over-async on a one-worker pool** (`a_worker_blocked_in_wait_inlines_what_it_waits_for`):
//!    a pool task blocks (`.Result`) on a task queued behind it on the same pool, whose
//!    continuation is later posted back to the pool from outside, possibly after the wait
//!    began. With one worker that task can only run if the blocked worker runs it inline
//!    (.NET inlines a not-yet-started task into `Wait`, and grows its pool for the rest), so
//!    queueing that task must wake the waiting worker (it watches the tasks it depends on).
//!    Broken twins: a wait that never inlines, and a wait not woken by the task it watches,
//!    leave it waiting for good.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{Context, SpawnError, TaskCompletionSource, TaskError, TaskStatus, ThreadPool};
use taskcheck_models::{loom_expect_failure, loom_model};

// ---------------------------------------------------------------------------------------
// 1. A post wakes a sleeping worker.

fn post_wakes_worker_model() {
    let pool = ThreadPool::new(1);
    let task = pool.spawn(async { Ok::<_, TaskError>(1) });
    // Main is on no context: the wait simply blocks until a worker runs the task.
    assert_eq!(task.wait().expect("the task succeeds"), 1);
    pool.shutdown();
}

#[test]
fn a_post_wakes_a_sleeping_worker() {
    loom_model(
        "loom_thread_pool::a_post_wakes_a_sleeping_worker",
        post_wakes_worker_model,
    );
}

/// Broken twin: the post does not wake the worker that went to sleep before it, so the task
/// sits in the queue and main waits forever.
#[test]
fn skipped_wake_strands_the_task() {
    loom_expect_failure(
        "loom_thread_pool::skipped_wake_strands_the_task",
        "skipped_wake_strands_the_task",
        "deadlock; threads",
        || with_knob(Knob::PoolSkipWake, post_wakes_worker_model),
    );
}

// ---------------------------------------------------------------------------------------
// 2. Shutdown drains, then refuses.

fn shutdown_drains_model() {
    let pool = ThreadPool::new(1);
    let ran = Arc::new(AtomicUsize::new(0));

    let first = pool.spawn({
        let ran = Arc::clone(&ran);
        async move {
            ran.fetch_add(1, Ordering::Relaxed);
            // Spawned from a worker: the pool's own work, accepted even while it drains.
            let on_pool = Context::current().expect("a pool task runs on the pool");
            let second = on_pool.spawn(async move {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok::<_, TaskError>(())
            });
            Ok::<_, TaskError>(second)
        }
    });
    pool.shutdown();

    // `shutdown` joined the worker, so everything it did is visible here (Relaxed is enough
    // only because the join synchronises).
    assert_eq!(
        ran.load(Ordering::Relaxed),
        2,
        "shutdown must drain: the task posted before it, and the task that one spawned, \
         must both run (first: {:?})",
        first.status()
    );
    let second = first
        .outcome()
        .expect("the first task ran")
        .expect("the first task succeeded");
    assert_eq!(second.status(), TaskStatus::Succeeded);

    let refused = pool
        .try_spawn(async { Ok::<_, TaskError>(()) })
        .expect_err("a pool that was shut down refuses new work");
    assert!(
        refused.to_string().contains("shut down"),
        "the error says why: {refused}"
    );
    let late = pool.spawn(async { Ok::<_, TaskError>(()) });
    let error = late
        .outcome()
        .expect("a refused spawn gives an already-completed task")
        .expect_err("a refused spawn gives a faulted task");
    assert!(
        error.downcast_ref::<SpawnError>().is_some(),
        "the task faulted with the SpawnError: {error}"
    );
}

#[test]
fn shutdown_drains_then_refuses() {
    loom_model(
        "loom_thread_pool::shutdown_drains_then_refuses",
        shutdown_drains_model,
    );
}

/// Broken twin: the worker exits when it sees shutdown, leaving queued work behind.
#[test]
fn skipped_drain_loses_queued_work() {
    loom_expect_failure(
        "loom_thread_pool::skipped_drain_loses_queued_work",
        "skipped_drain_loses_queued_work",
        "shutdown must drain",
        || with_knob(Knob::PoolSkipDrain, shutdown_drains_model),
    );
}

// ---------------------------------------------------------------------------------------
// 3. A panic faults its task; the worker survives.

fn panic_model() {
    let pool = ThreadPool::new(1);
    let panicking = pool.spawn(async {
        if true {
            // `resume_unwind` is a panic that skips the panic hook, so the model's hundreds
            // of executions do not each print a "thread panicked" line.
            std::panic::resume_unwind(Box::new("boom"));
        }
        Ok::<u32, TaskError>(0)
    });
    let next = pool.spawn(async { Ok::<_, TaskError>(2) });

    let error = panicking
        .wait()
        .expect_err("a panicking task faults")
        .task_error()
        .cloned()
        .expect("the task's own error, not a deadlock report");
    assert!(
        error.is_faulted() && error.is_panic(),
        "faulted by the panic: {error:?}"
    );
    assert_eq!(error.panic_message(), Some("boom"));
    assert_eq!(
        next.wait()
            .expect("the worker survived the panic and ran the next task"),
        2
    );
    pool.shutdown();
}

#[test]
fn a_panic_faults_its_task_and_the_worker_survives() {
    loom_model(
        "loom_thread_pool::a_panic_faults_its_task_and_the_worker_survives",
        panic_model,
    );
}

// ---------------------------------------------------------------------------------------
// 4. A worker blocked in wait inlines the tasks it waits for.

fn blocked_worker_inlines_model() {
    let pool = ThreadPool::new(1);
    let gate = TaskCompletionSource::<u32>::new();
    let gate_task = gate.task();
    let on_pool = pool.context();
    let blocked = pool.spawn(async move {
        // Sync over async on the pool's only worker: `middle` is queued behind this very
        // task, and once it suspends on the gate its continuation is posted back to the
        // pool from outside (main opens the gate).
        let middle = on_pool.spawn(async move { Ok::<_, TaskError>(gate_task.await? + 1) });
        Ok::<_, TaskError>(middle.wait()? + 1)
    });
    gate.set_result(1).expect("the only completer");
    assert_eq!(
        blocked
            .wait()
            .expect("the blocked worker ran what it waits for inline"),
        3
    );
    pool.shutdown();
}

#[test]
fn a_worker_blocked_in_wait_inlines_what_it_waits_for() {
    loom_model(
        "loom_thread_pool::a_worker_blocked_in_wait_inlines_what_it_waits_for",
        blocked_worker_inlines_model,
    );
}

/// Broken twin: a wait that never inlines leaves the only worker waiting for work queued
/// behind itself.
#[test]
fn no_inlining_starves_a_blocked_worker() {
    loom_expect_failure(
        "loom_thread_pool::no_inlining_starves_a_blocked_worker",
        "no_inlining_starves_a_blocked_worker",
        "deadlock; threads",
        || with_knob(Knob::NoInlineInWait, blocked_worker_inlines_model),
    );
}

/// Broken twin: the waiting worker is not woken when a task it depends on is queued, so
/// the continuation posted from outside while it waits is never looked at.
#[test]
fn unwoken_wait_strands_a_blocked_worker() {
    loom_expect_failure(
        "loom_thread_pool::unwoken_wait_strands_a_blocked_worker",
        "unwoken_wait_strands_a_blocked_worker",
        "deadlock; threads",
        || with_knob(Knob::SkipBlockedWake, blocked_worker_inlines_model),
    );
}

//! Waiting without starving or burying: what a blocked wait may run inline, and the
//! corner cases of the deadlock proof.
//!
//! .NET lets `Wait()` run the awaited task inline if it has not started yet, and grows its
//! thread pool when workers block. taskcheck's pool has a fixed number of workers, so a
//! worker blocked in `wait()` runs inline the queued tasks the awaited task depends on —
//! and nothing else: running unrelated queued work on top of the waiting frame can bury
//! the very code that work is waiting for. On a single-thread context's own thread, a wait
//! inlines a task that has never started (as .NET does), but never a queued continuation:
//! that is the classic deadlock, still reported.
//!
//! These tests began as findings against an earlier runtime (a helping wait that ran any
//! queued job, a proof that followed only the last of several pending awaits, a foreign
//! executor's wake dropped with its context, a stray job left by `block_on`).

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context as PollContext, Poll};
use std::thread;
use std::time::Duration;

use taskcheck::{start, SingleThreadContext, TaskCompletionSource, TaskError, ThreadPool};
use taskcheck_tests::{on_thread, Gate, Latch};
use tokio_test::{assert_pending, task};

/// Two pool tasks hand off through a completion source while a third holds a worker. The
/// waiting worker must not run the unrelated task on top of its own waiting frame.
#[test]
fn a_waiting_worker_does_not_bury_its_own_continuation() {
    let pool = ThreadPool::with_name("handoff", 2);
    let (blocker_started, release_blocker) = (Latch::new(1), Gate::new());
    let blocker = pool.spawn({
        let (started, release) = (blocker_started.clone(), release_blocker.clone());
        async move {
            started.count_down();
            release.wait();
            Ok::<_, TaskError>(())
        }
    });
    blocker_started.wait();
    let external = TaskCompletionSource::<()>::new();
    let handoff = TaskCompletionSource::<()>::new();
    let handoff_task = handoff.task();
    let x_waiting = Latch::new(1);
    let x = pool.spawn({
        let (awaited, x_waiting) = (external.task(), x_waiting.clone());
        async move {
            x_waiting.count_down();
            awaited.wait().unwrap();
            handoff.set_result(()).unwrap();
            Ok::<_, TaskError>(())
        }
    });
    x_waiting.wait();
    // Y is queued while both workers are busy: X waits, the blocker holds the other.
    let y = pool.spawn(async move {
        handoff_task.wait().unwrap();
        Ok::<_, TaskError>(())
    });
    external.set_result(()).unwrap();
    release_blocker.open();
    blocker.wait().unwrap();
    // A watchdog, not a timing assertion: a hang here fails the test instead of CI.
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send((x.wait().is_ok(), y.wait().is_ok()));
    });
    let outcome = finished.recv_timeout(Duration::from_secs(60));
    if outcome.is_err() {
        // Deadlocked workers never exit: leave the pool rather than hang in its drop.
        std::mem::forget(pool);
    }
    assert_eq!(
        outcome.ok(),
        Some((true, true)),
        "X was buried under Y on the same worker"
    );
}

/// A worker blocked on a task queued behind it on a one-worker pool runs it inline.
#[test]
fn a_waiting_worker_inlines_the_chain_it_waits_for() {
    let pool = ThreadPool::with_name("solo", 1);
    let on_pool = pool.context();
    let outer = pool.spawn(async move {
        let leaf = on_pool.spawn(async { Ok::<_, TaskError>(20) });
        let middle = on_pool.spawn(async move { Ok::<_, TaskError>(leaf.await? + 1) });
        // Sync over async on the only worker: `middle` and, after it suspends, `leaf`
        // are queued behind this very task.
        Ok::<_, TaskError>(middle.wait().unwrap() * 2)
    });
    assert_eq!(outer.wait().unwrap(), 42);
}

/// .NET inlines a task that has not started into `Wait()`, even on the UI thread.
#[test]
fn the_owner_thread_inlines_a_task_that_never_started() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let value = ui
            .enter(|| ui.spawn(async { Ok::<_, TaskError>(5) }).wait())
            .unwrap();
        assert_eq!(value.unwrap(), 5);
    });
}

/// A hand-written `select`, polling `a` first.
struct Race<A, B>(A, B);

impl<T, A: Future<Output = T> + Unpin, B: Future<Output = T> + Unpin> Future for Race<A, B> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<T> {
        if let Poll::Ready(value) = Pin::new(&mut self.0).poll(cx) {
            return Poll::Ready(value);
        }
        Pin::new(&mut self.1).poll(cx)
    }
}

/// A method racing the network (which needs nothing from the ui) against a continuation
/// queued on the ui is not certain to deadlock: the network may still complete it. The
/// proof must follow every pending await, not only the last one polled. (Whether the
/// response arrives before or after the wait looks, the only right outcome is 2.)
#[test]
fn no_false_alarm_when_the_wait_can_complete_another_way() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let network = TaskCompletionSource::<u32>::new();
        let outcome = ui
            .enter(|| {
                // A ui task that has started and whose continuation is queued on the ui: a
                // wait there cannot inline it.
                let gate = TaskCompletionSource::<()>::new();
                let gate_task = gate.task();
                let from_ui = ui.spawn(async move {
                    gate_task.await?;
                    Ok::<_, TaskError>(1)
                });
                assert_eq!(ui.run_until_idle(), Ok(1), "from_ui suspended on the gate");
                on_thread("gatekeeper", || gate.set_result(()).unwrap());
                let method = start(Race(
                    network.task().configure_await(false),
                    from_ui.configure_await(false),
                ));
                thread::scope(|scope| {
                    scope.spawn(|| network.set_result(2).unwrap());
                    method.wait()
                })
            })
            .unwrap();
        match outcome {
            Ok(value) => assert_eq!(
                value, 2,
                "completed by the network, with no help from the ui"
            ),
            Err(error) => panic!("false alarm: {error}"),
        }
    });
}

/// An await polled by another executor while "ui" is current hops back to "ui" through a
/// queued wake. If the context is dropped first, the wake must still happen.
#[test]
fn a_foreign_await_is_woken_when_its_context_is_dropped() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let source = TaskCompletionSource::<u32>::new();
        let mut awaiting = task::spawn(source.task());
        ui.enter(|| assert_pending!(awaiting.poll())).unwrap();
        on_thread("completer", || source.set_result(3).unwrap());
        assert!(!awaiting.is_woken(), "the wake hops to ui first");
        drop(ui);
        assert!(awaiting.is_woken(), "the hop was dropped with the context");
    });
}

/// `block_on` wakes its pump without queuing anything.
#[test]
fn block_on_leaves_no_stray_job() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        assert_eq!(ui.block_on(async { Ok::<_, TaskError>(1) }).unwrap(), 1);
        assert_eq!(ui.run_until_idle(), Ok(0));
    });
}

/// The deadlock can become certain without anything being posted to the ui: here a pool
/// task suspends on a method whose continuation is already queued on the ui, possibly
/// after the ui thread began to wait. The wait watches the tasks it depends on, so it
/// looks again and reports (it used to sleep forever).
#[test]
fn a_deadlock_made_certain_by_a_suspension_elsewhere_is_reported() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let pool = ThreadPool::with_name("late", 1);
        let outcome = ui
            .enter(|| {
                let source = TaskCompletionSource::<()>::new();
                let signal = source.task();
                // An async method on the ui: its await captures the ui context.
                let method = start(async move {
                    signal.await?;
                    Ok::<_, TaskError>(1)
                });
                // Its continuation is now queued on the ui, which only this thread runs.
                on_thread("completer", || source.set_result(()).unwrap());
                let go = Gate::new();
                let outer = pool.spawn({
                    let go = go.clone();
                    async move {
                        go.wait();
                        method.await
                    }
                });
                // Let the pool task go on while (or before) this thread waits.
                let opener = thread::spawn(move || go.open());
                let outcome = outer.wait();
                opener.join().unwrap();
                outcome
            })
            .unwrap();
        let error = outcome.expect_err("the wait can never end");
        assert!(error.is_would_deadlock(), "{error}");
    });
}

/// The owner thread waiting outside `enter` (nothing is its current context) is still the
/// only thread that runs its context: a never-started task is inlined, and a queued
/// continuation is reported.
#[test]
fn the_owner_thread_is_recognised_outside_enter() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        assert_eq!(ui.spawn(async { Ok::<_, TaskError>(1) }).wait().unwrap(), 1);

        let source = TaskCompletionSource::<()>::new();
        let signal = source.task();
        let method = ui.spawn(async move {
            signal.await?;
            Ok::<_, TaskError>(2)
        });
        assert_eq!(
            ui.run_until_idle(),
            Ok(1),
            "the method suspended on the signal"
        );
        on_thread("completer", || source.set_result(()).unwrap());
        let error = method
            .wait()
            .expect_err("its continuation is queued on the ui");
        assert!(error.is_would_deadlock(), "{error}");
        // Running the queue, as the message loop would, finishes it.
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(method.wait().unwrap(), 2);
    });
}

/// A dedicated context that is shutting down still runs the continuations of the tasks it
/// drains (they are posted from its own thread).
#[test]
fn a_draining_dedicated_context_runs_its_own_continuations() {
    use taskcheck::ConfigureAwaitOptions;
    let ui = SingleThreadContext::spawn_thread("drained-ui");
    let task = ui.spawn(async {
        taskcheck::Task::completed()
            .configure_await_with(
                ConfigureAwaitOptions::FORCE_YIELDING
                    | ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT,
            )
            .await?;
        Ok::<_, TaskError>(3)
    });
    ui.shutdown();
    assert_eq!(task.wait().unwrap(), 3);
}

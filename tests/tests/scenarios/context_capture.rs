//! # Where the code after an `await` runs
//!
//! **.NET.** `await` captures `SynchronizationContext.Current` (or the current
//! `TaskScheduler`) when it suspends, and posts the rest of the method back to it: after
//! `await` in a UI handler you are on the UI thread again. `ConfigureAwait(false)`
//! captures nothing: the rest runs wherever the awaited task completed (inline on that
//! thread if it can, else the pool) — usually *not* the UI thread, but not guaranteed
//! either: if the task completes on the UI thread, the rest runs there. An awaitable that
//! is already complete never suspends, so it never hops; .NET 8's
//! `ConfigureAwaitOptions.ForceYielding` makes it yield anyway. None of this is special to
//! `Task`: any type with a `GetAwaiter()` following the awaiter pattern gets the same
//! capture, done by the compiler-generated code.
//!
//! **taskcheck.** Same rules, with the runtime doing the capture: a task body that
//! suspends on a `SingleThreadContext` resumes there (same thread, `Context::current()` is
//! it); `configure_await(false)` resumes inline on the completing thread; an
//! already-complete task is ready at the first poll with no wake and no job posted;
//! `FORCE_YIELDING` yields exactly once. A user type implementing `Awaitable` / `Awaiter`
//! (here `ManualTimer`, fired by hand from another thread) resumes on its captured context
//! exactly like `Task` — its `Continuation::resume` never runs the code inline.

use std::thread;

use taskcheck::{
    start, Awaitable, ConfigureAwaitOptions, Context, SingleThreadContext, Task,
    TaskCompletionSource, TaskError, TaskStatus, ThreadPool,
};
use taskcheck_tests::{
    on_thread, poll_once, Counter, CountingWaker, Log, ManualTimer, PollCounter, Whereabouts,
};
use tokio_test::{assert_pending, assert_ready, task};

/// Runs `f` on a fresh thread named `name` (a "completer": a timer, an I/O thread).
fn from_thread(name: &str, f: impl FnOnce() + Send) {
    on_thread(name, f);
}

/// A UI task suspends on a task that completes on another thread. The completion does not
/// run the rest of the task there: it posts it to "ui", and nothing runs until the UI pumps
/// — one job, on the UI thread, with "ui" current.
#[test]
fn after_an_await_the_rest_runs_on_the_captured_ui_context() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let source = TaskCompletionSource::<u32>::new();
        let ran_at = Log::new();
        let handler = ui.spawn({
            let (awaited, ran_at) = (source.task(), ran_at.clone());
            async move {
                ran_at.push(Whereabouts::here());
                let value = awaited.await?;
                ran_at.push(Whereabouts::here());
                Ok::<_, TaskError>(value)
            }
        });
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(ran_at.len(), 1);

        from_thread("completer", || source.set_result(5).unwrap());
        assert_eq!(ran_at.len(), 1, "nothing ran on the completing thread");
        assert_eq!(handler.status(), TaskStatus::Pending);

        assert_eq!(ui.run_until_idle(), Ok(1));
        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at[0], ran_at[1]);
        assert_eq!(ran_at[1].thread, thread::current().id());
        assert_eq!(ran_at[1].context, Some(ui.context().id()));
        assert_eq!(handler.outcome().unwrap().unwrap(), 5);
    });
}

/// On a pool the captured context is the pool: the rest runs on one of its workers, not
/// on the thread that completed the awaited task.
#[test]
fn on_a_pool_the_rest_runs_on_the_pool() {
    let pool = ThreadPool::with_name("capture", 2);
    let source = TaskCompletionSource::<u32>::new();
    let resumed = pool.spawn({
        let awaited = source.task();
        async move {
            awaited.await?;
            Ok::<_, TaskError>(Whereabouts::here())
        }
    });
    from_thread("completer", || source.set_result(5).unwrap());
    let ran_at = resumed.wait().unwrap();
    assert!(ran_at.thread_name_starts_with("capture-"), "{ran_at:?}");
    assert_eq!(ran_at.context, Some(pool.context().id()));
}

/// `configure_await(false)`: the UI task captured nothing, so its rest runs inline on the
/// thread that completed the awaited task, with no context current — and "ui" runs
/// nothing. From then on the task is off the context: a later plain await captures
/// nothing either (there is nothing current to capture) and resumes on *its* completer.
#[test]
fn configure_await_false_resumes_on_the_completing_thread() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let first = TaskCompletionSource::<u32>::new();
        let second = TaskCompletionSource::<u32>::new();
        let ran_at = Log::new();
        let handler = ui.spawn({
            let (first, second, ran_at) = (first.task(), second.task(), ran_at.clone());
            async move {
                let a = first.configure_await(false).await?;
                ran_at.push(Whereabouts::here());
                let b = second.await?;
                ran_at.push(Whereabouts::here());
                Ok::<_, TaskError>(a + b)
            }
        });
        assert_eq!(ui.run_until_idle(), Ok(1));

        from_thread("completer-1", || first.set_result(1).unwrap());
        from_thread("completer-2", || second.set_result(2).unwrap());

        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at[0].thread_name.as_deref(), Some("completer-1"));
        assert_eq!(ran_at[0].context, None);
        assert_eq!(ran_at[1].thread_name.as_deref(), Some("completer-2"));
        assert_eq!(ran_at[1].context, None);
        assert_eq!(handler.outcome().unwrap().unwrap(), 3);
        assert_eq!(ui.run_until_idle(), Ok(0));
    });
}

/// The .NET pitfall: `configure_await(false)` does not promise to leave the UI thread. When
/// the awaited task completes *on* the UI thread (here, in a posted job), the rest runs
/// inline right there, with "ui" current: two jobs ran, not three.
#[test]
fn configure_await_false_stays_on_the_ui_thread_when_completed_there() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let source = TaskCompletionSource::<u32>::new();
        let ran_at = Log::new();
        let handler = ui.spawn({
            let (awaited, ran_at) = (source.task(), ran_at.clone());
            async move {
                let value = awaited.configure_await(false).await?;
                ran_at.push(Whereabouts::here());
                Ok::<_, TaskError>(value)
            }
        });
        ui.post(move || source.set_result(9).unwrap()).unwrap();

        assert_eq!(ui.run_until_idle(), Ok(2));
        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at[0].thread, thread::current().id());
        assert_eq!(ran_at[0].context, Some(ui.context().id()));
        assert_eq!(handler.outcome().unwrap().unwrap(), 9);
    });
}

/// An already-complete task never suspends and never hops: a mock await is ready at its
/// first poll with no wake and no waker kept, even with "ui" current; a UI task awaiting it
/// is polled once, in one job; a pool task, once.
#[test]
fn an_already_complete_task_never_suspends_and_never_hops() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let done = Task::from_result(5);

        ui.enter(|| {
            let mut awaiting = task::spawn(done.clone());
            assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 5);
            assert!(!awaiting.is_woken());
            assert_eq!(awaiting.waker_ref_count(), 1);
        })
        .unwrap();
        assert_eq!(ui.run_until_idle(), Ok(0));

        let polls = Counter::new();
        // A UI task whose body is the await (a `Task` is the future that awaits it).
        let handler = ui.spawn(PollCounter::new(done.clone(), &polls));
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(polls.get(), 1);
        assert_eq!(handler.outcome().unwrap().unwrap(), 5);

        let pool = ThreadPool::with_name("no-hop", 2);
        let pool_polls = Counter::new();
        let on_pool = pool.spawn(PollCounter::new(
            async move {
                let before = Whereabouts::here();
                done.await?;
                Ok::<_, TaskError>((before, Whereabouts::here()))
            },
            &pool_polls,
        ));
        let (before, after) = on_pool.wait().unwrap();
        assert_eq!(before, after);
        assert_eq!(pool_polls.get(), 1);
    });
}

/// `FORCE_YIELDING` yields even when complete — exactly once: under a mock, one `Pending`
/// with one wake, then `Ready`; in a UI task, two polls in two jobs, both on "ui".
#[test]
fn force_yielding_yields_exactly_once() {
    let counting = CountingWaker::new();
    let waker = CountingWaker::waker(&counting);
    let mut forced =
        Task::from_result(5).configure_await_with(ConfigureAwaitOptions::FORCE_YIELDING);
    assert!(poll_once(&mut forced, &waker).is_pending());
    assert_eq!(counting.wakes(), 1);
    assert_eq!(assert_ready!(poll_once(&mut forced, &waker)).unwrap(), 5);
    assert_eq!(counting.wakes(), 1);

    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let polls = Counter::new();
        let ran_at = Log::new();
        let handler = ui.spawn(PollCounter::new(
            {
                let ran_at = ran_at.clone();
                async move {
                    ran_at.push(Whereabouts::here());
                    let value = Task::from_result(5)
                        .configure_await_with(
                            ConfigureAwaitOptions::FORCE_YIELDING
                                | ConfigureAwaitOptions::CONTINUE_ON_CAPTURED_CONTEXT,
                        )
                        .await?;
                    ran_at.push(Whereabouts::here());
                    Ok::<_, TaskError>(value)
                }
            },
            &polls,
        ));
        assert_eq!(ui.run_until_idle(), Ok(2));
        assert_eq!(polls.get(), 2);
        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at[0], ran_at[1]);
        assert_eq!(ran_at[1].context, Some(ui.context().id()));
        assert_eq!(handler.outcome().unwrap().unwrap(), 5);
    });
}

/// .NET 8's idiom to get off the UI thread: `await Task.CompletedTask.ConfigureAwait(
/// ForceYielding)` — yield, capturing nothing. The rest of the UI task runs on the default
/// pool; "ui" ran one job.
#[test]
fn force_yielding_without_capture_moves_the_rest_to_the_pool() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let handler = ui.spawn(async {
            Task::completed()
                .configure_await_with(ConfigureAwaitOptions::FORCE_YIELDING)
                .await?;
            Ok::<_, TaskError>(Whereabouts::here())
        });
        assert_eq!(ui.run_until_idle(), Ok(1));
        let ran_at = handler.wait().unwrap();
        assert_ne!(ran_at.thread, thread::current().id());
        assert_eq!(ran_at.context_name.as_deref(), Some("taskcheck-pool"));
    });
}

/// Even a foreign executor's await (a mock task polling a `Task` with "ui" current) honours
/// the capture: the completion posts a job to "ui" and the waker is woken only when "ui"
/// runs it.
#[test]
fn a_foreign_await_with_a_context_current_is_woken_through_it() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let source = TaskCompletionSource::<u32>::new();
        let mut awaiting = task::spawn(source.task());
        ui.enter(|| assert_pending!(awaiting.poll())).unwrap();

        from_thread("completer", || source.set_result(3).unwrap());
        assert!(!awaiting.is_woken());
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert!(awaiting.is_woken());
        assert_eq!(assert_ready!(awaiting.poll()).unwrap(), 3);
    });
}

/// A user-written awaitable resumes on its captured context exactly like `Task`: the
/// timer fires on its own thread, the UI task's rest is posted to "ui" (one registration,
/// nothing run on the timer thread), and one pump job finishes it on the UI thread.
#[test]
fn a_custom_awaitable_resumes_on_its_captured_context_like_a_task() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let timer = ManualTimer::<&'static str>::new();
        let ran_at = Log::new();
        let handler = ui.spawn({
            let (timer, ran_at) = (timer.clone(), ran_at.clone());
            async move {
                let tick = timer.await;
                ran_at.push(Whereabouts::here());
                Ok::<_, TaskError>(tick)
            }
        });
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(timer.registrations(), 1);

        from_thread("timer", || timer.fire("tick"));
        assert!(ran_at.is_empty(), "nothing ran on the timer thread");

        assert_eq!(ui.run_until_idle(), Ok(1));
        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at[0].thread, thread::current().id());
        assert_eq!(ran_at[0].context, Some(ui.context().id()));
        assert_eq!(handler.outcome().unwrap().unwrap(), "tick");
    });
}

/// The custom awaitable under a mock: pending, one registration, woken exactly once by
/// the fire, then ready; already fired, it is ready at the first poll and never
/// registers. With `configure_await(false)` in a UI task, its rest leaves "ui" for the
/// default pool (`resume` never runs the code inline on the timer thread).
#[test]
fn a_custom_awaitable_follows_the_await_protocol() {
    let timer = ManualTimer::<u32>::new();
    let counting = CountingWaker::new();
    let waker = CountingWaker::waker(&counting);
    let mut awaiting = timer.clone().configure_await(true);
    assert!(poll_once(&mut awaiting, &waker).is_pending());
    assert_eq!(timer.registrations(), 1);
    assert_eq!(counting.wakes(), 0);
    from_thread("timer", || timer.fire(7));
    assert_eq!(counting.wakes(), 1);
    assert_eq!(assert_ready!(poll_once(&mut awaiting, &waker)), 7);
    assert_eq!(timer.registrations(), 1);

    let fired = ManualTimer::<u32>::new();
    fired.fire(8);
    let mut awaiting = task::spawn(fired.clone().configure_await(true));
    assert_eq!(assert_ready!(awaiting.poll()), 8);
    assert_eq!(fired.registrations(), 0);

    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let timer = ManualTimer::<u32>::new();
        let handler = ui.spawn({
            let timer = timer.clone();
            async move {
                timer.configure_await(false).await;
                Ok::<_, TaskError>(Whereabouts::here())
            }
        });
        assert_eq!(ui.run_until_idle(), Ok(1));
        from_thread("timer", || timer.fire(9));
        let ran_at = handler.wait().unwrap();
        assert_ne!(ran_at.thread_name.as_deref(), Some("timer"));
        assert_eq!(ran_at.context_name.as_deref(), Some("taskcheck-pool"));
        assert_eq!(ui.run_until_idle(), Ok(0));
    });
}

/// `start` captures the caller's context: an async method called inside `ui.enter`
/// resumes on "ui"; called on a plain thread, it captured nothing.
#[test]
fn start_captures_the_callers_context() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let source = TaskCompletionSource::<u32>::new();
        let method = ui
            .enter(|| {
                let awaited = source.task();
                start(async move {
                    awaited.await?;
                    Ok::<_, TaskError>(Context::current().map(|c| c.id()))
                })
            })
            .unwrap();
        from_thread("completer", || source.set_result(1).unwrap());
        assert_eq!(method.status(), TaskStatus::Pending);
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(method.outcome().unwrap().unwrap(), Some(ui.context().id()));
    });
}

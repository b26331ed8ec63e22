//! # Async patterns and their traps, with their costs counted
//!
//! **.NET.** The seed articles collect small habits that change what an async method
//! costs, or when and where its errors surface: returning a task directly instead of
//! wrapping it in `async`/`await` (one task less, but argument errors then throw at the
//! call instead of landing in the task); awaiting one operation after another in a loop
//! instead of starting them all and awaiting `Task.WhenAll` (time: the sum instead of the
//! maximum); `Select(async x => await F(x))` instead of `Select(F)` (a state machine per
//! item for nothing); processing results as they complete (`Task.WhenEach`) instead of
//! per batch; doing synchronous work before the first `await` (it runs on the caller's
//! thread, inside the call); fire-and-forget that silently loses an exception; and
//! `async void`, whose exception the caller cannot catch.
//!
//! **taskcheck.** Each pattern is one test: a short story, the outcome, and its exact
//! costs. The tests crate has no counting allocator, so costs are counted in the runtime's
//! own units, all exact: **tasks** created (told apart by their ids), **suspensions** (the
//! `Pending` polls of a body, counted by [`PollCounter`]), **continuations** registered on
//! a task (`Task::registered_continuations`), **jobs** a single-thread context ran (the
//! return of `run_until_idle`), **timers** (`Clock::pending_timers`) and **time** on a
//! [`Clock::manual`], which moves only when the test advances it — no wall time anywhere.

use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::Duration;

use taskcheck::{
    spawn, start, start_void, when_all, when_each, CancellationToken, Clock, SingleThreadContext,
    Task, TaskCompletionSource, TaskError, TaskId, TaskStatus, UnhandledKind, UnhandledTaskError,
};
use taskcheck_tests::{on_thread, Boom, Counter, Latch, Log, PollCounter, Whereabouts};
use tokio_test::{assert_pending, task};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Pumps `ui` and moves `clock` forward one millisecond at a time until `done`; the jobs
/// the context ran.
fn pump_until(ui: &SingleThreadContext, clock: &Clock, done: impl Fn() -> bool) -> usize {
    let mut jobs = ui.run_until_idle().unwrap();
    while !done() {
        assert!(clock.now() < Duration::from_secs(1), "never finished");
        clock.advance(ms(1)).unwrap();
        jobs += ui.run_until_idle().unwrap();
    }
    jobs
}

/// Collects the reports a hook or handler gets, with where it ran.
fn collector() -> (
    Log<(UnhandledTaskError, Whereabouts)>,
    impl Fn(&UnhandledTaskError) + Send + Sync + 'static,
) {
    let log = Log::new();
    let hook = {
        let log = log.clone();
        move |report: &UnhandledTaskError| log.push((report.clone(), Whereabouts::here()))
    };
    (log, hook)
}

// ---------------------------------------------------------------------------------------
// 1. Returning the task directly, or wrapping it in an async block

/// The id must not be negative.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NegativeId(i64);

impl fmt::Display for NegativeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "id {} is negative", self.0)
    }
}

impl Error for NegativeId {}

/// The operation both versions return: a lookup spawned onto the current context. Every
/// task it creates is logged.
fn load(id: i64, created: &Log<Task<u32>>) -> Task<u32> {
    let task = spawn(async move { Ok(u32::try_from(id * 10).unwrap()) });
    created.push(task.clone());
    task
}

/// C#'s `Task<int> GetAsync(long id) { if (id < 0) throw …; return LoadAsync(id); }`: no
/// `async`, the task is passed through, and the validation fails at the call.
fn get_direct(id: i64, created: &Log<Task<u32>>) -> Result<Task<u32>, NegativeId> {
    if id < 0 {
        return Err(NegativeId(id));
    }
    Ok(load(id, created))
}

/// C#'s `async Task<int> GetAsync(long id) { if (id < 0) throw …; return await
/// LoadAsync(id); }`: the same work wrapped in a task of its own, which also holds the
/// validation's error.
fn get_wrapped(id: i64, created: &Log<Task<u32>>) -> Task<u32> {
    let created = created.clone();
    start(async move {
        if id < 0 {
            return Err(NegativeId(id).into());
        }
        load(id, &created).await
    })
}

/// A service method passes its inner task straight through, where a colleague wrapped it
/// in `start(async { … .await })` "to be safe". Both give the caller 70. The wrapper adds
/// a task and a continuation on the inner one; it costs no extra job, because the inner
/// task completes on the context the wrapper's await captured, so the wrapper resumes
/// inline in the inner task's job (as in .NET). And their errors surface differently: the
/// direct version's bad argument fails at the call, with no task at all; the wrapped
/// version returns a task that is already faulted (0 jobs run), so the caller sees the
/// error only when it awaits (or reads) the task.
#[test]
fn returning_a_task_directly_or_through_an_async_wrapper() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");

        let created = Log::new();
        let direct = ui.enter(|| get_direct(7, &created)).unwrap().unwrap();
        let inner = created.snapshot();
        assert_eq!(inner.len(), 1);
        assert_eq!(
            direct.id(),
            inner[0].id(),
            "the caller holds the inner task itself"
        );
        assert_eq!(inner[0].registered_continuations(), 0);
        let jobs = ui.run_until_idle().unwrap();
        assert_eq!((direct.outcome().unwrap().unwrap(), jobs), (70, 1));

        let created = Log::new();
        let wrapped = ui.enter(|| get_wrapped(7, &created)).unwrap();
        let inner = created.snapshot();
        assert_eq!(inner.len(), 1);
        assert_ne!(wrapped.id(), inner[0].id(), "one more task: the wrapper");
        assert_eq!(
            inner[0].registered_continuations(),
            1,
            "the wrapper's await"
        );
        let jobs = ui.run_until_idle().unwrap();
        assert_eq!(
            (wrapped.outcome().unwrap().unwrap(), jobs),
            (70, 1),
            "resumed inline"
        );

        // A bad argument.
        let created = Log::new();
        let refused = ui.enter(|| get_direct(-1, &created)).unwrap();
        assert_eq!(refused.unwrap_err(), NegativeId(-1), "failed at the call");
        assert!(created.is_empty(), "and created no task");

        let accepted = ui.enter(|| get_wrapped(-1, &created)).unwrap();
        assert_eq!(
            accepted.status(),
            TaskStatus::Faulted,
            "the call itself succeeded"
        );
        assert!(created.is_empty());
        assert_eq!(ui.run_until_idle().unwrap(), 0);
        let error = accepted.outcome().unwrap().unwrap_err();
        assert_eq!(error.downcast_ref::<NegativeId>(), Some(&NegativeId(-1)));
    })
}

// ---------------------------------------------------------------------------------------
// 2. Serial awaits in a loop, or all at once with when_all

/// Four downloads of 10, 20, 30 and 40 ms. Awaited one after another in a loop, each
/// starts when the previous one ended: the method suspends 4 times, the context runs 5
/// jobs, one timer is pending at a time, and it takes 10 + 20 + 30 + 40 = 100 ms. Started
/// together and awaited with `when_all`, it suspends once, runs 2 jobs, has 4 timers
/// pending at once, and takes max = 40 ms. Same result either way.
#[test]
fn serial_awaits_in_a_loop_or_when_all() {
    let lengths = [10, 20, 30, 40].map(ms);
    let total = |lengths: &[Duration]| lengths.iter().map(Duration::as_millis).sum::<u128>();

    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let none = CancellationToken::none();

        // Serial: each download is started when the previous one has finished.
        let clock = Clock::manual();
        let polls = Counter::new();
        let timers = Log::new();
        let serial = ui.spawn(PollCounter::new(
            {
                let (clock, timers, none) = (clock.clone(), timers.clone(), none.clone());
                async move {
                    let mut done = Vec::new();
                    for length in lengths {
                        let download = clock.delay(length, &none);
                        timers.push(clock.pending_timers());
                        download.await?;
                        done.push(length);
                    }
                    Ok::<_, TaskError>(done)
                }
            },
            &polls,
        ));
        let jobs = pump_until(&ui, &clock, || serial.is_completed());
        assert_eq!(total(&serial.outcome().unwrap().unwrap()), 100);
        assert_eq!(polls.get() - 1, 4, "suspensions");
        assert_eq!(jobs, 5);
        assert_eq!(timers.snapshot(), [1, 1, 1, 1], "one timer at a time");
        assert_eq!(clock.now(), ms(100), "the sum");

        // Together: all started, then one await.
        let clock = Clock::manual();
        let polls = Counter::new();
        let timers = Log::new();
        let together = ui.spawn(PollCounter::new(
            {
                let (clock, timers) = (clock.clone(), timers.clone());
                async move {
                    let downloads: Vec<Task<()>> = lengths
                        .iter()
                        .map(|&length| clock.delay(length, &none))
                        .collect();
                    timers.push(clock.pending_timers());
                    when_all(downloads).await?;
                    Ok::<_, TaskError>(lengths.to_vec())
                }
            },
            &polls,
        ));
        let jobs = pump_until(&ui, &clock, || together.is_completed());
        assert_eq!(total(&together.outcome().unwrap().unwrap()), 100);
        assert_eq!(polls.get() - 1, 1, "suspensions");
        assert_eq!(jobs, 2);
        assert_eq!(timers.snapshot(), [4], "four timers at once");
        assert_eq!(clock.now(), ms(40), "the maximum");
    })
}

// ---------------------------------------------------------------------------------------
// 3. An async closure per item, or the function itself

/// The price lookup: one task per item, spawned onto the current context; logs its id.
fn price(item: u32, created: &Log<Task<u32>>) -> Task<u32> {
    let task = spawn(async move { Ok(item * 3) });
    created.push(task.clone());
    task
}

fn ids(tasks: &[Task<u32>]) -> Vec<TaskId> {
    tasks.iter().map(Task::id).collect()
}

/// Three items priced with `.map(|item| start(async move { price(item).await }))` — C#'s
/// `items.Select(async x => await PriceAsync(x))` — and with `.map(price)` — the method
/// group `items.Select(PriceAsync)`. The results are the same. The async closure creates
/// 6 tasks instead of 3 (a wrapper per item) and registers 3 continuations (one per
/// wrapper, on its inner task); the context runs 3 jobs either way (each wrapper resumes
/// inline in its inner task's job).
#[test]
fn async_closures_per_item_or_the_function_itself() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let items = [1, 2, 3];

        let created = Log::new();
        let by_function: Vec<Task<u32>> = ui
            .enter(|| items.iter().map(|&item| price(item, &created)).collect())
            .unwrap();
        let inner = created.snapshot();
        assert_eq!(
            ids(&by_function),
            ids(&inner),
            "3 tasks: the ones price created"
        );
        let continuations: usize = inner.iter().map(Task::registered_continuations).sum();
        assert_eq!(continuations, 0);
        let all = when_all(by_function);
        assert_eq!(ui.run_until_idle().unwrap(), 3);
        assert_eq!(all.outcome().unwrap().unwrap(), [3, 6, 9]);

        let created = Log::new();
        let by_closure: Vec<Task<u32>> = ui
            .enter(|| {
                items
                    .iter()
                    .map(|&item| {
                        let created = created.clone();
                        start(async move { price(item, &created).await })
                    })
                    .collect()
            })
            .unwrap();
        let inner = created.snapshot();
        assert_eq!(inner.len(), 3);
        let inner_ids = ids(&inner);
        assert!(
            ids(&by_closure).iter().all(|id| !inner_ids.contains(id)),
            "6 tasks: 3 wrappers and the 3 price created"
        );
        let continuations: usize = inner.iter().map(Task::registered_continuations).sum();
        assert_eq!(continuations, 3, "one per wrapper, on its inner task");
        let all = when_all(by_closure);
        assert_eq!(
            ui.run_until_idle().unwrap(),
            3,
            "the wrappers resumed inline"
        );
        assert_eq!(all.outcome().unwrap().unwrap(), [3, 6, 9]);
    })
}

// ---------------------------------------------------------------------------------------
// 4. Each result as it completes, or the whole batch

/// Four thumbnails render; they finish in the order 2, 0, 3, 1. With `when_each` the
/// consumer is woken after every completion and handles each thumbnail at once: 4 wakes,
/// the first one shown after the first completion. With `when_all` it is woken once, after
/// the last, and shows nothing before: 1 wake. Same four results.
#[test]
fn each_as_it_completes_or_the_whole_batch() {
    let order = [2, 0, 3, 1];

    let sources: Vec<TaskCompletionSource<u32>> =
        (0..4).map(|_| TaskCompletionSource::new()).collect();
    let mut each = task::spawn(when_each(
        sources.iter().map(TaskCompletionSource::task),
        &CancellationToken::none(),
    ));
    let (mut wakes, mut shown, mut shown_after_first) = (0, Vec::new(), None);
    assert_pending!(each.poll_next());
    for (n, &index) in order.iter().enumerate() {
        sources[index].set_result(index as u32 * 100).unwrap();
        if each.is_woken() {
            wakes += 1;
        }
        while let std::task::Poll::Ready(Some(item)) = each.poll_next() {
            shown.push(item.unwrap().outcome().unwrap().unwrap());
            shown_after_first.get_or_insert(n + 1);
        }
    }
    assert_eq!(wakes, 4);
    assert_eq!(shown, [200, 0, 300, 100], "in completion order");
    assert_eq!(
        shown_after_first,
        Some(1),
        "the first was shown after 1 completion"
    );

    let sources: Vec<TaskCompletionSource<u32>> =
        (0..4).map(|_| TaskCompletionSource::new()).collect();
    let mut batch = task::spawn(when_all(sources.iter().map(TaskCompletionSource::task)));
    let (mut wakes, mut shown_after) = (0, None);
    assert_pending!(batch.poll());
    for (n, &index) in order.iter().enumerate() {
        sources[index].set_result(index as u32 * 100).unwrap();
        if batch.is_woken() {
            wakes += 1;
            let all = tokio_test::assert_ready!(batch.poll()).unwrap();
            assert_eq!(all, [0, 100, 200, 300], "in input order");
            shown_after = Some(n + 1);
        }
    }
    assert_eq!(wakes, 1);
    assert_eq!(
        shown_after,
        Some(4),
        "nothing shown before the last completion"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Work before the first await runs inside the call

/// An async method called on the UI thread parses its input (synchronous work) and then
/// awaits a read. The parsing runs before `start` returns, on the calling thread: the
/// caller is held up by it. What follows the await runs later, as one job of the context.
/// Moving the parsing after a `yield_now().await` makes `start` return at once and puts
/// the parsing in a job; a lazily spawned task (`ui.spawn`) runs nothing before it
/// returns.
#[test]
fn work_before_the_first_await_runs_inside_the_call() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let log: Log<(&str, Whereabouts)> = Log::new();
        let read = TaskCompletionSource::<u32>::new();

        let method = ui
            .enter(|| {
                let (log, read) = (log.clone(), read.task());
                start(async move {
                    log.push(("parse", Whereabouts::here()));
                    let value = read.await?;
                    log.push(("after the await", Whereabouts::here()));
                    Ok::<_, TaskError>(value)
                })
            })
            .unwrap();
        let events = log.snapshot();
        assert_eq!(
            events.len(),
            1,
            "start returned after the parsing, before the read"
        );
        assert_eq!(events[0].0, "parse");
        assert_eq!(events[0].1.thread_name.as_deref(), Some("ui"));
        read.set_result(4).unwrap();
        assert_eq!(log.len(), 1, "the continuation is queued to the ui");
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(method.outcome().unwrap().unwrap(), 4);
        let events = log.snapshot();
        assert_eq!(events[1].0, "after the await");
        assert_eq!(events[1].1.context_name.as_deref(), Some("ui"));

        // Hoisted out of the call: after a yield, the parsing is a job of its own.
        let parsed = Counter::new();
        let deferred = ui
            .enter(|| {
                let parsed = parsed.clone();
                start(async move {
                    taskcheck::yield_now().await;
                    parsed.bump();
                    Ok::<_, TaskError>(())
                })
            })
            .unwrap();
        assert_eq!(parsed.get(), 0, "start returned before the parsing");
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!(
            (parsed.get(), deferred.status()),
            (1, TaskStatus::Succeeded)
        );

        // Lazy: nothing runs before the first job.
        let parsed = Counter::new();
        let lazy = ui.spawn({
            let parsed = parsed.clone();
            async move {
                parsed.bump();
                Ok::<_, TaskError>(())
            }
        });
        assert_eq!(parsed.get(), 0);
        assert_eq!(ui.run_until_idle().unwrap(), 1);
        assert_eq!((parsed.get(), lazy.status()), (1, TaskStatus::Succeeded));
    })
}

// ---------------------------------------------------------------------------------------
// 6. Fire-and-forget that loses its error, or detach

/// "Send the audit record in the background." Three ways, each failing. A plain thread
/// whose `JoinHandle` is dropped: the error went into a `Result` nobody can read any more
/// — 0 reports. A future that is created and dropped without being polled: it never ran
/// at all, and neither its work nor its error happened — 0 reports. A task that is
/// `detach`ed: it runs, faults, and the context's unobserved-error hook gets the error
/// exactly once, naming the task and where it was started — 1 report.
#[test]
fn fire_and_forget_loses_the_error_unless_detached() {
    let ui = SingleThreadContext::new("ui");
    let (reports, hook) = collector();
    ui.context().set_unobserved_error_hook(hook);

    // A plain thread: the error is returned into a handle nobody joins.
    let finished = Latch::new(1);
    let handle = thread::spawn({
        let finished = finished.clone();
        move || -> Result<(), Boom> {
            finished.count_down();
            Err(Boom("audit (thread)"))
        }
    });
    drop(handle);
    finished.wait();

    // A future never polled: it does not run at all.
    let ran = Counter::new();
    let never_polled = {
        let ran = ran.clone();
        async move {
            ran.bump();
            Err::<(), _>(TaskError::from_error(Boom("audit (future)")))
        }
    };
    drop(never_polled);
    assert_eq!(ran.get(), 0);
    assert_eq!(ui.run_until_idle().unwrap(), 0);
    assert_eq!(reports.len(), 0, "both errors are gone");

    // Detached: accountable.
    let gate = TaskCompletionSource::<()>::new();
    let line = line!() + 1;
    let audit = ui.spawn({
        let gate = gate.task();
        async move {
            gate.await?;
            Err::<(), _>(TaskError::from_error(Boom("audit (task)")))
        }
    });
    let id = audit.id();
    audit.detach();
    assert_eq!(ui.run_until_idle().unwrap(), 1);
    assert_eq!(reports.len(), 0, "still running");
    gate.set_result(()).unwrap();
    assert_eq!(ui.run_until_idle().unwrap(), 1);
    let received = reports.snapshot();
    assert_eq!(received.len(), 1, "exactly once");
    let report = &received[0].0;
    assert_eq!(report.task(), id);
    assert_eq!(report.kind(), UnhandledKind::Unobserved);
    assert_eq!(
        report.error().downcast_ref::<Boom>(),
        Some(&Boom("audit (task)"))
    );
    assert_eq!(report.spawned_at().line(), line);
    println!("{report}");
    ui.run_until_idle().unwrap();
    assert_eq!(reports.len(), 1);
}

// ---------------------------------------------------------------------------------------
// 7. async void: the caller cannot catch it

/// A button's click handler is C#'s `async void OnClick()`: it has no task. Here it is a
/// `start_void` on the UI context. The caller wraps the call in a catch-all
/// (`catch_unwind`) and checks what it returns: nothing to catch, nothing returned — yet
/// the handler failed. The error goes to the UI context's error handler, which runs on
/// the UI thread when the context is pumped (1 job), and it is not also reported as
/// unobserved. With `start` instead, the caller holds a task and handles the error
/// itself.
#[test]
fn async_void_errors_go_to_the_context_not_the_caller() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let (handled, handler) = collector();
        let (unobserved, hook) = collector();
        ui.context().set_error_handler(handler);
        ui.context().set_unobserved_error_hook(hook);
        let load = TaskCompletionSource::<u32>::new();

        let caught = ui
            .enter(|| {
                let load = load.task();
                catch_unwind(AssertUnwindSafe(|| {
                    start_void(async move {
                        let _rows = load.await?;
                        Err(TaskError::from_error(Boom("click")))
                    })
                }))
            })
            .unwrap();
        assert!(caught.is_ok(), "nothing reached the caller");
        load.set_result(3).unwrap();
        assert_eq!(handled.len(), 0);
        // The resumption, then the error posted to the context.
        assert_eq!(ui.run_until_idle().unwrap(), 2);
        let received = handled.snapshot();
        assert_eq!(received.len(), 1);
        let (report, ran_at) = &received[0];
        assert_eq!(report.kind(), UnhandledKind::AsyncVoid);
        assert_eq!(report.error().downcast_ref::<Boom>(), Some(&Boom("click")));
        assert_eq!(ran_at.thread_name.as_deref(), Some("ui"));
        assert_eq!(ran_at.context_name.as_deref(), Some("ui"));
        assert!(unobserved.is_empty());
        println!("{report}");

        // With `start`, the caller keeps the task and handles the error.
        let load = TaskCompletionSource::<u32>::new();
        let click = ui
            .enter(|| {
                let load = load.task();
                start(async move {
                    let _rows = load.await?;
                    Err::<(), _>(TaskError::from_error(Boom("click")))
                })
            })
            .unwrap();
        load.set_result(3).unwrap();
        let handled_by_caller = ui
            .block_on(async move {
                Ok::<_, TaskError>(match click.await {
                    Err(error) => error.downcast_ref::<Boom>().cloned(),
                    Ok(()) => None,
                })
            })
            .unwrap();
        assert_eq!(handled_by_caller, Some(Boom("click")));
        assert_eq!(handled.len(), 1);
        assert!(unobserved.is_empty());
    })
}

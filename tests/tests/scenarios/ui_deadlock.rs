//! # Blocking on async code from the UI thread
//!
//! **.NET.** A button handler on the UI thread calls `GetJsonAsync(uri).Result`. Inside,
//! `await client.GetStringAsync(uri)` captured the UI `SynchronizationContext`. When the
//! download completes, the rest of `GetJsonAsync` is posted to the UI thread — which is
//! blocked in `.Result`, waiting for `GetJsonAsync` to finish. Neither can move: the window
//! freezes, forever, and nothing says why. The fixes: `ConfigureAwait(false)` on every
//! await in the library code (its continuations then need nothing from the UI thread), or
//! "async all the way": the handler awaits instead of blocking.
//!
//! **taskcheck.** The same program — `start(get_json(download))` on a thread that owns a
//! `SingleThreadContext` named "ui", then `.wait()` — does not freeze. As soon as the
//! deadlock is *certain* (the continuation the wait depends on is queued on "ui", behind the
//! wait), `wait` returns `WaitError::WouldDeadlock`, whose message names the context, the
//! blocked thread, the awaited task and the task stuck in the queue, and says how to fix
//! it. Nothing is lost: the stuck continuation stays queued and runs at the next pump. Both
//! .NET fixes work, a wait that needs nothing from the context is never reported, and
//! blocking on a pool worker works (the worker runs queued work while it waits).
//!
//! Every test plays the UI thread on a thread named "ui" (see `on_thread`), so the reports
//! name it; run with `-- --nocapture` to read them.

use std::thread;

use taskcheck::{
    start, Awaitable, SingleThreadContext, Task, TaskCompletionSource, TaskError, TaskStatus,
    ThreadPool,
};
use taskcheck_tests::{
    expect_would_deadlock, on_thread, Counter, Gate, Log, ManualTimer, Whereabouts,
};

/// `GetJsonAsync`: awaits the download (capturing the caller's context) and parses it.
async fn get_json(download: Task<String>) -> Result<usize, TaskError> {
    let body = download.await?;
    Ok(body.len())
}

/// `GetJsonAsync` written as library code should be: `ConfigureAwait(false)` on its await.
/// It records where its continuation ran.
async fn get_json_configured(
    download: Task<String>,
    ran_at: Log<Whereabouts>,
) -> Result<usize, TaskError> {
    let body = download.configure_await(false).await?;
    ran_at.push(Whereabouts::here());
    Ok(body.len())
}

/// A download on the "io" pool that completes when the test opens `network`.
fn download(io: &ThreadPool, network: &Gate) -> Task<String> {
    let network = network.clone();
    io.spawn(async move {
        network.wait();
        Ok("{\"answer\":42}".to_owned())
    })
}

const BODY_LEN: usize = "{\"answer\":42}".len();

/// The classic deadlock, reported instead of hung: the report names the context, the
/// thread, the awaited task and the stuck one, and the stuck continuation runs at the next
/// pump — exactly one job — and completes the method.
#[test]
fn result_on_the_ui_thread_over_a_captured_await_is_reported_not_hung() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let io = ThreadPool::with_name("io", 1);
        let network = Gate::new();
        let download = download(&io, &network);

        let (method, outcome) = ui
            .enter(|| {
                // The button handler calls the async method: its await captures "ui".
                let method = start(get_json(download));
                assert_eq!(method.status(), TaskStatus::Pending);
                // The download completes on "io"; the rest of get_json is posted to "ui".
                network.open();
                // `.Result` on the UI thread.
                let outcome = method.wait();
                (method, outcome)
            })
            .unwrap();
        let report = expect_would_deadlock(outcome);
        println!("{report}");

        let method_label = format!("task {}", method.id());
        assert!(report.context().contains("'ui'"), "{report:?}");
        assert!(report.context().contains(&ui.context().id().to_string()));
        assert_eq!(report.thread(), "ui");
        assert!(report.awaited().starts_with(&method_label), "{report:?}");
        // The method itself is stuck: its continuation waits in the queue, spawned here.
        assert!(report.stuck().starts_with(&method_label), "{report:?}");
        assert!(report.stuck().contains("ui_deadlock.rs"), "{report:?}");
        assert_eq!(report.chain(), [method_label]);
        let message = report.to_string();
        for needle in [
            "'ui'",
            "thread 'ui'",
            "configure_await(false)",
            "Await the task",
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from: {message}"
            );
        }

        // Nothing was lost: the next pump runs the continuation, and the method completes.
        assert_eq!(method.status(), TaskStatus::Pending);
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(method.outcome().unwrap().unwrap(), BODY_LEN);
    });
}

/// The stuck task can be deep in the chain: the handler waits on `outer`, which awaits
/// `inner`, which awaits the download. `inner`'s continuation is the one queued; the report
/// names it and the chain that leads to it. One pump job then finishes both (`outer`
/// resumes inline, already on "ui").
#[test]
fn the_report_follows_the_chain_to_the_stuck_task() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let io = ThreadPool::with_name("io", 1);
        let network = Gate::new();
        let download = download(&io, &network);

        let (outer, inner, outcome) = ui
            .enter(|| {
                let inner = start(get_json(download));
                let outer = start({
                    let inner = inner.clone();
                    async move { Ok::<_, TaskError>(inner.await? * 2) }
                });
                network.open();
                let outcome = outer.wait();
                (outer, inner, outcome)
            })
            .unwrap();
        let report = expect_would_deadlock(outcome);
        println!("{report}");

        let (outer_label, inner_label) = (
            format!("task {}", outer.id()),
            format!("task {}", inner.id()),
        );
        assert!(report.awaited().starts_with(&outer_label), "{report:?}");
        assert!(report.stuck().starts_with(&inner_label), "{report:?}");
        assert_eq!(report.chain(), [outer_label, inner_label]);

        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(inner.outcome().unwrap().unwrap(), BODY_LEN);
        assert_eq!(outer.outcome().unwrap().unwrap(), 2 * BODY_LEN);
    });
}

/// The library fix: `configure_await(false)` in `get_json`. Its continuation captures
/// nothing and runs inline on the "io" thread that completed the download, so the blocked
/// UI thread gets its value and "ui" never had anything to run.
#[test]
fn configure_await_false_in_the_library_fixes_it() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let io = ThreadPool::with_name("io", 1);
        let network = Gate::new();
        let download = download(&io, &network);
        let ran_at = Log::new();

        let value = ui
            .enter(|| {
                let method = start(get_json_configured(download, ran_at.clone()));
                network.open();
                method.wait()
            })
            .unwrap()
            .unwrap();

        assert_eq!(value, BODY_LEN);
        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at.len(), 1);
        assert_eq!(ran_at[0].thread_name.as_deref(), Some("io-0"));
        assert_eq!(ran_at[0].context_name.as_deref(), Some("io"));
        assert_eq!(ui.run_until_idle(), Ok(0));
    });
}

/// The fix must be on *every* await between the UI and the I/O: here the inner method uses
/// `configure_await(false)` but the outer one awaits it plainly, capturing "ui" — and the
/// outer one is reported stuck.
#[test]
fn configure_await_false_on_only_the_inner_await_is_not_enough() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let io = ThreadPool::with_name("io", 1);
        let network = Gate::new();
        let download = download(&io, &network);

        let (outer, outcome) = ui
            .enter(|| {
                let inner = start(get_json_configured(download, Log::new()));
                let outer = start(async move { Ok::<_, TaskError>(inner.await? + 1) });
                network.open();
                let outcome = outer.wait();
                (outer, outcome)
            })
            .unwrap();
        let report = expect_would_deadlock(outcome);
        println!("{report}");

        let outer_label = format!("task {}", outer.id());
        assert!(report.stuck().starts_with(&outer_label), "{report:?}");
        assert_eq!(report.chain(), [outer_label]);
        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(outer.outcome().unwrap().unwrap(), BODY_LEN + 1);
    });
}

/// The other fix, async all the way: the handler awaits the method instead of blocking.
/// The same `get_json` that deadlocked under `.wait()` now completes, and its continuation
/// ran on the UI thread, as captured.
#[test]
fn awaiting_instead_of_blocking_works() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let io = ThreadPool::with_name("io", 1);
        let network = Gate::new();
        let download = download(&io, &network);
        let ran_at = Log::new();

        let value = ui
            .block_on({
                let ran_at = ran_at.clone();
                async move {
                    let method = start(get_json(download));
                    network.open();
                    let value = method.await?;
                    ran_at.push(Whereabouts::here());
                    Ok(value)
                }
            })
            .unwrap();

        assert_eq!(value, BODY_LEN);
        let ran_at = ran_at.snapshot();
        assert_eq!(ran_at[0].thread, thread::current().id());
        assert_eq!(ran_at[0].context, Some(ui.context().id()));
    });
}

/// No false alarm: on the UI thread, waiting for work that needs nothing from "ui" works —
/// even while unrelated work sits in the "ui" queue and the awaited work posts more there
/// (each post wakes the wait to look again; it finds nothing of its own stuck). The queued
/// work runs at the next pump: two jobs.
#[test]
fn no_false_alarm_when_the_wait_needs_nothing_from_the_context() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let io = ThreadPool::with_name("io", 1);
        let network = Gate::new();
        let progress_reports = Counter::new();
        let download = {
            let (network, ui, progress_reports) =
                (network.clone(), ui.context(), progress_reports.clone());
            io.spawn(async move {
                network.wait();
                // A progress report posted to the UI while the UI thread is blocked.
                ui.post(move || {
                    progress_reports.bump();
                })
                .unwrap();
                Ok(7)
            })
        };
        let unrelated = ui.spawn(async { Ok::<_, TaskError>("unrelated") });

        let value = ui
            .enter(|| {
                network.open();
                download.wait()
            })
            .unwrap()
            .unwrap();

        assert_eq!(value, 7);
        assert_eq!(progress_reports.get(), 0);
        assert_eq!(unrelated.status(), TaskStatus::Pending);
        assert_eq!(ui.run_until_idle(), Ok(2));
        assert_eq!(progress_reports.get(), 1);
        assert_eq!(unrelated.outcome().unwrap().unwrap(), "unrelated");
    });
}

/// No false alarm either when the awaited method never suspended: its awaited task was
/// already complete, so it captured nothing and finished inside `start`.
#[test]
fn no_false_alarm_when_the_awaited_task_was_already_complete() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let value = ui
            .enter(|| start(get_json(Task::from_result("cached".to_owned()))).wait())
            .unwrap()
            .unwrap();
        assert_eq!(value, "cached".len());
        assert_eq!(ui.run_until_idle(), Ok(0));
    });
}

/// Blocking on a pool worker is not the UI deadlock: on a one-worker pool, a task that
/// queues another task on the same pool and blocks on it gets its value. The waiting worker
/// runs the queued task itself, on the same thread, instead of waiting for a worker that
/// does not exist (.NET inlines a task into `Wait` for the same reason).
#[test]
fn blocking_on_a_pool_worker_works_even_with_one_worker() {
    let pool = ThreadPool::with_name("solo", 1);
    let handle = pool.context();
    let outer = pool.spawn(async move {
        let waiting_at = Whereabouts::here();
        let inner = handle.spawn(async { Ok::<_, TaskError>(Whereabouts::here()) });
        let inner_ran_at = inner.wait()?;
        Ok::<_, TaskError>((waiting_at, inner_ran_at))
    });
    let (waiting_at, inner_ran_at) = outer.wait().unwrap();
    assert_eq!(inner_ran_at.thread, waiting_at.thread);
    assert_eq!(inner_ran_at.thread_name.as_deref(), Some("solo-0"));
}

/// A context with a dedicated thread (a real UI loop): a job on it — a button handler —
/// blocks on the method, the download completes from the network thread, and the handler
/// gets the same report, naming the loop's thread. Once the handler returns, the loop
/// runs the stuck continuation and the method completes.
#[test]
fn a_dedicated_ui_thread_gets_the_same_report() {
    let ui = SingleThreadContext::spawn_thread("ui-loop");
    let response = TaskCompletionSource::<String>::new();
    let download = response.task();
    let handler_waits = Gate::new();

    let handler = ui.spawn({
        let handler_waits = handler_waits.clone();
        async move {
            let method = start(get_json(download));
            handler_waits.open();
            let outcome = method.wait();
            Ok::<_, TaskError>((method, outcome))
        }
    });
    handler_waits.wait();
    // The network thread completes the download: the continuation is posted to "ui-loop".
    response.set_result("{}".to_owned()).unwrap();

    let (method, outcome) = handler.wait().unwrap();
    let report = expect_would_deadlock(outcome);
    println!("{report}");
    assert_eq!(report.thread(), "ui-loop");
    assert!(report.context().contains("'ui-loop'"), "{report:?}");
    assert!(report.stuck().starts_with(&format!("task {}", method.id())));

    assert_eq!(method.wait().unwrap(), 2);
}

/// The deadlock does not depend on the awaited thing being a `Task`: a user-written
/// awaitable (a timer fired by another thread) resumes on the captured "ui" context just
/// the same, so blocking on a method that awaits it is reported just the same.
#[test]
fn a_custom_awaitable_deadlocks_and_is_reported_the_same_way() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let timer = ManualTimer::<u32>::new();

        let (method, outcome) = ui
            .enter(|| {
                let method = start({
                    let timer = timer.clone();
                    async move { Ok::<_, TaskError>(timer.await + 1) }
                });
                assert_eq!(timer.registrations(), 1);
                thread::scope(|scope| {
                    scope.spawn(|| timer.fire(41));
                });
                let outcome = method.wait();
                (method, outcome)
            })
            .unwrap();
        let report = expect_would_deadlock(outcome);
        println!("{report}");
        assert!(report.stuck().starts_with(&format!("task {}", method.id())));

        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(method.outcome().unwrap().unwrap(), 42);

        // With configure_await(false) on the timer, the same wait just works.
        let value = ui
            .enter(|| {
                let timer = ManualTimer::<u32>::new();
                let method = start({
                    let timer = timer.clone();
                    async move { Ok::<_, TaskError>(timer.configure_await(false).await + 1) }
                });
                thread::scope(|scope| {
                    scope.spawn(|| timer.fire(41));
                });
                method.wait()
            })
            .unwrap()
            .unwrap();
        assert_eq!(value, 42);
        assert_eq!(ui.run_until_idle(), Ok(0));
    });
}

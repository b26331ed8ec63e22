//! # Cancellation: tokens ask, code decides
//!
//! **.NET.** A `CancellationToken` stops nothing by itself: the operation has to look at it
//! (`ThrowIfCancellationRequested`, a registration, passing it on to `Task.Delay` or an I/O
//! call). A body that never looks runs to completion, and a body that catches the
//! `OperationCanceledException` of an inner operation and carries on reports success
//! although cancellation was requested. `Task.Run(body, token)` ends Canceled only when the
//! body's `OperationCanceledException` carries *that* token (and the token was canceled);
//! any other cancellation faults it, and a token canceled before the start skips the body.
//! `WaitAsync(timeout, token)` gives up *waiting* — with a `TimeoutException`, or Canceled
//! — but the awaited task keeps running. "The caller's token or my own timeout" is a linked
//! source with `CancelAfter`.
//!
//! **taskcheck.** The same rules with Rust spellings: `TaskError::canceled_by(&token)` is
//! the `OperationCanceledException` with its token, `Task::run_with_token` is
//! `Task.Run(body, token)`, `wait_async_on` takes a [`Clock`] so a test moves time by hand
//! (`Clock::manual`, `advance`) instead of sleeping, and a timeout is a fault with a
//! `TimeoutError` (`TaskError::is_timeout`), not a cancellation. Whatever finishes a wait
//! or a delay first releases its timer and its token registration (`pending_timers` is
//! back to 0).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use taskcheck::{
    spawn, start, CancellationToken, CancellationTokenSource, Clock, SingleThreadContext, Task,
    TaskCompletionSource, TaskError, TaskStatus, ThreadPool, TimeoutError,
};
use taskcheck_tests::{on_thread, Boom, Counter, Gate, Log};

const AN_HOUR: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The error a task's blocking wait ended with.
fn error_of<T: fmt::Debug + Clone>(task: &Task<T>) -> TaskError {
    task.wait()
        .expect_err("the task did not succeed")
        .task_error()
        .expect("a task outcome, not a deadlock report")
        .clone()
}

// ---------------------------------------------------------------------------------------
// (a) A token does not stop work by itself.

/// A body started with a token that it never looks at: the token is canceled while the
/// body is in the middle of its work (awaiting a completion source that stands for it),
/// and the body finishes anyway — Succeeded, with its value. The same body checking the
/// token once its work is done ends Canceled: cancellation is cooperative.
#[test]
fn canceling_the_token_of_a_running_body_that_never_checks_it_changes_nothing() {
    for checks_the_token in [false, true] {
        let source = CancellationTokenSource::new();
        let token = source.token();
        let started = Gate::new();
        let work = TaskCompletionSource::<u32>::new();
        let task = Task::run_with_token(
            {
                let (started, work, token) = (started.clone(), work.task(), token.clone());
                async move {
                    started.open();
                    let value = work.await?;
                    if checks_the_token {
                        token.throw_if_cancellation_requested()?;
                    }
                    Ok::<_, TaskError>(value * 2)
                }
            },
            &token,
        );
        started.wait();

        source.cancel().unwrap();

        assert!(token.is_cancellation_requested());
        assert_eq!(
            task.status(),
            TaskStatus::Pending,
            "the body is still running"
        );
        work.set_result(21).unwrap();
        if checks_the_token {
            let error = error_of(&task);
            assert_eq!(task.status(), TaskStatus::Canceled);
            assert_eq!(error.cancellation_token(), Some(&token));
        } else {
            assert_eq!(task.wait().unwrap(), 42);
            assert_eq!(task.status(), TaskStatus::Succeeded);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (b) A swallowed cancellation looks like success.

/// A download that waits (a delay canceled by the token) and "handles" the error by
/// logging it and carrying on.
async fn download_swallowing(
    clock: Clock,
    token: CancellationToken,
    log: Log<String>,
) -> Result<&'static str, TaskError> {
    if let Err(error) = clock.delay(AN_HOUR, &token).await {
        log.push(format!("ignored: {error}"));
    }
    Ok("downloaded")
}

/// The same download propagating the error with `?`.
async fn download_propagating(
    clock: Clock,
    token: CancellationToken,
) -> Result<&'static str, TaskError> {
    clock.delay(AN_HOUR, &token).await?;
    Ok("downloaded")
}

/// On a UI thread, a download suspended on a delay is canceled through its token. The body
/// that catches the delay's cancellation and returns `Ok` ends **Succeeded** — its caller
/// cannot tell that nothing was downloaded. The body that propagates it with `?` ends
/// Canceled, carrying the token. Either way the canceled delay released its timer.
#[test]
fn a_swallowed_cancellation_makes_the_operation_look_successful() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let clock = Clock::manual();
        for propagates in [false, true] {
            let source = CancellationTokenSource::new();
            let token = source.token();
            let log = Log::new();
            let download = if propagates {
                ui.spawn(download_propagating(clock.clone(), token.clone()))
            } else {
                ui.spawn(download_swallowing(
                    clock.clone(),
                    token.clone(),
                    log.clone(),
                ))
            };
            assert_eq!(ui.run_until_idle(), Ok(1), "suspended on the delay");
            assert_eq!(clock.pending_timers(), 1);

            source.cancel().unwrap();

            assert_eq!(clock.pending_timers(), 0, "the delay released its timer");
            assert_eq!(ui.run_until_idle(), Ok(1), "the download's rest");
            if propagates {
                assert_eq!(download.status(), TaskStatus::Canceled);
                let error = download.outcome().unwrap().unwrap_err();
                assert_eq!(error.cancellation_token(), Some(&token));
                assert!(log.is_empty());
            } else {
                assert_eq!(download.status(), TaskStatus::Succeeded);
                assert_eq!(download.outcome().unwrap().unwrap(), "downloaded");
                assert!(
                    token.is_cancellation_requested(),
                    "although it was canceled"
                );
                let ignored = log.snapshot();
                assert_eq!(ignored.len(), 1);
                assert!(ignored[0].contains("canceled by"), "{ignored:?}");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// (c) Task::run_with_token, and plain spawns.

/// A token canceled before `Task::run_with_token` starts the body: the task ends Canceled,
/// carrying the token, and the body never ran.
#[test]
fn run_with_token_skips_the_body_when_the_token_is_canceled_before_the_start() {
    let source = CancellationTokenSource::new();
    source.cancel().unwrap();
    let token = source.token();
    let ran = Counter::new();

    let task = Task::run_with_token(
        {
            let ran = ran.clone();
            async move {
                ran.bump();
                Ok::<_, TaskError>(1)
            }
        },
        &token,
    );

    let error = error_of(&task);
    assert_eq!(task.status(), TaskStatus::Canceled);
    assert_eq!(error.cancellation_token(), Some(&token));
    assert_eq!(ran.get(), 0, "the body never ran");
}

/// The body runs, the token is canceled meanwhile, and the body returns
/// `TaskError::canceled_by(&token)` (here through `throw_if_cancellation_requested`):
/// Canceled.
#[test]
fn run_with_token_ends_canceled_when_the_body_returns_its_tokens_cancellation() {
    let source = CancellationTokenSource::new();
    let token = source.token();
    let (started, go) = (Gate::new(), TaskCompletionSource::<()>::new());
    let task = Task::run_with_token(
        {
            let (started, go, token) = (started.clone(), go.task(), token.clone());
            async move {
                started.open();
                go.await?;
                token.throw_if_cancellation_requested()?;
                Ok::<_, TaskError>(1)
            }
        },
        &token,
    );
    started.wait();

    source.cancel().unwrap();
    go.set_result(()).unwrap();

    let error = error_of(&task);
    assert_eq!(task.status(), TaskStatus::Canceled);
    assert!(!error.is_faulted());
    assert_eq!(error.cancellation_token(), Some(&token));
}

/// A body started with a token that ends with a cancellation that token did not request —
/// another source's, one without a token, or its own token's while that token was never
/// canceled — *faults* the task, as .NET does. The fault says what happened and what to
/// return instead.
#[test]
fn run_with_token_faults_a_cancellation_that_is_not_its_tokens() {
    let source = CancellationTokenSource::new();
    let token = source.token();
    let other = CancellationTokenSource::new();
    other.cancel().unwrap();
    let cases = [
        ("another token's", TaskError::canceled_by(&other.token())),
        ("without a token", TaskError::canceled()),
        (
            "its own token, not canceled",
            TaskError::canceled_by(&token),
        ),
    ];
    for (case, cancellation) in cases {
        let described = cancellation.to_string();
        let task = Task::run_with_token(async move { Err::<u32, _>(cancellation) }, &token);

        let error = error_of(&task);

        assert_eq!(task.status(), TaskStatus::Faulted, "{case}");
        assert!(error.is_faulted() && !error.is_canceled(), "{case}");
        let message = error.to_string();
        println!("{case}: {message}");
        assert!(
            message.contains(&task.id().to_string()),
            "{case}: {message}"
        );
        assert!(
            message.contains("was started with a cancellation token"),
            "{case}: {message}"
        );
        assert!(
            message.contains("that token did not request"),
            "{case}: {message}"
        );
        assert!(message.contains(&described), "{case}: {message}");
        assert!(
            message.contains("return `TaskError::canceled_by(&token)`"),
            "{case}: {message}"
        );
    }
}

/// Without a token there is no such check: a body returning `TaskError::canceled()` ends
/// Canceled, not Faulted, however it was started.
#[test]
fn a_plain_task_returning_canceled_ends_canceled_not_faulted() {
    let pool = ThreadPool::with_name("plain", 1);
    let ui = SingleThreadContext::spawn_thread("ui");
    let body = || async { Err::<u32, _>(TaskError::canceled()) };
    let tasks = [
        ("spawn", spawn(body())),
        ("start", start(body())),
        ("Task::run", Task::run(body())),
        ("ThreadPool::spawn", pool.spawn(body())),
        ("SingleThreadContext::spawn", ui.spawn(body())),
    ];
    for (how, task) in tasks {
        let error = error_of(&task);
        assert_eq!(task.status(), TaskStatus::Canceled, "{how}");
        assert!(!error.is_faulted(), "{how}");
        assert_eq!(error.cancellation_token(), None, "{how}");
    }
}

// ---------------------------------------------------------------------------------------
// (d) A timeout versus a cancellation of the *wait*.

/// The timeout elapses first (the manual clock is advanced to it): the wait faults with a
/// `TimeoutError` — not a cancellation — naming the task and the timeout; the awaited task
/// is still pending and later completes normally, which a new wait observes. The wait's
/// timer and token registration are gone: a later cancel changes nothing.
#[test]
fn a_timeout_faults_the_wait_and_leaves_the_task_running() {
    let clock = Clock::manual();
    let source = CancellationTokenSource::new();
    let work = TaskCompletionSource::<u32>::new();
    let task = work.task();
    let waited = task.wait_async_on(&clock, Some(ms(10)), &source.token());
    assert_eq!(clock.pending_timers(), 1);
    assert_eq!(clock.advance(ms(9)), Ok(0));
    assert_eq!(waited.status(), TaskStatus::Pending);

    assert_eq!(clock.advance(ms(1)), Ok(1));

    let error = waited.outcome().unwrap().unwrap_err();
    assert_eq!(waited.status(), TaskStatus::Faulted);
    assert!(error.is_timeout() && !error.is_canceled());
    let timeout = error.downcast_ref::<TimeoutError>().unwrap();
    assert_eq!((timeout.task(), timeout.after()), (task.id(), ms(10)));
    println!("{error}");
    assert!(
        error.to_string().contains("only stopped the waiting"),
        "{error}"
    );
    assert_eq!(task.status(), TaskStatus::Pending, "the work goes on");
    assert_eq!(clock.pending_timers(), 0);

    source.cancel().unwrap();
    work.set_result(7).unwrap();

    assert_eq!(task.wait().unwrap(), 7);
    assert!(
        waited.outcome().unwrap().unwrap_err().is_timeout(),
        "unchanged"
    );
    let again = task.wait_async_on(&clock, Some(ms(10)), &CancellationToken::none());
    assert_eq!(again.wait().unwrap(), 7);
}

/// The token is canceled first: the wait ends Canceled, carrying that token; the timer is
/// released at once; the awaited task is untouched and completes later.
#[test]
fn a_canceled_token_cancels_the_wait_and_leaves_the_task_running() {
    let clock = Clock::manual();
    let source = CancellationTokenSource::new();
    let token = source.token();
    let work = TaskCompletionSource::<u32>::new();
    let task = work.task();
    let waited = task.wait_async_on(&clock, Some(ms(10)), &token);

    source.cancel().unwrap();

    let error = waited.outcome().unwrap().unwrap_err();
    assert_eq!(waited.status(), TaskStatus::Canceled);
    assert!(!error.is_timeout());
    assert_eq!(error.cancellation_token(), Some(&token));
    assert_eq!(clock.pending_timers(), 0, "the timer was released");
    assert_eq!(clock.advance(ms(10)), Ok(0));
    assert_eq!(task.status(), TaskStatus::Pending);
    work.set_result(7).unwrap();
    assert_eq!(task.wait().unwrap(), 7);
    assert_eq!(waited.status(), TaskStatus::Canceled, "unchanged");
}

/// The task completes first: the wait has the task's outcome — its value, its fault, or
/// its cancellation — and neither the timer nor the token changes it afterwards.
#[test]
fn completion_first_gives_the_tasks_own_outcome() {
    for ending in ["value", "fault", "cancellation"] {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        let work = TaskCompletionSource::<u32>::new();
        let waited = work
            .task()
            .wait_async_on(&clock, Some(ms(10)), &source.token());

        match ending {
            "value" => work.set_result(5).unwrap(),
            "fault" => work.set_exception(Boom("disk full")).unwrap(),
            _ => work.set_canceled().unwrap(),
        }

        assert_eq!(
            clock.pending_timers(),
            0,
            "{ending}: the timer was released"
        );
        source.cancel().unwrap();
        assert_eq!(clock.advance(ms(10)), Ok(0));
        let outcome = waited.outcome().expect("complete with the task");
        match ending {
            "value" => assert_eq!(outcome.unwrap(), 5),
            "fault" => {
                let error = outcome.unwrap_err();
                assert_eq!(error.downcast_ref::<Boom>(), Some(&Boom("disk full")));
                assert!(!error.is_timeout());
            }
            _ => {
                let error = outcome.unwrap_err();
                assert!(error.is_canceled());
                assert_eq!(
                    error.cancellation_token(),
                    None,
                    "the task's, not the wait's"
                );
            }
        }
        assert_eq!(waited.status(), work.task().status(), "{ending}");
    }
}

/// The usual shape in a body: await the wait, and tell a timeout from the task's own
/// outcome with `is_timeout`. On a UI thread, the timeout's completion resumes the body
/// there, one job.
#[test]
fn a_body_awaiting_a_wait_tells_a_timeout_apart() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        let clock = Clock::manual();
        let work = TaskCompletionSource::<u32>::new();
        let handler = ui.spawn({
            let (task, clock) = (work.task(), clock.clone());
            async move {
                match task
                    .wait_async_on(&clock, Some(ms(500)), &CancellationToken::none())
                    .await
                {
                    Ok(value) => Ok(format!("got {value}")),
                    Err(error) if error.is_timeout() => Ok("still busy, try later".to_owned()),
                    Err(error) => Err(error),
                }
            }
        });
        assert_eq!(ui.run_until_idle(), Ok(1));

        assert_eq!(clock.advance(ms(500)), Ok(1));

        assert_eq!(ui.run_until_idle(), Ok(1));
        assert_eq!(handler.outcome().unwrap().unwrap(), "still busy, try later");
        assert_eq!(work.task().status(), TaskStatus::Pending);
        work.set_result(1).unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// (e) "The caller's token, or my own timeout": a linked source.

/// The operation ran out of its own time budget.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimedOut(Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the fetch took longer than {:?}", self.0)
    }
}

impl Error for TimedOut {}

/// A fetch that takes `work` on `clock` and gives up when the caller cancels or its own
/// `timeout` elapses, whichever comes first: one linked source, canceled by the caller's
/// token or by its own `cancel_after`. After the fact, the caller's token tells the two
/// apart. The linked source is dropped when the body ends: that stops its timer and
/// unregisters it from the caller's token.
async fn fetch(
    clock: Clock,
    caller: CancellationToken,
    work: Duration,
    timeout: Duration,
) -> Result<&'static str, TaskError> {
    let budget =
        CancellationTokenSource::linked_with_clock(std::slice::from_ref(&caller), clock.clone());
    budget.cancel_after(timeout)?;
    match clock.delay(work, &budget.token()).await {
        Ok(()) => Ok("fetched"),
        Err(error) if error.is_canceled() && caller.is_cancellation_requested() => {
            Err(TaskError::canceled_by(&caller))
        }
        Err(error) if error.is_canceled() => Err(TimedOut(timeout).into()),
        Err(error) => Err(error),
    }
}

/// On a UI thread: the caller cancels (the linked source is canceled inside the caller's
/// cancel, so the fetch's rest is already queued when `cancel` returns) → Canceled with the
/// caller's token; the budget elapses first → Faulted with `TimedOut`, the caller's token
/// untouched; the work finishes first → "fetched". In every case, once the body ended, no
/// timer is left on the clock.
#[test]
fn either_the_callers_token_or_the_own_timeout_cancels_the_operation() {
    on_thread("ui", || {
        let ui = SingleThreadContext::new("ui");
        for case in ["caller cancels", "timeout", "completes"] {
            let clock = Clock::manual();
            let caller = CancellationTokenSource::new();
            let work = if case == "completes" { ms(50) } else { AN_HOUR };
            let fetching = ui.spawn(fetch(clock.clone(), caller.token(), work, ms(100)));
            assert_eq!(ui.run_until_idle(), Ok(1), "{case}");
            assert_eq!(clock.pending_timers(), 2, "{case}: the budget and the work");

            match case {
                "caller cancels" => caller.cancel().unwrap(),
                "timeout" => assert_eq!(clock.advance(ms(100)), Ok(1)),
                _ => assert_eq!(clock.advance(ms(50)), Ok(1)),
            }
            assert_eq!(ui.run_until_idle(), Ok(1), "{case}: the fetch's rest");

            assert_eq!(
                clock.pending_timers(),
                0,
                "{case}: nothing left on the clock"
            );
            let outcome = fetching.outcome().expect("complete");
            match case {
                "caller cancels" => {
                    let error = outcome.unwrap_err();
                    assert!(error.is_canceled());
                    assert_eq!(error.cancellation_token(), Some(&caller.token()));
                }
                "timeout" => {
                    let error = outcome.unwrap_err();
                    assert!(error.is_faulted());
                    assert_eq!(error.downcast_ref::<TimedOut>(), Some(&TimedOut(ms(100))));
                    assert!(
                        !caller.is_cancellation_requested(),
                        "the caller was not asked"
                    );
                }
                // The budget's timer (due at 100 ms) is gone: the body dropped the source.
                _ => assert_eq!(outcome.unwrap(), "fetched"),
            }
        }
    });
}

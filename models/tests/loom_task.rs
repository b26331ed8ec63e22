#![cfg(loom)]
//! loom models of `Task<T>` and `TaskCompletionSource<T>`: completing a task races
//! everything that looks at it.
//!
//! If you know .NET, these are the guarantees you rely on every time you write
//! `await tcs.Task` while another thread calls `tcs.SetResult(x)`:
//!
//! 1. **No lost wakeup** (`completion_races_registration`,
//!    `completion_races_a_foreign_awaiter`). `await` checks "is it complete?", then registers
//!    its continuation. If the completer slips in between and the registration is lost, the
//!    awaiting code never resumes: an `async` method that hangs forever with nothing on any
//!    stack. The models race `set_result` against an `await` and check that the code after
//!    the `await` runs exactly once, with the value. The first awaits inside a taskcheck task
//!    (the runtime's own waker), the second from a foreign executor (a minimal `block_on`
//!    below, like awaiting a `Task` from code that is not a taskcheck task).
//! 2. **Exactly one completer wins** (`racing_try_set_result_has_one_winner`).
//!    `TrySetResult` from two threads: exactly one returns `true`, the task holds the winner's
//!    value, and the loser returns only once the task is observably complete (so code after a
//!    losing `TrySetResult` can read `task.IsCompleted == true` and rely on it).
//! 3. **Every awaiter sees the same outcome** (`every_awaiter_sees_the_same_outcome`). A task
//!    awaited at once by an `await` inside a task, a blocking wait on another thread and a
//!    foreign executor on a third: all three resume, all with the same value.
//! 4. **`SetResult` twice is an error, not a silent overwrite**
//!    (`set_result_on_a_completed_source_is_an_error`). .NET throws
//!    `InvalidOperationException`; taskcheck returns a `CompletionError` whose message says what
//!    to do instead (use `try_set_*` where completers race).
//!
//! Each property has a broken twin: the same model with one of the runtime's deliberate bugs
//! switched on (`taskcheck::knobs`), which loom must catch. A twin that passed would mean the
//! model does not check what it claims to.
//!
//! Counters are loom atomics read with `Relaxed` after a `wait()` or a `join()` on purpose:
//! loom then also checks that completing a task publishes what its body wrote (a `Relaxed`
//! load can only see the body's store if the runtime's completion synchronises with the
//! waiter, as .NET's memory model promises for `Task` completion).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as PollContext, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{TaskCompletionSource, TaskError, TaskStatus};
use taskcheck_models::{loom_expect_failure, loom_model};

// ---------------------------------------------------------------------------------------
// 1. Completion racing continuation registration.

/// A completer thread calls `set_result(7)` while the main thread runs an `async` method
/// (started eagerly, as calling it in C# does) that awaits the source's task. Whichever
/// comes first, the code after the `await` runs exactly once and sees 7.
///
/// Two interleavings matter: the completion lands before the `await` looks (no suspension),
/// or after the continuation is registered (the completer resumes the method, inline on its
/// own thread since nothing was captured), and, in between, while the method is still inside
/// the poll that registered (the wake must be remembered and the method polled again).
fn completion_races_registration_model() {
    let source = TaskCompletionSource::<u32>::new();
    let task = source.task();
    let completer = thread::spawn(move || source.set_result(7).expect("the only completer"));

    let resumed = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let method = taskcheck::start(CountPolls::new(Arc::clone(&polls), {
        let resumed = Arc::clone(&resumed);
        async move {
            let value = task.await?;
            resumed.fetch_add(1, Ordering::Relaxed);
            Ok::<_, TaskError>(value)
        }
    }));

    // The main thread has no context: a blocking wait simply blocks until the method ends.
    assert_eq!(method.wait().expect("the method succeeds"), 7);
    completer.join().unwrap();
    assert_eq!(
        resumed.load(Ordering::Relaxed),
        1,
        "the code after the await must run exactly once"
    );
    let polls = polls.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&polls),
        "the method was polled {polls} times; one poll per suspension plus one is the most"
    );
}

#[test]
fn completion_races_registration() {
    loom_model(
        "loom_task::completion_races_registration",
        completion_races_registration_model,
    );
}

/// Broken twin: registration checks for completion outside the lock it registers under, so
/// a completion in between loses the continuation and the method never resumes. The main
/// thread then waits forever: loom reports the deadlock.
#[test]
fn racy_register_loses_the_wakeup() {
    loom_expect_failure(
        "loom_task::racy_register_loses_the_wakeup",
        "racy_register_loses_the_wakeup",
        "deadlock",
        || with_knob(Knob::RacyRegister, completion_races_registration_model),
    );
}

/// Broken twin: a wake that arrives while the task is being polled (the completion landed
/// after the `await` registered but before the poll returned) is dropped instead of
/// remembered, so the method is left suspended with its continuation already spent.
#[test]
fn forgotten_wake_while_running_loses_the_wakeup() {
    loom_expect_failure(
        "loom_task::forgotten_wake_while_running_loses_the_wakeup",
        "forgotten_wake_while_running_loses_the_wakeup",
        "deadlock",
        || {
            with_knob(
                Knob::ForgetWakeWhileRunning,
                completion_races_registration_model,
            )
        },
    );
}

/// The same race, awaited from a foreign executor ([`block_on`]) rather than a
/// taskcheck task: the continuation is then just the executor's waker. The waker must fire
/// at most once (a continuation resumes once) and the await must end with the value.
fn completion_races_a_foreign_awaiter_model() {
    let source = TaskCompletionSource::<u32>::new();
    let task = source.task();
    let completer = thread::spawn(move || source.set_result(7).expect("the only completer"));

    let wakes = Arc::new(AtomicUsize::new(0));
    let outcome = block_on(CountWakes::new(Arc::clone(&wakes), task));
    completer.join().unwrap();

    assert_eq!(outcome.expect("the task succeeds"), 7);
    let wakes = wakes.load(Ordering::Relaxed);
    assert!(
        wakes <= 1,
        "the continuation was resumed {wakes} times; it must resume once"
    );
}

#[test]
fn completion_races_a_foreign_awaiter() {
    loom_model(
        "loom_task::completion_races_a_foreign_awaiter",
        completion_races_a_foreign_awaiter_model,
    );
}

/// Broken twin of the foreign-executor race: the lost registration leaves `block_on` parked
/// forever.
#[test]
fn racy_register_loses_a_foreign_wakeup() {
    loom_expect_failure(
        "loom_task::racy_register_loses_a_foreign_wakeup",
        "racy_register_loses_a_foreign_wakeup",
        "deadlock",
        || with_knob(Knob::RacyRegister, completion_races_a_foreign_awaiter_model),
    );
}

// ---------------------------------------------------------------------------------------
// 2. Racing try_set_result.

/// Two threads race `try_set_result(1)` and `try_set_result(2)`. Exactly one wins; each,
/// winner or loser, sees the task complete the moment its call returns; the task holds the
/// winner's value.
fn racing_try_set_result_model() {
    let source = Arc::new(TaskCompletionSource::<u32>::new());
    let other = {
        let source = Arc::clone(&source);
        thread::spawn(move || {
            let won = source.try_set_result(2);
            assert!(
                source.task().is_completed(),
                "try_set_result(2) returned {won} before the task was observably complete"
            );
            won
        })
    };
    let main_won = source.try_set_result(1);
    assert!(
        source.task().is_completed(),
        "try_set_result(1) returned {main_won} before the task was observably complete"
    );
    let other_won = other.join().unwrap();

    assert_eq!(
        usize::from(main_won) + usize::from(other_won),
        1,
        "exactly one racing try_set_result must win (main: {main_won}, other: {other_won})"
    );
    let winner = if main_won { 1 } else { 2 };
    assert_eq!(
        source
            .task()
            .outcome()
            .expect("complete")
            .expect("succeeded"),
        winner,
        "the task must hold the winner's value"
    );
}

#[test]
fn racing_try_set_result_has_one_winner() {
    loom_model(
        "loom_task::racing_try_set_result_has_one_winner",
        racing_try_set_result_model,
    );
}

/// Broken twin: the check "already complete?" and the write of the outcome happen under two
/// separate locks, so both completers can pass the check and both report a win.
#[test]
fn racy_complete_has_two_winners() {
    loom_expect_failure(
        "loom_task::racy_complete_has_two_winners",
        "racy_complete_has_two_winners",
        "exactly one racing try_set_result must win",
        || with_knob(Knob::RacyComplete, racing_try_set_result_model),
    );
}

// ---------------------------------------------------------------------------------------
// 3. Several awaiters.

/// One task, three awaiters racing its completion: an `await` inside a method started on
/// the main thread, a blocking `wait()` on a second thread, and a foreign executor on a
/// third. The main thread completes the task after starting its method. Every awaiter
/// resumes and gets the same value (a clone of it: `T: Clone`).
fn every_awaiter_sees_the_same_outcome_model() {
    let source = TaskCompletionSource::<String>::new();
    let task = source.task();

    let blocking = {
        let task = task.clone();
        thread::spawn(move || task.wait().expect("the task succeeds"))
    };
    let foreign = {
        let task = task.clone();
        thread::spawn(move || block_on(task).expect("the task succeeds"))
    };
    let method = taskcheck::start(async move {
        let value = task.await?;
        Ok::<_, TaskError>(value)
    });
    source
        .set_result("five".to_owned())
        .expect("the only completer");

    let awaited = method.wait().expect("the method succeeds");
    let waited = blocking.join().unwrap();
    let polled = foreign.join().unwrap();
    assert_eq!(awaited, "five", "the awaiting method saw another outcome");
    assert_eq!(waited, "five", "the blocking wait saw another outcome");
    assert_eq!(polled, "five", "the foreign executor saw another outcome");
}

#[test]
fn every_awaiter_sees_the_same_outcome() {
    loom_model(
        "loom_task::every_awaiter_sees_the_same_outcome",
        every_awaiter_sees_the_same_outcome_model,
    );
}

/// Broken twin: with racy registration, an awaiter that registers as the task completes is
/// never resumed, and the thread waiting for it hangs.
#[test]
fn racy_register_strands_an_awaiter() {
    loom_expect_failure(
        "loom_task::racy_register_strands_an_awaiter",
        "racy_register_strands_an_awaiter",
        "deadlock",
        || {
            with_knob(
                Knob::RacyRegister,
                every_awaiter_sees_the_same_outcome_model,
            )
        },
    );
}

// ---------------------------------------------------------------------------------------
// 4. set_result on a completed source.

/// Two threads race `set_result`: exactly one succeeds; the other gets a `CompletionError`
/// that names the task, says it already succeeded, and tells the caller what to do.
fn set_result_twice_model() {
    let source = Arc::new(TaskCompletionSource::<u32>::new());
    let task_id = source.task().id();
    let other = {
        let source = Arc::clone(&source);
        thread::spawn(move || source.set_result(2))
    };
    let mine = source.set_result(1);
    let theirs = other.join().unwrap();

    let (won, lost) = match (mine, theirs) {
        (Ok(()), Err(error)) => (1, error),
        (Err(error), Ok(())) => (2, error),
        (mine, theirs) => panic!(
            "exactly one racing set_result must succeed, got main: {mine:?}, other: {theirs:?}"
        ),
    };
    assert_eq!(source.task().outcome().unwrap().unwrap(), won);
    assert_eq!(lost.task(), task_id);
    assert_eq!(lost.status(), TaskStatus::Succeeded);
    let message = lost.to_string();
    assert!(
        message.contains(&task_id.to_string()) && message.contains("already complete"),
        "the error must name the task and say it is complete: {message}"
    );
    assert!(
        message.contains("try_set_"),
        "the error must say what to do instead (use try_set_*): {message}"
    );

    // Completing it any other way is refused the same way, and changes nothing.
    let error = source
        .set_exception(TaskError::canceled())
        .expect_err("a completed source refuses set_exception");
    assert_eq!(error.status(), TaskStatus::Succeeded);
    assert_eq!(source.task().outcome().unwrap().unwrap(), won);
}

#[test]
fn set_result_on_a_completed_source_is_an_error() {
    loom_model(
        "loom_task::set_result_on_a_completed_source_is_an_error",
        set_result_twice_model,
    );
}

/// Broken twin: with the racy completion both `set_result` calls succeed, the second
/// silently overwriting the first.
#[test]
fn racy_complete_lets_set_result_succeed_twice() {
    loom_expect_failure(
        "loom_task::racy_complete_lets_set_result_succeed_twice",
        "racy_complete_lets_set_result_succeed_twice",
        "exactly one racing set_result must succeed",
        || with_knob(Knob::RacyComplete, set_result_twice_model),
    );
}

// ---------------------------------------------------------------------------------------
// Probes.

/// Counts how often a future is polled.
struct CountPolls<F> {
    future: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F> CountPolls<F> {
    fn new(polls: Arc<AtomicUsize>, future: F) -> Self {
        CountPolls {
            future: Box::pin(future),
            polls,
        }
    }
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.future.as_mut().poll(cx)
    }
}

/// Counts how often the waker handed to a future is woken.
struct CountWakes<F> {
    future: Pin<Box<F>>,
    wakes: Arc<AtomicUsize>,
}

impl<F> CountWakes<F> {
    fn new(wakes: Arc<AtomicUsize>, future: F) -> Self {
        CountWakes {
            future: Box::pin(future),
            wakes,
        }
    }
}

struct CountingWaker {
    wakes: Arc<AtomicUsize>,
    inner: Waker,
}

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.inner.wake_by_ref();
    }
}

impl<F: Future> Future for CountWakes<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<F::Output> {
        // std's `Arc` because that is what `Wake` takes; the count inside is loom's.
        let waker = Waker::from(std::sync::Arc::new(CountingWaker {
            wakes: Arc::clone(&self.wakes),
            inner: cx.waker().clone(),
        }));
        self.future
            .as_mut()
            .poll(&mut PollContext::from_waker(&waker))
    }
}

/// A minimal foreign executor: polls `future` on the calling thread, parking on a loom
/// condvar until its waker fires. (loom's own `loom::future::block_on` needs loom's
/// `futures` feature, which the models crate does not enable.)
fn block_on<F: Future>(future: F) -> F::Output {
    let parker = std::sync::Arc::new(Parker {
        woken: Mutex::new(false),
        wake: Condvar::new(),
    });
    let waker = Waker::from(std::sync::Arc::clone(&parker));
    let mut cx = PollContext::from_waker(&waker);
    let mut future = Box::pin(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let mut woken = parker.woken.lock().unwrap();
        while !*woken {
            woken = parker.wake.wait(woken).unwrap();
        }
        *woken = false;
    }
}

/// What [`block_on`] parks on.
struct Parker {
    woken: Mutex<bool>,
    wake: Condvar,
}

impl Wake for Parker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.wake.notify_one();
    }
}

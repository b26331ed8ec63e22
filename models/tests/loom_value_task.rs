#![cfg(loom)]
//! # ValueTask: the exhaustive kernels
//!
//! loom explores every interleaving (up to `LOOM_MAX_PREEMPTIONS`, 2 in the suite) of small
//! programs over the runtime's real value-task code: `ManualResetValueTaskSourceCore`, the
//! pooled sources of `ValueTaskSourcePool`, and the `ValueTask` awaiter. Each model has at
//! most 3 threads.
//!
//! Most models await a value task with a hand-rolled driver, [`await_counting`]: it polls
//! the await with a waker that counts its wakes and parks on a loom `Notify` in between
//! (spurious wakeups included, as loom's `Notify` allows them). No spawned task is involved,
//! so a continuation resumes by waking that waker directly on the completing thread, and
//! "resumed exactly once" is exact: if the await suspended, the waker was woken exactly
//! once; if it did not, never.
//!
//! ## Properties (correct code, every execution passes)
//!
//! - [`completion_races_registration_on_a_core`], [`completion_races_registration_on_a_pooled_source`]:
//!   a producer thread completes the operation while the consumer registers its
//!   continuation. Exactly one resume, and the value is delivered; the pooled slot is back
//!   afterwards (`rented() == 0`).
//! - [`completion_races_registration_in_a_spawned_task`]: the same race with the await in a
//!   task started eagerly (`taskcheck::start`), whose continuation may run inline on the
//!   completing thread: the body is polled once more than it suspends, and its task
//!   completes with the value.
//! - [`get_result_with_an_old_token_races_reset`]: the consumer takes operation 0's result
//!   with token 0 while another thread resets the core and completes operation 1. It gets
//!   operation 0's value or a `StaleToken` error, never operation 1's value (rule 1: the
//!   token check and the read are one step under the core's lock).
//! - [`pool_rent_and_return_across_two_threads`]: two threads rent, complete and consume on
//!   a 1-slot pool, one of them twice (reusing the slot). No slot is rented twice at once:
//!   every producer's completion is accepted and every consumer reads its own value.
//! - [`pool_reuse_across_threads_token_defeats_aba`]: one thread returns the slot (its
//!   consumer takes the result) while another rents it; the new rental always works, and a
//!   stale second handle of the old operation is refused with `StaleToken`.
//! - [`a_dropped_value_task_racing_completion_returns_the_slot_once`]: the consumer polls
//!   once and drops its await while the producer completes on another thread. The slot
//!   comes back exactly once (the next rental's token is one more), whoever returns it.
//! - [`a_consumer_with_a_stale_token_is_rejected`] (the bug model "consumer uses a stale
//!   token", as misuse by the program): a stale handle of a finished operation is awaited
//!   while the slot is reused for a new operation (completed, not yet taken) whose consumer,
//!   on another thread, takes it and reuses the slot once more. The stale handle is
//!   rejected with `StaleToken` in every schedule, and each new operation's consumer gets
//!   its own value.
//! - [`from_task_completion_races_registration`]: a value task over a `Task` (the task's
//!   waiter list, not a source) resumes exactly once too.
//!
//! ## Broken twins (deliberate runtime bugs, must be caught)
//!
//! | twin | knob | caught as |
//! |---|---|---|
//! | [`skip_token_check_lets_a_stale_token_read_the_next_operation`] | `SkipTokenCheck` | operation 1's value read with token 0 |
//! | [`skip_token_check_lets_a_stale_consumer_steal_a_value`] | `SkipTokenCheck` | the stale handle reads the new operation's value |
//! | [`release_before_reset_breaks_the_next_rental`] | `ReleaseBeforeReset` | the next rental inherits the finished operation's version (ABA); its completion is refused |
//! | [`racy_rent_rents_one_slot_twice`] | `RacyRent` | double rent: the second producer's completion is refused |
//! | [`racy_register_loses_the_wakeup_of_a_value_task_over_a_task`] | `RacyRegister` | deadlock: the await is never resumed |
//!
//! There is no knob for the value-task *source's* registration (`RacyRegister` lives in
//! the task core, `TaskCore::register`): the source core checks completion and stores the
//! continuation under one lock, and no deliberate bug splits that step. The `RacyRegister`
//! twin therefore breaks a value task over a `Task`, whose registration is the task core's.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p taskcheck-models \
//!     --target-dir target/loom --test loom_value_task -- --nocapture
//! ```

use std::future::{Future, IntoFuture};
use std::pin::{pin, Pin};
use std::task::{Context as PollContext, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Notify};
use loom::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{
    ManualResetValueTaskSourceCore, SourceErrorKind, TaskCompletionSource, TaskError, ValueTask,
    ValueTaskSource, ValueTaskSourceError, ValueTaskSourcePool,
};
use taskcheck_models::{loom_expect_failure, loom_model};

// ---------------------------------------------------------------------------------------
// Helpers

/// A waker that counts its wakes and unparks the driver.
struct CountingWaker {
    wakes: AtomicUsize,
    notify: Notify,
}

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.notify.notify();
    }
}

/// What [`await_counting`] saw.
struct Awaited<T> {
    outcome: T,
    /// Whether the first poll returned `Pending`.
    suspended: bool,
    /// The waker's counter: read it once every thread that could wake it has finished
    /// (a completer wakes after it marks the operation complete, so a poll may see the
    /// completion before the wake lands).
    counter: std::sync::Arc<CountingWaker>,
}

impl<T> Awaited<T> {
    /// How many times the waker was woken so far.
    fn wakes(&self) -> usize {
        self.counter.wakes.load(Ordering::SeqCst)
    }
}

/// Drives `future` to completion on the calling thread with a counting waker, parking
/// between polls.
fn await_counting<F: Future>(future: F) -> Awaited<F::Output> {
    let counter = std::sync::Arc::new(CountingWaker {
        wakes: AtomicUsize::new(0),
        notify: Notify::new(),
    });
    let waker = Waker::from(counter.clone());
    let mut cx = PollContext::from_waker(&waker);
    let mut future = pin!(future);
    let mut suspended = false;
    loop {
        if let Poll::Ready(outcome) = future.as_mut().poll(&mut cx) {
            return Awaited {
                outcome,
                suspended,
                counter,
            };
        }
        suspended = true;
        counter.notify.wait();
    }
}

/// Asserts the await resumed exactly once if it suspended, and was never woken otherwise.
/// Call it after joining the completing thread.
fn assert_one_resume<T>(awaited: &Awaited<T>) {
    assert_eq!(
        awaited.wakes(),
        usize::from(awaited.suspended),
        "an await that suspended must be resumed exactly once (and one that did not, never)"
    );
}

/// The typed error of a value-task await's fault.
fn source_error_kind<T: std::fmt::Debug>(outcome: &Result<T, TaskError>) -> SourceErrorKind {
    outcome
        .as_ref()
        .expect_err("expected the await to fault")
        .downcast_ref::<ValueTaskSourceError>()
        .expect("the fault is a ValueTaskSourceError")
        .kind()
}

/// Counts the polls of a future.
struct CountPolls<F> {
    inner: F,
    polls: Arc<AtomicUsize>,
}

impl<F: Future + Unpin> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll(cx)
    }
}

// ---------------------------------------------------------------------------------------
// Completion racing registration

#[test]
fn completion_races_registration_on_a_core() {
    loom_model(
        "loom_value_task::completion_races_registration_on_a_core",
        || {
            let core = Arc::new(ManualResetValueTaskSourceCore::<u32>::new());
            let token = core.version();
            let producer = {
                let core = core.clone();
                thread::spawn(move || core.set_result(7).expect("the one completion"))
            };
            let awaited = await_counting(ValueTask::from_source(core.clone(), token).into_future());
            producer.join().unwrap();
            assert_one_resume(&awaited);
            assert_eq!(awaited.outcome.unwrap(), 7, "the value is delivered");
        },
    );
}

#[test]
fn completion_races_registration_on_a_pooled_source() {
    loom_model(
        "loom_value_task::completion_races_registration_on_a_pooled_source",
        || {
            let pool = ValueTaskSourcePool::<u32>::new(1);
            let rental = pool.rent();
            let value_task = rental.value_task();
            let producer = thread::spawn(move || rental.set_result(7).expect("the one completion"));
            let awaited = await_counting(value_task.into_future());
            producer.join().unwrap();
            assert_one_resume(&awaited);
            assert_eq!(awaited.outcome.unwrap(), 7, "the value is delivered");
            assert_eq!(pool.rented(), 0, "the consumer returned the slot");
        },
    );
}

#[test]
fn completion_races_registration_in_a_spawned_task() {
    loom_model(
        "loom_value_task::completion_races_registration_in_a_spawned_task",
        || {
            let pool = ValueTaskSourcePool::<u32>::new(1);
            let rental = pool.rent();
            let polls = Arc::new(AtomicUsize::new(0));
            let awaiting = CountPolls {
                inner: rental.value_task().into_future(),
                polls: polls.clone(),
            };
            let producer = thread::spawn(move || rental.set_result(7).expect("the one completion"));
            // An eager start: polled here up to its first suspension; its continuation may
            // then run inline on the producer's thread (model builds have no default pool).
            let task = taskcheck::start(awaiting);
            producer.join().unwrap();
            assert_eq!(task.wait().unwrap(), 7, "the value is delivered");
            let polls = polls.load(Ordering::SeqCst);
            assert!(
                polls == 1 || polls == 2,
                "the body is polled once, plus once per resume: {polls} polls"
            );
            assert_eq!(pool.rented(), 0, "the consumer returned the slot");
        },
    );
}

/// A value task over a `Task` (a `TaskCompletionSource`), completed on another thread
/// while the await registers.
fn from_task_race() {
    let source = TaskCompletionSource::<u32>::new();
    let value_task = ValueTask::<u32>::from_task(source.task());
    let producer = thread::spawn(move || source.set_result(7).expect("the one completion"));
    let awaited = await_counting(value_task.into_future());
    producer.join().unwrap();
    assert_one_resume(&awaited);
    assert_eq!(awaited.outcome.unwrap(), 7, "the value is delivered");
}

#[test]
fn from_task_completion_races_registration() {
    loom_model(
        "loom_value_task::from_task_completion_races_registration",
        from_task_race,
    );
}

#[test]
fn racy_register_loses_the_wakeup_of_a_value_task_over_a_task() {
    loom_expect_failure(
        "loom_value_task::racy_register_loses_the_wakeup_of_a_value_task_over_a_task",
        "racy_register_loses_the_wakeup_of_a_value_task_over_a_task",
        "deadlock",
        || with_knob(Knob::RacyRegister, from_task_race),
    );
}

// ---------------------------------------------------------------------------------------
// A stale token racing reset

/// Takes operation 0's result with token 0 while another thread resets the core and
/// completes operation 1.
fn get_result_races_reset() {
    let core = Arc::new(ManualResetValueTaskSourceCore::<u32>::new());
    core.set_result(100).unwrap();
    let next_operation = {
        let core = core.clone();
        thread::spawn(move || {
            let token = core.reset();
            core.set_result(200).unwrap();
            token
        })
    };
    let read = core.get_result(0);
    let next_token = next_operation.join().unwrap();
    assert_eq!(next_token, 1);
    match read {
        Ok(Ok(100)) => {}
        Err(error) => assert_eq!(
            error.kind(),
            SourceErrorKind::StaleToken {
                token: 0,
                current: 1
            },
            "a stale token is refused with StaleToken"
        ),
        Ok(other) => panic!("a stale token read another operation's result: {other:?}"),
    }
    // Operation 1 is untouched by the stale read.
    assert_eq!(core.get_result(1).unwrap().unwrap(), 200);
}

#[test]
fn get_result_with_an_old_token_races_reset() {
    loom_model(
        "loom_value_task::get_result_with_an_old_token_races_reset",
        get_result_races_reset,
    );
}

#[test]
fn skip_token_check_lets_a_stale_token_read_the_next_operation() {
    loom_expect_failure(
        "loom_value_task::skip_token_check_lets_a_stale_token_read_the_next_operation",
        "skip_token_check_lets_a_stale_token_read_the_next_operation",
        "a stale token read another operation's result",
        || with_knob(Knob::SkipTokenCheck, get_result_races_reset),
    );
}

// ---------------------------------------------------------------------------------------
// The pool across threads

/// One rental: rent, complete with `value`, await the value task (already complete).
fn rent_complete_consume(pool: &ValueTaskSourcePool<u32>, value: u32) {
    let rental = pool.rent();
    let value_task = rental.value_task();
    if let Err(error) = rental.set_result(value) {
        panic!("double rent: the completion of a fresh rental was refused: {error}");
    }
    let awaited = await_counting(value_task.into_future());
    match awaited.outcome {
        Ok(read) => assert_eq!(read, value, "double rent: a consumer read another value"),
        Err(error) => panic!("double rent: a consumer of a fresh rental failed: {error}"),
    }
    assert!(
        !awaited.suspended,
        "the operation was complete before the await"
    );
}

/// Two threads share a 1-slot pool; the main thread rents twice (reusing the slot).
fn two_renters() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let other = {
        let pool = pool.clone();
        thread::spawn(move || rent_complete_consume(&pool, 2))
    };
    rent_complete_consume(&pool, 1);
    rent_complete_consume(&pool, 3);
    other.join().unwrap();
    assert_eq!(pool.rented(), 0, "every slot is back");
}

#[test]
fn pool_rent_and_return_across_two_threads() {
    loom_model(
        "loom_value_task::pool_rent_and_return_across_two_threads",
        two_renters,
    );
}

#[test]
fn racy_rent_rents_one_slot_twice() {
    loom_expect_failure(
        "loom_value_task::racy_rent_rents_one_slot_twice",
        "racy_rent_rents_one_slot_twice",
        "double rent",
        || with_knob(Knob::RacyRent, two_renters),
    );
}

/// The main thread's consumer returns the slot while another thread rents it; the main
/// thread then awaits a second handle of its (finished) operation, which an operation's
/// producer refuses to hand out (one consumer per operation).
fn return_races_rent() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let first = pool.rent();
    let consumer = first.value_task();
    let stale = first.value_task();
    first.set_result(1).unwrap();
    let other = {
        let pool = pool.clone();
        thread::spawn(move || {
            let rental = pool.rent();
            let value_task = rental.value_task();
            if let Err(error) = rental.set_result(2) {
                panic!("a fresh rental inherited the finished operation's version (ABA): {error}");
            }
            let awaited = await_counting(value_task.into_future());
            assert_eq!(
                awaited
                    .outcome
                    .expect("a fresh rental's consumer gets its value"),
                2
            );
        })
    };
    // Taking the result returns the slot: bump the version, then release (rule 2).
    assert_eq!(await_counting(consumer.into_future()).outcome.unwrap(), 1);
    let awaited = await_counting(stale.into_future());
    assert_eq!(
        source_error_kind(&awaited.outcome),
        SourceErrorKind::ConsumerAlreadyHandedOut,
        "the second handle must be refused, never given the next rental's value: {:?}",
        awaited.outcome
    );
    other.join().unwrap();
    assert_eq!(pool.rented(), 0, "every slot is back");
}

#[test]
fn pool_reuse_across_threads_token_defeats_aba() {
    loom_model(
        "loom_value_task::pool_reuse_across_threads_token_defeats_aba",
        return_races_rent,
    );
}

#[test]
fn release_before_reset_breaks_the_next_rental() {
    loom_expect_failure(
        "loom_value_task::release_before_reset_breaks_the_next_rental",
        "release_before_reset_breaks_the_next_rental",
        "(ABA)",
        || with_knob(Knob::ReleaseBeforeReset, return_races_rent),
    );
}

/// The consumer gives up on its operation (polls once, then drops the await) while the
/// producer completes it on another thread.
fn abandon_races_completion() {
    let pool = ValueTaskSourcePool::<u32>::new(1);
    let rental = pool.rent();
    let token = rental.token();
    let value_task = rental.value_task();
    let producer = thread::spawn(move || rental.set_result(5).expect("the one completion"));
    {
        let counter = std::sync::Arc::new(CountingWaker {
            wakes: AtomicUsize::new(0),
            notify: Notify::new(),
        });
        let waker = Waker::from(counter);
        let mut awaiting = pin!(value_task.into_future());
        if let Poll::Ready(outcome) = awaiting.as_mut().poll(&mut PollContext::from_waker(&waker)) {
            assert_eq!(outcome.unwrap(), 5);
        }
        // Dropped here, taken or not.
    }
    producer.join().unwrap();
    assert_eq!(
        pool.rented(),
        0,
        "the slot comes back once the producer completes"
    );
    // Returned exactly once: one version bump, and the slot works.
    let next = pool.rent();
    assert_eq!(
        next.token(),
        token + 1,
        "the slot was returned exactly once"
    );
    let next_task = next.value_task();
    next.set_result(6).unwrap();
    assert_eq!(await_counting(next_task.into_future()).outcome.unwrap(), 6);
    assert_eq!(pool.rented(), 0);
}

#[test]
fn a_dropped_value_task_racing_completion_returns_the_slot_once() {
    loom_model(
        "loom_value_task::a_dropped_value_task_racing_completion_returns_the_slot_once",
        abandon_races_completion,
    );
}

// ---------------------------------------------------------------------------------------
// The bug model: a consumer uses a stale token

/// The program's bug: it keeps a value task of operation 1 on a reusable source (the raw
/// source API, where nothing stops it: a pooled producer hands out one consumer only) and
/// awaits it while another thread resets the source for operation 2, completes it and
/// consumes it. The stale await must be refused (ResultAlreadyTaken before the reset,
/// StaleToken after it) in every schedule, and never read operation 2's value.
fn stale_consumer() {
    let core = Arc::new(ManualResetValueTaskSourceCore::<u32>::new());
    let first_token = core.version();
    core.set_result(1).unwrap();
    let consumer = ValueTask::from_source(core.clone(), first_token);
    let stale = ValueTask::from_source(core.clone(), first_token);
    assert_eq!(await_counting(consumer.into_future()).outcome.unwrap(), 1);

    let other = {
        let core = core.clone();
        thread::spawn(move || {
            let second_token = core.reset();
            core.set_result(2).unwrap();
            let second_task = ValueTask::from_source(core, second_token);
            match await_counting(second_task.into_future()).outcome {
                Ok(value) => assert_eq!(value, 2),
                Err(error) => panic!(
                    "a stale token read another operation's result: its rightful \
                     consumer got {error}"
                ),
            }
        })
    };
    let awaited = await_counting(stale.into_future());
    match &awaited.outcome {
        Ok(value) => panic!("a stale token read another operation's result: {value}"),
        Err(_) => assert!(
            matches!(
                source_error_kind(&awaited.outcome),
                SourceErrorKind::StaleToken { token, .. } if token == first_token
            ) || source_error_kind(&awaited.outcome) == SourceErrorKind::ResultAlreadyTaken,
            "the stale consumer is refused: {:?}",
            awaited.outcome
        ),
    }
    other.join().unwrap();
}

#[test]
fn a_consumer_with_a_stale_token_is_rejected() {
    loom_model(
        "loom_value_task::a_consumer_with_a_stale_token_is_rejected",
        stale_consumer,
    );
}

#[test]
fn skip_token_check_lets_a_stale_consumer_steal_a_value() {
    loom_expect_failure(
        "loom_value_task::skip_token_check_lets_a_stale_consumer_steal_a_value",
        "skip_token_check_lets_a_stale_consumer_steal_a_value",
        "a stale token read another operation's result",
        || with_knob(Knob::SkipTokenCheck, stale_consumer),
    );
}

#![cfg(loom)]
//! loom models of cancellation: [`CancellationTokenSource`], [`CancellationToken`] and
//! [`CancellationTokenRegistration`] (the numbered rules are in the module docs of
//! `runtime/src/cancellation.rs`).
//!
//! If you know .NET, these are the guarantees you rely on whenever one thread calls
//! `cts.Cancel()` while others register, unregister or dispose callbacks on its token. Each
//! model is a small race on the runtime's real code (at most 3 threads, most have 2: the
//! main thread and one spawned thread), explored exhaustively by loom up to the preemption
//! bound.
//!
//! ## Properties (correct code, every execution passes)
//!
//! 1. **A callback registered while a cancel runs runs exactly once**
//!    ([`register_races_cancel`], rules 1 and 3): either `register` saw the cancellation and
//!    ran it inline, or it stored it and the cancel ran it. Never zero times, never twice.
//! 2. **Unregister racing cancel is an exclusive or** ([`unregister_races_cancel`], rule 4):
//!    exactly one of {`unregister` returned `true`, the callback ran}.
//! 3. **Dropping a registration waits for its running callback**
//!    ([`drop_waits_for_a_running_callback`], rule 5): once the drop returns on one thread,
//!    the callback is not executing on the cancelling thread and never starts afterwards.
//! 4. **Concurrent cancels run each callback once, on one thread, LIFO**
//!    ([`concurrent_cancels_run_callbacks_once_lifo`], rules 1 and 2): two threads cancel a
//!    source with two callbacks; both calls return `Ok`, each callback runs exactly once,
//!    both on the same thread, the last registered first.
//! 5. **"Cancellation requested" is already true inside a callback**
//!    ([`callback_sees_cancellation_requested`], rule 1): a callback (run by the cancel or
//!    inline by a racing `register`) reads its token's flag: `true`.
//! 6. **Linked sources propagate** (rule 6):
//!    [`linked_source_propagates_to_a_racing_registration`]: a callback registered on a
//!    linked source while its parent is canceled runs exactly once, the linked source ends
//!    canceled, and it already is when the parent's `cancel` returns (synchronous
//!    propagation). [`linked_source_created_during_parent_cancel`]: a linked source created
//!    while its parent is being canceled on another thread ends canceled.
//! 7. **`cancelled()` loses no wakeup** ([`cancelled_future_races_cancel`]): a foreign
//!    executor (a minimal `block_on` that parks between polls) awaits `token.cancelled()`
//!    while another thread cancels; the await completes, its waker woken at most once.
//! 8. **`cancel_after` fires from the timer path** ([`cancel_after_timer_races_register`],
//!    rule 7): `cancel_after(0)` does not cancel inline; one thread advances the manual
//!    clock (firing the timer, which cancels) while another registers a callback: the timer
//!    fired once, the callback ran exactly once, no timer is left.
//!
//! ## Broken twins (deliberate runtime bugs, must be caught)
//!
//! | twin | knob | caught as |
//! |---|---|---|
//! | [`racy_register_loses_a_callback`] | `CancelRacyRegister` | the callback never ran although `register` and `cancel` both returned |
//! | [`remove_after_run_breaks_the_unregister_xor`] | `CancelRemoveAfterRun` | `unregister` returned `true` and the callback ran |
//! | [`skip_drop_wait_returns_while_the_callback_runs`] | `CancelSkipDropWait` | the drop returned while the callback was running (seen running, or starting after the drop) |
//! | [`racy_transition_runs_callbacks_on_two_threads`] | `CancelRacyTransition` | the two callbacks ran on two threads |
//! | [`fifo_runs_callbacks_in_registration_order`] | `CancelFifo` | the callbacks ran first registered first |
//! | [`late_flag_is_false_inside_a_callback`] | `CancelFlagLate` | a callback saw "cancellation requested" `false` |
//! | [`racy_register_loses_a_linked_callback`] | `CancelRacyRegister` | the linked source's callback never ran |
//! | [`racy_register_loses_the_link`] | `CancelRacyRegister` | the linked source (its link is a registration on the parent) is never canceled |
//! | [`late_waker_loses_the_cancelled_wakeup`] | `CancelledLateWaker` | deadlock: `block_on` parks forever |
//! | [`racy_register_loses_a_callback_of_a_timer_cancel`] | `CancelRacyRegister` | the callback never ran although the timer fired |
//!
//! Counters are loom atomics written and read `Relaxed` on purpose: a read after a `join`,
//! or after a registration's drop, then only sees the callback's writes if the runtime
//! synchronises (its lock and the join do), which loom checks too.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p taskcheck-models \
//!     --target-dir target/loom --test loom_cancel -- --nocapture
//! ```

use std::future::Future;
use std::pin::pin;
use std::task::{Context as PollContext, Poll, Wake, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread::{self, ThreadId};
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{CancellationTokenSource, Clock};
use taskcheck_models::{loom_expect_failure, loom_model};

// ---------------------------------------------------------------------------------------
// Helpers

/// A callback that counts its runs in `runs`.
fn counting(runs: &Arc<AtomicUsize>) -> impl FnOnce() + Send + 'static {
    let runs = Arc::clone(runs);
    move || {
        runs.fetch_add(1, Ordering::Relaxed);
    }
}

/// A source shared with a canceller thread, and that thread, which cancels it once.
fn spawn_canceller(
    source: &Arc<CancellationTokenSource>,
) -> thread::JoinHandle<Result<(), taskcheck::CancelError>> {
    let source = Arc::clone(source);
    thread::spawn(move || source.cancel())
}

// ---------------------------------------------------------------------------------------
// 1. Register racing cancel (rules 1 and 3).

/// The main thread registers a counting callback while a canceller thread cancels. After
/// the join, the callback ran exactly once: inline in `register` (the cancel came first) or
/// in the cancel (the registration came first).
fn register_races_cancel_model() {
    let source = Arc::new(CancellationTokenSource::new());
    let canceller = spawn_canceller(&source);

    let runs = Arc::new(AtomicUsize::new(0));
    let registration = source.token().register(counting(&runs));

    canceller.join().unwrap().expect("the cancel succeeds");
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "a callback registered while a cancel runs must run exactly once (inline in register \
         or in the cancel)"
    );
    drop(registration);
}

#[test]
fn register_races_cancel() {
    loom_model(
        "loom_cancel::register_races_cancel",
        register_races_cancel_model,
    );
}

/// Broken twin: `register` decides "already canceled?" before taking the source's lock, so
/// a cancel in between drains the list before the callback is stored: it never runs.
#[test]
fn racy_register_loses_a_callback() {
    loom_expect_failure(
        "loom_cancel::racy_register_loses_a_callback",
        "racy_register_loses_a_callback",
        "must run exactly once",
        || with_knob(Knob::CancelRacyRegister, register_races_cancel_model),
    );
}

// ---------------------------------------------------------------------------------------
// 2. Unregister racing cancel (rule 4).

/// A callback is registered first; then the main thread unregisters it while a canceller
/// thread cancels. Exactly one of {`unregister` returned `true`, the callback ran}.
fn unregister_races_cancel_model() {
    let source = Arc::new(CancellationTokenSource::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let registration = source.token().register(counting(&runs));
    let canceller = spawn_canceller(&source);

    let removed = registration.unregister();

    canceller.join().unwrap().expect("the cancel succeeds");
    let runs = runs.load(Ordering::Relaxed);
    assert!(runs <= 1, "the callback ran {runs} times");
    let ran = runs == 1;
    assert!(
        removed != ran,
        "exactly one of {{unregister returned true, the callback ran}} must happen: \
         unregister returned {removed}, callback ran: {ran}"
    );
    assert!(
        !registration.is_registered(),
        "nothing stays registered after the cancel"
    );
    drop(registration);
}

#[test]
fn unregister_races_cancel() {
    loom_model(
        "loom_cancel::unregister_races_cancel",
        unregister_races_cancel_model,
    );
}

/// Broken twin: the running callback's entry stays listed until it finishes, so an
/// `unregister` meanwhile "removes" it and returns `true` although the callback ran.
#[test]
fn remove_after_run_breaks_the_unregister_xor() {
    loom_expect_failure(
        "loom_cancel::remove_after_run_breaks_the_unregister_xor",
        "remove_after_run_breaks_the_unregister_xor",
        "exactly one of {unregister returned true, the callback ran}",
        || with_knob(Knob::CancelRemoveAfterRun, unregister_races_cancel_model),
    );
}

// ---------------------------------------------------------------------------------------
// 3. Dropping a registration racing its running callback (rule 5).

/// A callback that marks its start and its end (two separate atomic steps, so loom can stop
/// the cancelling thread in between) is registered first; the main thread then drops the
/// registration while a canceller thread cancels.
///
/// Once the drop returns the callback is not running (as many starts as ends at that
/// moment), and it never starts later (no more starts after the join than at the drop).
fn drop_waits_for_a_running_callback_model() {
    let source = Arc::new(CancellationTokenSource::new());
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let registration = source.token().register({
        let started = Arc::clone(&started);
        let finished = Arc::clone(&finished);
        move || {
            started.fetch_add(1, Ordering::Relaxed);
            finished.fetch_add(1, Ordering::Relaxed);
        }
    });
    let canceller = spawn_canceller(&source);

    drop(registration);
    let started_at_drop = started.load(Ordering::Relaxed);
    let finished_at_drop = finished.load(Ordering::Relaxed);
    assert_eq!(
        started_at_drop, finished_at_drop,
        "after its registration's drop returned, a callback must not be running \
         (started {started_at_drop} times, finished {finished_at_drop} times)"
    );

    canceller.join().unwrap().expect("the cancel succeeds");
    assert_eq!(
        started.load(Ordering::Relaxed),
        started_at_drop,
        "after its registration's drop returned, a callback must never start"
    );
    assert!(started_at_drop <= 1, "the callback ran more than once");
}

#[test]
fn drop_waits_for_a_running_callback() {
    loom_model(
        "loom_cancel::drop_waits_for_a_running_callback",
        drop_waits_for_a_running_callback_model,
    );
}

/// Broken twin: the drop unregisters but does not wait for the callback running on the
/// cancelling thread, so it returns in the middle of it.
#[test]
fn skip_drop_wait_returns_while_the_callback_runs() {
    loom_expect_failure(
        "loom_cancel::skip_drop_wait_returns_while_the_callback_runs",
        "skip_drop_wait_returns_while_the_callback_runs",
        "after its registration's drop returned, a callback must",
        || {
            with_knob(
                Knob::CancelSkipDropWait,
                drop_waits_for_a_running_callback_model,
            )
        },
    );
}

// ---------------------------------------------------------------------------------------
// 4. Concurrent cancels (rules 1 and 2).

/// What a logging callback records: its name and the thread it ran on.
type Log = Arc<Mutex<Vec<(&'static str, ThreadId)>>>;

/// A callback that appends its name and thread to `log`.
fn logging(name: &'static str, log: &Log) -> impl FnOnce() + Send + 'static {
    let log = Arc::clone(log);
    move || log.lock().unwrap().push((name, thread::current().id()))
}

/// Two callbacks ("first", then "second") are registered; the main thread and another thread
/// cancel the source at once. Both calls return `Ok` (the second without running anything);
/// after the join each callback ran exactly once, both on the same thread, "second" first
/// (LIFO).
fn concurrent_cancels_model() {
    let source = Arc::new(CancellationTokenSource::new());
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let first = source.token().register(logging("first", &log));
    let second = source.token().register(logging("second", &log));
    let other = spawn_canceller(&source);

    let mine = source.cancel();
    let theirs = other.join().unwrap();
    assert!(
        mine.is_ok() && theirs.is_ok(),
        "both cancels return Ok: {mine:?}, {theirs:?}"
    );

    let log = log.lock().unwrap().clone();
    let mut names: Vec<_> = log.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["first", "second"],
        "each callback runs exactly once: {log:?}"
    );
    assert_eq!(
        log[0].1, log[1].1,
        "both callbacks must run on one thread, the one cancel that won: {log:?}"
    );
    assert_eq!(
        [log[0].0, log[1].0],
        ["second", "first"],
        "callbacks must run LIFO, the last registered first"
    );
    drop((first, second));
}

#[test]
fn concurrent_cancels_run_callbacks_once_lifo() {
    loom_model(
        "loom_cancel::concurrent_cancels_run_callbacks_once_lifo",
        concurrent_cancels_model,
    );
}

/// Broken twin: `cancel` checks and marks "cancellation started" under two lock
/// acquisitions, so both racing cancels run callbacks, each on its own thread.
#[test]
fn racy_transition_runs_callbacks_on_two_threads() {
    loom_expect_failure(
        "loom_cancel::racy_transition_runs_callbacks_on_two_threads",
        "racy_transition_runs_callbacks_on_two_threads",
        "both callbacks must run on one thread",
        || with_knob(Knob::CancelRacyTransition, concurrent_cancels_model),
    );
}

/// Broken twin: the callbacks run first registered first.
#[test]
fn fifo_runs_callbacks_in_registration_order() {
    loom_expect_failure(
        "loom_cancel::fifo_runs_callbacks_in_registration_order",
        "fifo_runs_callbacks_in_registration_order",
        "callbacks must run LIFO",
        || with_knob(Knob::CancelFifo, concurrent_cancels_model),
    );
}

// ---------------------------------------------------------------------------------------
// 5. The flag inside a callback (rule 1).

/// What a flag-reading callback saw.
const NOT_RUN: usize = 0;
const SAW_TRUE: usize = 1;
const SAW_FALSE: usize = 2;

/// The main thread registers a callback that reads its token's
/// `is_cancellation_requested()` while a canceller thread cancels. Whether the cancel or
/// the racing `register` runs it, the callback runs and reads `true`.
fn callback_sees_cancellation_requested_model() {
    let source = Arc::new(CancellationTokenSource::new());
    let token = source.token();
    let canceller = spawn_canceller(&source);

    let seen = Arc::new(AtomicUsize::new(NOT_RUN));
    let registration = token.register({
        let seen = Arc::clone(&seen);
        let token = token.clone();
        move || {
            let requested = token.is_cancellation_requested();
            seen.store(
                if requested { SAW_TRUE } else { SAW_FALSE },
                Ordering::Relaxed,
            );
        }
    });

    canceller.join().unwrap().expect("the cancel succeeds");
    let seen = seen.load(Ordering::Relaxed);
    assert_ne!(seen, NOT_RUN, "the callback must have run");
    assert_eq!(
        seen, SAW_TRUE,
        "cancellation requested must already be true when a callback runs"
    );
    assert!(token.is_cancellation_requested());
    drop(registration);
}

#[test]
fn callback_sees_cancellation_requested() {
    loom_model(
        "loom_cancel::callback_sees_cancellation_requested",
        callback_sees_cancellation_requested_model,
    );
}

/// Broken twin: the flag is raised only after the callbacks ran.
#[test]
fn late_flag_is_false_inside_a_callback() {
    loom_expect_failure(
        "loom_cancel::late_flag_is_false_inside_a_callback",
        "late_flag_is_false_inside_a_callback",
        "cancellation requested must already be true when a callback runs",
        || {
            with_knob(
                Knob::CancelFlagLate,
                callback_sees_cancellation_requested_model,
            )
        },
    );
}

// ---------------------------------------------------------------------------------------
// 6. Linked sources (rule 6).

/// A parent and a source linked to it; a canceller thread cancels the parent (and checks the
/// linked source is canceled when that returns) while the main thread registers a counting
/// callback on the linked source. After the join the linked source is canceled and the
/// callback ran exactly once.
fn linked_source_propagates_model() {
    let parent = Arc::new(CancellationTokenSource::new());
    let child = CancellationTokenSource::linked(&[parent.token()]);
    let canceller = {
        let parent = Arc::clone(&parent);
        let child_token = child.token();
        thread::spawn(move || {
            parent.cancel().expect("the parent's cancel succeeds");
            assert!(
                child_token.is_cancellation_requested(),
                "the parent's cancel must have canceled the linked source when it returns"
            );
        })
    };

    let runs = Arc::new(AtomicUsize::new(0));
    let registration = child.token().register(counting(&runs));

    canceller.join().unwrap();
    assert!(
        child.is_cancellation_requested(),
        "the linked source must end canceled"
    );
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "a callback on the linked source must run exactly once"
    );
    drop(registration);
    drop(child);
}

#[test]
fn linked_source_propagates_to_a_racing_registration() {
    loom_model(
        "loom_cancel::linked_source_propagates_to_a_racing_registration",
        linked_source_propagates_model,
    );
}

/// Broken twin: the registration on the linked source races the linked source's cancel
/// (run inside the parent's) and is lost.
#[test]
fn racy_register_loses_a_linked_callback() {
    loom_expect_failure(
        "loom_cancel::racy_register_loses_a_linked_callback",
        "racy_register_loses_a_linked_callback",
        "a callback on the linked source must run exactly once",
        || with_knob(Knob::CancelRacyRegister, linked_source_propagates_model),
    );
}

/// A canceller thread cancels the parent while the main thread creates a source linked to
/// it. Whether the link was stored first (the parent's cancel cancels the linked source) or
/// the parent's cancel started first (the linked source is canceled at creation), the
/// linked source ends canceled.
fn linked_source_created_during_parent_cancel_model() {
    let parent = Arc::new(CancellationTokenSource::new());
    let canceller = spawn_canceller(&parent);

    let child = CancellationTokenSource::linked(&[parent.token()]);

    canceller
        .join()
        .unwrap()
        .expect("the parent's cancel succeeds");
    assert!(
        child.is_cancellation_requested(),
        "a linked source created while its parent is being canceled must end canceled"
    );
    drop(child);
}

#[test]
fn linked_source_created_during_parent_cancel() {
    loom_model(
        "loom_cancel::linked_source_created_during_parent_cancel",
        linked_source_created_during_parent_cancel_model,
    );
}

/// Broken twin: the link is a registration on the parent; registered racily, it is lost
/// and the parent's cancel never reaches the linked source.
#[test]
fn racy_register_loses_the_link() {
    loom_expect_failure(
        "loom_cancel::racy_register_loses_the_link",
        "racy_register_loses_the_link",
        "must end canceled",
        || {
            with_knob(
                Knob::CancelRacyRegister,
                linked_source_created_during_parent_cancel_model,
            )
        },
    );
}

// ---------------------------------------------------------------------------------------
// 7. The cancelled() future racing cancel.

/// A canceller thread cancels while the main thread awaits `token.cancelled()` with
/// [`block_on`]. The await completes (no lost wakeup: a lost one parks `block_on` forever,
/// which loom reports as a deadlock), and the waker was woken at most once.
fn cancelled_future_races_cancel_model() {
    let source = Arc::new(CancellationTokenSource::new());
    let token = source.token();
    let canceller = spawn_canceller(&source);

    let ((), parker) = block_on(token.cancelled());
    assert!(
        token.is_cancellation_requested(),
        "cancelled() completed before cancellation was requested"
    );

    canceller.join().unwrap().expect("the cancel succeeds");
    let wakes = parker.wakes.load(Ordering::Relaxed);
    assert!(
        wakes <= 1,
        "the waker was woken {wakes} times; at most once"
    );
}

#[test]
fn cancelled_future_races_cancel() {
    loom_model(
        "loom_cancel::cancelled_future_races_cancel",
        cancelled_future_races_cancel_model,
    );
}

/// Broken twin: the future registers its wake-up callback before storing its waker and
/// does not look at the flag again; a cancel in between wakes nobody and `block_on` parks
/// forever.
#[test]
fn late_waker_loses_the_cancelled_wakeup() {
    loom_expect_failure(
        "loom_cancel::late_waker_loses_the_cancelled_wakeup",
        "late_waker_loses_the_cancelled_wakeup",
        "deadlock",
        || {
            with_knob(
                Knob::CancelledLateWaker,
                cancelled_future_races_cancel_model,
            )
        },
    );
}

/// A minimal foreign executor: polls `future` on this thread, parking on a loom condvar
/// between polls. Returns the output and the parker (for its wake count).
fn block_on<F: Future>(future: F) -> (F::Output, std::sync::Arc<Parker>) {
    let parker = std::sync::Arc::new(Parker {
        woken: Mutex::new(false),
        wake: Condvar::new(),
        wakes: AtomicUsize::new(0),
    });
    let waker = Waker::from(std::sync::Arc::clone(&parker));
    let mut cx = PollContext::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return (output, parker);
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
    wakes: AtomicUsize,
}

impl Wake for Parker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        *self.woken.lock().unwrap() = true;
        self.wake.notify_one();
    }
}

// ---------------------------------------------------------------------------------------
// 8. cancel_after on a manual clock (rule 7).

/// `cancel_after(0)` on a manual clock does not cancel inline. Then a timer thread advances
/// the clock (firing the timer, which cancels) while the main thread registers a counting
/// callback. After the join: the timer fired once, the source is canceled, the callback ran
/// exactly once, and no timer is left.
fn cancel_after_timer_races_register_model() {
    let clock = Clock::manual();
    let source = CancellationTokenSource::with_clock(clock.clone());
    source
        .cancel_after(Duration::ZERO)
        .expect("the source is not disposed");
    assert!(
        !source.is_cancellation_requested(),
        "cancel_after never cancels inline, even with a zero delay"
    );
    let timer = {
        let clock = clock.clone();
        thread::spawn(move || clock.advance(Duration::ZERO).expect("a manual clock"))
    };

    let runs = Arc::new(AtomicUsize::new(0));
    let registration = source.token().register(counting(&runs));

    let fired = timer.join().unwrap();
    assert_eq!(fired, 1, "the advance fires the one due timer");
    assert!(source.is_cancellation_requested(), "the timer canceled");
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "a callback registered while the timer cancels must run exactly once"
    );
    assert_eq!(clock.pending_timers(), 0, "no timer is left");
    drop(registration);
}

#[test]
fn cancel_after_timer_races_register() {
    loom_model(
        "loom_cancel::cancel_after_timer_races_register",
        cancel_after_timer_races_register_model,
    );
}

/// Broken twin: the registration racing the timer's cancel is lost.
#[test]
fn racy_register_loses_a_callback_of_a_timer_cancel() {
    loom_expect_failure(
        "loom_cancel::racy_register_loses_a_callback_of_a_timer_cancel",
        "racy_register_loses_a_callback_of_a_timer_cancel",
        "must run exactly once",
        || {
            with_knob(
                Knob::CancelRacyRegister,
                cancel_after_timer_races_register_model,
            )
        },
    );
}

#![cfg(loom)]
//! # Combinators: `when_any`, `when_all`, `when_each` racing their inputs' completions
//!
//! loom explores every interleaving (up to `LOOM_MAX_PREEMPTIONS`, 2 in the suite) of the
//! runtime's real combinator code (`runtime/src/when.rs`) against completions on other
//! threads. Each model has 3 threads: the main thread builds the combinator *after*
//! spawning two completer threads (so the combinator's registration on its inputs races
//! their completions, and the "input already complete at the call" paths are explored
//! too), and each completer completes one `TaskCompletionSource`.
//!
//! ## Properties (correct code, every execution passes)
//!
//! - [`when_any_has_one_winner_and_leaks_nothing`] (`when.rs` rule 2): one input succeeds,
//!   the other faults, on two threads. The `when_any` task completes exactly once (the
//!   method awaiting it resumes once), with one of the two inputs as its winner (loom
//!   reaches both), and the winner is complete when the awaiting code resumes. Once the
//!   winner's completing thread is joined, the loser has no continuation of the `when_any`
//!   left (checked while the loser may still be pending, where a leak is visible), and
//!   after both completions no input has any.
//! - [`when_all_completes_once_after_the_last_input`] and
//!   [`when_all_aggregates_faults_in_input_order`] (rule 1): two inputs completed on two
//!   threads. The `when_all` task is complete only once both inputs are: the code awaiting
//!   it sees both inputs complete when it resumes, and a status check from the main thread
//!   between the two joins never sees `when_all` complete with an input pending. It resumes
//!   its awaiter exactly once, with both values in input order, or, if both inputs fault,
//!   with both errors in input order whichever faulted first. The inputs' errors count as
//!   observed: nothing reaches the unobserved-error hook.
//!
//! Models that branch on the race also count, across executions, which branch each took,
//! and assert that loom reached both, so that none passes vacuously.
//!
//! The third combinator, `when_each` (rule 3), is a `Stream` (re-exported by `taskcheck`):
//!
//! - `when_each::yields_each_input_exactly_once`: two inputs completed on two threads while
//!   the main thread consumes the stream with a parking `block_on`-style driver: exactly
//!   two items, each input once (in both orders, across executions), each complete, then
//!   `None` (and `None` again); afterwards no continuation is left on either input.
//!
//! ## Broken twins (deliberate runtime bugs, must be caught)
//!
//! | twin | knob | caught as |
//! |---|---|---|
//! | [`when_any_keep_losers_leaks_a_continuation`] | `WhenAnyKeepLosers` | the pending loser still holds `when_any`'s continuation after the winner's thread finished |
//! | [`when_all_racy_count_never_completes`] | `WhenAllRacyCount` | deadlock: both arrivals read 2 and write 1, `when_all` never completes and its awaiter waits forever |
//! | `when_each::lost_wake_strands_the_consumer` | `WhenEachLostWake` | deadlock: an input is queued after its completion took the (absent) waker, and the consumer parks with nothing left to wake it |
//!
//! With two inputs the racy count can only lose an arrival (the count stays above zero),
//! so its twin is caught as a hang; completing *early* would take a third input.
//!
//! Run:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p taskcheck-models \
//!     --target-dir target/loom --test loom_when -- --nocapture
//! ```

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use taskcheck::knobs::{with_knob, Knob};
use taskcheck::{when_all, when_any, TaskCompletionSource, TaskError};
use taskcheck_models::fixtures::{messages, Boom, Cases};
use taskcheck_models::{loom_expect_failure, loom_model};

// ---------------------------------------------------------------------------------------
// Helpers

/// Counts unobserved-error reports. The process-wide hook is per OS thread in model builds
/// (loom runs every model thread on the test's OS thread), so each execution installs its
/// own. The counter is a std atomic on purpose: the hook outlives the execution in a
/// thread-local, where a loom object must not be; loom runs the model threads one at a
/// time, so it counts exactly.
fn count_reports() -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let reports = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&reports);
    taskcheck::set_unobserved_error_hook(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    reports
}

// ---------------------------------------------------------------------------------------
// 1. when_any

/// Input `a` succeeds on one thread while input `b` faults on another; the main thread
/// calls `when_any` meanwhile and awaits it in an eagerly started method.
fn when_any_model() -> bool {
    let source_a = TaskCompletionSource::<u32>::new();
    let source_b = TaskCompletionSource::<u32>::new();
    let (a, b) = (source_a.task(), source_b.task());
    let (a_id, b_id) = (a.id(), b.id());
    let completer_a = thread::spawn(move || source_a.set_result(1).expect("the only completer"));
    let completer_b = thread::spawn(move || {
        source_b
            .set_exception(Boom("b"))
            .expect("the only completer");
    });

    let any = when_any([a.clone(), b.clone()]).expect("two inputs");
    let resumed = Arc::new(AtomicUsize::new(0));
    let method = taskcheck::start({
        let (any, resumed) = (any.clone(), Arc::clone(&resumed));
        async move {
            let winner = any.await?;
            resumed.fetch_add(1, Ordering::Relaxed);
            Ok::<_, TaskError>((winner.id(), winner.is_completed()))
        }
    });

    completer_a.join().unwrap();
    // If `a` won, its win ran on thread A (the completion's callback), or on this thread
    // inside `when_any` (a completed during the call): either way it is over, and it must
    // have taken its continuation off `b`, which may still be pending here.
    if let Some(Ok(winner)) = any.outcome() {
        if winner.id() == a_id {
            assert_eq!(
                b.registered_continuations(),
                0,
                "when_any left its continuation on the losing input (pending: {}) after the \
                 winner's thread finished",
                !b.is_completed()
            );
        }
    }
    completer_b.join().unwrap();

    let (winner_id, winner_was_complete) = method.wait().expect("the method succeeds");
    assert!(
        winner_id == a_id || winner_id == b_id,
        "the winner must be one of the inputs"
    );
    assert!(
        winner_was_complete,
        "the winner must be complete when the awaiting code resumes"
    );
    assert_eq!(
        resumed.load(Ordering::Relaxed),
        1,
        "the when_any task must resume its awaiter exactly once"
    );
    let winner = any.outcome().expect("complete").expect("when_any succeeds");
    assert_eq!(
        winner.id(),
        winner_id,
        "when_any holds the winner it resumed with"
    );
    drop(winner);
    assert_eq!(
        a.registered_continuations(),
        0,
        "a continuation leaked on a"
    );
    assert_eq!(
        b.registered_continuations(),
        0,
        "a continuation leaked on b"
    );
    assert_eq!(any.registered_continuations(), 0);
    // Observe b's fault, so that it is not reported as unobserved.
    let b_outcome = b.outcome().expect("complete");
    assert_eq!(messages(&b_outcome.expect_err("b faulted")), ["b failed"]);
    winner_id == b_id
}

#[test]
fn when_any_has_one_winner_and_leaks_nothing() {
    let winners = Cases::default();
    loom_model("loom_when::when_any_has_one_winner_and_leaks_nothing", {
        let winners = winners.clone();
        move || winners.hit(when_any_model())
    });
    winners.assert_both(["a (succeeded) won", "b (faulted) won"]);
}

/// Broken twin: the winner does not remove `when_any`'s continuations from the losers, so
/// a pending loser keeps a callback (and a handle) until it completes.
#[test]
fn when_any_keep_losers_leaks_a_continuation() {
    loom_expect_failure(
        "loom_when::when_any_keep_losers_leaks_a_continuation",
        "when_any_keep_losers_leaks_a_continuation",
        "when_any left its continuation on the losing input",
        || {
            with_knob(Knob::WhenAnyKeepLosers, || {
                when_any_model();
            });
        },
    );
}

// ---------------------------------------------------------------------------------------
// 2. when_all

/// Inputs `a` and `b` complete on two threads (both succeed, or both fault) while the
/// main thread calls `when_all` and awaits it in an eagerly started method.
fn when_all_model(fault: bool) {
    let reports = count_reports();
    let source_a = TaskCompletionSource::<u32>::new();
    let source_b = TaskCompletionSource::<u32>::new();
    let (a, b) = (source_a.task(), source_b.task());
    let complete = move |source: TaskCompletionSource<u32>, value: u32, name: &'static str| {
        move || {
            let done = if fault {
                source.set_exception(Boom(name))
            } else {
                source.set_result(value)
            };
            done.expect("the only completer");
        }
    };
    let completer_a = thread::spawn(complete(source_a, 1, "a"));
    let completer_b = thread::spawn(complete(source_b, 2, "b"));

    let all = when_all([a.clone(), b.clone()]);
    let resumed = Arc::new(AtomicUsize::new(0));
    let method = taskcheck::start({
        let (all, a, b, resumed) = (all.clone(), a.clone(), b.clone(), Arc::clone(&resumed));
        async move {
            let outcome = all.await;
            resumed.fetch_add(1, Ordering::Relaxed);
            Ok::<_, TaskError>((outcome, a.is_completed() && b.is_completed()))
        }
    });

    completer_a.join().unwrap();
    // `when_all` read first, `b` second: a complete `when_all` with `b` still pending
    // would be an early completion.
    let all_complete = all.is_completed();
    let b_complete = b.is_completed();
    assert!(
        !all_complete || b_complete,
        "when_all completed while an input was pending"
    );
    completer_b.join().unwrap();

    let (outcome, inputs_were_complete) = method.wait().expect("the method succeeds");
    assert!(
        inputs_were_complete,
        "when_all resumed its awaiter before every input completed"
    );
    assert_eq!(
        resumed.load(Ordering::Relaxed),
        1,
        "the when_all task must resume its awaiter exactly once"
    );
    if fault {
        let error = outcome.expect_err("both inputs faulted");
        assert_eq!(
            messages(&error),
            ["a failed", "b failed"],
            "when_all must aggregate the faults in input order, whichever came first"
        );
    } else {
        assert_eq!(
            outcome.expect("both inputs succeeded"),
            [1, 2],
            "when_all must give the values in input order"
        );
    }
    drop((a, b, all, method));
    assert_eq!(
        reports.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "when_all observes its inputs' errors, and the await observed its own"
    );
    taskcheck::reset_unobserved_error_hook();
}

#[test]
fn when_all_completes_once_after_the_last_input() {
    loom_model(
        "loom_when::when_all_completes_once_after_the_last_input",
        || when_all_model(false),
    );
}

#[test]
fn when_all_aggregates_faults_in_input_order() {
    loom_model(
        "loom_when::when_all_aggregates_faults_in_input_order",
        || when_all_model(true),
    );
}

/// Broken twin: each arrival reads the count and writes it back decremented under two
/// lock acquisitions. Two arrivals that both read 2 both write 1: neither is the last,
/// `when_all` never completes and the method's waiter hangs.
#[test]
fn when_all_racy_count_never_completes() {
    loom_expect_failure(
        "loom_when::when_all_racy_count_never_completes",
        "when_all_racy_count_never_completes",
        "deadlock",
        || with_knob(Knob::WhenAllRacyCount, || when_all_model(false)),
    );
}

// ---------------------------------------------------------------------------------------
// 3. when_each

/// The `when_each` models.
mod when_each {
    use std::pin::Pin;
    use std::task::{Context as PollContext, Poll, Wake, Waker};

    use loom::sync::Notify;
    use loom::thread;
    use taskcheck::knobs::{with_knob, Knob};
    use taskcheck::Stream;
    use taskcheck::{when_each, CancellationToken, TaskCompletionSource};
    use taskcheck_models::{loom_expect_failure, loom_model};

    use super::Cases;

    /// The consumer's waker: unparks it.
    struct Unpark(Notify);

    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.notify();
        }
    }

    /// The next item of `stream`, parking the calling thread until its waker fires (a
    /// minimal `block_on(stream.next())`; loom's own needs its `futures` feature).
    fn next_blocking<S: Stream + Unpin>(
        stream: &mut S,
        unpark: &std::sync::Arc<Unpark>,
    ) -> Option<S::Item> {
        let waker = Waker::from(std::sync::Arc::clone(unpark));
        let mut cx = PollContext::from_waker(&waker);
        loop {
            match Pin::new(&mut *stream).poll_next(&mut cx) {
                Poll::Ready(item) => return item,
                Poll::Pending => unpark.0.wait(),
            }
        }
    }

    /// Inputs `a` and `b` succeed on two threads while the main thread builds the stream
    /// and consumes it to the end. Whether `b` came first.
    fn when_each_model() -> bool {
        let source_a = TaskCompletionSource::<u32>::new();
        let source_b = TaskCompletionSource::<u32>::new();
        let (a, b) = (source_a.task(), source_b.task());
        let completer_a =
            thread::spawn(move || source_a.set_result(1).expect("the only completer"));
        let completer_b =
            thread::spawn(move || source_b.set_result(2).expect("the only completer"));

        let mut each = when_each([a.clone(), b.clone()], &CancellationToken::none());
        let unpark = std::sync::Arc::new(Unpark(Notify::new()));
        let mut items = Vec::new();
        while let Some(item) = next_blocking(&mut each, &unpark) {
            let task = item.expect("no token: the stream is never canceled");
            assert!(task.is_completed(), "when_each yielded a pending input");
            items.push(task.outcome().expect("complete").expect("succeeded"));
            assert!(items.len() <= 2, "when_each yielded more items than inputs");
        }
        let b_first = items.first() == Some(&2);
        items.sort_unstable();
        assert_eq!(
            items,
            [1, 2],
            "when_each must yield each input exactly once"
        );
        assert!(
            next_blocking(&mut each, &unpark).is_none(),
            "an ended stream stays ended"
        );
        completer_a.join().unwrap();
        completer_b.join().unwrap();
        drop(each);
        assert_eq!(
            a.registered_continuations(),
            0,
            "a continuation leaked on a"
        );
        assert_eq!(
            b.registered_continuations(),
            0,
            "a continuation leaked on b"
        );
        b_first
    }

    #[test]
    fn yields_each_input_exactly_once() {
        let orders = Cases::default();
        loom_model("loom_when::when_each::yields_each_input_exactly_once", {
            let orders = orders.clone();
            move || orders.hit(when_each_model())
        });
        orders.assert_both(["a came first", "b came first"]);
    }

    /// Broken twin: an arriving input takes the consumer's waker (none yet) before it is
    /// queued, in a separate lock acquisition; a poll in between parks the consumer, and
    /// the input is then queued with nobody to wake it.
    #[test]
    fn lost_wake_strands_the_consumer() {
        loom_expect_failure(
            "loom_when::when_each::lost_wake_strands_the_consumer",
            "when_each::lost_wake_strands_the_consumer",
            "deadlock",
            || {
                with_knob(Knob::WhenEachLostWake, || {
                    when_each_model();
                });
            },
        );
    }
}

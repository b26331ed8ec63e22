//! Cancellation and time: one or more small tests per numbered rule of the module docs of
//! `cancellation.rs` (modules `rule_1` … `rule_9`) and `time.rs` (modules `clock_rule_1` …
//! `clock_rule_4`), then `advance`, `delay`, `yield_now`, `wait_async`,
//! `throw_if_cancellation_requested`, the `cancelled()` future and the error messages.
//!
//! Everything timed runs on a [`Clock::manual`]: time moves only when a test calls
//! `advance`, so no assertion depends on the wall clock. Threads are ordered by gates and
//! channels; the only timeouts in this file are watchdogs ([`PATIENCE`]) that turn a hang —
//! a deadlock the rules promise cannot happen — into a failure with a message. They order
//! nothing.

#![cfg(not(any(loom, shuttle)))]

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex, Once};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use taskcheck::{
    start, yield_now, CancelError, CancellationToken, CancellationTokenRegistration,
    CancellationTokenSource, Clock, ClockError, SingleThreadContext, Task, TaskCompletionSource,
    TaskError, TaskStatus, TimeoutError,
};
use tokio_test::task::spawn;
use tokio_test::{assert_pending, assert_ready};

// ---------------------------------------------------------------------------------------
// Helpers

/// How long a gate or a watched call may block before the test declares a hang.
const PATIENCE: Duration = Duration::from_secs(60);

/// Marks a panic that is part of the test; [`quiet_expected_panics`] keeps it off stderr.
const EXPECTED_PANIC: &str = "[expected panic]";

/// Installs (once) a panic hook that is silent for panics whose message contains
/// [`EXPECTED_PANIC`] and defers to the previous hook otherwise.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(|m| m.contains(EXPECTED_PANIC)) {
                previous(info);
            }
        }));
    });
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The name of the calling thread.
fn thread_name() -> String {
    thread::current().name().unwrap_or("<unnamed>").to_owned()
}

/// The text of a caught panic's payload.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// A one-shot gate: `wait` blocks until someone calls `open` (panics after [`PATIENCE`]).
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let deadline = Instant::now() + PATIENCE;
        let mut open = self.0 .0.lock().unwrap();
        while !*open {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "watchdog: a gate stayed closed; the test is hung"
            );
            open = self.0 .1.wait_timeout(open, left).unwrap().0;
        }
    }
}

/// An ordered record of events, shared with callbacks.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// A callback that records `event`.
    fn entry(&self, event: &str) -> impl FnOnce() + Send + 'static {
        let (log, event) = (self.clone(), event.to_owned());
        move || log.push(event)
    }
}

/// Runs `f` on a new thread named `name` and returns its result, re-raising its panic. If
/// `f` does not return within [`PATIENCE`] — it is blocked, which the rules under test
/// promise cannot happen — the test fails saying so (the blocked thread is left behind).
fn within_patience<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, outcome) = mpsc::channel();
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(f)));
        })
        .expect("start a thread");
    match outcome.recv_timeout(PATIENCE) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => resume_unwind(payload),
        Err(_) => panic!("watchdog: the call on thread {name:?} is blocked (a deadlock)"),
    }
}

/// A probe to give a callback: while the callback is stored somewhere, the probe's strong
/// count is 2; once the callback was dropped (run or discarded), it is back to 1.
fn probe() -> (Arc<()>, impl FnOnce() + Send + 'static) {
    let probe = Arc::new(());
    let held = probe.clone();
    (probe, move || drop(held))
}

/// A registration that the callback itself can reach (through the returned slot).
type Slot = Arc<Mutex<Option<CancellationTokenRegistration>>>;

// ---------------------------------------------------------------------------------------
// Rule 1: cancel runs the callbacks synchronously, on the calling thread, LIFO; the flag is
// up before the first; failures are collected; throw-on-first stops.

mod rule_1 {
    use super::*;

    #[test]
    fn callbacks_run_lifo_on_the_cancelling_thread_before_cancel_returns() {
        let source = Arc::new(CancellationTokenSource::new());
        let log = Log::default();
        let registrations: Vec<_> = (1..=3)
            .map(|n| {
                let log = log.clone();
                source
                    .token()
                    .register(move || log.push(format!("{n} on {}", thread_name())))
            })
            .collect();

        let (outcome, seen_when_cancel_returned) = within_patience("canceller", {
            let (source, log) = (source.clone(), log.clone());
            move || (source.cancel(), log.snapshot())
        });

        outcome.unwrap();
        assert_eq!(
            seen_when_cancel_returned,
            ["3 on canceller", "2 on canceller", "1 on canceller"]
        );
        assert!(registrations.iter().all(|r| !r.is_registered()));
    }

    #[test]
    fn cancellation_is_requested_before_the_first_callback_runs() {
        let source = Arc::new(CancellationTokenSource::new());
        let token = source.token();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let registrations: Vec<_> = (0..2)
            .map(|_| {
                let (source, token, seen) = (source.clone(), token.clone(), seen.clone());
                token.clone().register(move || {
                    seen.lock().unwrap().push((
                        token.is_cancellation_requested(),
                        source.is_cancellation_requested(),
                    ));
                })
            })
            .collect();

        source.cancel().unwrap();

        assert_eq!(*seen.lock().unwrap(), [(true, true), (true, true)]);
        drop(registrations);
    }

    #[test]
    fn failures_are_collected_in_order_and_returned_after_every_callback_ran() {
        quiet_expected_panics();
        let source = CancellationTokenSource::new();
        let token = source.token();
        let log = Log::default();
        let _a = token.register({
            let log = log.clone();
            move || {
                log.push("a");
                panic!("{EXPECTED_PANIC} a failed");
            }
        });
        let _b = token.register(log.entry("b"));
        let _c = token.register({
            let log = log.clone();
            move || {
                log.push("c");
                panic!("{EXPECTED_PANIC} c failed");
            }
        });
        let _d = token.register(log.entry("d"));

        let error = source.cancel().unwrap_err();

        assert_eq!(log.snapshot(), ["d", "c", "b", "a"], "every callback ran");
        assert!(matches!(error, CancelError::CallbacksFailed { .. }));
        let failures: Vec<String> = error.failures().iter().map(|f| f.to_string()).collect();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0].contains("c failed"),
            "in run order: {failures:?}"
        );
        assert!(
            failures[1].contains("a failed"),
            "in run order: {failures:?}"
        );
        assert!(failures[0].contains("panicked"), "{failures:?}");
        assert!(source.is_cancellation_requested());
    }

    #[test]
    fn throw_on_first_stops_at_the_first_failure_and_the_rest_stay_registered() {
        quiet_expected_panics();
        let source = CancellationTokenSource::new();
        let token = source.token();
        let log = Log::default();
        let a = token.register(log.entry("a"));
        let b = token.register({
            let log = log.clone();
            move || {
                log.push("b");
                panic!("{EXPECTED_PANIC} b failed");
            }
        });
        let c = token.register(log.entry("c"));

        let error = source.cancel_throw_on_first().unwrap_err();

        assert_eq!(log.snapshot(), ["c", "b"], "a never ran");
        assert_eq!(error.failures().len(), 1);
        assert!(error.failures()[0].to_string().contains("b failed"));
        assert!(source.is_cancellation_requested());
        assert!(a.is_registered() && !b.is_registered() && !c.is_registered());

        // Cancellation happened once: a later cancel does not run the rest either.
        source.cancel().unwrap();
        assert_eq!(log.snapshot(), ["c", "b"]);
        assert!(
            a.unregister(),
            "the callback after the failure is still registered"
        );
        assert!(!a.is_registered());
        assert!(!b.unregister() && !c.unregister());
    }
}

// ---------------------------------------------------------------------------------------
// Rule 2: cancel is idempotent; a second or concurrent call returns Ok at once.

mod rule_2 {
    use super::*;

    #[test]
    fn a_second_cancel_returns_ok_and_runs_nothing() {
        let source = CancellationTokenSource::new();
        let log = Log::default();
        let _registration = source.token().register(log.entry("ran"));
        source.cancel().unwrap();
        source.cancel().unwrap();
        source.cancel_throw_on_first().unwrap();
        assert_eq!(log.snapshot(), ["ran"]);
    }

    #[test]
    fn a_concurrent_cancel_returns_while_a_callback_of_the_first_is_still_blocked() {
        let source = Arc::new(CancellationTokenSource::new());
        let token = source.token();
        let log = Log::default();
        let (entered, release) = (Gate::default(), Gate::default());
        let _runs_second = token.register(log.entry("registered first"));
        let _runs_first = token.register({
            let (log, entered, release) = (log.clone(), entered.clone(), release.clone());
            move || {
                entered.open();
                release.wait();
                log.push("blocking callback finished");
            }
        });
        let first = thread::Builder::new()
            .name("first canceller".to_owned())
            .spawn({
                let source = source.clone();
                move || source.cancel()
            })
            .unwrap();
        entered.wait();

        // The first cancel is inside a callback, held by `release`: the second returns.
        let second = within_patience("second canceller", {
            let source = source.clone();
            move || source.cancel()
        });

        assert!(second.is_ok());
        assert!(token.is_cancellation_requested());
        assert!(
            log.snapshot().is_empty(),
            "the second cancel ran nothing and did not wait: {:?}",
            log.snapshot()
        );
        release.open();
        first.join().unwrap().unwrap();
        assert_eq!(
            log.snapshot(),
            ["blocking callback finished", "registered first"]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Rule 3: registering on a canceled token runs the callback inside `register`; the none
// token and a disposed uncanceled source store nothing.

mod rule_3 {
    use super::*;

    #[test]
    fn registering_on_a_canceled_token_runs_the_callback_inline_on_the_registering_thread() {
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        let token = source.token();
        let log = Log::default();

        let (ran_inside_register, registered, unregistered, registration_token) =
            within_patience("registrar", {
                let log = log.clone();
                move || {
                    let inner = log.clone();
                    let registration = token.register(move || inner.push(thread_name()));
                    let ran = log.snapshot().len();
                    (
                        ran,
                        registration.is_registered(),
                        registration.unregister(),
                        registration.token(),
                    )
                }
            });

        assert_eq!(ran_inside_register, 1, "it ran before register returned");
        assert_eq!(log.snapshot(), ["registrar"]);
        assert!(!registered && !unregistered, "an empty registration");
        assert_eq!(registration_token, CancellationToken::none());
    }

    #[test]
    fn a_panic_in_an_inline_callback_propagates_to_the_caller() {
        quiet_expected_panics();
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        let token = source.token();

        let payload = catch_unwind(AssertUnwindSafe(|| {
            token.register(|| panic!("{EXPECTED_PANIC} inline callback failed"))
        }))
        .expect_err("the panic reaches the caller of register");

        assert!(payload_text(&*payload).contains("inline callback failed"));
        // The source is not harmed: the next registration runs inline too.
        let log = Log::default();
        let _registration = token.register(log.entry("next"));
        assert_eq!(log.snapshot(), ["next"]);
    }

    #[test]
    fn the_none_token_never_cancels_and_registering_on_it_stores_nothing() {
        let none = CancellationToken::none();
        assert_eq!(none, CancellationToken::default());
        assert!(!none.can_be_canceled());
        assert!(!none.is_cancellation_requested());
        assert!(none.throw_if_cancellation_requested().is_ok());
        assert_eq!(none.to_string(), "the none token");

        let (probe, callback) = probe();
        let registration = none.register(callback);
        assert_eq!(
            Arc::strong_count(&probe),
            1,
            "the callback was dropped, not kept"
        );
        assert!(!registration.is_registered());
        assert!(!registration.unregister());

        let mut cancelled = spawn(none.cancelled());
        assert_pending!(cancelled.poll());
        assert_pending!(cancelled.poll());
        assert!(!cancelled.is_woken());
    }

    #[test]
    fn registering_on_a_disposed_uncanceled_source_stores_nothing() {
        let source = CancellationTokenSource::new();
        let token = source.token();
        source.dispose();

        let (probe, callback) = probe();
        let registration = token.register(callback);

        assert_eq!(
            Arc::strong_count(&probe),
            1,
            "the callback was dropped, not kept"
        );
        assert!(!registration.is_registered());
        assert!(!registration.unregister());
        assert!(!token.is_cancellation_requested());
    }
}

// ---------------------------------------------------------------------------------------
// Rule 4: unregister never waits; exactly one of {unregister returned true, the callback
// ran}.

mod rule_4 {
    use super::*;

    #[test]
    fn unregister_before_cancel_returns_true_and_the_callback_never_runs() {
        let source = CancellationTokenSource::new();
        let log = Log::default();
        let registration = source.token().register(log.entry("ran"));
        assert!(registration.unregister());
        assert!(!registration.unregister(), "removed once");
        source.cancel().unwrap();
        assert!(log.snapshot().is_empty());
    }

    #[test]
    fn unregister_after_the_callback_ran_returns_false() {
        let source = CancellationTokenSource::new();
        let log = Log::default();
        let registration = source.token().register(log.entry("ran"));
        source.cancel().unwrap();
        assert_eq!(log.snapshot(), ["ran"]);
        assert!(!registration.unregister());
    }

    #[test]
    fn unregister_from_inside_its_own_running_callback_returns_false() {
        let source = CancellationTokenSource::new();
        let slot: Slot = Arc::default();
        let answer = Arc::new(Mutex::new(None));
        let registration = source.token().register({
            let (slot, answer) = (slot.clone(), answer.clone());
            move || {
                let guard = slot.lock().unwrap();
                *answer.lock().unwrap() = Some(guard.as_ref().unwrap().unregister());
            }
        });
        *slot.lock().unwrap() = Some(registration);

        source.cancel().unwrap();

        assert_eq!(
            *answer.lock().unwrap(),
            Some(false),
            "it is running: not removed"
        );
    }

    #[test]
    fn a_callback_unregistering_a_sibling_that_has_not_run_removes_it() {
        let source = CancellationTokenSource::new();
        let token = source.token();
        let log = Log::default();
        let sibling: Slot = Arc::default();
        let answer = Arc::new(Mutex::new(None));
        *sibling.lock().unwrap() = Some(token.register(log.entry("sibling")));
        // Registered last, so it runs first (LIFO).
        let _first = token.register({
            let (sibling, answer, log) = (sibling.clone(), answer.clone(), log.clone());
            move || {
                log.push("first");
                let removed = sibling.lock().unwrap().as_ref().unwrap().unregister();
                *answer.lock().unwrap() = Some(removed);
            }
        });

        source.cancel().unwrap();

        assert_eq!(*answer.lock().unwrap(), Some(true));
        assert_eq!(log.snapshot(), ["first"], "the removed sibling never ran");
    }

    #[test]
    fn unregister_does_not_wait_for_a_callback_running_on_another_thread() {
        let source = Arc::new(CancellationTokenSource::new());
        let (entered, release) = (Gate::default(), Gate::default());
        let finished = Arc::new(AtomicBool::new(false));
        let registration = Arc::new(source.token().register({
            let (entered, release, finished) = (entered.clone(), release.clone(), finished.clone());
            move || {
                entered.open();
                release.wait();
                finished.store(true, Ordering::SeqCst);
            }
        }));
        let canceller = thread::spawn({
            let source = source.clone();
            move || source.cancel()
        });
        entered.wait();

        let removed = within_patience("unregisterer", {
            let registration = registration.clone();
            move || registration.unregister()
        });

        assert!(!removed, "it is running: not removed");
        assert!(
            !finished.load(Ordering::SeqCst),
            "unregister returned without waiting"
        );
        release.open();
        canceller.join().unwrap().unwrap();
        assert!(finished.load(Ordering::SeqCst));
    }

    #[test]
    fn exactly_one_of_removed_or_ran_when_unregister_races_cancel() {
        const ROUNDS: usize = 300;
        let (mut removed_count, mut ran_count) = (0, 0);
        for _ in 0..ROUNDS {
            let source = CancellationTokenSource::new();
            let ran = Arc::new(AtomicBool::new(false));
            let registration = source.token().register({
                let ran = ran.clone();
                move || ran.store(true, Ordering::SeqCst)
            });
            let start_line = Barrier::new(2);
            let removed = thread::scope(|scope| {
                scope.spawn(|| {
                    start_line.wait();
                    source.cancel().unwrap();
                });
                start_line.wait();
                registration.unregister()
            });
            let ran = ran.load(Ordering::SeqCst);
            assert!(removed != ran, "removed: {removed}, ran: {ran}");
            removed_count += usize::from(removed);
            ran_count += usize::from(ran);
        }
        assert_eq!(removed_count + ran_count, ROUNDS);
    }
}

// ---------------------------------------------------------------------------------------
// Rule 5: dropping (or disposing) a registration waits for its callback running on another
// thread, and returns at once inside a callback on the cancelling thread.

mod rule_5 {
    use super::*;

    #[test]
    fn dropping_an_unrun_registration_unregisters_it() {
        let source = CancellationTokenSource::new();
        let log = Log::default();
        drop(source.token().register(log.entry("dropped")));
        source.token().register(log.entry("disposed")).dispose();
        source.cancel().unwrap();
        assert!(log.snapshot().is_empty());
    }

    #[test]
    fn drop_and_dispose_wait_for_the_callback_running_on_another_thread() {
        for dispose in [false, true] {
            let source = Arc::new(CancellationTokenSource::new());
            let (entered, release) = (Gate::default(), Gate::default());
            let finished = Arc::new(AtomicBool::new(false));
            let registration = source.token().register({
                let (entered, release, finished) =
                    (entered.clone(), release.clone(), finished.clone());
                move || {
                    entered.open();
                    release.wait();
                    finished.store(true, Ordering::SeqCst);
                }
            });
            let canceller = thread::spawn({
                let source = source.clone();
                move || source.cancel()
            });
            entered.wait();

            let (dropped, drop_returned) = mpsc::channel();
            let dropper = thread::spawn({
                let finished = finished.clone();
                move || {
                    if dispose {
                        registration.dispose();
                    } else {
                        drop(registration);
                    }
                    dropped.send(finished.load(Ordering::SeqCst)).unwrap();
                }
            });
            for _ in 0..100 {
                thread::yield_now(); // Give the dropper a chance to reach its wait.
            }
            assert!(
                drop_returned.try_recv().is_err(),
                "dispose: {dispose}: the drop returned while the callback was still held"
            );

            release.open();
            let finished_when_drop_returned = drop_returned.recv_timeout(PATIENCE).unwrap();
            assert!(
                finished_when_drop_returned,
                "dispose: {dispose}: the drop returned before the callback finished"
            );
            dropper.join().unwrap();
            canceller.join().unwrap().unwrap();
        }
    }

    #[test]
    fn drop_and_dispose_inside_the_own_callback_on_the_cancelling_thread_return_at_once() {
        for dispose in [false, true] {
            let source = Arc::new(CancellationTokenSource::new());
            let slot: Slot = Arc::default();
            let log = Log::default();
            let registration = source.token().register({
                let (slot, log) = (slot.clone(), log.clone());
                move || {
                    let registration = slot.lock().unwrap().take().unwrap();
                    if dispose {
                        registration.dispose();
                    } else {
                        drop(registration);
                    }
                    log.push("returned");
                }
            });
            *slot.lock().unwrap() = Some(registration);

            let outcome = within_patience("canceller", {
                let source = source.clone();
                move || source.cancel()
            });

            outcome.unwrap();
            assert_eq!(log.snapshot(), ["returned"], "dispose: {dispose}");
        }
    }

    #[test]
    fn disposing_a_linked_source_inside_its_callback_during_the_parents_cancel_returns_at_once() {
        // The child's callback runs inside the link's callback, inside the parent's cancel;
        // disposing the child drops the link's registration while it is running, on this
        // very thread.
        let parent = Arc::new(CancellationTokenSource::new());
        let child = Arc::new(CancellationTokenSource::linked(&[parent.token()]));
        let log = Log::default();
        let weak = Arc::downgrade(&child);
        child
            .token()
            .register({
                let log = log.clone();
                move || {
                    weak.upgrade().unwrap().dispose();
                    log.push("child disposed");
                }
            })
            .detach();

        let outcome = within_patience("parent canceller", {
            let parent = parent.clone();
            move || parent.cancel()
        });

        outcome.unwrap();
        assert_eq!(log.snapshot(), ["child disposed"]);
        assert!(child.is_disposed() && child.is_cancellation_requested());
    }

    #[test]
    fn disposing_a_linked_source_from_a_parent_callback_that_runs_before_the_link() {
        let parent = Arc::new(CancellationTokenSource::new());
        let child = Arc::new(CancellationTokenSource::linked(&[parent.token()]));
        let log = Log::default();
        let _child_callback = child.token().register(log.entry("child callback"));
        // Registered after the link: runs before it (LIFO) and disposes the child.
        let _disposer = parent.token().register({
            let (child, log) = (child.clone(), log.clone());
            move || {
                child.dispose();
                log.push("child disposed");
            }
        });

        let outcome = within_patience("parent canceller", {
            let parent = parent.clone();
            move || parent.cancel()
        });

        outcome.unwrap();
        assert_eq!(
            log.snapshot(),
            ["child disposed"],
            "the link was removed first"
        );
        assert!(!child.is_cancellation_requested());
    }
}

// ---------------------------------------------------------------------------------------
// Rule 6: linked sources.

mod rule_6 {
    use super::*;

    #[test]
    fn a_parent_canceled_already_cancels_the_linked_source_at_creation() {
        let (canceled, live) = (
            CancellationTokenSource::new(),
            CancellationTokenSource::new(),
        );
        canceled.cancel().unwrap();
        let child = CancellationTokenSource::linked(&[live.token(), canceled.token()]);
        assert!(child.is_cancellation_requested());
        assert!(!live.is_cancellation_requested());
        let log = Log::default();
        let _inline = child.token().register(log.entry("inline"));
        assert_eq!(log.snapshot(), ["inline"]);
    }

    #[test]
    fn canceling_the_linked_source_does_not_touch_its_parents() {
        let (a, b) = (
            CancellationTokenSource::new(),
            CancellationTokenSource::new(),
        );
        let log = Log::default();
        let _on_a = a.token().register(log.entry("a"));
        let _on_b = b.token().register(log.entry("b"));
        let child = CancellationTokenSource::linked(&[a.token(), b.token()]);
        let _on_child = child.token().register(log.entry("child"));

        child.cancel().unwrap();

        assert_eq!(log.snapshot(), ["child"]);
        assert!(!a.is_cancellation_requested() && !b.is_cancellation_requested());
    }

    #[test]
    fn any_parent_cancels_the_linked_source() {
        for which in 0..2 {
            let parents = [
                CancellationTokenSource::new(),
                CancellationTokenSource::new(),
            ];
            let child = CancellationTokenSource::linked(&[parents[0].token(), parents[1].token()]);
            parents[which].cancel().unwrap();
            assert!(child.is_cancellation_requested(), "parent {which}");
            assert!(!parents[1 - which].is_cancellation_requested());
        }
    }

    #[test]
    fn the_linked_sources_callbacks_run_inside_the_parents_cancel_in_the_link_slot() {
        let parent = Arc::new(CancellationTokenSource::new());
        let log = Log::default();
        let _p1 = parent.token().register(log.entry("p1"));
        let child = CancellationTokenSource::linked(&[parent.token()]);
        let child_token = child.token();
        let _p3 = parent.token().register({
            let (log, child_token) = (log.clone(), child_token.clone());
            move || {
                log.push(format!(
                    "p3 (child canceled: {})",
                    child_token.is_cancellation_requested()
                ))
            }
        });
        let _c1 = child_token.register(log.entry("c1"));
        let _c2 = child_token.register({
            let log = log.clone();
            move || log.push(format!("c2 on {}", thread_name()))
        });

        let (outcome, seen_when_cancel_returned) = within_patience("parent canceller", {
            let (parent, log) = (parent.clone(), log.clone());
            move || (parent.cancel(), log.snapshot())
        });

        outcome.unwrap();
        assert_eq!(
            seen_when_cancel_returned,
            [
                "p3 (child canceled: false)",
                "c2 on parent canceller",
                "c1",
                "p1"
            ]
        );
        assert!(child.is_cancellation_requested());
    }

    #[test]
    fn failures_of_the_linked_sources_callbacks_come_back_from_the_parents_cancel() {
        quiet_expected_panics();
        let parent = CancellationTokenSource::new();
        let child = CancellationTokenSource::linked(&[parent.token()]);
        let log = Log::default();
        let _after = parent.token().register(log.entry("parent callback"));
        let _failing = child
            .token()
            .register(|| panic!("{EXPECTED_PANIC} child callback failed"));

        let error = parent.cancel().unwrap_err();

        assert_eq!(error.failures().len(), 1);
        assert!(error.failures()[0]
            .to_string()
            .contains("child callback failed"));
        assert_eq!(log.snapshot(), ["parent callback"], "the others still ran");
    }

    #[test]
    fn disposing_or_dropping_the_linked_source_unregisters_it_from_its_parents() {
        for dispose in [true, false] {
            let parent = CancellationTokenSource::new();
            let child = CancellationTokenSource::linked(&[parent.token()]);
            let child_token = child.token();
            let log = Log::default();
            let on_child = child_token.register(log.entry("child callback"));
            if dispose {
                child.dispose();
                assert!(child.is_disposed());
            } else {
                drop(child);
            }

            parent.cancel().unwrap();

            assert!(
                !child_token.is_cancellation_requested(),
                "dispose: {dispose}"
            );
            assert!(log.snapshot().is_empty(), "dispose: {dispose}");
            assert!(on_child.unregister(), "still registered, never ran");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rule 7: cancel_after on the source's clock; never inline; re-arm; no-op once canceled;
// a source created with a zero delay is canceled synchronously.

mod rule_7 {
    use super::*;

    #[test]
    fn cancel_after_fires_only_when_the_manual_clock_advances_on_the_advancing_thread() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        let log = Log::default();
        let _registration = source.token().register({
            let (log, clock) = (log.clone(), clock.clone());
            move || log.push(format!("on {} at {:?}", thread_name(), clock.now()))
        });

        source.cancel_after(ms(10)).unwrap();
        assert_eq!(clock.pending_timers(), 1);
        assert!(!source.is_cancellation_requested());
        let fired = within_patience("advancer", {
            let clock = clock.clone();
            move || (clock.advance(ms(9)).unwrap(), clock.advance(ms(1)).unwrap())
        });

        assert_eq!(fired, (0, 1));
        assert!(source.is_cancellation_requested());
        assert_eq!(log.snapshot(), ["on advancer at 10ms"]);
        assert_eq!(clock.pending_timers(), 0);
    }

    #[test]
    fn a_zero_cancel_after_is_never_inline_it_fires_on_the_next_advance() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        source.cancel_after(Duration::ZERO).unwrap();
        assert!(!source.is_cancellation_requested(), "not inline");
        assert_eq!(clock.advance(Duration::ZERO), Ok(1));
        assert!(source.is_cancellation_requested());
    }

    #[test]
    fn re_arming_moves_the_due_time_later_or_earlier() {
        let clock = Clock::manual();
        let later = CancellationTokenSource::with_clock(clock.clone());
        later.cancel_after(ms(10)).unwrap();
        later.cancel_after(ms(30)).unwrap();
        let earlier = CancellationTokenSource::with_clock(clock.clone());
        earlier.cancel_after(ms(30)).unwrap();
        earlier.cancel_after(ms(5)).unwrap();
        assert_eq!(clock.pending_timers(), 2, "one timer per source");

        assert_eq!(clock.advance(ms(5)), Ok(1));
        assert!(earlier.is_cancellation_requested());
        assert_eq!(clock.advance(ms(24)), Ok(0));
        assert!(!later.is_cancellation_requested(), "not at the old 10 ms");
        assert_eq!(clock.advance(ms(1)), Ok(1));
        assert!(later.is_cancellation_requested());
    }

    #[test]
    fn cancel_after_is_a_no_op_once_canceled() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        source.cancel().unwrap();
        source.cancel_after(ms(1)).unwrap();
        assert_eq!(clock.pending_timers(), 0);
    }

    #[test]
    fn cancel_stops_the_pending_timer() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        source.cancel_after(ms(10)).unwrap();
        source.cancel().unwrap();
        assert_eq!(clock.pending_timers(), 0);
        assert_eq!(clock.advance(ms(10)), Ok(0));
    }

    #[test]
    fn a_source_created_with_a_zero_delay_is_canceled_synchronously() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_delay(Duration::ZERO, clock.clone());
        assert!(source.is_cancellation_requested());
        assert_eq!(clock.pending_timers(), 0);
        let log = Log::default();
        let _inline = source.token().register(log.entry("inline"));
        assert_eq!(log.snapshot(), ["inline"]);
    }

    #[test]
    fn a_source_created_with_a_delay_cancels_when_it_elapses() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_delay(ms(3), clock.clone());
        assert!(!source.is_cancellation_requested());
        assert_eq!(clock.advance(ms(3)), Ok(1));
        assert!(source.is_cancellation_requested());
    }

    #[test]
    fn duration_max_never_fires_and_does_not_panic() {
        let clock = Clock::manual();
        // From now > 0 on, now + MAX overflows. (At now = 0 it does not, and a timer is
        // scheduled that `advance(Duration::MAX)` fires: reported, not tested here.)
        clock.advance(Duration::from_nanos(1)).unwrap();
        let armed = CancellationTokenSource::with_clock(clock.clone());
        armed.cancel_after(Duration::MAX).unwrap();
        let created = CancellationTokenSource::with_delay(Duration::MAX, clock.clone());
        assert_eq!(clock.pending_timers(), 0, "nothing is scheduled");

        clock.advance(Duration::from_secs(u64::MAX / 2)).unwrap();

        assert!(!armed.is_cancellation_requested());
        assert!(!created.is_cancellation_requested());
    }

    #[test]
    fn failures_of_callbacks_run_by_the_timer_do_not_stop_the_others_or_the_advance() {
        quiet_expected_panics();
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        let log = Log::default();
        let _other = source.token().register(log.entry("other"));
        let _failing = source
            .token()
            .register(|| panic!("{EXPECTED_PANIC} timer-run callback failed"));
        source.cancel_after(ms(1)).unwrap();

        // The failure has no caller to return to: it is printed to stderr.
        assert_eq!(clock.advance(ms(1)), Ok(1));

        assert_eq!(log.snapshot(), ["other"]);
        assert!(source.is_cancellation_requested());
    }
}

// ---------------------------------------------------------------------------------------
// Rule 8: dispose.

mod rule_8 {
    use super::*;

    #[test]
    fn after_dispose_cancel_cancel_after_and_try_reset_return_disposed() {
        let source = CancellationTokenSource::new();
        let id = format!("{source:?}");
        source.dispose();
        source.dispose(); // idempotent
        assert!(source.is_disposed());

        let errors = [
            source.cancel().unwrap_err(),
            source.cancel_throw_on_first().unwrap_err(),
            source.cancel_after(ms(1)).unwrap_err(),
            source.try_reset().unwrap_err(),
        ];
        for error in &errors {
            let CancelError::Disposed { source: number } = error else {
                panic!("expected Disposed, got {error:?}");
            };
            assert!(id.contains(&format!("id: {number}")), "{id} / {error:?}");
            assert!(error.failures().is_empty());
            let message = error.to_string();
            assert!(
                message.contains(&format!("#{number} was disposed")),
                "{message}"
            );
            assert!(message.contains("create a new source"), "{message}");
        }
        assert!(!source.is_cancellation_requested());
    }

    #[test]
    fn dispose_and_drop_stop_the_timer() {
        let clock = Clock::manual();
        let disposed = CancellationTokenSource::with_clock(clock.clone());
        disposed.cancel_after(ms(10)).unwrap();
        let dropped = CancellationTokenSource::with_clock(clock.clone());
        dropped.cancel_after(ms(10)).unwrap();
        let dropped_token = dropped.token();
        assert_eq!(clock.pending_timers(), 2);

        disposed.dispose();
        drop(dropped);

        assert_eq!(clock.pending_timers(), 0);
        assert_eq!(clock.advance(ms(10)), Ok(0));
        assert!(!disposed.is_cancellation_requested());
        assert!(!dropped_token.is_cancellation_requested());
    }

    #[test]
    fn registrations_from_before_dispose_stay_registered_and_never_run() {
        let source = CancellationTokenSource::new();
        let log = Log::default();
        let registration = source.token().register(log.entry("ran"));
        source.dispose();

        assert!(registration.is_registered());
        assert!(source.cancel().is_err());
        assert!(log.snapshot().is_empty());
        assert!(
            registration.unregister(),
            "rule 4 still holds: removed, never ran"
        );
    }

    #[test]
    fn the_token_keeps_reporting_the_state_it_had() {
        let canceled = CancellationTokenSource::new();
        canceled.cancel().unwrap();
        let canceled_token = canceled.token();
        drop(canceled);
        assert!(canceled_token.is_cancellation_requested());
        let log = Log::default();
        let _inline = canceled_token.register(log.entry("inline on a canceled, disposed source"));
        assert_eq!(log.snapshot(), ["inline on a canceled, disposed source"]);

        let live = CancellationTokenSource::new();
        let live_token = live.token();
        drop(live);
        assert!(!live_token.is_cancellation_requested());
        assert!(live_token.can_be_canceled());
    }
}

// ---------------------------------------------------------------------------------------
// Rule 9: try_reset.

mod rule_9 {
    use super::*;

    #[test]
    fn try_reset_drops_the_callbacks_without_running_them() {
        let source = CancellationTokenSource::new();
        let (probe, callback) = probe();
        let registration = source.token().register(callback);
        assert_eq!(Arc::strong_count(&probe), 2);

        assert!(source.try_reset().unwrap());

        assert_eq!(Arc::strong_count(&probe), 1, "dropped, not run later");
        assert!(!registration.is_registered());
        assert!(
            !registration.unregister(),
            "as in .NET: false after a reset"
        );
    }

    #[test]
    fn try_reset_returns_false_once_canceled() {
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        assert!(!source.try_reset().unwrap());
        assert!(source.is_cancellation_requested(), "nothing changed");
    }

    #[test]
    fn try_reset_from_a_callback_during_cancel_returns_false() {
        let source = Arc::new(CancellationTokenSource::new());
        let answer = Arc::new(Mutex::new(None));
        let weak = Arc::downgrade(&source);
        let _registration = source.token().register({
            let answer = answer.clone();
            move || *answer.lock().unwrap() = Some(weak.upgrade().unwrap().try_reset().unwrap())
        });
        source.cancel().unwrap();
        assert_eq!(*answer.lock().unwrap(), Some(false));
    }

    #[test]
    fn a_reset_source_can_be_used_again() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        let log = Log::default();
        let _old = source.token().register(log.entry("old"));
        source.cancel_after(ms(10)).unwrap();

        assert!(source.try_reset().unwrap());
        assert_eq!(clock.pending_timers(), 0, "the timer was stopped");
        assert_eq!(clock.advance(ms(10)), Ok(0));
        assert!(!source.is_cancellation_requested());

        let _new = source.token().register(log.entry("new"));
        source.cancel_after(ms(5)).unwrap();
        assert_eq!(clock.advance(ms(5)), Ok(1));
        assert!(source.is_cancellation_requested());
        assert_eq!(log.snapshot(), ["new"]);
    }
}

// ---------------------------------------------------------------------------------------
// Clock rules (time.rs).

mod clock_rule_1 {
    use super::*;

    #[test]
    fn a_due_timer_never_fires_in_the_call_that_schedules_it() {
        let clock = Clock::manual();
        let sources: Vec<_> = (0..2)
            .map(|_| CancellationTokenSource::with_clock(clock.clone()))
            .collect();
        sources[0].cancel_after(Duration::ZERO).unwrap();
        // A wait_async timeout goes through the same timer path.
        let pending = TaskCompletionSource::<u32>::new();
        let waited = pending.task().wait_async_on(
            &clock,
            Some(Duration::from_nanos(1)),
            &CancellationToken::none(),
        );
        assert!(!sources[0].is_cancellation_requested());
        assert_eq!(waited.status(), TaskStatus::Pending);

        assert_eq!(
            clock.advance(Duration::ZERO),
            Ok(1),
            "the zero delay, from the timer path"
        );
        assert!(sources[0].is_cancellation_requested());
        assert_eq!(clock.advance(Duration::from_nanos(1)), Ok(1));
        assert!(waited.outcome().unwrap().unwrap_err().is_timeout());
        drop(pending);
    }
}

mod clock_rule_2 {
    use super::*;

    #[test]
    fn advance_fires_in_due_order_equal_dues_in_scheduling_order_with_now_at_each_due_time() {
        let clock = Clock::manual();
        let log = Log::default();
        let mut sources = Vec::new();
        let mut registrations = Vec::new();
        for (name, due) in [("a", 30), ("b", 10), ("c", 20), ("d", 10)] {
            let source = CancellationTokenSource::with_clock(clock.clone());
            registrations.push(source.token().register({
                let (log, clock) = (log.clone(), clock.clone());
                move || log.push(format!("{name} at {:?}", clock.now()))
            }));
            source.cancel_after(ms(due)).unwrap();
            sources.push(source);
        }

        assert_eq!(clock.advance(ms(100)), Ok(4));

        assert_eq!(
            log.snapshot(),
            ["b at 10ms", "d at 10ms", "c at 20ms", "a at 30ms"]
        );
        assert_eq!(clock.now(), ms(100));
    }
}

mod clock_rule_3 {
    use super::*;

    #[test]
    fn deadlines_beyond_the_range_schedule_nothing_and_never_elapse() {
        let clock = Clock::manual();
        clock.advance(ms(1)).unwrap(); // now > 0, so now + MAX overflows (see rule_7)
        let none = CancellationToken::none();
        let forever = clock.delay(Duration::MAX, &none);
        let pending = TaskCompletionSource::<u32>::new();
        let waited = pending
            .task()
            .wait_async_on(&clock, Some(Duration::MAX), &none);
        let source = CancellationTokenSource::with_clock(clock.clone());
        source.cancel_after(Duration::MAX).unwrap();

        assert_eq!(clock.pending_timers(), 0);
        assert_eq!(clock.advance(Duration::from_secs(u64::MAX / 2)), Ok(0));
        assert_eq!(forever.status(), TaskStatus::Pending);
        assert_eq!(waited.status(), TaskStatus::Pending);
        assert!(!source.is_cancellation_requested());
        pending.set_result(1).unwrap();
        assert_eq!(waited.wait().unwrap(), 1);
    }
}

mod clock_rule_4 {
    use super::*;

    #[test]
    fn timer_callbacks_may_schedule_and_cancel_timers_and_new_due_ones_fire_in_the_same_advance() {
        let clock = Clock::manual();
        let first = CancellationTokenSource::with_clock(clock.clone());
        let chained = Arc::new(CancellationTokenSource::with_clock(clock.clone()));
        let stopped = Arc::new(CancellationTokenSource::with_clock(clock.clone()));
        stopped.cancel_after(ms(15)).unwrap();
        let log = Log::default();
        let _chain = first.token().register({
            let (chained, stopped, log) = (chained.clone(), stopped.clone(), log.clone());
            move || {
                chained.cancel_after(ms(5)).unwrap(); // schedules (due 15 ms)
                log.push(format!(
                    "stopped's timer removed: {}",
                    stopped.try_reset().unwrap()
                ));
            }
        });
        let _chained_log = chained.token().register({
            let (log, clock) = (log.clone(), clock.clone());
            move || log.push(format!("chained at {:?}", clock.now()))
        });
        first.cancel_after(ms(10)).unwrap();

        assert_eq!(clock.advance(ms(20)), Ok(2));

        assert_eq!(
            log.snapshot(),
            ["stopped's timer removed: true", "chained at 15ms"]
        );
        assert!(!stopped.is_cancellation_requested());
        assert_eq!(clock.pending_timers(), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Clock::advance and the clock kinds.

mod advance {
    use super::*;

    #[test]
    fn the_system_clock_cannot_be_advanced() {
        let system = Clock::system();
        assert!(!system.is_manual());
        assert!(Clock::manual().is_manual());
        let error = system.advance(ms(1)).unwrap_err();
        assert_eq!(error, ClockError::NotManual);
        let message = error.to_string();
        assert!(
            message.contains("only a manual clock can be advanced"),
            "{message}"
        );
        assert!(message.contains("Clock::manual()"), "{message}");
    }

    #[test]
    fn an_overflowing_advance_fails_and_moves_nothing() {
        let clock = Clock::manual();
        assert_eq!(clock.now(), Duration::ZERO, "a manual clock starts at zero");
        clock.advance(ms(1)).unwrap();
        let source = CancellationTokenSource::with_clock(clock.clone());
        source.cancel_after(ms(1)).unwrap();

        let error = clock.advance(Duration::MAX).unwrap_err();

        assert_eq!(
            error,
            ClockError::Overflow {
                now: ms(1),
                by: Duration::MAX
            }
        );
        assert_eq!(clock.now(), ms(1));
        assert!(!source.is_cancellation_requested(), "no timer fired");
        let message = error.to_string();
        assert!(message.contains("overflows"), "{message}");
        assert!(message.contains("advance by a smaller amount"), "{message}");
    }

    #[test]
    fn clones_share_time_and_timers() {
        let clock = Clock::manual();
        let clone = clock.clone();
        let source = CancellationTokenSource::with_clock(clone.clone());
        source.cancel_after(ms(2)).unwrap();
        assert_eq!(clock.pending_timers(), 1);
        assert_eq!(clock.advance(ms(2)), Ok(1));
        assert_eq!(clone.now(), ms(2));
        assert!(source.is_cancellation_requested());
    }
}

// ---------------------------------------------------------------------------------------
// delay

mod delay {
    use super::*;

    #[test]
    fn completes_when_the_manual_clock_advances() {
        let clock = Clock::manual();
        let delay = clock.delay(ms(10), &CancellationToken::none());
        assert_eq!(delay.status(), TaskStatus::Pending);
        assert_eq!(clock.pending_timers(), 1);
        assert_eq!(clock.advance(ms(9)), Ok(0));
        assert_eq!(delay.status(), TaskStatus::Pending);
        assert_eq!(clock.advance(ms(1)), Ok(1));
        assert_eq!(delay.status(), TaskStatus::Succeeded);
        assert_eq!(clock.pending_timers(), 0);
    }

    #[test]
    fn canceled_by_its_token_it_ends_canceled_carrying_the_token_and_releases_its_timer() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        let token = source.token();
        let delay = clock.delay(ms(10), &token);
        assert_eq!(clock.pending_timers(), 1);

        source.cancel().unwrap();

        assert_eq!(delay.status(), TaskStatus::Canceled);
        let error = delay.outcome().unwrap().unwrap_err();
        assert_eq!(error.cancellation_token(), Some(&token));
        assert_eq!(clock.pending_timers(), 0, "the timer was released");
        assert_eq!(clock.advance(ms(10)), Ok(0));
        assert_eq!(delay.status(), TaskStatus::Canceled);
    }

    #[test]
    fn after_elapsing_a_cancel_changes_nothing() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        let delay = clock.delay(ms(1), &source.token());
        clock.advance(ms(1)).unwrap();
        source.cancel().unwrap();
        assert_eq!(delay.status(), TaskStatus::Succeeded);
    }

    #[test]
    fn a_zero_delay_is_complete_already() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        let delay = clock.delay(Duration::ZERO, &source.token());
        assert_eq!(delay.status(), TaskStatus::Succeeded);
        assert_eq!(clock.pending_timers(), 0);
        let system = taskcheck::delay(Duration::ZERO, &CancellationToken::none());
        assert_eq!(system.status(), TaskStatus::Succeeded);
    }

    #[test]
    fn an_already_canceled_token_gives_an_already_canceled_delay() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        let token = source.token();
        for delay in [ms(10), Duration::ZERO] {
            let delay = clock.delay(delay, &token);
            assert_eq!(delay.status(), TaskStatus::Canceled);
            let error = delay.outcome().unwrap().unwrap_err();
            assert_eq!(error.cancellation_token(), Some(&token));
        }
        assert_eq!(clock.pending_timers(), 0);
    }

    #[test]
    fn its_continuation_is_queued_not_run_on_the_advancing_thread() {
        let clock = Clock::manual();
        // An async method on a plain thread: its await captures nothing.
        let method = start({
            let delay = clock.delay(ms(1), &CancellationToken::none());
            async move {
                delay.await?;
                Ok::<_, TaskError>(thread_name())
            }
        });
        assert_eq!(method.status(), TaskStatus::Pending);

        within_patience("advancer", move || clock.advance(ms(1)).unwrap());

        let resumed_on = method.wait().unwrap();
        assert_ne!(resumed_on, "advancer");
        assert!(resumed_on.starts_with("taskcheck-pool"), "{resumed_on}");
    }
}

// ---------------------------------------------------------------------------------------
// yield_now

mod yield_now {
    use super::*;

    #[test]
    fn lets_the_work_already_queued_run_first_on_a_single_thread_context() {
        let ui = SingleThreadContext::new("ui");
        let log = Log::default();
        let yielding = ui.spawn({
            let log = log.clone();
            async move {
                log.push("A before yield");
                yield_now().await;
                log.push(format!("A after yield on {}", thread_name()));
                Ok::<_, TaskError>(())
            }
        });
        let other = ui.spawn({
            let log = log.clone();
            async move {
                log.push("B");
                Ok::<_, TaskError>(())
            }
        });

        // A's first poll, B, A's rest: three jobs.
        assert_eq!(ui.run_until_idle(), Ok(3));

        let here = thread_name();
        assert_eq!(
            log.snapshot(),
            [
                "A before yield".to_owned(),
                "B".to_owned(),
                format!("A after yield on {here}")
            ]
        );
        assert_eq!(yielding.status(), TaskStatus::Succeeded);
        assert_eq!(other.status(), TaskStatus::Succeeded);
    }

    #[test]
    fn the_first_poll_wakes_and_suspends_the_second_completes() {
        let mut yielded = spawn(yield_now());
        assert_pending!(yielded.poll());
        assert!(yielded.is_woken());
        assert_ready!(yielded.poll());
    }
}

// ---------------------------------------------------------------------------------------
// wait_async edge cases (the main cases are in the scenario tests).

mod wait_async {
    use super::*;

    #[test]
    fn a_completed_task_is_returned_as_it_is() {
        let clock = Clock::manual();
        let done = Task::from_result(41_u64);
        let waited = done.wait_async_on(&clock, Some(ms(1)), &CancellationToken::none());
        assert_eq!(waited.id(), done.id());
        assert_eq!(clock.pending_timers(), 0);
    }

    #[test]
    fn an_already_canceled_token_gives_a_canceled_task_carrying_it() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        let token = source.token();
        let pending = TaskCompletionSource::<u32>::new();
        let waited = pending.task().wait_async_on(&clock, Some(ms(1)), &token);
        let error = waited.outcome().unwrap().unwrap_err();
        assert_eq!(error.cancellation_token(), Some(&token));
        assert_eq!(clock.pending_timers(), 0);
        drop(pending);
    }

    #[test]
    fn a_zero_timeout_on_a_pending_task_times_out_at_once() {
        let clock = Clock::manual();
        let pending = TaskCompletionSource::<u32>::new();
        let waited =
            pending
                .task()
                .wait_async_on(&clock, Some(Duration::ZERO), &CancellationToken::none());
        let error = waited.outcome().unwrap().unwrap_err();
        assert!(error.is_timeout() && error.is_faulted());
        let timeout = error.downcast_ref::<TimeoutError>().unwrap();
        assert_eq!(timeout.task(), pending.task().id());
        assert_eq!(timeout.after(), Duration::ZERO);
        assert_eq!(pending.task().status(), TaskStatus::Pending);
        drop(pending);
    }

    #[test]
    fn no_timeout_schedules_no_timer() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::new();
        let pending = TaskCompletionSource::<u32>::new();
        let waited = pending.task().wait_async_on(&clock, None, &source.token());
        assert_eq!(clock.pending_timers(), 0);
        pending.set_result(2).unwrap();
        assert_eq!(waited.wait().unwrap(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// throw_if_cancellation_requested

mod throw_if_cancellation_requested {
    use super::*;

    #[test]
    fn returns_a_cancellation_carrying_the_token() {
        let source = CancellationTokenSource::new();
        let token = source.token();
        assert!(token.throw_if_cancellation_requested().is_ok());
        source.cancel().unwrap();

        let error = token.throw_if_cancellation_requested().unwrap_err();

        assert!(error.is_canceled() && !error.is_faulted());
        assert_eq!(error.status(), TaskStatus::Canceled);
        assert_eq!(error.cancellation_token(), Some(&token));
        let other = CancellationTokenSource::new();
        assert_ne!(error.cancellation_token(), Some(&other.token()));
        assert_eq!(TaskError::canceled().cancellation_token(), None);
    }

    #[test]
    fn with_question_mark_a_task_body_ends_canceled() {
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        let token = source.token();
        let task = start({
            let token = token.clone();
            async move {
                token.throw_if_cancellation_requested()?;
                Ok::<_, TaskError>(1)
            }
        });
        assert_eq!(task.status(), TaskStatus::Canceled);
        let error = task.outcome().unwrap().unwrap_err();
        assert_eq!(error.cancellation_token(), Some(&token));
    }
}

// ---------------------------------------------------------------------------------------
// The cancelled() future

mod cancelled_future {
    use super::*;

    #[test]
    fn completes_when_another_thread_cancels() {
        let source = CancellationTokenSource::new();
        let mut cancelled = spawn(source.token().cancelled());
        assert_pending!(cancelled.poll());
        assert!(!cancelled.is_woken());

        within_patience("canceller", move || source.cancel()).unwrap();

        assert!(cancelled.is_woken());
        assert_ready!(cancelled.poll());
    }

    #[test]
    fn an_awaiting_task_resumes_when_another_thread_cancels() {
        let ui = SingleThreadContext::new("ui");
        let source = CancellationTokenSource::new();
        let token = source.token();
        let source = Arc::new(Mutex::new(Some(source)));
        let first_poll_pending = ui
            .block_on(async move {
                let mut cancelled = Box::pin(token.cancelled());
                let first_poll_pending =
                    poll_fn(|cx| Poll::Ready(cancelled.as_mut().poll(cx).is_pending())).await;
                // Suspended and registered: now cancel from another thread.
                let source = source.lock().unwrap().take().unwrap();
                let canceller = thread::Builder::new()
                    .name("canceller".to_owned())
                    .spawn(move || source.cancel())
                    .unwrap();
                cancelled.await;
                canceller.join().unwrap()?;
                Ok::<_, TaskError>(first_poll_pending)
            })
            .unwrap();
        assert!(first_poll_pending);
    }

    #[test]
    fn completes_at_once_when_already_canceled() {
        let source = CancellationTokenSource::new();
        source.cancel().unwrap();
        let mut cancelled = spawn(source.token().cancelled());
        assert_ready!(cancelled.poll());
        assert_eq!(cancelled.waker_ref_count(), 1, "nothing was registered");
    }
}

// ---------------------------------------------------------------------------------------
// Error messages say what happened and what to do.

mod messages {
    use super::*;

    #[test]
    fn callbacks_failed_counts_the_failures_and_says_what_to_do() {
        quiet_expected_panics();
        let source = CancellationTokenSource::new();
        let _failing = source
            .token()
            .register(|| panic!("{EXPECTED_PANIC} cleanup failed"));
        let message = source.cancel().unwrap_err().to_string();
        assert!(
            message.contains("every callback ran, but 1 failed"),
            "{message}"
        );
        assert!(message.contains("cleanup failed"), "{message}");
        assert!(
            message
                .contains("a cancellation callback should not panic: catch the failure inside it"),
            "{message}"
        );
    }

    #[test]
    fn a_timeout_says_only_the_waiting_stopped_and_how_to_stop_the_work() {
        let clock = Clock::manual();
        let pending = TaskCompletionSource::<u32>::new();
        let waited = pending
            .task()
            .wait_async_on(&clock, Some(ms(5)), &CancellationToken::none());
        clock.advance(ms(5)).unwrap();
        let message = waited.outcome().unwrap().unwrap_err().to_string();
        assert!(
            message.contains(&pending.task().id().to_string()),
            "{message}"
        );
        assert!(message.contains("did not complete within 5ms"), "{message}");
        assert!(message.contains("only stopped the waiting"), "{message}");
        assert!(message.contains("await the original task"), "{message}");
        assert!(
            message.contains("cancel the operation's own token"),
            "{message}"
        );
        drop(pending);
    }

    #[test]
    fn a_cancellation_names_its_token() {
        let source = CancellationTokenSource::new();
        let token = source.token();
        source.cancel().unwrap();
        let message = TaskError::canceled_by(&token).to_string();
        assert_eq!(message, format!("the task was canceled by {token}"));
        assert!(
            message.contains("the token of cancellation source #"),
            "{message}"
        );
        assert_eq!(TaskError::canceled().to_string(), "the task was canceled");
        assert!(format!("{token:?}").contains("is_cancellation_requested: true"));
    }
}

mod clock_rule_3_infinite {
    use super::*;

    /// Clock rule 3 / cancellation rule 7: `Duration::MAX` is Rust's infinite timeout; it
    /// never falls due, also on a fresh manual clock (now = 0, where `now + MAX` does not
    /// overflow).
    #[test]
    fn duration_max_never_fires_even_on_a_fresh_manual_clock() {
        let clock = Clock::manual();
        let none = CancellationToken::none();
        let source = CancellationTokenSource::with_clock(clock.clone());
        source.cancel_after(Duration::MAX).unwrap();
        let forever = clock.delay(Duration::MAX, &none);
        let pending = TaskCompletionSource::<u32>::new();
        let waited = pending
            .task()
            .wait_async_on(&clock, Some(Duration::MAX), &none);

        assert_eq!(
            clock.pending_timers(),
            0,
            "an infinite delay schedules nothing"
        );
        assert_eq!(clock.advance(Duration::MAX), Ok(0));
        assert!(!source.is_cancellation_requested());
        assert_eq!(forever.status(), TaskStatus::Pending);
        assert_eq!(waited.status(), TaskStatus::Pending);
        pending.set_result(1).unwrap();
        assert_eq!(waited.wait().unwrap(), 1);
    }
}

/// Regressions from a review: each test failed before its fix.
mod review_regressions {
    use super::*;

    /// Disposing a never-canceled source drops its callbacks' closures (they can never
    /// run), so what they own is released, and their registrations still unregister.
    #[test]
    fn dispose_releases_what_the_callbacks_own() {
        let owned = Arc::new(());
        let source = CancellationTokenSource::new();
        let registration = {
            let owned = owned.clone();
            source.token().register(move || drop(owned))
        };
        assert_eq!(Arc::strong_count(&owned), 2);
        source.dispose();
        assert_eq!(
            Arc::strong_count(&owned),
            1,
            "the closure was dropped at the dispose"
        );
        assert!(registration.unregister(), "still registered, never ran");
    }

    /// A delay that never elapses no longer keeps its token's source alive after the
    /// source is dropped (the source -> callback -> delay -> registration -> source cycle).
    #[test]
    fn a_never_ending_delay_does_not_leak_its_tokens_source() {
        let owned = Arc::new(());
        let source = CancellationTokenSource::new();
        let token = source.token();
        {
            let owned = owned.clone();
            token.register(move || drop(owned)).detach();
        }
        drop(Clock::system().delay(Duration::MAX, &token));
        drop(token);
        drop(source);
        assert_eq!(Arc::strong_count(&owned), 1);
    }

    /// A timer callback that advances the clock further is not undone by the outer
    /// advance: time never goes backwards.
    #[test]
    fn a_nested_advance_is_not_undone() {
        let clock = Clock::manual();
        let source = CancellationTokenSource::with_clock(clock.clone());
        {
            let clock = clock.clone();
            source
                .token()
                .register(move || {
                    clock.advance(Duration::from_secs(10)).unwrap();
                })
                .detach();
        }
        source.cancel_after(Duration::from_secs(1)).unwrap();
        clock.advance(Duration::from_secs(2)).unwrap();
        assert_eq!(clock.now(), Duration::from_secs(11));
    }

    /// A panicking timer callback does not escape `advance` or stop the timers after it.
    #[test]
    fn a_panicking_timer_callback_is_contained_by_advance() {
        let clock = Clock::manual();
        let first = CancellationTokenSource::with_clock(clock.clone());
        first
            .token()
            .register(|| panic!("timer callback panic [expected panic]"))
            .detach();
        first.cancel_after(Duration::from_secs(1)).unwrap();
        let second = clock.delay(Duration::from_secs(2), &CancellationToken::none());
        assert_eq!(clock.advance(Duration::from_secs(3)), Ok(2));
        assert!(first.is_cancellation_requested());
        assert_eq!(second.status(), TaskStatus::Succeeded);
    }
}

//! Shared helpers for the scenario tests in `tests/scenarios/`.
//!
//! Every helper here is a *test double that counts* or a *hand-operated* piece of
//! synchronisation: the scenarios assert exact counts (polls, wakes, jobs run, threads) and
//! never use time to order events. The only clock in this file is a watchdog: a
//! [`Gate`] or [`Latch`] that waits more than [`PATIENCE`] panics with a message instead
//! of hanging the test run. It orders nothing.
//!
//! | helper | what it is for |
//! |---|---|
//! | [`on_thread`] | run a scenario on a named thread (the "UI thread"), re-raising its panics |
//! | [`Gate`], [`Latch`] | hold a piece of work until the test lets it go |
//! | [`Counter`], [`Log`] | count events, record what happened in which order |
//! | [`Whereabouts`] | which thread and which context some code ran on |
//! | [`CountingWaker`], [`PollCounter`] | count wakes and polls exactly |
//! | [`ManualTimer`] | a user-written awaitable (the awaiter contract), fired by hand |
//! | [`Boom`] | a typed error to fault tasks with and find again by downcasting |
//! | [`quiet_expected_panics`] | keep the output readable when panics are the point |

use std::error::Error;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::task::{Context as PollContext, Poll, Wake, Waker};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use taskcheck::{
    Awaitable, Awaiter, ConfigureAwaitOptions, ConfiguredAwait, Context, ContextId, Continuation,
    WaitError, WouldDeadlock,
};

/// How long a [`Gate`] or [`Latch`] waits before it declares the test hung. A watchdog,
/// not a synchronisation: no scenario depends on it for its outcome.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `scenario` on a fresh thread named `name` and returns its result; a panic on that
/// thread is re-raised on the caller's, so assertions there fail the test.
///
/// Scenarios that play a UI thread run on one named `"ui"`: deadlock reports then name a
/// thread the reader can recognise, whatever the test harness names its own threads.
pub fn on_thread<R: Send>(name: &str, scenario: impl FnOnce() -> R + Send) -> R {
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, scenario)
            .expect("start a scenario thread");
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// A one-shot gate: work that calls [`Gate::wait`] is held until someone calls
/// [`Gate::open`]. Clones share the gate.
#[derive(Clone, Debug, Default)]
pub struct Gate(Latch);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate(Latch::new(1))
    }

    /// Opens the gate for every waiter, now and later.
    pub fn open(&self) {
        self.0.count_down();
    }

    /// Whether it is open.
    pub fn is_open(&self) -> bool {
        self.0.remaining() == 0
    }

    /// Blocks until the gate is open (panics after [`PATIENCE`]).
    pub fn wait(&self) {
        self.0.wait();
    }
}

/// A countdown latch: [`Latch::wait`] returns once [`Latch::count_down`] was called `n`
/// times. Clones share the latch.
#[derive(Clone, Debug)]
pub struct Latch {
    inner: Arc<(Mutex<usize>, Condvar)>,
}

impl Default for Latch {
    fn default() -> Self {
        Latch::new(1)
    }
}

impl Latch {
    /// A latch that opens after `n` count-downs.
    pub fn new(n: usize) -> Self {
        Latch {
            inner: Arc::new((Mutex::new(n), Condvar::new())),
        }
    }

    /// Counts down once (saturating at zero).
    pub fn count_down(&self) {
        let (count, opened) = &*self.inner;
        let mut count = count.lock().unwrap();
        *count = count.saturating_sub(1);
        if *count == 0 {
            opened.notify_all();
        }
    }

    /// How many count-downs are still missing.
    pub fn remaining(&self) -> usize {
        *self.inner.0.lock().unwrap()
    }

    /// Blocks until the count reaches zero (panics after [`PATIENCE`]: the test hung).
    pub fn wait(&self) {
        let (count, opened) = &*self.inner;
        let deadline = Instant::now() + PATIENCE;
        let mut count = count.lock().unwrap();
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "watchdog: a latch still missed {} count-down(s) after {PATIENCE:?}; the \
                 scenario is hung",
                *count
            );
            count = opened.wait_timeout(count, left).unwrap().0;
        }
    }
}

/// A shared event counter.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event; returns the count before it (so the first caller gets 0).
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst)
    }

    /// The number of events so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A shared, ordered record of events.
#[derive(Debug)]
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Log(self.0.clone())
    }
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log(Arc::default())
    }
}

impl<T: Clone> Log<T> {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event.
    pub fn push(&self, event: T) {
        self.0.lock().unwrap().push(event);
    }

    /// Everything recorded so far, in order.
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }

    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where some code ran: which thread, and which context was current there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whereabouts {
    /// The thread's id.
    pub thread: ThreadId,
    /// The thread's name, if it has one.
    pub thread_name: Option<String>,
    /// The current context's id (`Context::current()`), if any.
    pub context: Option<ContextId>,
    /// The current context's name, if any.
    pub context_name: Option<String>,
}

impl Whereabouts {
    /// Where the calling code runs now.
    pub fn here() -> Self {
        let thread = thread::current();
        let context = Context::current();
        Whereabouts {
            thread: thread.id(),
            thread_name: thread.name().map(str::to_owned),
            context: context.as_ref().map(Context::id),
            context_name: context.as_ref().map(|c| c.name().to_owned()),
        }
    }

    /// Whether it ran on a thread whose name starts with `prefix`.
    pub fn thread_name_starts_with(&self, prefix: &str) -> bool {
        self.thread_name
            .as_deref()
            .is_some_and(|name| name.starts_with(prefix))
    }
}

/// A waker that counts how many times it was woken.
#[derive(Debug, Default)]
pub struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    /// A fresh counting waker.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// How many wakes so far (by value or by reference).
    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }

    /// A `Waker` that counts into `this`.
    pub fn waker(this: &Arc<Self>) -> Waker {
        Waker::from(this.clone())
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `future` once with `waker`.
pub fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut PollContext::from_waker(waker))
}

/// Wraps a future and counts its polls into a [`Counter`]: how many times the executor
/// had to run it.
#[derive(Debug)]
pub struct PollCounter<F> {
    future: Pin<Box<F>>,
    polls: Counter,
}

impl<F> PollCounter<F> {
    /// Wraps `future`; every poll bumps `polls`.
    pub fn new(future: F, polls: &Counter) -> Self {
        PollCounter {
            future: Box::pin(future),
            polls: polls.clone(),
        }
    }
}

impl<F: Future> Future for PollCounter<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<F::Output> {
        self.polls.bump();
        self.future.as_mut().poll(cx)
    }
}

/// A timer-like awaitable written by a user against the awaiter contract: something else
/// (a timer thread, an I/O completion) calls [`ManualTimer::fire`], and whoever awaits it
/// resumes through the runtime's scheduling — on its captured context, exactly like a
/// `Task`.
///
/// It holds one continuation, so one awaiter at a time; the value is cloned out.
pub struct ManualTimer<T> {
    shared: Arc<Mutex<TimerState<T>>>,
}

struct TimerState<T> {
    value: Option<T>,
    continuation: Option<Continuation>,
    registrations: usize,
}

impl<T> Clone for ManualTimer<T> {
    fn clone(&self) -> Self {
        ManualTimer {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Default for ManualTimer<T> {
    fn default() -> Self {
        ManualTimer {
            shared: Arc::new(Mutex::new(TimerState {
                value: None,
                continuation: None,
                registrations: 0,
            })),
        }
    }
}

impl<T> ManualTimer<T> {
    /// A timer that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the timer with `value` and resumes its awaiter, if one is suspended on it.
    pub fn fire(&self, value: T) {
        let continuation = {
            let mut state = self.shared.lock().unwrap();
            assert!(state.value.is_none(), "a ManualTimer fires once");
            state.value = Some(value);
            state.continuation.take()
        };
        if let Some(continuation) = continuation {
            continuation.resume();
        }
    }

    /// How many continuations the runtime registered (`on_completed` calls).
    pub fn registrations(&self) -> usize {
        self.shared.lock().unwrap().registrations
    }
}

impl<T> fmt::Debug for ManualTimer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock().unwrap();
        f.debug_struct("ManualTimer")
            .field("fired", &state.value.is_some())
            .field("registrations", &state.registrations)
            .finish()
    }
}

/// The awaiter of a [`ManualTimer`].
#[derive(Debug)]
pub struct TimerAwaiter<T>(ManualTimer<T>);

impl<T: Clone> Awaiter for TimerAwaiter<T> {
    type Output = T;

    fn is_completed(&self) -> bool {
        self.0.shared.lock().unwrap().value.is_some()
    }

    fn on_completed(&mut self, continuation: Continuation) {
        let mut state = self.0.shared.lock().unwrap();
        state.registrations += 1;
        if state.value.is_some() {
            // Fired meanwhile: resume at once (resume never runs the code inline).
            drop(state);
            continuation.resume();
        } else {
            assert!(
                state.continuation.is_none(),
                "a ManualTimer has one awaiter at a time"
            );
            state.continuation = Some(continuation);
        }
    }

    fn get_result(&mut self) -> T {
        self.0
            .shared
            .lock()
            .unwrap()
            .value
            .clone()
            .expect("get_result is called only once the timer fired")
    }
}

impl<T: Clone> Awaitable for ManualTimer<T> {
    type Awaiter = TimerAwaiter<T>;

    fn get_awaiter(self) -> TimerAwaiter<T> {
        TimerAwaiter(self)
    }
}

/// A plain `.await` resumes on the captured context, as for `Task`.
impl<T: Clone> IntoFuture for ManualTimer<T> {
    type Output = T;
    type IntoFuture = ConfiguredAwait<TimerAwaiter<T>>;

    fn into_future(self) -> Self::IntoFuture {
        ConfiguredAwait::new(self.get_awaiter(), ConfigureAwaitOptions::default())
    }
}

/// A typed error to fault tasks with, found again with `TaskError::downcast_ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boom(pub &'static str);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}

impl Error for Boom {}

/// Unwraps the deadlock report out of a wait's error (panics, saying what it got instead,
/// if the wait did not report a deadlock).
pub fn expect_would_deadlock<T: fmt::Debug>(outcome: Result<T, WaitError>) -> WouldDeadlock {
    match outcome {
        Err(WaitError::WouldDeadlock(report)) => report,
        other => panic!("expected WaitError::WouldDeadlock, got {other:?}"),
    }
}

/// Marks a panic message as part of the scenario: [`quiet_expected_panics`] keeps it off
/// stderr.
pub const EXPECTED_PANIC: &str = "[expected panic]";

/// A non-string panic payload that is part of the scenario (`std::panic::panic_any`);
/// [`quiet_expected_panics`] keeps it off stderr too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedPanicPayload(pub u32);

/// Installs (once per process) a panic hook that stays silent for panics whose message
/// contains [`EXPECTED_PANIC`] (or whose payload is an [`ExpectedPanicPayload`]) and defers to the previous hook for every other panic, so
/// real test failures still print.
pub fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            let expected = message.is_some_and(|m| m.contains(EXPECTED_PANIC))
                || payload.is::<ExpectedPanicPayload>();
            if !expected {
                previous(info);
            }
        }));
    });
}

//! Time: the runtime's [`Clock`], [`delay`], [`yield_now`] and the timers behind
//! `cancel_after` and `wait_async` timeouts.
//!
//! Neither loom nor shuttle models time, so every timer in the runtime goes through a
//! `Clock`:
//!
//! - [`Clock::system`] follows the monotonic system clock; one background thread per
//!   process watches its timers and hands each one that falls due to the default pool, as
//!   .NET's timer queue does, so a blocking callback cannot hold up the others
//!   (production builds only).
//! - [`Clock::manual`] stands still until [`Clock::advance`] moves it; `advance` fires the
//!   timers that fall due on the calling thread, in due order, moving `now` to each timer's
//!   due time as it fires it. Tests and models use it to make time explicit.
//!
//! # Rules
//!
//! 1. A timer never fires inline in the call that schedules it, even when it is already
//!    due (a zero delay): it fires from the timer path — the system clock's thread, or the
//!    next `advance` of a manual clock (even `advance(Duration::ZERO)`).
//! 2. Timers due at the same instant fire in the order they were scheduled.
//! 3. `Duration::MAX`, and any delay whose deadline is beyond the clock's range (`now + d`
//!    overflows), never falls due: that is Rust's spelling of .NET's
//!    `Timeout.InfiniteTimeSpan`, documented here instead of an error. Nothing is scheduled
//!    for it. Rust's `Duration` cannot be negative, so .NET's
//!    `ArgumentOutOfRangeException` for negative delays has no counterpart.
//! 4. Cancelling a timer returns whether it removed it; `false` means it already fired or
//!    is firing. Timer callbacks run without any clock lock held, so they may schedule and
//!    cancel timers themselves.
//! 5. A manual clock dropped with timers pending keeps them, and what they own, alive (a
//!    delay's timer refers to its clock to release itself): advance it past them, or
//!    cancel the tokens of its delays, before dropping it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context as PollContext, Poll};
use std::time::Duration;

use crate::cancellation::{CancellationToken, CancellationTokenRegistration};
use crate::error::TaskError;
use crate::sync::{self, Arc, Mutex};
use crate::task::Task;
use crate::task_core::TaskCore;

/// What a timer runs when it fires.
pub(crate) type TimerCallback = Box<dyn FnOnce() + Send + 'static>;

/// A scheduled timer, for [`Clock::cancel_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerKey {
    due: Duration,
    seq: u64,
}

/// The runtime's source of time (see the module docs). Cheap to clone; clones share the
/// same time and timers.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

struct ClockInner {
    id: u64,
    kind: Kind,
    timers: Mutex<Timers>,
    #[cfg(not(any(loom, shuttle)))]
    timer_thread_wake: sync::Condvar,
}

enum Kind {
    Manual,
    #[cfg(not(any(loom, shuttle)))]
    System(std::time::Instant),
}

struct Timers {
    /// The manual clock's time (unused by the system clock).
    now: Duration,
    queue: BTreeMap<(Duration, u64), TimerCallback>,
    next_seq: u64,
    #[cfg(not(any(loom, shuttle)))]
    thread_started: bool,
}

/// [`Clock::advance`] was called on a clock that does not advance by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClockError {
    /// Only a manual clock can be advanced.
    NotManual,
    /// `now + by` does not fit in the clock's range; nothing was advanced.
    Overflow {
        /// The clock's time when the call was made.
        now: Duration,
        /// The requested advance.
        by: Duration,
    },
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::NotManual => f.write_str(
                "only a manual clock can be advanced; create one with Clock::manual() and \
                 give it to the sources and delays of the test",
            ),
            ClockError::Overflow { now, by } => write!(
                f,
                "advancing the clock from {now:?} by {by:?} overflows its range; advance by \
                 a smaller amount (timers due beyond the range never fire)"
            ),
        }
    }
}

impl std::error::Error for ClockError {}

impl Clock {
    /// A clock that stands still until [`advance`](Self::advance) moves it; it starts at
    /// zero.
    pub fn manual() -> Clock {
        Clock::with_kind(Kind::Manual)
    }

    /// The process-wide system clock (monotonic). The runtime's default clock.
    ///
    /// Model builds (`--cfg loom` / `--cfg shuttle`) cannot model time: there this returns
    /// a fresh manual clock that nothing advances, so a model must create a
    /// [`Clock::manual`] and advance it explicitly.
    pub fn system() -> Clock {
        #[cfg(not(any(loom, shuttle)))]
        {
            static SYSTEM: sync::OnceLock<Clock> = sync::OnceLock::new();
            SYSTEM
                .get_or_init(|| Clock::with_kind(Kind::System(std::time::Instant::now())))
                .clone()
        }
        #[cfg(any(loom, shuttle))]
        Clock::manual()
    }

    fn with_kind(kind: Kind) -> Clock {
        Clock {
            inner: Arc::new(ClockInner {
                id: sync::next_id(),
                kind,
                timers: Mutex::new(Timers {
                    now: Duration::ZERO,
                    queue: BTreeMap::new(),
                    next_seq: 0,
                    #[cfg(not(any(loom, shuttle)))]
                    thread_started: false,
                }),
                #[cfg(not(any(loom, shuttle)))]
                timer_thread_wake: sync::Condvar::new(),
            }),
        }
    }

    /// Whether this clock only moves by [`advance`](Self::advance).
    pub fn is_manual(&self) -> bool {
        matches!(self.inner.kind, Kind::Manual)
    }

    /// The time elapsed since the clock's origin (its creation, for a manual clock).
    pub fn now(&self) -> Duration {
        match &self.inner.kind {
            Kind::Manual => self.inner.timers.lock().now,
            #[cfg(not(any(loom, shuttle)))]
            Kind::System(origin) => origin.elapsed(),
        }
    }

    /// Moves a manual clock forward by `by`, firing on the calling thread every timer that
    /// falls due, in due order (rule 2), with [`now`](Self::now) at each timer's due time
    /// while it fires. Timers scheduled by those callbacks fire too if they fall due within
    /// the advance. Returns how many timers fired.
    pub fn advance(&self, by: Duration) -> Result<usize, ClockError> {
        if !self.is_manual() {
            return Err(ClockError::NotManual);
        }
        let target = {
            let timers = self.inner.timers.lock();
            timers.now.checked_add(by).ok_or(ClockError::Overflow {
                now: timers.now,
                by,
            })?
        };
        let mut fired = 0;
        loop {
            let callback = {
                let mut timers = self.inner.timers.lock();
                let timers = &mut *timers;
                match timers.queue.first_entry() {
                    Some(entry) if entry.key().0 <= target => {
                        timers.now = timers.now.max(entry.key().0);
                        entry.remove()
                    }
                    _ => {
                        // `max`: a timer callback may have advanced the clock further.
                        timers.now = timers.now.max(target);
                        break;
                    }
                }
            };
            fired += 1;
            crate::context::contain_panic("a timer callback", callback);
        }
        Ok(fired)
    }

    /// How many timers are scheduled and have not fired.
    pub fn pending_timers(&self) -> usize {
        self.inner.timers.lock().queue.len()
    }

    /// Runs `callback` from the timer path once `delay` has elapsed (rules 1 and 3). `None`
    /// when the deadline is beyond the clock's range: such a timer would never fire, so
    /// nothing is scheduled.
    pub(crate) fn schedule(&self, delay: Duration, callback: TimerCallback) -> Option<TimerKey> {
        if delay == Duration::MAX {
            return None;
        }
        let mut timers = self.inner.timers.lock();
        // `now` under the same lock as the insertion: a concurrent `advance` cannot slip in
        // between and leave the timer overdue until the next one.
        let now = match &self.inner.kind {
            Kind::Manual => timers.now,
            #[cfg(not(any(loom, shuttle)))]
            Kind::System(origin) => origin.elapsed(),
        };
        let due = now.checked_add(delay)?;
        let seq = timers.next_seq;
        timers.next_seq += 1;
        let is_first = timers
            .queue
            .first_key_value()
            .is_none_or(|(key, _)| due < key.0);
        timers.queue.insert((due, seq), callback);
        self.notify_timer_thread(timers, is_first);
        Some(TimerKey { due, seq })
    }

    /// Removes a timer that has not fired (rule 4).
    pub(crate) fn cancel_timer(&self, key: TimerKey) -> bool {
        // Drop the callback after unlocking: it may own handles whose drop takes locks.
        let removed = self.inner.timers.lock().queue.remove(&(key.due, key.seq));
        removed.is_some()
    }

    #[cfg(any(loom, shuttle))]
    fn notify_timer_thread(&self, _timers: sync::MutexGuard<'_, Timers>, _is_first: bool) {}

    /// Starts the system clock's timer thread on first use, or wakes it when the new timer
    /// is the earliest.
    #[cfg(not(any(loom, shuttle)))]
    fn notify_timer_thread(&self, mut timers: sync::MutexGuard<'_, Timers>, is_first: bool) {
        if self.is_manual() {
            return;
        }
        if !timers.thread_started {
            timers.thread_started = true;
            drop(timers);
            let inner = self.inner.clone();
            sync::spawn_thread("taskcheck-timer".to_owned(), move || {
                run_timer_thread(&inner)
            });
        } else if is_first {
            drop(timers);
            self.inner.timer_thread_wake.notify_one();
        }
    }

    /// A task that succeeds once `delay` has elapsed on this clock, or ends Canceled (with
    /// `token`) if `token` is canceled first (.NET's `Task.Delay(delay, token)`).
    ///
    /// An already-canceled token gives an already-canceled task; a zero delay an already
    /// completed one; a delay beyond the clock's range never elapses (rule 3). The task's
    /// continuations are queued, never run on the timer thread. Once the task completes,
    /// its timer and its token registration are released.
    #[track_caller]
    pub fn delay(&self, delay: Duration, token: &CancellationToken) -> Task<()> {
        if token.is_cancellation_requested() {
            return Task::from_error(TaskError::canceled_by(token));
        }
        if delay.is_zero() {
            return Task::completed();
        }
        // A bare core, not a completion source: a delay that can never elapse (an
        // uncancelable token and a delay beyond the clock's range) stays pending, as .NET's
        // infinite delay does, instead of being faulted as abandoned.
        let core = Arc::new(TaskCore::new(Location::caller(), true));
        let task = Task::from_parts(core.clone(), None);
        let race = TimerRace::new(self.clone());
        let timer = {
            let core = core.clone();
            let race = race.clone();
            self.schedule(
                delay,
                Box::new(move || {
                    if core.try_complete(Ok(())).is_ok() {
                        race.finish();
                    }
                }),
            )
        };
        race.set_timer(timer);
        let registration = {
            let token_for_error = token.clone();
            let race = race.clone();
            token.register(move || {
                if core
                    .try_complete(Err(TaskError::canceled_by(&token_for_error)))
                    .is_ok()
                {
                    race.finish();
                }
            })
        };
        race.set_registration(registration);
        task
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("id", &self.inner.id)
            .field("manual", &self.is_manual())
            .field("now", &self.now())
            .field("pending_timers", &self.pending_timers())
            .finish()
    }
}

/// The system clock's timer thread: fires due timers, sleeps until the earliest.
#[cfg(not(any(loom, shuttle)))]
fn run_timer_thread(inner: &ClockInner) {
    use crate::context::Job;

    let Kind::System(origin) = &inner.kind else {
        return;
    };
    let mut timers = inner.timers.lock();
    loop {
        let now = origin.elapsed();
        let next_due = timers.queue.first_key_value().map(|(key, _)| key.0);
        match next_due {
            Some(due) if due <= now => {
                let callback = timers
                    .queue
                    .pop_first()
                    .map(|(_, callback)| callback)
                    .expect("the queue's first entry was just seen");
                drop(timers);
                // Timer callbacks run user code (cancellation callbacks, continuations of
                // combinators): hand them to the default pool, as .NET's timer queue does,
                // so that one blocking callback cannot stop every timer in the process.
                let job = Job::Callback(callback);
                let refused = match sync::default_pool() {
                    Some(pool) => pool.post_job(job).err(),
                    None => Some(job),
                };
                if let Some(job) = refused {
                    let _ = job.run();
                }
                timers = inner.timers.lock();
            }
            Some(due) => timers = inner.timer_thread_wake.wait_timeout(timers, due - now),
            None => timers = inner.timer_thread_wake.wait(timers),
        }
    }
}

/// The timer and the token registration of one delay or timeout: whichever fires first
/// releases the other, so neither outlives the operation.
pub(crate) struct TimerRace {
    clock: Clock,
    state: Mutex<RaceState>,
}

#[derive(Default)]
struct RaceState {
    finished: bool,
    timer: Option<TimerKey>,
    registration: Option<CancellationTokenRegistration>,
    cleanup: Option<Box<dyn FnOnce() + Send + 'static>>,
}

impl TimerRace {
    pub(crate) fn new(clock: Clock) -> Arc<Self> {
        Arc::new(TimerRace {
            clock,
            state: Mutex::new(RaceState::default()),
        })
    }

    pub(crate) fn set_timer(&self, timer: Option<TimerKey>) {
        let mut state = self.state.lock();
        if state.finished {
            drop(state);
            if let Some(timer) = timer {
                self.clock.cancel_timer(timer);
            }
        } else {
            state.timer = timer;
        }
    }

    pub(crate) fn set_registration(&self, registration: CancellationTokenRegistration) {
        let mut state = self.state.lock();
        if state.finished {
            drop(state);
            drop(registration);
        } else {
            state.registration = Some(registration);
        }
    }

    /// Something else to release when the race finishes (the timeout's continuation on
    /// the awaited task); runs at once if it already finished.
    pub(crate) fn set_cleanup(&self, cleanup: Box<dyn FnOnce() + Send + 'static>) {
        let mut state = self.state.lock();
        if state.finished {
            drop(state);
            cleanup();
        } else {
            state.cleanup = Some(cleanup);
        }
    }

    /// Releases the timer, the registration and the cleanup, outside the lock. A
    /// registration dropped from inside its own callback returns at once (the cancelling
    /// thread is the one running it), so the token path may call this too.
    pub(crate) fn finish(&self) {
        let (timer, registration, cleanup) = {
            let mut state = self.state.lock();
            state.finished = true;
            (
                state.timer.take(),
                state.registration.take(),
                state.cleanup.take(),
            )
        };
        if let Some(timer) = timer {
            self.clock.cancel_timer(timer);
        }
        drop(registration);
        if let Some(cleanup) = cleanup {
            cleanup();
        }
    }
}

/// Completes after `delay` on the system clock, or ends Canceled if `token` is canceled
/// first (.NET's `Task.Delay`). See [`Clock::delay`]; tests and models use a manual clock.
#[track_caller]
pub fn delay(delay: Duration, token: &CancellationToken) -> Task<()> {
    Clock::system().delay(delay, token)
}

/// Gives the rest of the task's work back to its scheduler once (.NET's `Task.Yield()`):
/// the first poll wakes the task and returns `Pending`, so it is queued behind the work
/// already waiting on its context and resumes there.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
